"""What the server shows: the frames on show, kept by id for a few seconds, the counters behind
/healthz and /metrics, and the captures a user labels from the page.

The classification loop only ever hands a finished frame over (`publish`, a few assignments under a
lock); everything a client needs (the frame's picture, its 28x28 PNG, the event) is made on a client's
thread, once per frame and shared by all, so no client can slow the loop down. The loop may run at
hundreds of frames a second; the page shows at most SHOWN_FPS of them, the same ones to every client.
The last of those stay on hand (FrameRing), so that the page loads a frame's pictures by its id and
shows them with its answer, and a capture saves exactly the frame the user saw.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import itertools
import json
import os
import pathlib
import threading
import time

import numpy as np
from PIL import Image

from . import capture, preprocess

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)  # Seconds per frame.
FPS_WINDOW_SECONDS = 2.0  # Frames per second are counted over this much of the recent past.
JPEG_QUALITY = 80  # For frames the browser cannot be sent as they came (camera frames, BMP, TIFF...).
SHOWN_FPS = 10  # The most frames a second the page shows: every client gets the same ones, encoded once.
RING_FRAMES = 50  # Frames shown that stay on hand for the page and for captures: 5 s at SHOWN_FPS...
RING_BYTES = 24_000_000  # ... and at most this many bytes of them (a file's bytes or a camera image's).
SHOWN_SIDE = 1280  # A frame decoded for the browser is shrunk to fit this square first.


class NoSuchFrame(LookupError):
    """A frame id this run has not shown (yet): HTTP 404."""


class FrameGone(LookupError):
    """A frame id that was shown but is no longer held: HTTP 410."""


@dataclasses.dataclass
class Frame:
    record: dict  # Its one record (record.py), as --json printed it.
    image: Image.Image | None  # A camera frame as it came; None for a file, whose own bytes are in data.
    data: bytes | None  # The file's own bytes, when the source read a file.
    pixels: np.ndarray | None  # (28, 28) uint8: what the model saw; None when the frame failed.
    at: float = dataclasses.field(default_factory=time.monotonic)
    encoded: dict = dataclasses.field(default_factory=dict)  # Made on demand, once: picture, event, seen.

    @classmethod
    def shown(cls, line: dict, load, image: Image.Image | None, pixels: np.ndarray | None) -> Frame | None:
        """What the page can show of a frame: None when it did not decode. A file's frame keeps its
        bytes only (the loader's `data`), a camera's its image."""
        if image is None:
            return None
        data = getattr(load, "data", None)
        return cls(line, image if data is None else None, data, pixels)

    @property
    def number(self) -> int:
        return self.record["frame"]

    def held_bytes(self) -> int:
        if self.data is not None:
            return len(self.data)
        return self.image.width * self.image.height * len(self.image.getbands())


class FrameRing:
    """The last frames shown, by id, within a count and a byte bound; the newest always stays."""

    def __init__(self, max_frames: int = RING_FRAMES, max_bytes: int = RING_BYTES):
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.frames = collections.OrderedDict()  # id -> Frame, oldest first.
        self.bytes = 0
        self.newest = 0  # The id of the newest frame ever added.

    def add(self, frame: Frame) -> None:
        self.frames[frame.number] = frame
        self.bytes += frame.held_bytes()
        self.newest = frame.number
        while len(self.frames) > 1 and (len(self.frames) > self.max_frames or self.bytes > self.max_bytes):
            self.bytes -= self.frames.popitem(last=False)[1].held_bytes()

    def get(self, number: int) -> Frame:
        if number in self.frames:
            return self.frames[number]
        if 0 < number <= self.newest:
            raise FrameGone(f"frame {number} is no longer on the board (it keeps the frames of the last "
                            f"few seconds, from frame {next(iter(self.frames))})")
        raise NoSuchFrame(f"frame {number} has not been shown")


def escape_label(text: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LiveState:
    """The frames on show, counters and captures, shared by the loop's thread and the clients' threads."""

    def __init__(self, labels: list, runtime: str, model_sha256: str, captures: pathlib.Path):
        self.labels, self.runtime, self.model_sha256, self.captures = labels, runtime, model_sha256, captures
        self.changed = threading.Condition()
        self.frame = None  # The frame on show: the latest with a picture, at most SHOWN_FPS a second.
        self.ring = FrameRing()
        self.last_at = None  # When the latest frame, good or not, was classified (monotonic).
        self.started = time.monotonic()
        self.frames = self.errors = self.captured = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.per_label = collections.Counter()
        self.recent = collections.deque()  # Monotonic times of the frames in the last FPS window.
        self.closed = False
        self.encode_lock = threading.RLock()  # An event is made of the pictures, cached too.
        self.capture_numbers = itertools.count(1)  # Unique file names when two clients capture at once.

    def publish(self, line: dict, frame: Frame | None) -> None:
        """Called by the loop for every frame, with its record and, when it has a picture, the Frame;
        never waits for a client."""
        now = time.monotonic()
        with self.changed:
            self.last_at = now
            if "error" in line:
                self.errors += 1
            else:
                self.count(line, now)
            if frame is not None and (self.frame is None or frame.at - self.frame.at >= 1 / SHOWN_FPS):
                self.ring.add(frame)
                self.frame = frame
                self.changed.notify_all()

    def count(self, line: dict, now: float) -> None:
        seconds = line["ms"] / 1000
        self.frames += 1
        self.latency_sum += seconds
        self.buckets[sum(seconds > bound for bound in LATENCY_BUCKETS)] += 1
        self.per_label[line["label"]] += 1
        self.recent.append(now)
        while self.recent and self.recent[0] < now - FPS_WINDOW_SECONDS:
            self.recent.popleft()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_newer(self, number: int, timeout: float):
        """The latest frame once it is newer than `number`; None on timeout or when closing."""
        with self.changed:
            self.changed.wait_for(lambda: self.closed or (self.frame and self.frame.number > number), timeout)
            if self.closed or not self.frame or self.frame.number <= number:
                return None
            return self.frame

    def frame_by_id(self, number: int) -> Frame:
        """A frame shown in the last few seconds; FrameGone or NoSuchFrame otherwise."""
        with self.changed:
            return self.ring.get(number)

    def fps(self) -> float:
        with self.changed:
            if len(self.recent) < 2:
                return 0.0
            span = max(self.recent[-1] - self.recent[0], time.monotonic() - self.recent[-1])
            return (len(self.recent) - 1) / span if span > 0 else 0.0

    def age(self) -> float | None:
        """Seconds since the last frame; None before the first."""
        return None if self.last_at is None else time.monotonic() - self.last_at

    def cached(self, frame: Frame, kind: str, make) -> bytes:
        with self.encode_lock:  # One client encodes a frame; the others wait for it and share it.
            if kind not in frame.encoded:
                frame.encoded[kind] = make(frame)
            return frame.encoded[kind]

    def picture(self, frame: Frame) -> tuple:
        """(content type, bytes) of the frame for the page: JPEG, or a PNG file as it came."""
        return self.cached(frame, "picture", lambda frame: browser_picture(frame, png_too=True))

    def jpeg(self, frame: Frame) -> bytes:
        """The frame as JPEG, for /stream.mjpg."""
        return self.cached(frame, "jpeg", lambda frame: browser_picture(frame, png_too=False))[1]

    def seen(self, frame: Frame) -> bytes:
        """The 28x28 frame the model saw, as PNG; NoSuchFrame when the frame failed before that."""
        if frame.pixels is None:
            raise NoSuchFrame(f"frame {frame.number} has no 28x28 view: {frame.record['error']}")
        return self.cached(frame, "seen", lambda frame: encode_png(frame.pixels))

    def event(self, frame: Frame) -> bytes:
        """The Server-Sent Events of a frame: its record (a message with the frame's id), its pictures
        (the frame and its 28x28 view as data URLs: the page needs no request per frame), the rates."""
        def make(frame: Frame) -> bytes:
            content_type, picture = self.picture(frame)
            pictures = {"frame": frame.number, "picture": data_url(content_type, picture),
                        "seen": None if frame.pixels is None else data_url("image/png", self.seen(frame))}
            return b"id: %d\ndata: %b\n\nevent: pictures\ndata: %b\n\nevent: rates\ndata: %b\n\n" % (
                frame.number, json.dumps(frame.record).encode(), json.dumps(pictures).encode(),
                json.dumps(self.rates()).encode())
        return self.cached(frame, "event", make)

    def rates(self) -> dict:
        return {"fps": round(self.fps(), 1), "frames": self.frames, "errors": self.errors, "captured": self.captured}

    def health(self, stale_after: float) -> tuple:
        """(healthy, JSON-ready dict): unhealthy when no frame came for stale_after seconds."""
        age = self.age()
        waited = age if age is not None else time.monotonic() - self.started
        healthy = waited <= stale_after
        return healthy, {
            "status": "ok" if healthy else "stale", "runtime": self.runtime, "model_sha256": self.model_sha256,
            "frames": self.frames, "errors": self.errors,
            "last_frame_age_s": None if age is None else round(age, 3), "stale_after_s": stale_after,
        }

    def metrics(self) -> str:
        """Prometheus' text exposition format, version 0.0.4."""
        with self.changed:
            lines = [
                "# HELP fashion_frames_total Frames classified.", "# TYPE fashion_frames_total counter",
                f"fashion_frames_total {self.frames}",
                "# HELP fashion_errors_total Frames that could not be classified.",
                "# TYPE fashion_errors_total counter", f"fashion_errors_total {self.errors}",
                "# HELP fashion_frame_seconds Decode, preprocessing and inference time per frame.",
                "# TYPE fashion_frame_seconds histogram",
            ]
            total = 0
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.buckets):
                total += count
                lines.append(f'fashion_frame_seconds_bucket{{le="{bound}"}} {total}')
            lines += [f"fashion_frame_seconds_sum {self.latency_sum:.6f}", f"fashion_frame_seconds_count {total}",
                      "# HELP fashion_predictions_total Frames by predicted class.",
                      "# TYPE fashion_predictions_total counter"]
            lines += [f'fashion_predictions_total{{label="{escape_label(label)}"}} {self.per_label[label]}'
                      for label in self.labels]
            lines += ["# HELP fashion_captures_total Frames saved with a label from the page.",
                      "# TYPE fashion_captures_total counter", f"fashion_captures_total {self.captured}"]
        age = self.age()
        lines += ["# HELP fashion_last_frame_age_seconds Seconds since the last frame (-1: none yet).",
                  "# TYPE fashion_last_frame_age_seconds gauge",
                  f"fashion_last_frame_age_seconds {-1 if age is None else round(age, 3)}"]
        return "\n".join(lines) + "\n"

    def capture(self, request: dict) -> dict:
        """Save the frame a request names, `{"label": one of the model's, "frame": its id}`, under
        captures/<label>/ with its record; ValueError for a bad request, FrameGone or NoSuchFrame for
        a frame not held. The answer: where it went, and the JSON line saved beside it."""
        label, number = capture.capture_request(request, self.labels)
        frame = self.frame_by_id(number)
        stem = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}-{next(self.capture_numbers):05d}"
        saved, line = capture.save_labelled(self.captures, label, stem, frame_bytes(frame), frame.record)
        with self.changed:
            self.captured += 1
        return {"saved": saved, **line}


def frame_bytes(frame: Frame) -> tuple:
    """(bytes, suffix) to save: a file's own bytes, exactly, or a camera frame as PNG."""
    if frame.data is not None:
        return frame.data, pathlib.PurePath(frame.record["path"]).suffix.lower() or ".img"
    buffer = io.BytesIO()
    frame.image.save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def browser_picture(frame: Frame, png_too: bool) -> tuple:
    """(content type, bytes): a JPEG file (or a PNG one, when png_too) as it came, else a JPEG made
    from the frame: a camera's image, or a file of another format decoded again on a client's thread."""
    if frame.data is not None and frame.data[:3] == b"\xff\xd8\xff":
        return "image/jpeg", frame.data
    if png_too and frame.data is not None and frame.data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png", frame.data
    image = frame.image
    if image is None:
        image = preprocess.decode(io.BytesIO(frame.data), use_draft=True)
        image.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
    buffer = io.BytesIO()
    (image if image.mode in ("L", "RGB") else image.convert("RGB")).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "image/jpeg", buffer.getvalue()


def data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
