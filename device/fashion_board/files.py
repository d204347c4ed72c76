"""Reading image files and streams without hanging or flooding: regular files only, each bounded.

A file is opened only when it is a regular file: stat first, so a device is never even opened; then
opened without blocking (O_NONBLOCK: a FIFO or device swapped in meanwhile cannot hang the open)
and checked again with fstat on what was opened; what is read into memory is read to a bound. A
FIFO named on the command line (`classify.py <(cat photo.jpg)`) is the one exception, read with a
bound in time and in size; standard input is read to a bound in size.
"""

from __future__ import annotations

import io
import os
import pathlib
import select
import stat
import sys

# An image read from standard input, a FIFO, a watched or a replayed folder is held in memory whole
# before decoding: this much at most, so that with the decoded image (preprocess.MAX_DECODE_BYTES)
# a run stays within 150 MB.
MAX_STREAM_BYTES = 32_000_000
MAX_FILE_BYTES = 64_000_000  # A named image file, decoded from disk; an image within the 48 MB decode bound is smaller.
FIFO_IDLE_SECONDS = 5  # A named FIFO whose writer sends nothing for this long is an error, not a hang.
SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                 stat.S_IFBLK: "a block device"}


def read_stream(stream, what: str) -> io.BytesIO:
    data = stream.read(MAX_STREAM_BYTES + 1)
    if not data:
        raise ValueError(f"{what} is empty")
    if len(data) > MAX_STREAM_BYTES:
        raise ValueError(f"{what} holds more than {MAX_STREAM_BYTES} bytes")
    return io.BytesIO(data)


def read_stdin() -> io.BytesIO:
    return read_stream(sys.stdin.buffer, "standard input")


def read_fifo(path: pathlib.Path) -> io.BytesIO:
    """A FIFO named on the command line, such as `<(cat photo.jpg)`. Opened without waiting for a
    writer: one that nobody writes to reads as empty, one whose writer sends nothing for
    FIFO_IDLE_SECONDS is an error, and neither hangs the run."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks, size = [], 0
    try:
        while size <= MAX_STREAM_BYTES:
            try:
                chunk = os.read(descriptor, 1 << 16)
            except BlockingIOError:  # A writer, but nothing written yet.
                if not select.select([descriptor], [], [], FIFO_IDLE_SECONDS)[0]:
                    raise ValueError(f"the FIFO {path} sent nothing for {FIFO_IDLE_SECONDS} s") from None
                continue
            if not chunk:  # No writer (left, or never came).
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    return read_stream(io.BytesIO(b"".join(chunks)), f"the FIFO {path}")


def special_kind(path: pathlib.Path) -> str | None:
    """'a FIFO', 'a socket', ... for what is not a regular file (after links), from stat: never opened."""
    try:
        mode = path.stat().st_mode
    except OSError:  # Gone, or a broken link: decoding says so in its own words.
        return None
    return None if stat.S_ISREG(mode) else SPECIAL_FILES.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: pathlib.Path, limit: int):
    """`path` opened for reading, when it is a regular file of at most `limit` bytes; ValueError
    naming what it is otherwise. Never blocks: see the module's docstring."""
    kind = special_kind(path)
    if kind is not None:
        raise ValueError(f"{kind}, not an image file: skipped")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):  # Swapped for something else since the stat above.
            raise ValueError(f"{SPECIAL_FILES.get(stat.S_IFMT(status.st_mode), 'not a regular file')}, "
                             "not an image file: skipped")
        if status.st_size > limit:
            raise ValueError(f"{status.st_size} bytes, more than the {limit} an image file may have")
        return open(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular(path: pathlib.Path, limit: int = MAX_STREAM_BYTES) -> bytes:
    """The bytes of a regular file, at most `limit` of them even if it grows while read."""
    with open_regular(path, limit) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than the {limit} bytes an image file may have")
    return data
