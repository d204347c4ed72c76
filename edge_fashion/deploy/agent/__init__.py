"""The target's half of `edge-fashion deploy`: a small program that runs on the board, split by job.

    common.py    what every job shares: errors, the board folder, safe paths, running a step
    releases.py  the release layout: prepare, receive, verify, install, self-test, switch, prune, list
    frames.py    `edge-fashion pull`: the frames classify.py --save-frames kept, and their bytes
    service.py   edge-fashion.service: install it, restart it after a switch, check its /healthz
    main.py      the actions, each a function, and the one-line errors

The host never installs it. For each call it starts the board's python3 with
`python3 -c 'import sys; exec(sys.stdin.buffer.read(SIZE))' ACTION DIR [ARGUMENT...]` (over ssh, or
locally for a folder target) and writes `script()`, then the call's data, to its stdin; the fleet
playbook copies `script()` to the board and runs it as a file. `script()` is one file that carries
these modules and the two the host shares with them (edge_fashion/files.py: writing a file whole;
fashion_board/common.py: what counts as an image), each under its own name, so the agent imports
on the board exactly what it imports here. It needs only the standard library and Python 3.7+.

DIR holds one folder per bundle, DIR/releases/<RELEASE>/, and DIR/current, a symlink to the release
in use. Actions (main.ACTIONS):

    prepare DIR RELEASE   read JSON {name: sha256}; make DIR/releases/RELEASE and link into it the
                       files other releases already hold; answer each name's sha256 there
    receive DIR RELEASE   read a JSON header line [{name, size, sha256}] and then the files' bytes;
                       write each to a temporary name, fsync and check it, then rename all
    verify DIR RELEASE NAME...   answer the sha256 of each NAME in the release (null if absent)
    install DIR RELEASE   python3 -m venv --system-site-packages DIR/.venv; pip install -r
                       the release's requirements.txt into it
    self-test DIR RELEASE [PYTHON]   run the release's classify.py --self-test with PYTHON if
                       given, else DIR/.venv/bin/python if present, else the python running this
    switch DIR RELEASE KEEP deploy|rollback   point DIR/current at the release (a symlink
                       renamed over the old one), restart edge-fashion.service if installed, keep
                       the KEEP newest releases
    releases DIR       answer the releases, their deploy time and model sha256, and the current one
    service-check DIR  answer whether this machine can run the service for DIR: systemd running,
                       DIR's absolute path one a unit can hold (nothing is written, DIR not made)
    service DIR        read a systemd unit (edge_fashion/deploy/service.py) from stdin, fill in
                       DIR and the scope (a system unit as root, else a user unit with lingering),
                       make DIR/serve-token if missing, enable and restart edge-fashion.service
    health DIR PORT SECONDS  ask http://127.0.0.1:PORT/healthz (with the token) until it answers 200
    frames DIR         (for `edge-fashion pull`) the size and sha256 of every image file under DIR,
                       hidden ones left out; DIR must exist
    send DIR           read a JSON line [NAME, ...] and answer each file's bytes, base64-encoded

Each answers one JSON object on stdout. An error it can explain ends it with exit status 3 and
one line on stderr, "edge-fashion deploy: <what went wrong>".
"""

import functools
import pathlib

import edge_fashion
import fashion_board

HERE = pathlib.Path(__file__).resolve().parent
# (module name, its file), in the order the script defines them; packages carry no code on the wire.
PACKAGES = ("edge_fashion", "edge_fashion.deploy", "edge_fashion.deploy.agent", "fashion_board")
MODULES = (
    ("edge_fashion.files", pathlib.Path(edge_fashion.__file__).resolve().parent / "files.py"),
    ("fashion_board.common", pathlib.Path(fashion_board.__file__).resolve().parent / "common.py"),
    *((f"edge_fashion.deploy.agent.{name}", HERE / f"{name}.py")
      for name in ("common", "releases", "frames", "service", "main")),
)
# Loads the modules above from the script itself (a finder on sys.meta_path), then runs main.
BOOTSTRAP = '''
import importlib.abc, importlib.util, sys


class AgentModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in PACKAGES or name in SOURCES:
            return importlib.util.spec_from_loader(name, self, is_package=name in PACKAGES)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ in SOURCES:
            exec(compile(SOURCES[module.__name__], "<agent " + module.__name__ + ">", "exec"), module.__dict__)


sys.meta_path.insert(0, AgentModules())
from edge_fashion.deploy.agent import main  # noqa: E402
main.main(sys.argv[1:])
'''


@functools.lru_cache(maxsize=1)
def script() -> bytes:
    """The agent as one Python file, as the board's python3 runs it."""
    sources = {name: path.read_text(encoding="utf-8") for name, path in MODULES}
    return (f"# edge-fashion's deploy agent: one file made by edge_fashion/deploy/agent/__init__.py.\n"
            f"PACKAGES = {PACKAGES!r}\nSOURCES = {sources!r}\n{BOOTSTRAP}").encode("utf-8")
