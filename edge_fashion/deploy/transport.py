"""Copy a device bundle to a board over SSH, or to a local folder, and verify it there.

`deploy()` reads the bundle and refuses a model that fails its manifest's sha256, then has the
target make the bundle's release folder, DIR/releases/<name>/, from the files it already holds,
sends only those that differ, reads every sha256 back, runs the self-test there and only then
switches DIR/current to it (releases.py).
On the target the work is done by the agent (edge_fashion/deploy/agent/), which the board's python3 runs from stdin
(nothing is installed there), through `ssh` so that ~/.ssh/config applies, or locally for a
mounted SD card. One ssh connection (ControlMaster) serves all of a deploy's calls.

Usage: edge-fashion deploy pi@raspberrypi.local:fashion --install --self-test
"""

import contextlib
import dataclasses
import functools
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import typing

from edge_fashion import files
from edge_fashion.deploy import agent as deploy_agent
from edge_fashion.deploy.agent import common as agent_common
from edge_fashion.deploy.agent import releases as agent_releases
from edge_fashion.deploy import releases

CONNECT_TIMEOUT_SECONDS = 10  # How long ssh waits for the board to answer at all.
CALL_TIMEOUT_SECONDS = 600  # The longest one agent call may take (pip on a Pi Zero is slow).
MANIFEST = "manifest.json"
KEEP_RELEASES = 3  # Releases a board keeps (the current one always): room to roll back twice.
REMOTE_TARGET = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<directory>.*)$")


class DeployError(ValueError):
    """A deploy that could not finish, said in one line."""


@dataclasses.dataclass(frozen=True)
class Target:
    directory: str  # The bundle's folder there; relative to the home folder over ssh.
    host: str | None = None  # `user@host` or an ~/.ssh/config alias; None for a local folder.
    port: int | None = None  # None: ~/.ssh/config's Port, else 22.
    identity: pathlib.Path | None = None  # A private key for `ssh -i`.
    ssh_config: pathlib.Path | None = None  # An ssh_config file read instead of ~/.ssh/config.
    python: str | None = None  # The target's Python; None: python3 (over ssh) or this Python.
    control_folder: str | None = None  # Holds the socket of a shared ssh connection, if any.

    def __str__(self) -> str:
        return f"{self.host}:{self.directory}" if self.host else self.directory


@dataclasses.dataclass(frozen=True)
class DeployResult:
    sent: tuple[str, ...]  # Files copied because the target lacked them or held other bytes.
    unchanged: tuple[str, ...]  # Files whose sha256 on the target already matched.
    verified: int  # Files whose sha256 was read back from the target after the copy.
    bytes_sent: int
    seconds: float
    self_test_output: str | None = None  # What classify.py --self-test printed in the new release.
    release: str | None = None  # The release folder's name on the target: DIR/releases/<release>/.
    previous: str | None = None  # The release that was current before; None on a first deploy.


def parse_target(text: str, **options: typing.Any) -> Target:
    """`user@host:dir` or `host:dir` is an ssh target; anything else (`./a:b` too) a local folder."""
    match = REMOTE_TARGET.match(text)
    if match is None:
        return Target(directory=text, **options)
    if not match["directory"]:
        raise DeployError(f"{text}: name a folder after the colon, for example {text}fashion")
    host = match["host"].strip("[]")
    user_host = f"{match['user']}@{host}" if match["user"] else host
    return Target(directory=match["directory"], host=user_host, **options)


def deploy(
    bundle_dir: pathlib.Path,
    target: Target,
    install: bool = False,
    keep: int = KEEP_RELEASES,
    progress: typing.Callable[[str], None] = lambda line: None,
) -> DeployResult:
    """Copy the bundle into its own release folder on the target, verify every file there, make the
    device venv if asked, run the self-test there, and only then switch DIR/current to it."""
    started = time.monotonic()
    contents = read_bundle(pathlib.Path(bundle_dir))
    wanted = {name: files.sha256_bytes(data) for name, data in contents.items()}
    release = agent_releases.release_name(wanted)
    with shared_connection(target) as connected:
        call = functools.partial(call_agent, connected)
        prepared = releases.prepare(call, release, wanted)
        result = copy_and_verify(contents, wanted, prepared["sha256"], release, connected, progress)
        if install:
            install_requirements(connected, release, progress)
        output = releases.self_test(call, release, connected.python, str(connected), progress)
        releases.switch(call, release, keep, progress)
    return dataclasses.replace(result, seconds=time.monotonic() - started, self_test_output=output,
                               release=release, previous=prepared["current"])


def copy_and_verify(contents: dict[str, bytes], wanted: dict[str, str], found: dict[str, str | None], release: str,
                    target: Target, progress: typing.Callable[[str], None]) -> DeployResult:
    """Send the files the release folder lacks (found: their sha256 there now), then read all back."""
    started = time.monotonic()
    sent = tuple(name for name in contents if found.get(name) != wanted[name])
    if sent:
        for name in sent:
            progress(f"sending {name} ({len(contents[name]):,} bytes)")
        header = [{"name": name, "size": len(contents[name]), "sha256": wanted[name]} for name in sent]
        payload = json.dumps(header).encode() + b"\n" + b"".join(contents[name] for name in sent)
        call_agent(target, "receive", [release], payload)
    found = call_agent(target, "verify", [release, *contents])["sha256"]
    wrong = [name for name in contents if found.get(name) != wanted[name]]
    if wrong:
        raise DeployError(f"{target}: sha256 differs after copying {', '.join(wrong)}")
    bytes_sent = sum(len(contents[name]) for name in sent)
    seconds = time.monotonic() - started
    progress(f"{len(sent)} sent ({bytes_sent:,} bytes), {len(contents) - len(sent)} unchanged, "
             f"{len(contents)} verified by sha256 in releases/{release}/ on {target} in {seconds:.1f} s")
    unchanged = tuple(name for name in contents if name not in sent)
    return DeployResult(sent, unchanged, len(contents), bytes_sent, seconds)


@contextlib.contextmanager
def on_board(target: Target) -> typing.Iterator[typing.Callable[..., dict]]:
    """`with on_board(target) as call:` call(action, arguments) runs one agent action, all over one connection."""
    with shared_connection(target) as connected:
        yield functools.partial(call_agent, connected)


def bundle_file_names(bundle_dir: pathlib.Path) -> list[str]:
    """Every file of the bundle as a relative POSIX path ('fashion_board/runtimes.py'), hidden and cache files left out."""
    names = []
    for path in sorted(bundle_dir.rglob("*")):
        relative = path.relative_to(bundle_dir)
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            names.append(relative.as_posix())
    return names


def read_bundle(bundle_dir: pathlib.Path) -> dict[str, bytes]:
    """The bundle's files, manifest last; refuses a bundle whose model fails its sha256."""
    manifest_path = bundle_dir / MANIFEST
    if not manifest_path.is_file():
        raise DeployError(f"{bundle_dir} is not a bundle: no {MANIFEST} (run `edge-fashion build`)")
    try:
        manifest = json.loads(manifest_path.read_text())
        model_name, model_sha256 = manifest["model"]["file"], manifest["model"]["sha256"]
        required = [model_name, manifest["labels_file"], "classify.py"]
    except (ValueError, KeyError, TypeError) as error:
        raise DeployError(f"{manifest_path} is not a bundle manifest: {error}") from error
    contents = {name: (bundle_dir / name).read_bytes() for name in bundle_file_names(bundle_dir) if name != MANIFEST}
    missing = [name for name in required if name not in contents]
    if missing:
        raise DeployError(f"{bundle_dir} lacks {', '.join(missing)}: rebuild the bundle")
    if files.sha256_bytes(contents[model_name]) != model_sha256:
        raise DeployError(f"{bundle_dir / model_name} does not match the sha256 in its manifest: "
                          "refusing to ship it (rebuild the bundle)")
    # The manifest goes last, so a target that holds the new manifest holds the new model.
    return {**contents, MANIFEST: manifest_path.read_bytes()}


def install_requirements(target: Target, release: str, progress: typing.Callable[[str], None]) -> None:
    if target.host is None:
        raise DeployError("--install needs an ssh target: the venv must be made on the board itself")
    progress(f"making {target.directory}/.venv and installing requirements.txt on {target.host}")
    output = call_agent(target, "install", [release])["output"]
    progress(output.strip().splitlines()[-1] if output.strip() else "installed")




@contextlib.contextmanager
def shared_connection(target: Target) -> typing.Iterator[Target]:
    """One ssh connection serves all of a deploy's calls (ControlMaster); closed at the end."""
    if target.host is None:
        yield target
        return
    folder = tempfile.mkdtemp(prefix="edge-fashion-ssh-")
    # A Unix socket's path holds at most 107 bytes, and %C takes 40 of them.
    shared = dataclasses.replace(target, control_folder=folder) if len(folder) < 60 else target
    try:
        yield shared
    finally:
        if shared.control_folder:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["ssh", *ssh_options(shared), "-O", "exit", target.host],
                               capture_output=True, timeout=CONNECT_TIMEOUT_SECONDS)
        shutil.rmtree(folder, ignore_errors=True)


def agent_command(target: Target, action: str, arguments: list[str], source_size: int) -> list[str]:
    # The target's python3 reads exactly the agent's source from stdin, then the payload.
    bootstrap = f"import sys; exec(sys.stdin.buffer.read({source_size}))"
    words = [action, target.directory, *arguments]
    if target.host is None:
        return [target.python or sys.executable, "-c", bootstrap, *words]
    remote = shlex.join([target.python or "python3", "-c", bootstrap, *words])
    return ["ssh", *ssh_options(target), target.host, remote]


def ssh_options(target: Target) -> list[str]:
    # BatchMode: a key or an agent, never a password prompt that hangs a script.
    options = ["-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
    if target.control_folder:
        # ControlPersist detaches the master, so it never holds our pipes open.
        options += ["-o", "ControlMaster=auto", "-o", f"ControlPath={target.control_folder}/%C",
                    "-o", "ControlPersist=60"]
    if target.ssh_config:
        options += ["-F", str(target.ssh_config)]
    if target.port:
        options += ["-p", str(target.port)]
    if target.identity:
        options += ["-i", str(target.identity)]
    return options


def call_agent(target: Target, action: str, arguments: list[str], payload: bytes = b"") -> dict:
    """Run one agent action on the target and return its JSON answer."""
    source = deploy_agent.script()
    command = agent_command(target, action, arguments, len(source))
    try:
        completed = subprocess.run(command, input=source + payload, capture_output=True,
                                   timeout=CALL_TIMEOUT_SECONDS)
    except FileNotFoundError as error:
        raise DeployError(f"cannot run {command[0]}: {error.strerror}") from error
    except subprocess.TimeoutExpired as error:
        raise DeployError(f"{target}: no answer within {CALL_TIMEOUT_SECONDS} s") from error
    if completed.returncode != 0:
        raise DeployError(explain_failure(target, completed.returncode, completed.stderr.decode(errors="replace")))
    # The answer is the last line: a chatty login script on the board may print before it.
    lines = completed.stdout.decode(errors="replace").splitlines() or [""]
    try:
        return json.loads(lines[-1])
    except ValueError as error:
        raise DeployError(f"{target}: the agent's answer is not JSON: {lines[-1][:80]!r}") from error


def explain_failure(target: Target, status: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {status}"
    if status == agent_common.ERROR_EXIT and last.startswith(agent_common.ERROR_PREFIX):
        message = last[len(agent_common.ERROR_PREFIX):]
        return f"{target.host}: {message}" if target.host else message
    if status == 127 and target.host:
        return (f"no {target.python or 'python3'} on {target.host}: install it there "
                "(sudo apt install python3) or name another with --python")
    if status != 255 or target.host is None:
        return f"{target}: {last}"
    host = target.host
    if "Could not resolve hostname" in stderr:
        return f"cannot reach {host}: unknown host name (check the name, or ~/.ssh/config)"
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return (f"{host} refused authentication: no key of yours is accepted there "
                "(--identity, ssh-agent, ~/.ssh/config; try ssh-copy-id)")
    for reason in ("Connection refused", "Connection timed out", "No route to host",
                   "Network is unreachable", "Connection reset", "Connection closed"):
        if reason in stderr:
            return f"cannot reach {host}: {reason.lower()} (is it on, on the network, running sshd?)"
    if "Host key verification failed" in stderr:
        return f"{host}'s host key is unknown or has changed: check it with a plain `ssh {host}` first"
    return f"ssh {host} failed: {last}"
