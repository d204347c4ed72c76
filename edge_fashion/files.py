"""The host's one way to write a file whole, and the checksums it is known by.

Standard library only, and Python 3.7 or newer: the deploy agent carries this module to the board
(see edge_fashion/deploy/agent/__init__.py), so the host and its agent write files the same way.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib

BLOCK_BYTES = 1 << 20  # Files are read in blocks of 1 MiB: a Pi Zero has 512 MB.


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: pathlib.Path) -> str | None:
    """The file's sha256, read in blocks; None when there is no such file."""
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def write_error(path: pathlib.Path, error: OSError) -> ValueError:
    """An OSError said with the path it happened on (a full disk's errno names none)."""
    reason = error.strerror or str(error)
    return ValueError(f"cannot write {path}: {reason} [{errno.errorcode.get(error.errno, error.errno)}]")


def fsync_folder(folder: pathlib.Path) -> None:
    """Make the names in `folder` (a rename, a new file) survive a power cut, as fsync does a file's bytes."""
    descriptor = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: pathlib.Path, content: bytes, mode: int = 0o666) -> None:
    """Write to a hidden temporary name in the same folder, fsync, rename, fsync the folder: a reader
    sees the old file or the new, never half, also after a power cut. `mode` (less the umask) is the
    file's from its creation on, as open()'s: 0o600 keeps a secret unreadable to others throughout.

    Raises ValueError naming `path` when the write fails (a full disk's OSError names no file); the
    temporary file is removed then."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(str(temporary)):  # Left by a writer of this pid that died: O_EXCL needs it gone.
            os.unlink(str(temporary))
        with os.fdopen(os.open(str(temporary), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(str(temporary), str(path))
        fsync_folder(path.parent)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        if os.path.lexists(str(temporary)):
            os.unlink(str(temporary))


def atomic_write_text(path: pathlib.Path, text: str, mode: int = 0o666) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: pathlib.Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")
