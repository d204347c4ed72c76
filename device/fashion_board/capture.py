"""Keeping frames as they came, in folders by class: every classified one by its answer
(`--save-frames DIR`), or one labelled by a user on the live page (`--serve`'s captures).

Each camera or watched frame that was classified lands in DIR/<predicted label, "/" as "-">/, so a
user can move the wrong ones into the right folder and train on DIR (`edge-fashion build --photos
DIR`). Camera frames are encoded as JPEG; a watched file is copied byte for byte. Each file is
written under a hidden temporary name and renamed into place (`write_atomically`, the board's one
way of writing a file), so DIR never holds half a frame.
"""

from __future__ import annotations

import io
import json
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


def capture_request(request, labels: list) -> tuple:
    """(label, frame id) of a capture request; ValueError with what is wrong."""
    if not isinstance(request, dict) or not isinstance(request.get("label"), str) or request["label"] not in labels:
        raise ValueError("label must be one of the model's labels")
    number = request.get("frame")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError('name the frame on screen: {"label": ..., "frame": its id, from /events or /latest.json}')
    return request["label"], number


def save_labelled(folder: pathlib.Path, label: str, stem: str, original: tuple[bytes, str], record: dict) -> tuple:
    """A frame labelled on the live page: its bytes as folder/<label>/<stem><suffix> and beside them
    <stem>.json, one line: the frame's record with `capture`, the label given and the file's name.
    The line is written second; if that fails the frame goes too, so no capture is half saved.
    Returns (the file's path under folder, the line as a dict)."""
    content, suffix = original
    target_folder = folder / folder_name(label)
    target_folder.mkdir(parents=True, exist_ok=True)
    path = free_path(target_folder, stem, suffix)
    line = {**record, "capture": {"label": label, "file": path.name}}
    write_atomically(path, content)
    try:
        write_atomically(path.with_suffix(".json"), (json.dumps(line) + "\n").encode())
    except BaseException:
        path.unlink()
        raise
    return f"{target_folder.name}/{path.name}", line
