"""Copy a device bundle to a board over SSH, or to a local folder, and verify it there.

This module runs on both ends. On the host, `deploy()` checks the bundle, then starts this same
file on the target as a small agent (`python3 -c` reads the source from stdin, through `ssh` or
locally), one call per action:

    list DIR NAME...   make DIR if needed; print the sha256 of each NAME in it
    receive DIR        read a header line and the files from stdin; write each to a temporary
                       name, fsync and check it; then rename them all into place
    install DIR        python3 -m venv --system-site-packages DIR/.venv, then pip install -r
                       DIR/requirements.txt into it
    self-test DIR      run DIR/classify.py --self-test with DIR/.venv/bin/python when present

So the target needs python3 (3.7 or newer) and nothing else: everything here is stdlib, and
nothing from the package is imported on either end.

Usage: edge-fashion deploy pi@raspberrypi.local:fashion --install --self-test
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import time
import typing

CONNECT_TIMEOUT_SECONDS = 10  # How long ssh waits for the board to answer at all.
CALL_TIMEOUT_SECONDS = 600  # The longest one agent call may take (pip on a Pi Zero is slow).
AGENT_ERROR_EXIT = 3  # The agent's exit status for an error it explains on stderr.
AGENT_ERROR_PREFIX = "edge-fashion deploy: "
MANIFEST = "manifest.json"
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
    self_test_output: str | None = None  # What classify.py --self-test printed, when run.


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
    self_test: bool = False,
    progress: typing.Callable[[str], None] = lambda line: None,
) -> DeployResult:
    """Copy the changed files of the bundle to the target, verify all of them there, then
    optionally make the device venv and run the self-test; progress gets one line per step."""
    started = time.monotonic()
    files = read_bundle(pathlib.Path(bundle_dir))
    with shared_connection(target) as connected:
        result = copy_and_verify(files, connected, progress)
        if install:
            install_requirements(connected, progress)
        output = run_self_test(connected, progress) if self_test else None
    return dataclasses.replace(result, seconds=time.monotonic() - started, self_test_output=output)


def copy_and_verify(files: dict[str, bytes], target: Target, progress: typing.Callable[[str], None]) -> DeployResult:
    started = time.monotonic()
    wanted = {name: sha256_bytes(data) for name, data in files.items()}
    found = call_agent(target, "list", list(files))["sha256"]
    sent = tuple(name for name in files if found.get(name) != wanted[name])
    if sent:
        for name in sent:
            progress(f"sending {name} ({len(files[name]):,} bytes)")
        header = [{"name": name, "size": len(files[name]), "sha256": wanted[name]} for name in sent]
        payload = json.dumps(header).encode() + b"\n" + b"".join(files[name] for name in sent)
        call_agent(target, "receive", [], payload)
        found = call_agent(target, "list", list(files))["sha256"]
    wrong = [name for name in files if found.get(name) != wanted[name]]
    if wrong:
        raise DeployError(f"{target}: sha256 differs after copying {', '.join(wrong)}")
    bytes_sent = sum(len(files[name]) for name in sent)
    seconds = time.monotonic() - started
    progress(f"{len(sent)} sent ({bytes_sent:,} bytes), {len(files) - len(sent)} unchanged, "
             f"{len(files)} verified by sha256 on {target} in {seconds:.1f} s")
    unchanged = tuple(name for name in files if name not in sent)
    return DeployResult(sent, unchanged, len(files), bytes_sent, seconds)


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
    files = {path.name: path.read_bytes() for path in sorted(bundle_dir.iterdir())
             if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST}
    missing = [name for name in required if name not in files]
    if missing:
        raise DeployError(f"{bundle_dir} lacks {', '.join(missing)}: rebuild the bundle")
    if sha256_bytes(files[model_name]) != model_sha256:
        raise DeployError(f"{bundle_dir / model_name} does not match the sha256 in its manifest: "
                          "refusing to ship it (rebuild the bundle)")
    # The manifest goes last, so a target that holds the new manifest holds the new model.
    return {**files, MANIFEST: manifest_path.read_bytes()}


def install_requirements(target: Target, progress: typing.Callable[[str], None]) -> None:
    if target.host is None:
        raise DeployError("--install needs an ssh target: the venv must be made on the board itself")
    progress(f"making {target.directory}/.venv and installing requirements.txt on {target.host}")
    output = call_agent(target, "install", [])["output"]
    progress(output.strip().splitlines()[-1] if output.strip() else "installed")


def run_self_test(target: Target, progress: typing.Callable[[str], None]) -> str:
    """Run classify.py --self-test on the target; raise DeployError when it does not pass."""
    answer = call_agent(target, "self-test", ["given" if target.python else "venv"])
    progress(f"self-test on {target} with {answer['python']}:")
    progress(answer["output"].rstrip())
    if not answer["passed"]:
        raise DeployError(f"self-test FAILED on {target} (exit status {answer['status']})")
    return answer["output"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The host's side of a call: start the agent, feed it, map its failures to one line.


@contextlib.contextmanager
def shared_connection(target: Target) -> typing.Iterator[Target]:
    """One ssh connection serves all of a deploy's calls (ControlMaster); closed at the end."""
    if target.host is None:
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="edge-fashion-ssh-") as folder:
        shared = dataclasses.replace(target, control_folder=folder)
        try:
            yield shared
        finally:
            subprocess.run(["ssh", *ssh_options(shared), "-O", "exit", target.host],
                           capture_output=True, timeout=CONNECT_TIMEOUT_SECONDS)


def agent_command(target: Target, action: str, arguments: list[str], source_size: int) -> list[str]:
    # The target's python3 reads exactly this file's source from stdin, then the payload.
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
    source = pathlib.Path(__file__).read_bytes()
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
    return json.loads(completed.stdout)


def explain_failure(target: Target, status: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {status}"
    if status == AGENT_ERROR_EXIT and last.startswith(AGENT_ERROR_PREFIX):
        message = last[len(AGENT_ERROR_PREFIX):]
        return f"{target.host}: {message}" if target.host else message
    if status == 127:
        return (f"no {target.python or 'python3'} on {target.host}: install it there "
                "(sudo apt install python3) or name another with --python")
    if status != 255 or target.host is None:
        return f"{target}: {last}"
    host = target.host
    if "Could not resolve hostname" in stderr:
        return f"cannot reach {host}: unknown host name (check the name, or ~/.ssh/config)"
    for reason in ("Connection refused", "Connection timed out", "No route to host",
                   "Network is unreachable", "Connection reset", "Connection closed"):
        if reason in stderr:
            return f"cannot reach {host}: {reason.lower()} (is it on, on the network, running sshd?)"
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return (f"{host} refused authentication: no key of yours is accepted there "
                "(--identity, ssh-agent, ~/.ssh/config; try ssh-copy-id)")
    if "Host key verification failed" in stderr:
        return f"{host}'s host key is unknown or has changed: check it with a plain `ssh {host}` first"
    return f"ssh {host} failed: {last}"


# The target's side: these functions run there, under whatever python3 the board has.


def agent_main(arguments: list[str]) -> None:
    action, directory, rest = arguments[0], arguments[1], arguments[2:]
    try:
        folder = agent_folder(directory)
        if action == "list":
            answer = {"sha256": {name: agent_sha256(folder / name) for name in rest}}
        elif action == "receive":
            answer = {"received": agent_receive(folder, sys.stdin.buffer)}
        elif action == "install":
            answer = {"output": agent_install(folder)}
        else:
            answer = agent_self_test(folder, prefer_venv=rest == ["venv"])
    except (DeployError, OSError) as error:
        sys.stderr.write(f"{AGENT_ERROR_PREFIX}{agent_explain(error, directory)}\n")
        sys.exit(AGENT_ERROR_EXIT)
    sys.stdout.write(json.dumps(answer))


def agent_explain(error: Exception, directory: str) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device that holds {directory}"
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    return str(error)


def agent_folder(directory: str) -> pathlib.Path:
    folder = pathlib.Path(directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DeployError(f"{directory} is a file, not a folder: name a folder to deploy into")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def agent_sha256(path: pathlib.Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def agent_receive(folder: pathlib.Path, stream: typing.BinaryIO) -> list[str]:
    """Write every file to a temporary name first, then rename all: an interrupted copy
    leaves the old files whole, never a mix or a torn model."""
    header = json.loads(stream.readline())
    for entry in header:
        for stale in folder.glob(f".{entry['name']}.partial-*"):
            stale.unlink()  # Left by an earlier deploy that was killed.
    partials = [folder / f".{entry['name']}.partial-{os.getpid()}" for entry in header]
    try:
        for entry, partial in zip(header, partials):
            agent_write(partial, entry, stream)
        for entry, partial in zip(header, partials):
            os.replace(partial, folder / entry["name"])
        agent_fsync_folder(folder)
    finally:
        for partial in partials:
            if partial.exists():
                partial.unlink()
    return [entry["name"] for entry in header]


def agent_write(partial: pathlib.Path, entry: dict, stream: typing.BinaryIO) -> None:
    digest, left = hashlib.sha256(), entry["size"]
    with partial.open("wb") as output:
        while left > 0:
            block = stream.read(min(left, 1 << 20))
            if not block:
                raise DeployError(f"the copy of {partial.parent}/{entry['name']} was cut off; the old files are kept")
            digest.update(block)
            output.write(block)
            left -= len(block)
        output.flush()
        os.fsync(output.fileno())
    if digest.hexdigest() != entry["sha256"]:
        raise DeployError(f"{partial.parent}/{entry['name']} arrived damaged (sha256 differs); the old files are kept")


def agent_fsync_folder(folder: pathlib.Path) -> None:
    # Makes the renames themselves survive a power cut, as well as the files' bytes.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def agent_run(command: list[str], what: str) -> str:
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace")
    if completed.returncode == 0:
        return completed.stdout
    if "ensurepip is not available" in completed.stdout:
        raise DeployError("python3 -m venv needs the python3-venv package: sudo apt install python3-venv")
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    raise DeployError(f"{what} failed: {lines[-1] if lines else completed.returncode}")


def agent_install(folder: pathlib.Path) -> str:
    venv = folder / ".venv"
    output = agent_run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "venv")
    return output + agent_run([str(venv / "bin" / "python"), "-m", "pip", "install",
                               "--disable-pip-version-check", "-r", str(folder / "requirements.txt")],
                              "pip install -r requirements.txt")


def agent_self_test(folder: pathlib.Path, prefer_venv: bool) -> dict:
    venv_python = folder / ".venv" / "bin" / "python"
    python = str(venv_python) if prefer_venv and venv_python.exists() else sys.executable
    completed = subprocess.run([python, "classify.py", "--self-test"], cwd=str(folder),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    return {"passed": completed.returncode == 0, "status": completed.returncode,
            "python": python, "output": completed.stdout}


if __name__ == "__main__":
    agent_main(sys.argv[1:])
