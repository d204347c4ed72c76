"""What every job of the agent shares: its one-line error, the board's folder, safe paths inside it,
and running a step (venv, pip, systemctl) that says what failed."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess

ERROR_EXIT = 3
ERROR_PREFIX = "edge-fashion deploy: "
RELEASES, CURRENT = "releases", "current"


class AgentError(Exception):
    """A failure on the target, said in one line."""


def explain(error: Exception, directory: str) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device that holds {directory}"
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    return str(error)


def open_folder(directory: str, create: bool) -> pathlib.Path:
    """The board's folder DIR; made when `create` and it does not exist yet."""
    folder = pathlib.Path(directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise AgentError(f"{directory} is a file, not a folder: name a folder to deploy into")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def release_folder(board: pathlib.Path, release: str) -> pathlib.Path:
    if not release or release.startswith(".") or "/" in release:
        raise AgentError(f"refusing the release name {release!r}")
    return board / RELEASES / release


def current_release(board: pathlib.Path) -> str | None:
    link = board / CURRENT
    return os.path.basename(os.readlink(str(link))) if link.is_symlink() else None


def bundle_path(folder: pathlib.Path, name: str) -> pathlib.Path:
    """folder/name for a relative name such as 'fashion_board/runtimes.py'; never a path outside folder."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise AgentError(f"refusing the file name {name!r}: not a plain path inside {folder}")
    return folder.joinpath(*parts)


def run_step(command: list, what: str) -> str:
    """Run one command of a step; its output, or AgentError with its last line."""
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, errors="replace")
    if completed.returncode == 0:
        return completed.stdout
    if "ensurepip is not available" in completed.stdout or "No module named venv" in completed.stdout:
        raise AgentError("python3 -m venv needs the python3-venv package there: sudo apt install python3-venv")
    lines = [line.strip() for line in completed.stdout.splitlines() if line.strip()]
    raise AgentError(f"{what} failed: {lines[-1] if lines else f'exit status {completed.returncode}'}")
