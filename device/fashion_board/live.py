"""What the server shows: the frame on show and its result, the counters behind /healthz and /metrics,
and the captures a user labels from the page.

The classification loop only ever hands a finished frame over (`publish`, a few assignments under a
lock); everything a client needs (JPEG, JSON, the metrics text) is made on a client's thread, once
per frame shown and shared by all, so no client can slow the loop down. The loop may run at
hundreds of frames a second; the page shows at most SHOWN_FPS of them, the same ones to every client.
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

from . import capture

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)  # Seconds per frame.
FPS_WINDOW_SECONDS = 2.0  # Frames per second are counted over this much of the recent past.
JPEG_QUALITY = 80  # For frames that were not JPEG already (PNG files, camera frames).
SHOWN_FPS = 10  # The most frames a second the page shows: every client gets the same ones, encoded once.


@dataclasses.dataclass
class Frame:
    number: int
    name: str
    image: Image.Image | None  # As decoded; None when the frame failed before decoding.
    data: bytes | None  # The file's own bytes, when the source read a file.
    pixels: np.ndarray | None  # (28, 28) uint8: what the model saw.
    result: object  # stream.Result, its predictions best first.
    at: float = dataclasses.field(default_factory=time.monotonic)
    encoded: dict = dataclasses.field(default_factory=dict)  # Made on demand, once: jpeg, event, png.


def escape_label(text: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LiveState:
    """The latest frame, counters and captures, shared by the loop's thread and the clients' threads."""

    def __init__(self, labels: list, runtime: str, model_sha256: str, captures: pathlib.Path):
        self.labels, self.runtime, self.model_sha256, self.captures = labels, runtime, model_sha256, captures
        self.changed = threading.Condition()
        self.frame = None  # The frame on show: the latest with an image, at most SHOWN_FPS a second.
        self.last_at = None  # When the latest frame, good or not, was classified (monotonic).
        self.started = time.monotonic()
        self.frames = self.errors = self.captured = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.per_label = collections.Counter()
        self.recent = collections.deque()  # Monotonic times of the frames in the last FPS window.
        self.closed = False
        self.encode_lock = threading.Lock()
        self.capture_numbers = itertools.count(1)  # Unique file names when two clients capture at once.

    def publish(self, frame: Frame) -> None:
        """Called by the loop for every frame; never waits for a client."""
        with self.changed:
            self.last_at = frame.at
            if frame.result.error:
                self.errors += 1
            else:
                self.count(frame)
            if frame.image is not None and (self.frame is None or frame.at - self.frame.at >= 1 / SHOWN_FPS):
                self.frame = frame
                self.changed.notify_all()

    def count(self, frame: Frame) -> None:
        seconds = frame.result.ms / 1000
        self.frames += 1
        self.latency_sum += seconds
        self.buckets[sum(seconds > bound for bound in LATENCY_BUCKETS)] += 1
        self.per_label[frame.result.predictions[0].label] += 1
        self.recent.append(frame.at)
        while self.recent and self.recent[0] < frame.at - FPS_WINDOW_SECONDS:
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

    def jpeg(self, frame: Frame) -> bytes:
        return self.cached(frame, "jpeg", encode_jpeg)

    def event(self, frame: Frame) -> bytes:
        return self.cached(frame, "event", lambda frame: json.dumps(self.describe(frame)).encode())

    def describe(self, frame: Frame) -> dict:
        """The page's view of a frame: its result, the 28x28 frame as a PNG data URL, the rates."""
        result = frame.result
        best = result.predictions[0] if result.predictions else None
        return {
            "number": frame.number, "name": frame.name, "error": result.error,
            "label": best.label if best else None, "score": round(best.score, 6) if best else None,
            "top": [[item.label, round(item.score, 6)] for item in result.predictions[:3]],
            "ms": round(result.ms, 3), "fps": round(self.fps(), 1), "frames": self.frames, "errors": self.errors,
            "seen": "data:image/png;base64," + base64.b64encode(encode_png(frame.pixels)).decode()
            if frame.pixels is not None else None,
        }

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

    def capture(self, label: str) -> dict:
        """Save the latest raw frame under captures/<label>/ with its prediction; ValueError for a
        label the model does not have, LookupError when there is no frame yet."""
        if label not in self.labels:
            raise ValueError("label must be one of the model's labels")
        frame, number = self.frame, next(self.capture_numbers)
        if frame is None:
            raise LookupError("no frame to capture yet")
        folder = self.captures / capture.folder_name(label)  # From the model's own label, never the client's text.
        folder.mkdir(parents=True, exist_ok=True)
        data, extension = raw_bytes(frame)
        stem = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}-{number:05d}"
        record = {"file": stem + extension, "label": label, "source": frame.name, "frame": frame.number,
                  "prediction": self.describe(frame)["top"], "error": frame.result.error}
        capture.write_atomically(folder / f"{stem}.json", (json.dumps(record) + "\n").encode())
        capture.write_atomically(folder / (stem + extension), data)
        with self.changed:
            self.captured += 1
        return {"saved": f"{capture.folder_name(label)}/{stem}{extension}", **record}


def raw_bytes(frame: Frame) -> tuple:
    """(bytes, extension): the file's own bytes when it was a JPEG or PNG, else the image as PNG."""
    if frame.data is not None and frame.data[:3] == b"\xff\xd8\xff":
        return frame.data, ".jpg"
    if frame.data is not None and frame.data[:8] == b"\x89PNG\r\n\x1a\n":
        return frame.data, ".png"
    buffer = io.BytesIO()
    frame.image.save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def encode_jpeg(frame: Frame) -> bytes:
    if frame.data is not None and frame.data[:3] == b"\xff\xd8\xff":
        return frame.data  # A JPEG file goes to the browser as it is: no decode, no encode.
    buffer = io.BytesIO()
    image = frame.image if frame.image.mode in ("L", "RGB") else frame.image.convert("RGB")
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
