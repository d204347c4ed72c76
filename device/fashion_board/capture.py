"""Keeping classified frames as they came, sorted by the answer (`--save-frames DIR`).

Each camera or watched frame that was classified lands in DIR/<predicted label, "/" as "-">/, so a
user can move the wrong ones into the right folder and train on DIR (`edge-fashion build --photos
DIR`). Camera frames are encoded as JPEG; a watched file is copied byte for byte. Each file is
written under a hidden temporary name and renamed into place, so DIR never holds half a frame.
"""

from __future__ import annotations

import io
import os
import pathlib
import threading
import time

JPEG_QUALITY = 92  # Camera frames: high enough that what is kept is what the model saw.


def folder_name(label: str) -> str:
    """The class folder of a label, as `--photos` reads it: 'T-shirt/top' -> 'T-shirt-top'."""
    name = label.replace("/", "-").replace("\\", "-").strip(". ")
    return name or "unnamed"


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write under a temporary name, fsync, rename: a reader never sees half a file. The temporary
    name holds the thread too: the live page's clients capture from threads of their own."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(partial, "wb") as output:
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def camera_original(name: str, load) -> tuple[bytes, str]:
    """(JPEG bytes, '.jpg') of a camera frame; `load` returns the captured image again."""
    image = load(False)
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
        buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), ".jpg"


def file_original(name: str, load) -> tuple[bytes, str]:
    """(the file's bytes, its suffix) of a watched file: the very bytes that were classified, never
    read again (the name may hold another file, or a FIFO, by now)."""
    return load.data, pathlib.Path(name).suffix.lower() or ".jpg"


def frame_stem(name: str, number: int) -> str:
    """The saved file's name without suffix: a watched file's own, or the time for a camera frame."""
    if name.startswith("camera:"):
        return time.strftime("camera-%Y%m%d-%H%M%S") + f"-{number:05d}"
    return pathlib.Path(name).stem or f"frame-{number:05d}"


def free_path(folder: pathlib.Path, stem: str, suffix: str) -> pathlib.Path:
    """folder/stem+suffix, or stem-2, stem-3, ... when that name is taken: nothing is overwritten."""
    path, count = folder / f"{stem}{suffix}", 1
    while path.exists():
        count += 1
        path = folder / f"{stem}-{count}{suffix}"
    return path


def save_frame(folder: pathlib.Path, label: str, stem: str, original: tuple[bytes, str]) -> pathlib.Path:
    """Write the frame's bytes to folder/<label>/, atomically; return where it went."""
    content, suffix = original
    target_folder = folder / folder_name(label)
    target_folder.mkdir(parents=True, exist_ok=True)
    path = free_path(target_folder, stem, suffix)
    write_atomically(path, content)
    return path
