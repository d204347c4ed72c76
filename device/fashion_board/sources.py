"""Frame sources: files, folders, stdin, the camera, a replayed folder, a watched folder. Each yields (name, image loader).

Every file is read through files.py: regular files only, bounded, so no name in a folder, a watched
folder or a replayed one can hang a run or flood its memory.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pathlib
import stat
import time

import numpy as np
from PIL import Image

from . import common, files, yuv
from .common import ModelError, log, one_line
from .preprocess import decode

MAX_CAMERA_FAILURES = 5
CAMERA_SIZE = (640, 480)  # The Pi camera's main stream; never copied.
# Its low-resolution stream, which is classified, shown and saved: the photos' size (at most 320 px),
# above the preprocessing's work size (112 px), which its chroma planes (160 x 120) still exceed.
LORES_SIZE = (320, 240)
WATCH_INTERVAL_SECONDS = 0.1  # Between folder scans; a file must look the same on two scans in a row.
WATCH_GIVE_UP_SECONDS = 2.0  # A settled file that still does not decode after this is reported as an error.


def image_files(folder: pathlib.Path) -> list:
    found = []
    for root, folders, names in os.walk(folder):
        folders.sort()
        found += [pathlib.Path(root, name) for name in sorted(names)
                  if pathlib.Path(name).suffix.lower() in common.IMAGE_SUFFIXES]
    return found


def decode_file(path: pathlib.Path, use_draft: bool):
    with files.open_regular(path, files.MAX_FILE_BYTES) as file:
        return decode(file, use_draft)


def file_loader(path: pathlib.Path, named: bool):
    """The loader of one path. Special files found in a folder are skipped unopened: a FIFO would
    block the run forever. A FIFO named on the command line is read with bounds (read_fifo)."""
    kind = files.special_kind(path)
    if kind == files.SPECIAL_FILES[stat.S_IFIFO] and named:
        return lambda use_draft: decode(files.read_fifo(path), use_draft)
    if kind is not None:
        return missing_input(f"{kind}, not an image file: skipped")
    return lambda use_draft: decode_file(path, use_draft)


def missing_input(message: str):
    def fail(use_draft: bool):
        raise ValueError(message)
    return fail


def file_sources(inputs: list):
    for name in inputs:
        path = pathlib.Path(name)
        if name == "-":
            yield "-", lambda use_draft: decode(files.read_stdin(), use_draft)
        elif path.is_dir():
            found = image_files(path)
            if not found:
                yield name, missing_input("no image files in this folder")
            for file in found:
                yield str(file), file_loader(file, named=False)
        elif path.exists():
            yield name, file_loader(path, named=True)
        else:
            yield name, missing_input("no such file or folder")


def open_picamera2(picamera2):
    """A frame reader on the Pi camera's low-resolution stream (YUV420, LORES_SIZE): each frame is a
    small YCbCr image, and the preprocessing takes its colour from the planes at work size, so no
    full-size RGB array is copied per frame (the ISP scales the picture down)."""
    camera = picamera2.Picamera2()
    camera.configure(camera.create_preview_configuration(main={"size": CAMERA_SIZE},
                                                         lores={"size": LORES_SIZE, "format": "YUV420"}))
    camera.start()
    width, height = camera.stream_configuration("lores")["size"]  # As libcamera granted it.
    return lambda: yuv.Yuv420.from_array(camera.capture_array("lores"), width, height).image()


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


class EncodedFrame:
    """A loader over an image file's bytes, read once: the server can show and save them as they are."""

    def __init__(self, data: bytes):
        self.data = data

    def __call__(self, use_draft: bool) -> Image.Image:
        return decode(io.BytesIO(self.data), use_draft)


def replay_sources(folder: pathlib.Path, fps: float, count: int):
    """A folder's images played as a camera, over and over, at fps frames a second (0: at full speed).
    What is not a regular file is left out, with one line each."""
    paths = []
    for path in image_files(folder) if folder.is_dir() else []:
        kind = files.special_kind(path)
        if kind is None:
            paths.append(path)
        else:
            log(f"--replay: {path} is {kind}, not an image file: skipped")
    if not paths:
        raise ModelError(f"--replay {folder}: no image files in this folder")
    number, period, due = 0, 1 / fps if fps > 0 else 0.0, time.monotonic()
    while True:
        for path in paths:
            if count and number >= count:
                return
            number += 1
            if period:  # Keep the pace without drifting: wait for this frame's own time.
                due += period
                time.sleep(max(0.0, due - time.monotonic()))
            try:
                yield str(path), EncodedFrame(files.read_regular(path))
            except OSError as error:  # Removed while playing: an error for this frame only.
                yield str(path), missing_input(f"cannot read it: {error.strerror}")
            except ValueError as error:  # Replaced by a FIFO or a device, or grown too large.
                yield str(path), missing_input(str(error))


def file_state(path: pathlib.Path):
    """(size, mtime_ns, inode) or None when the file is gone: what changes while a file is written."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns, status.st_ino


def decodes(data: bytes) -> bool:
    """True when the bytes hold a whole image: a file still being written fails here."""
    try:
        decode(io.BytesIO(data), use_draft=False)
    except Exception:  # Pillow raises many types on a partial file ("image file is truncated").
        return False
    return True


class FolderWatch:
    """Files that appear or change in a folder, each reported once per content, when complete.

    A file is read when its size, time and inode stayed the same over one scan and it decodes; one
    that settled but never decodes is reported as an error after WATCH_GIVE_UP_SECONDS. A name whose
    content changes (written again, or replaced by a rename) is read again; vanished files are forgotten.
    """

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.states = {path: file_state(path) for path in image_files(folder)}  # Last scan's states.
        self.done = {path: state for path, state in self.states.items()}  # The state last reported.
        self.digests = {}  # path -> sha256 of the content last reported: a mere touch is no new frame.
        self.broken_since = {}  # path -> (state, when it settled in that state without decoding).

    def scan(self) -> list:
        """[(name, loader)] for the files complete since the last scan."""
        ready, states = [], {}
        for path in image_files(self.folder):
            state = states[path] = file_state(path)
            if state is None or state != self.states.get(path) or state == self.done.get(path):
                continue
            entry = self.read(path, state)
            if entry is not None:
                ready.append(entry)
        self.states = states
        for memory in (self.done, self.digests, self.broken_since):  # Forget vanished files.
            for gone in set(memory) - set(states):
                del memory[gone]
        return ready

    def read(self, path: pathlib.Path, state: tuple):
        try:
            data = files.read_regular(path)
        except OSError:  # Vanished between the listing and the read.
            return None
        except ValueError as error:  # A FIFO, a device, or too large: reported once, never read.
            self.done[path] = state
            return str(path), missing_input(str(error))
        if file_state(path) != state:  # Written to while we read: wait for the next scan.
            return None
        if not decodes(data):
            if self.broken_since.get(path, (None,))[0] != state:  # Broken since this very write.
                self.broken_since[path] = (state, time.monotonic())
            if time.monotonic() - self.broken_since[path][1] < WATCH_GIVE_UP_SECONDS:
                return None
            self.done[path] = state
            return str(path), missing_input("not a whole image: it stayed undecodable")
        self.broken_since.pop(path, None)
        self.done[path] = state
        digest = hashlib.sha256(data).hexdigest()
        if self.digests.get(path) == digest:
            return None
        self.digests[path] = digest
        return str(path), EncodedFrame(data)


def watched_sources(folder: pathlib.Path, count: int, interval: float):
    """Image files that appear in folder after the start, or change there, once complete."""
    if not folder.is_dir():
        raise ModelError(f"--watch {folder}: no such folder")
    watch = FolderWatch(folder)
    log(f"watching {folder} for new images ({len(watch.done)} already there are skipped); Ctrl-C ends")
    number = 0
    while not count or number < count:
        time.sleep(interval or WATCH_INTERVAL_SECONDS)
        for entry in watch.scan():
            number += 1
            yield entry
            if count and number >= count:
                return
