"""The target's half of `edge-fashion deploy`: a small program that runs on the board.

The host never installs it: for each call it starts the board's python3 with
`python3 -c 'import sys; exec(sys.stdin.buffer.read(SIZE))' ACTION DIR [ARGUMENT...]` (over ssh,
or locally for a folder target) and writes this file's source, then the call's data, to its
stdin. So it imports only the standard library and runs on Python 3.7 or newer. Actions:

    list DIR NAME...   make DIR if needed; answer the sha256 of each NAME in it (null if absent)
    receive DIR        read a JSON header line [{name, size, sha256}] and then the files' bytes;
                       write each to a temporary name, fsync and check it, then rename all
    install DIR        python3 -m venv --system-site-packages DIR/.venv; pip install -r
                       DIR/requirements.txt into it
    self-test DIR [PYTHON]   run DIR/classify.py --self-test with PYTHON if given, else
                       DIR/.venv/bin/python if present, else the python running this
    frames DIR         (for `edge-fashion pull`) the size and sha256 of every image file under DIR,
                       hidden ones left out; DIR must exist
    send DIR           read a JSON line [NAME, ...] and answer each file's bytes, base64-encoded

Each answers one JSON object on stdout. An error it can explain ends it with exit status 3 and
one line on stderr, "edge-fashion deploy: <what went wrong>".
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import typing

ERROR_EXIT = 3
ERROR_PREFIX = "edge-fashion deploy: "
BLOCK_BYTES = 1 << 20  # Reads and writes go in blocks of 1 MiB; a Pi Zero has 512 MB.
# What classify.py reads and --save-frames writes (fashion_board/sources.py's list).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}


class AgentError(Exception):
    """A failure on the target, said in one line."""


def main(arguments: list[str]) -> None:
    action, directory, rest = arguments[0], arguments[1], arguments[2:]
    try:
        folder = existing_folder(directory) if action in ("frames", "send") else open_folder(directory)
        if action == "frames":
            answer = {"files": list_frames(folder)}
        elif action == "send":
            answer = {"files": send(folder, json.loads(sys.stdin.buffer.readline()))}
        elif action == "list":
            answer = {"sha256": {name: file_sha256(folder / name) for name in rest}}
        elif action == "receive":
            answer = {"received": receive(folder, sys.stdin.buffer)}
        elif action == "install":
            answer = {"output": install(folder)}
        elif action == "self-test":
            answer = self_test(folder, rest[0] if rest else None)
        else:
            raise AgentError(f"unknown action {action!r}: the host and the agent disagree")
    except (AgentError, OSError) as error:
        sys.stderr.write(f"{ERROR_PREFIX}{explain(error, directory)}\n")
        sys.exit(ERROR_EXIT)
    sys.stdout.write(json.dumps(answer))


def explain(error: Exception, directory: str) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device that holds {directory}"
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    return str(error)


def open_folder(directory: str) -> pathlib.Path:
    folder = pathlib.Path(directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise AgentError(f"{directory} is a file, not a folder: name a folder to deploy into")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def existing_folder(directory: str) -> pathlib.Path:
    folder = pathlib.Path(directory).expanduser()
    if not folder.is_dir():
        raise AgentError(f"{directory}: no such folder (classify.py --save-frames makes it)")
    return folder


def list_frames(folder: pathlib.Path) -> dict:
    """{relative name: {size, sha256}} of the image files under folder, hidden files and folders left out."""
    found = {}
    for root, folders, files in os.walk(str(folder)):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = pathlib.Path(root, name)
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size,
                                                              "sha256": file_sha256(path)}
    return found


def send(folder: pathlib.Path, names: list) -> dict:
    """{name: base64 of its bytes} for the named files under folder."""
    return {name: base64.b64encode(bundle_path(folder, name).read_bytes()).decode("ascii") for name in names}


def file_sha256(path: pathlib.Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def receive(folder: pathlib.Path, stream: typing.BinaryIO) -> list[str]:
    """Write every file under a temporary name first, then rename them all (the manifest comes
    last): an interrupted copy leaves the old files whole, never a torn model."""
    header = json.loads(stream.readline())
    targets = [bundle_path(folder, entry["name"]) for entry in header]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.partial-*"):
            stale.unlink()  # Left by an earlier deploy that was killed.
    partials = [target.with_name(f".{target.name}.partial-{os.getpid()}") for target in targets]
    try:
        for entry, partial in zip(header, partials):
            write_partial(partial, entry, stream)
        for target, partial in zip(targets, partials):
            os.replace(partial, target)
        for parent in sorted({target.parent for target in targets}):
            fsync_folder(parent)
    finally:
        for partial in partials:
            if partial.exists():
                partial.unlink()
    return [entry["name"] for entry in header]


def bundle_path(folder: pathlib.Path, name: str) -> pathlib.Path:
    """folder/name for a relative name such as 'fashion_board/runtimes.py'; never a path outside folder."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise AgentError(f"refusing the file name {name!r}: not a plain path inside {folder}")
    return folder.joinpath(*parts)


def write_partial(partial: pathlib.Path, entry: dict, stream: typing.BinaryIO) -> None:
    digest, left = hashlib.sha256(), entry["size"]
    with partial.open("wb") as output:
        while left > 0:
            block = stream.read(min(left, BLOCK_BYTES))
            if not block:
                raise AgentError(f"the copy of {partial.parent / entry['name'].rsplit('/', 1)[-1]} was cut off; the old file is kept")
            digest.update(block)
            output.write(block)
            left -= len(block)
        output.flush()
        os.fsync(output.fileno())
    if digest.hexdigest() != entry["sha256"]:
        raise AgentError(f"{partial.parent / entry['name'].rsplit('/', 1)[-1]} arrived damaged (sha256 differs); the old file is kept")


def fsync_folder(folder: pathlib.Path) -> None:
    # Makes the renames survive a power cut, as well as the files' bytes.
    descriptor = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def run_step(command: list[str], what: str) -> str:
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace")
    if completed.returncode == 0:
        return completed.stdout
    if "ensurepip is not available" in completed.stdout or "No module named venv" in completed.stdout:
        raise AgentError("python3 -m venv needs the python3-venv package there: sudo apt install python3-venv")
    lines = [line.strip() for line in completed.stdout.splitlines() if line.strip()]
    raise AgentError(f"{what} failed: {lines[-1] if lines else f'exit status {completed.returncode}'}")


def install(folder: pathlib.Path) -> str:
    venv = folder / ".venv"
    # --system-site-packages: Debian's numpy, Pillow and python3-picamera2 serve from apt.
    output = run_step([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "python3 -m venv")
    return output + run_step([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                              "-r", str(folder / "requirements.txt")], "pip install -r requirements.txt")


def self_test(folder: pathlib.Path, python: str | None) -> dict:
    venv_python = folder / ".venv" / "bin" / "python"
    if python is None:
        python = str(venv_python) if venv_python.exists() else sys.executable
    completed = subprocess.run([python, "classify.py", "--self-test"], cwd=str(folder),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    return {"passed": completed.returncode == 0, "status": completed.returncode,
            "python": python, "output": completed.stdout}


if __name__ == "__main__":
    main(sys.argv[1:])
