"""Frame sources: files, folders, stdin, the camera, a watched folder. Each yields (name, image loader)."""

from __future__ import annotations

import importlib
import io
import os
import pathlib
import stat
import sys
import time

import numpy as np
from PIL import Image

from .common import ModelError, log, one_line
from .preprocess import decode

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
# An image read from standard input or a FIFO is held in memory whole before decoding: this much
# at most, so that with the decoded image (preprocess.MAX_DECODE_BYTES) a run stays within 150 MB.
MAX_STREAM_BYTES = 32_000_000
SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                 stat.S_IFBLK: "a block device"}
MAX_CAMERA_FAILURES = 5


def image_files(folder: pathlib.Path) -> list:
    found = []
    for root, folders, files in os.walk(folder):
        folders.sort()
        found += [pathlib.Path(root, name) for name in sorted(files)
                  if pathlib.Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return found


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
    writer, then read as usual: one that nobody writes to reads as empty instead of hanging."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(descriptor, True)
    with open(descriptor, "rb") as fifo:
        return read_stream(fifo, f"the FIFO {path}")


def special_kind(path: pathlib.Path) -> str | None:
    """'a FIFO', 'a socket', ... for what is not a regular file (after links), from stat: never opened."""
    try:
        mode = path.stat().st_mode
    except OSError:  # Gone, or a broken link: decoding says so in its own words.
        return None
    return None if stat.S_ISREG(mode) else SPECIAL_FILES.get(stat.S_IFMT(mode), "not a regular file")


def file_loader(path: pathlib.Path, named: bool):
    """The loader of one path. Special files found in a folder are skipped unopened: a FIFO would
    block the run forever. A FIFO named on the command line is read without blocking."""
    kind = special_kind(path)
    if kind is None:
        return lambda use_draft: decode(path, use_draft)
    if kind == SPECIAL_FILES[stat.S_IFIFO] and named:
        return lambda use_draft: decode(read_fifo(path), use_draft)
    return missing_input(f"{kind}, not an image file: skipped")


def missing_input(message: str):
    def fail(use_draft: bool):
        raise ValueError(message)
    return fail


def file_sources(inputs: list):
    for name in inputs:
        path = pathlib.Path(name)
        if name == "-":
            yield "-", lambda use_draft: decode(read_stdin(), use_draft)
        elif path.is_dir():
            files = image_files(path)
            if not files:
                yield name, missing_input("no image files in this folder")
            for file in files:
                yield str(file), file_loader(file, named=False)
        elif path.exists():
            yield name, file_loader(path, named=True)
        else:
            yield name, missing_input("no such file or folder")


def open_picamera2(picamera2):
    """A frame reader on the Pi camera: 640x480 YUV420, of which the Y plane is the grayscale."""
    camera = picamera2.Picamera2()
    camera.configure(camera.create_preview_configuration(main={"size": (640, 480), "format": "YUV420"}))
    camera.start()
    return lambda: Image.fromarray(np.ascontiguousarray(camera.capture_array()[:480, :640]))


def open_opencv(cv2, index: int):
    """A frame reader on a USB webcam through OpenCV."""
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise ModelError(f"OpenCV cannot open camera {index} (the Pi's CSI camera needs Picamera2)")

    def read_frame() -> Image.Image:
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"camera {index} returned no frame")
        return Image.fromarray(np.ascontiguousarray(frame[..., ::-1]))  # BGR to RGB.
    return read_frame


def camera_library(name: str, load):
    """load() imports the module `name`: None when it is not installed, ModelError when it is broken."""
    try:
        return load()
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise ModelError(f"{name} is installed but cannot import {error.name}") from None
    except Exception as error:  # Such as "numpy.dtype size changed": built for another numpy.
        raise ModelError(f"{name} is installed but fails to import ({one_line(error)}) with numpy "
                         f"{np.__version__}: keep Debian's numpy in the venv (README.md)") from None


def open_camera(index: int):
    """A function returning one frame as a PIL image: Picamera2 if installed, else OpenCV."""
    picamera2 = camera_library("picamera2", lambda: importlib.import_module("picamera2"))
    cv2 = None if picamera2 else camera_library("cv2", lambda: importlib.import_module("cv2"))
    if picamera2 is None and cv2 is None:
        raise ModelError(
            "--camera needs Picamera2 for the Pi camera (sudo apt install python3-picamera2, and a venv "
            "made with --system-site-packages) or OpenCV for a USB webcam (sudo apt install python3-opencv)"
        )
    try:
        return open_picamera2(picamera2) if picamera2 else open_opencv(cv2, index)
    except ModelError:
        raise
    except Exception as error:  # Camera libraries raise their own types (no camera, busy).
        raise ModelError(f"cannot start the camera: {one_line(error)}") from None


def camera_sources(index: int, count: int, interval: float):
    """Frames from the camera; gives up after MAX_CAMERA_FAILURES failed reads in a row."""
    read_frame = open_camera(index)
    number = failures = 0
    while not count or number < count:
        number += 1
        try:
            frame, failures = read_frame(), 0
        except Exception as error:  # Camera libraries raise their own types: count it, go on.
            failures += 1
            if failures > MAX_CAMERA_FAILURES:
                log(f"camera: {MAX_CAMERA_FAILURES} failed reads in a row, stopping")
                return
            yield f"camera:{number}", missing_input(f"camera read failed: {one_line(error)}")
        else:
            yield f"camera:{number}", lambda use_draft, frame=frame: frame
        time.sleep(interval)


def watched_sources(folder: pathlib.Path, count: int, interval: float):
    """Image files that appear in folder after the start, once their size stops changing."""
    if not folder.is_dir():
        raise ModelError(f"--watch {folder}: no such folder")
    seen = set(image_files(folder))
    sizes = {}
    log(f"watching {folder} for new images ({len(seen)} already there are skipped); Ctrl-C ends")
    number = 0
    while not count or number < count:
        time.sleep(interval or 0.2)
        for path in image_files(folder):
            try:
                size = path.stat().st_size
            except OSError:  # Deleted since the listing.
                size = -1
            if path in seen or sizes.get(path) != size or size <= 0:
                sizes[path] = size
                continue
            seen.add(path)
            number += 1
            yield str(path), lambda use_draft, path=path: decode(path, use_draft)
            if count and number >= count:
                return
