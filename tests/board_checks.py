"""A virtual board (emulation/virtual_board.py) as the deploy tests and benchmarks/power_cuts.py use it:
booted with a camera, deployed to with the real CLI, and checked: which release `current` names,
whether it holds exactly that bundle's files, its self-test, and the service's /healthz; and one
power cut in the middle of a deploy.

The board has no camera: the Picamera2 stand-in of test_classify.py goes where Debian's
python3-picamera2 would be (/usr/local/lib/python3.13/dist-packages, seen by a venv made with
--system-site-packages), showing one camera-like Fashion-MNIST test image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pathlib
import random
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "emulation"))  # virtual_board.py and the modules beside it.

import virtual_board  # noqa: E402
from edge_fashion import files  # noqa: E402
from edge_fashion.deploy import transport  # noqa: E402
from edge_fashion.deploy.agent import releases as agent_releases  # noqa: E402
from edge_fashion.pipeline import data  # noqa: E402
from test_classify import PICAMERA2_STAND_IN, camera_frame  # noqa: E402

# The virtual boards boot Debian under qemu's TCG and take many minutes (longer still on a busy
# machine), so `make test` leaves them out; `make test-boards` runs them.
OPT_IN = "EDGE_FASHION_VIRTUAL_BOARDS"


def skip_reason(arch: str) -> str | None:
    """Why the virtual-board tests do not run here: not asked for, or the machine cannot (None: they run)."""
    if os.environ.get(OPT_IN) != "1":
        return f"virtual boards are slow: run them with `make test-boards` ({OPT_IN}=1)"
    return virtual_board.unavailable(arch)


# The virtual boards' architecture in the tests and benchmarks: $EDGE_FASHION_BOARD_ARCH, else the Pi's.
ARCH = os.environ.get("EDGE_FASHION_BOARD_ARCH", virtual_board.board_qemu.DEFAULT_ARCH)
DIRECTORY = "fashion"  # DIR on the board, in pi's home, as the README's examples have it.
SERVICE_PORT = 8080
CAMERA_ON_BOARD = "/usr/local/lib/python3.13/dist-packages/picamera2"
DEPLOY_TIMEOUT = 900  # Seconds; a first deploy --install under TCG takes 1-3 minutes here.


@contextlib.contextmanager
def board_with_camera(arch: str, folder: pathlib.Path, data_dir: pathlib.Path, requirements: pathlib.Path,
                      memory_mb: int = 1024, cpus: int = 2):
    """A booted board with the wheels requirements.txt needs and the stand-in camera."""
    with virtual_board.running(arch, folder, memory_mb, cpus, requirements.read_text()) as board:
        give_camera(board, data_dir)
        yield board


def give_camera(board: virtual_board.Board, data_dir: pathlib.Path) -> None:
    image = data.load_fashion_mnist(data_dir, download=False).test_images[1]
    frame = io.BytesIO()
    camera_frame(image, np.random.default_rng(1)).save(frame, format="PNG")
    board.ssh(f"mkdir -p {CAMERA_ON_BOARD} && cat > {CAMERA_ON_BOARD}/frame.png", user="root",
              stdin=frame.getvalue())
    board.ssh(f"cat > {CAMERA_ON_BOARD}/__init__.py && sync", user="root", stdin=PICAMERA2_STAND_IN.encode())


def deploy_command(board: virtual_board.Board, bundle: pathlib.Path, *options: str) -> list:
    """`edge-fashion deploy` to the board, as a user would type it (the console script's module)."""
    return [sys.executable, "-m", "edge_fashion", *deploy_arguments(board, bundle, *options)]


def deploy_arguments(board: virtual_board.Board, bundle: pathlib.Path, *options: str) -> list:
    return [*board_arguments(board, *options), "--bundle", str(bundle)]


def board_arguments(board: virtual_board.Board, *options: str) -> list:
    """`deploy` to the board without a bundle: --list and --rollback take none."""
    return ["deploy", f"{board.target()}:{DIRECTORY}", "-p", str(board.port), "-i", str(board.identity),
            "-F", str(board.ssh_config), *options]


def target(board: virtual_board.Board) -> transport.Target:
    return transport.Target(directory=DIRECTORY, host=board.target(), port=board.port, identity=board.identity,
                            ssh_config=board.ssh_config)


def bundle_files(bundle: pathlib.Path) -> dict:
    """{name: sha256} of the bundle, as deploy sends it."""
    return {name: files.sha256_bytes(content) for name, content in transport.read_bundle(bundle).items()}


def release_of(bundle: pathlib.Path) -> str:
    return agent_releases.release_name(bundle_files(bundle))


def current(board: virtual_board.Board) -> str | None:
    link = board.text(f"readlink {DIRECTORY}/current || true")
    return pathlib.PurePath(link).name if link else None


def files_on_board(board: virtual_board.Board, release: str) -> dict:
    """{name: sha256} of the release's files on the board, hidden files and bytecode left out."""
    listing = board.text(f"cd {DIRECTORY}/releases/{release} && find . -type f ! -name '.*' ! -path '*/__pycache__/*' "
                         "-printf '%P\\0' | xargs -0 -r sha256sum")
    return {line.split(None, 1)[1]: line.split(None, 1)[0] for line in listing.splitlines() if line.strip()}


def health(board: virtual_board.Board, seconds: float = 300) -> dict | None:
    """The service's /healthz, asked on the board by the agent; None if it did not answer 200 in time."""
    answer = transport.call_agent(target(board), "health", [str(SERVICE_PORT), str(seconds)])
    return answer["health"] if answer["healthy"] else None


def problems(board: virtual_board.Board, bundles: list) -> list:
    """What is wrong on the board: current must name the release of one of bundles, hold exactly
    its files, pass its self-test there, and the service must run it (/healthz gives its model)."""
    by_release = {release_of(bundle): bundle for bundle in bundles}
    release = current(board)
    if release not in by_release:
        return [f"current names {release!r}, none of {sorted(by_release)}"]
    wanted = bundle_files(by_release[release])
    found = files_on_board(board, release)
    wrong = sorted(name for name in wanted.keys() | found.keys() if wanted.get(name) != found.get(name))
    if wrong:
        return [f"releases/{release}/ differs from its bundle in {', '.join(wrong)}"]
    found_problems = []
    test = transport.call_agent(target(board), "self-test", [release])
    if not test["passed"]:
        found_problems.append(f"the self-test of releases/{release}/ fails: {test['output'][-300:]}")
    answer = health(board)
    model = transport.read_bundle(by_release[release])["manifest.json"]
    if answer is None:
        found_problems.append("the service does not answer /healthz")
    elif answer["model_sha256"] not in model.decode():
        found_problems.append(f"the service runs model {answer['model_sha256'][:12]}, not releases/{release}/'s")
    return found_problems


@dataclasses.dataclass(frozen=True)
class Trial:
    seed: int
    cut_after: float  # Seconds from the deploy's start to the power cut.
    deploy_finished: bool  # The deploy had ended (and switched) before the cut.
    landed_on: str  # "old" or "new": the release current named after the boot.
    boot_seconds: float  # From power-on to sshd's answer, after the cut.
    problems: tuple  # What problems() found after the boot; empty when all is well.
    next_deploy_ok: bool  # The same deploy, run again after the boot, succeeded and switched.


def power_cut(board: virtual_board.Board, old: pathlib.Path, new: pathlib.Path, seed: int, window: float,
              *options: str) -> Trial:
    """Deploy new over old (current), cut the power `uniform(0, window)` seconds in, boot, check."""
    cut_after = random.Random(seed).uniform(0, window)
    started = time.monotonic()
    process = subprocess.Popen(deploy_command(board, new, *options), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    while time.monotonic() - started < cut_after and process.poll() is None:
        time.sleep(0.05)
    finished = process.poll() is not None
    board.power_cut()
    process.communicate(timeout=120)
    board.power_on()
    found = problems(board, [old, new])
    landed_on = "new" if current(board) == release_of(new) else "old"
    again = subprocess.run(deploy_command(board, new, *options), capture_output=True, timeout=DEPLOY_TIMEOUT)
    next_ok = again.returncode == 0 and current(board) == release_of(new)
    return Trial(seed, round(cut_after, 2), finished, landed_on, round(board.boot_seconds, 1), tuple(found), next_ok)
