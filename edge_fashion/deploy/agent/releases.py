"""The release layout on the board: DIR/releases/<RELEASE>/ per bundle, DIR/current the one in use.

A bundle is copied into a release of its own (files the board already holds are hard-linked from
other releases, nothing is trusted by name), checked, self-tested, and only then made current by
one rename of a symlink; older releases are pruned down to KEEP, never the current one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import typing

from edge_fashion import files
from edge_fashion.deploy.agent import common, service

BLOCK_BYTES = files.BLOCK_BYTES
METADATA = ".release.json"
TRASH = ".removing-"  # A pruned release is renamed to TRASH<release>-<pid> before it is removed.
RELEASE_NAME_LENGTH = 12  # Hex digits of the bundle's sha256 that name its release folder.


def release_name(sha256_by_name: dict) -> str:
    """A bundle's release folder name: the start of the sha256 over its files' names and sha256s."""
    lines = "".join(f"{sha256_by_name[name]}  {name}\n" for name in sorted(sha256_by_name))
    return hashlib.sha256(lines.encode()).hexdigest()[:RELEASE_NAME_LENGTH]


def prepare(board: pathlib.Path, release: str, wanted: dict) -> dict:
    """Make the release folder and fill it with what the board already holds; answer what is there."""
    folder = common.release_folder(board, release)
    folder.mkdir(parents=True, exist_ok=True)
    for name, sha256 in wanted.items():
        target = common.bundle_path(folder, name)
        if files.sha256_file(target) != sha256:
            source = find_copy(board, name, sha256, folder)
            if source is not None:
                link_or_copy(source, target)
    found = {name: files.sha256_file(common.bundle_path(folder, name)) for name in wanted}
    return {"sha256": found, "missing": [name for name in wanted if found[name] != wanted[name]],
            "current": common.current_release(board)}


def find_copy(board: pathlib.Path, name: str, sha256: str, exclude: pathlib.Path) -> pathlib.Path | None:
    # Only files whose sha256 matches travel no further than a hard link: nothing is trusted by name.
    current = common.current_release(board)
    folders = sorted((board / common.RELEASES).iterdir(), key=lambda path: path.name != current)
    for folder in folders:
        candidate = common.bundle_path(folder, name)
        if folder != exclude and not folder.name.startswith(".") and files.sha256_file(candidate) == sha256:
            return candidate
    return None


def link_or_copy(source: pathlib.Path, target: pathlib.Path) -> None:
    """A hard link (no bytes copied), or a copy where the file system has none (FAT); renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if partial.exists():
        partial.unlink()
    try:
        os.link(str(source), str(partial))
    except OSError:
        shutil.copy2(str(source), str(partial))
    os.replace(str(partial), str(target))


def write_metadata(folder: pathlib.Path, deployed_at: float) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    metadata = {"deployed_at": deployed_at, "model_sha256": manifest.get("model", {}).get("sha256")}
    files.atomic_write_json(folder / METADATA, metadata)


def read_metadata(folder: pathlib.Path) -> dict:
    try:
        return json.loads((folder / METADATA).read_text())
    except (OSError, ValueError):
        return {}  # Never switched to: a deploy that failed its checks, or was stopped.


def list_releases(board: pathlib.Path) -> dict:
    folder = board / common.RELEASES
    names = sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")) \
        if folder.is_dir() else []
    releases = [dict(read_metadata(folder / name), name=name) for name in names]
    releases.sort(key=lambda release: release.get("deployed_at") or 0)
    return {"current": common.current_release(board), "releases": releases}


def receive(folder: pathlib.Path, stream: typing.BinaryIO) -> list:
    """Write every file under a temporary name first, then rename them all (the manifest comes
    last): an interrupted copy leaves the old files whole, never a torn model."""
    header = json.loads(stream.readline())
    targets = [common.bundle_path(folder, entry["name"]) for entry in header]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.partial-*"):
            stale.unlink()  # Left by an earlier deploy that was killed.
    partials = [target.with_name(f".{target.name}.partial-{os.getpid()}") for target in targets]
    try:
        for entry, partial in zip(header, partials):
            write_partial(partial, entry, stream)
        for target, partial in zip(targets, partials):
            os.replace(str(partial), str(target))
        for parent in sorted({target.parent for target in targets}):
            files.fsync_folder(parent)
    finally:
        for partial in partials:
            if partial.exists():
                partial.unlink()
    return [entry["name"] for entry in header]


def write_partial(partial: pathlib.Path, entry: dict, stream: typing.BinaryIO) -> None:
    """Copy entry["size"] bytes of the stream into `partial`, fsynced; AgentError if cut off or damaged."""
    digest, left = hashlib.sha256(), entry["size"]
    name = partial.parent / entry["name"].rsplit("/", 1)[-1]
    with partial.open("wb") as output:
        while left > 0:
            block = stream.read(min(left, BLOCK_BYTES))
            if not block:
                raise common.AgentError(f"the copy of {name} was cut off; the old file is kept")
            digest.update(block)
            output.write(block)
            left -= len(block)
        output.flush()
        os.fsync(output.fileno())
    if digest.hexdigest() != entry["sha256"]:
        raise common.AgentError(f"{name} arrived damaged (sha256 differs); the old file is kept")


def install(board: pathlib.Path, folder: pathlib.Path) -> str:
    venv = board / ".venv"
    # --system-site-packages: Debian's numpy, Pillow and python3-picamera2 serve from apt.
    output = common.run_step([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "python3 -m venv")
    return output + common.run_step([str(venv / "bin" / "python"), "-m", "pip", "install",
                                     "--disable-pip-version-check", "-r", str(folder / "requirements.txt")],
                                    "pip install -r requirements.txt")


def self_test(board: pathlib.Path, folder: pathlib.Path, python: str | None) -> dict:
    venv_python = board / ".venv" / "bin" / "python"
    if python is None:
        python = str(venv_python) if venv_python.exists() else sys.executable
    if not (folder / "classify.py").is_file():
        raise common.AgentError(f"{folder} holds no classify.py: deploy the bundle again")
    completed = subprocess.run([python, "classify.py", "--self-test"], cwd=str(folder), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, errors="replace")
    return {"passed": completed.returncode == 0, "status": completed.returncode,
            "python": python, "output": completed.stdout}


def point_current(board: pathlib.Path, release: str) -> None:
    """DIR/current -> releases/RELEASE in one rename: a reader sees the old release or the new, never neither."""
    temporary = board / f".{common.CURRENT}-{os.getpid()}"
    if os.path.lexists(str(temporary)):
        temporary.unlink()
    os.symlink(os.path.join(common.RELEASES, release), str(temporary))
    os.replace(str(temporary), str(board / common.CURRENT))
    files.fsync_folder(board)


def switch(board: pathlib.Path, release: str, keep: int, rollback: bool) -> dict:
    """Make the release current (a deploy also stamps it as the newest), restart the service, prune."""
    folder, old = common.release_folder(board, release), common.current_release(board)
    if not (folder / "manifest.json").is_file():
        raise common.AgentError(f"no release {release} in {board / common.RELEASES}")
    for stale in folder.glob(f"*{METADATA}.partial-*"):  # An earlier switch's write that died half way.
        stale.unlink()
    if not rollback or not read_metadata(folder):
        write_metadata(folder, time.time())
    outcome = "unchanged"
    if old != release:
        point_current(board, release)
        outcome = service.restart_if_installed()
        if outcome == service.NOT_ACTIVE:
            if old is not None:
                point_current(board, old)
                service.restart_if_installed()
            raise common.AgentError(f"{service.SERVICE} is not active after the switch; switched back to {old}")
    return {"old": old, "new": release, "service": outcome, "pruned": prune(board, keep)}


def prune(board: pathlib.Path, keep: int) -> list:
    """Remove all but the `keep` most recently deployed releases; never the current one. What an
    earlier prune left half removed (it died inside the removal) is removed first."""
    folder = board / common.RELEASES
    for leftover in folder.glob(f"{TRASH}*"):
        shutil.rmtree(str(leftover), ignore_errors=True)
    releases = list_releases(board)
    names = [release["name"] for release in releases["releases"]]
    doomed = [name for name in names[:max(0, len(names) - keep)] if name != releases["current"]]
    for name in doomed:
        # Renamed first, so a half-removed release never looks like one; to a name of this prune's
        # own, so a leftover that could not be removed never stands in the way.
        trash = folder / f"{TRASH}{name}-{os.getpid()}"
        os.rename(str(folder / name), str(trash))
        shutil.rmtree(str(trash), ignore_errors=True)
    return doomed
