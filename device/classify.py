"""Classify garments with the Fashion-MNIST int8 model beside this script, on a board or a PC.

Usage (paste one):
    python3 classify.py photo.jpg frames/ --top-k 3
    python3 classify.py --camera --count 20 --interval 0.5
    python3 classify.py --watch incoming/ --json
    python3 classify.py --self-test

Inputs are image files, folders (searched recursively by image extension), `-` for one image on
standard input, `--camera` (Picamera2, else OpenCV) or `--watch DIR` (new files in a folder). Each
image becomes a 28x28 frame in the data set's form (light garment on black, longest side 28) before
the model sees it; `--save-preprocessed DIR` writes those frames.

Output: one line per image, `path<TAB>label score<TAB>ms`, then a summary line. With `--json`, one
JSON object per line instead; this schema is stable:
    {"path": str, "label": str, "index": int, "score": float,
     "top_k": [[label, score], ...], "unsure": bool, "ms": float}
    {"path": str, "error": str}
    {"summary": {"count": int, "errors": int, "ms_mean": float|null, "ms_p50": float|null,
                 "ms_p95": float|null, "fps": float|null, "runtime": str}}
    {"self_test": {"passed": bool, "cases": int, "failures": [str, ...],
                   "max_difference": float, "runtime": str, "load_ms": float, "inference_ms": float}}
`ms` is the image's own decode and preprocessing time plus its share of its batch's inference.
Exit status: 0 when every input was classified (or the self-test passed), 1 when any input
failed (or the self-test failed), 2 for a usage, model or runtime error.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # The startup time reported by --verbose counts from here.

import argparse
import base64
import dataclasses
import hashlib
import importlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
RUNTIMES = ("tflite_runtime", "ai_edge_litert", "tensorflow")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
MAX_IMAGE_PIXELS = 50_000_000  # Larger images are refused as decompression bombs.
MAX_STDIN_BYTES = 200_000_000
MAX_CAMERA_FAILURES = 5
SIDE = 28  # The model's input is SIDE x SIDE grayscale.
WORK_SIDE = 4 * SIDE  # Photos are analysed at this size: fast, and fine enough to crop well.
DARK_BORDER = 32  # A border whose median is at most this is a dark background, as in the data set.


class ModelError(ValueError):
    """The model, its manifest, its labels or the runtime cannot be used."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclasses.dataclass
class Result:
    path: str
    predictions: list  # Prediction, best first; empty when error is set.
    ms: float = 0.0
    error: str = ""


@dataclasses.dataclass
class Runtime:
    name: str  # One of RUNTIMES.
    version: str
    interpreter_class: type


# Runtime and model.


def import_runtime(name: str) -> Runtime:
    """Import one interpreter module; ImportError when it is missing or unusable here."""
    if name == "tflite_runtime":
        module = importlib.import_module("tflite_runtime.interpreter")
        version = importlib.import_module("tflite_runtime").__version__
        if int(np.__version__.split(".")[0]) >= 2:  # Its interpreter fails with SystemError then.
            raise ImportError(f"tflite_runtime {version} needs numpy<2, found numpy {np.__version__}")
    elif name == "ai_edge_litert":
        module = importlib.import_module("ai_edge_litert.interpreter")
        version = getattr(importlib.import_module("ai_edge_litert"), "__version__", "?")
    else:
        tensorflow = importlib.import_module("tensorflow")
        module, version = tensorflow.lite, tensorflow.__version__
    return Runtime(name, version, module.Interpreter)


def find_runtime(forced: str | None) -> Runtime:
    """The forced runtime, else the first of RUNTIMES that imports."""
    reasons = []
    for name in [forced] if forced else RUNTIMES:
        try:
            return import_runtime(name)
        except ImportError as error:
            reasons.append(f"{name}: {error}")
    raise ModelError(
        "no TFLite interpreter could be imported (" + "; ".join(reasons) + "); "
        "see requirements.txt: pip install -r requirements.txt"
    )


def read_manifest(model_path: pathlib.Path) -> dict | None:
    """The manifest.json beside the model when it describes this model file, else None."""
    manifest_path = model_path.parent / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{manifest_path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != 1 \
            or not isinstance(manifest.get("model"), dict):
        raise ModelError(f"{manifest_path}: not a format_version 1 manifest")
    if manifest["model"].get("file") != model_path.name:
        return None
    return manifest


def read_model(model_path: pathlib.Path, manifest: dict | None) -> bytes:
    """The model's bytes, checked against the manifest's sha256 when there is one."""
    try:
        data = model_path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read the model: {error.strerror}: {model_path}") from None
    if manifest is not None:
        expected = manifest["model"].get("sha256", "")
        if hashlib.sha256(data).hexdigest() != expected:
            raise ModelError(
                f"{model_path}: sha256 does not match manifest.json ({len(data)} bytes, "
                f"expected {manifest['model'].get('size_bytes', '?')}): the file is truncated or "
                "altered; copy the bundle again"
            )
    return data


def probe_model(model_path: pathlib.Path, runtime: Runtime) -> None:
    """Load and run an unverified model in a child process, since a corrupt one can crash ours."""
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--probe-model", str(model_path),
               "--runtime", runtime.name]
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise ModelError(f"{model_path}: the interpreter crashed on this model ({name}): it is corrupt")
    if child.returncode != 0:
        lines = [line for line in child.stderr.splitlines() if line.strip()]
        raise ModelError(lines[-1] if lines else f"{model_path}: the model could not be loaded")


def make_interpreter(runtime: Runtime, data: bytes, threads: int, source: pathlib.Path):
    """An interpreter on the model's bytes (never its path: a file cut while mapped gives SIGBUS)."""
    try:
        interpreter = runtime.interpreter_class(model_content=data, num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"{source}: not a usable TFLite model ({one_line(error)})") from None
    return interpreter


def read_labels(labels_path: pathlib.Path, manifest: dict | None) -> list:
    """Class names from labels.txt (or --labels), else from the manifest."""
    if labels_path.is_file():
        lines = labels_path.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    if manifest is not None and manifest.get("labels"):
        return list(manifest["labels"])
    raise ModelError(f"no labels: {labels_path} not found and no manifest beside the model")


# Quantization: real = scale * (q - zero_point), so q = round(real / scale) + zero_point.


def quantize(values: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Real values to a tensor of dtype, from the tensor's own scale and zero point."""
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    if scale:
        values = np.round(values / scale) + zero_point
    limits = np.iinfo(dtype)
    return np.clip(values, limits.min, limits.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A tensor of any dtype to real values (float32)."""
    if not np.issubdtype(values.dtype, np.integer) or not scale:
        return values.astype(np.float32)
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)


class Classifier:
    """One interpreter whose tensors are resized and allocated only when the batch size changes."""

    def __init__(self, interpreter, runtime: Runtime, labels: list):
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]
        self.output = interpreter.get_output_details()[0]
        self.image_shape = tuple(int(side) for side in self.input["shape"][1:])
        self.batch_size = int(self.input["shape"][0])
        # A model saved with a fixed batch size may reshape to constant shapes inside, and
        # tflite_runtime crashes on the next call after a failed resize: never try.
        self.fixed_batch = int(self.input.get("shape_signature", self.input["shape"])[0]) != -1
        # tflite_runtime's single-row int8 kernel is ~10x slower than its batch-of-2 one.
        self.min_batch = 2 if runtime.name == "tflite_runtime" else 1
        self.labels = labels
        if int(np.prod(self.image_shape)) != SIDE * SIDE:
            raise ModelError(f"the model's input is {list(self.input['shape'])}, not a 28x28 image")
        if int(self.output["shape"][-1]) != len(labels):
            raise ModelError(f"the model has {self.output['shape'][-1]} classes but {len(labels)} labels")

    def resize(self, batch_size: int) -> None:
        """Resize the input to batch_size images, unless the model's batch size is fixed."""
        if batch_size != self.batch_size and not self.fixed_batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch_size, *self.image_shape])
            self.interpreter.allocate_tensors()
            self.batch_size = batch_size

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 pixels to (N, classes) float32 scores."""
        self.resize(max(len(images), self.min_batch))
        return np.concatenate([self.invoke(images[start: start + self.batch_size])
                               for start in range(0, len(images), self.batch_size)])

    def invoke(self, images: np.ndarray) -> np.ndarray:
        """At most batch_size images, the batch filled up with copies of the first."""
        count = len(images)
        batch = np.concatenate([images, images[:1].repeat(self.batch_size - count, axis=0)])
        scale, zero_point = self.input["quantization"]
        tensor = quantize(batch.reshape((self.batch_size, *self.image_shape)).astype(np.float32),
                          self.input["dtype"], scale, zero_point)
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.output["index"])[:count]
        return dequantize(raw.reshape(count, -1), *self.output["quantization"])


def top_predictions(scores: np.ndarray, labels: list, top_k: int) -> list:
    """The top_k classes of one (classes,) score row, best first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [Prediction(labels[index], int(index), float(scores[index])) for index in order]


# Images: decode, convert to grayscale, bring into the data set's form.


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 200 else text[:197] + "..."


def decode(source, use_draft: bool) -> Image.Image:
    """Open and decode a path or a file object, JPEGs at reduced size when allowed."""
    try:
        image = Image.open(source)
    except Image.UnidentifiedImageError:
        raise ValueError("cannot identify the image format: empty, damaged or not an image") from None
    with image:
        if use_draft and image.format == "JPEG":
            image.draft("L", (WORK_SIDE, WORK_SIDE))  # Decodes at 1/2 to 1/8 scale: ~10x faster.
        image.load()
        return ImageOps.exif_transpose(image)


def crop_roi(image: Image.Image, roi: tuple | None) -> Image.Image:
    if roi is None:
        return image
    left, top, width, height = roi
    if left + width > image.width or top + height > image.height:
        raise ValueError(f"--roi {left},{top},{width},{height} lies outside the {image.width}x{image.height} image")
    return image.crop((left, top, left + width, top + height))


def flatten_alpha(image: Image.Image) -> np.ndarray:
    """Grayscale with transparent parts set to the background that contrasts with the opaque ones."""
    gray, alpha = image.convert("LA").split()
    gray_values = np.asarray(gray, dtype=np.float32)
    opacity = np.asarray(alpha, dtype=np.float32) / 255
    opaque = gray_values[opacity > 0.5]
    background = 0.0 if opaque.size and opaque.mean() > 127 else 255.0
    return np.round(gray_values * opacity + background * (1 - opacity)).astype(np.uint8)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to (H, W) uint8 luminance; 8-bit grayscale is returned as it is."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I"):  # 16-bit (I;16*) and 32-bit integer: treat as 16-bit samples.
        return np.clip(np.round(np.asarray(image, dtype=np.float64) / 257), 0, 255).astype(np.uint8)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = values * 255 if values.size and np.nanmax(values) <= 1 else values
        return np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8)
    if mode == "P" and "transparency" in image.info or mode in ("PA", "RGBA", "LA", "La", "RGBa"):
        return flatten_alpha(image.convert("RGBA"))
    if mode == "CMYK":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an (H, W) array, flattened."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def has_light_background(gray: np.ndarray, background: np.ndarray | None = None) -> bool:
    """True for a photo's light background: a light border, and the garment darker than it.

    The data set's images have a dark border. Of the pixels that differ clearly from the fitted
    background, more differ by being darker: faint shading (vignetting) is ignored by the margin.
    """
    border = border_pixels(gray)
    if float(np.median(border)) <= DARK_BORDER:
        return False
    if background is None:
        background = fit_background(gray.astype(np.float32))
    difference = gray.astype(np.float32) - background
    margin = max(24.0, 3 * float(np.median(np.abs(border_pixels(difference)))))
    return float(np.clip(-difference - margin, 0, None).sum()) > float(np.clip(difference - margin, 0, None).sum())


def fit_background(gray: np.ndarray) -> np.ndarray:
    """A plane a + b*x + c*y fitted to the border, robust to a garment touching it: (H, W) float32."""
    height, width = gray.shape
    if min(height, width) < 8:
        return np.full(gray.shape, float(np.median(border_pixels(gray))), dtype=np.float32)
    columns = np.arange(width, dtype=np.float32)[np.newaxis, :]  # (1, W), broadcast below.
    rows = np.arange(height, dtype=np.float32)[:, np.newaxis]  # (H, 1)
    border_columns = border_pixels(np.broadcast_to(columns, (height, width)))
    border_rows = border_pixels(np.broadcast_to(rows, (height, width)))
    design = np.stack([np.ones(2 * (height + width)), border_columns, border_rows], axis=1)
    values = border_pixels(gray)
    keep = np.ones(len(values), dtype=bool)
    for _ in range(3):  # Refit without the border pixels the garment covers.
        coefficients = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = np.abs(values - design @ coefficients)
        keep = residual <= max(8.0, 2.5 * float(np.median(residual)))
    return (coefficients[0] + coefficients[1] * columns + coefficients[2] * rows).astype(np.float32)


def garment_signal(gray: np.ndarray) -> np.ndarray:
    """How much each pixel differs from the background, 0 (background) to 255: (H, W) float."""
    background = fit_background(gray)
    if has_light_background(gray, background):
        # A photo: pixel = light * reflectance, so dividing by the background evens out the lighting.
        signal = 255 * (1 - gray / np.maximum(background, 1))
    else:
        signal = gray - background
    noise = min(128.0, float(np.percentile(np.abs(border_pixels(signal)), 90)) + 4)
    return np.clip((signal - noise) * 255 / (255 - noise), 0, 255)


def garment_box(signal: np.ndarray) -> tuple:
    """(top, bottom, left, right) around the garment, ignoring specks; ValueError when blank."""
    peak = float(signal.max()) if signal.size else 0.0
    if peak < 24:
        raise ValueError("no garment found: the frame is blank or uniform")
    mask = signal > 0.2 * peak
    rows = np.flatnonzero(mask.sum(axis=1) >= max(1, 0.02 * mask.shape[1]))
    columns = np.flatnonzero(mask.sum(axis=0) >= max(1, 0.02 * mask.shape[0]))
    if not rows.size or not columns.size:
        raise ValueError("no garment found: only specks differ from the background")
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def centre_on_canvas(garment: np.ndarray) -> np.ndarray:
    """Resize so the longest side is 28, keep the aspect ratio, centre on black: (28, 28) uint8."""
    height, width = garment.shape
    factor = SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = Image.fromarray(garment.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    pixels = np.clip(np.asarray(resized), 0, None)
    pixels = pixels * (255 / pixels.max()) if pixels.max() > 0 else pixels
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    canvas[top: top + size[1], left: left + size[0]] = np.round(pixels).astype(np.uint8)
    return canvas


def to_dataset_form(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grayscale to the model's (28, 28) uint8: light garment, trimmed, centred on black."""
    if gray.shape == (SIDE, SIDE) and not has_light_background(gray):
        return gray  # Already in the data set's form: pass it through, bit for bit.
    image = Image.fromarray(gray)
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    signal = garment_signal(np.asarray(image, dtype=np.float32))
    top, bottom, left, right = garment_box(signal)
    return centre_on_canvas(signal[top:bottom, left:right])


def preprocess(image: Image.Image, roi: tuple | None) -> np.ndarray:
    """A decoded image to the model's (28, 28) uint8 input."""
    return to_dataset_form(to_grayscale(crop_roi(image, roi)))


# Sources: files, folders, stdin, camera, a watched folder. Each yields (name, image loader).


def image_files(folder: pathlib.Path) -> list:
    found = []
    for root, folders, files in os.walk(folder):
        folders.sort()
        found += [pathlib.Path(root, name) for name in sorted(files)
                  if pathlib.Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def read_stdin() -> io.BytesIO:
    data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
    if not data:
        raise ValueError("standard input is empty")
    if len(data) > MAX_STDIN_BYTES:
        raise ValueError(f"standard input holds more than {MAX_STDIN_BYTES} bytes")
    return io.BytesIO(data)


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
                yield str(file), lambda use_draft, file=file: decode(file, use_draft)
        elif path.exists():
            yield name, lambda use_draft, path=path: decode(path, use_draft)
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


# Classifying a stream of sources in batches, and reporting.


@dataclasses.dataclass
class Options:
    top_k: int
    threshold: float
    roi: tuple | None
    save_dir: pathlib.Path | None
    as_json: bool
    verbose: bool
    batch_size: int


def prepare(name: str, load, options: Options, number: int) -> tuple:
    """(pixels or None, error, milliseconds) for one source; errors stay with their source."""
    started = time.perf_counter()
    try:
        image = load(options.roi is None)
        decoded = time.perf_counter()
        pixels = preprocess(image, options.roi)
    except Exception as error:  # Pillow raises many types on malformed files: fail this file only.
        return None, one_line(error), 1000 * (time.perf_counter() - started)
    finished = time.perf_counter()
    if options.verbose:
        log(f"{name}: decode {1000 * (decoded - started):.2f} ms, preprocess {1000 * (finished - decoded):.2f} ms")
    if options.save_dir is not None:
        stem = pathlib.Path(name).stem.replace(":", "_") or "stdin"
        Image.fromarray(pixels).save(options.save_dir / f"{number:05d}_{stem}.png")
    return pixels, "", 1000 * (finished - started)


def classify_batch(batch: list, classifier: Classifier, options: Options) -> list:
    """Results for [(name, pixels or None, error, ms)], one interpreter call for all good images."""
    good = [entry for entry in batch if entry[1] is not None]
    share = 0.0
    if good:
        started = time.perf_counter()
        scores = classifier.scores(np.stack([entry[1] for entry in good]))
        share = 1000 * (time.perf_counter() - started) / len(good)
        if options.verbose:
            log(f"inference {share * len(good):.2f} ms for a batch of {len(good)}")
    rows = iter(scores if good else [])
    results = []
    for name, pixels, error, ms in batch:
        if pixels is None:
            results.append(Result(name, [], ms, error))
        else:
            predictions = top_predictions(next(rows), classifier.labels, options.top_k)
            results.append(Result(name, predictions, ms + share))
    return results


def format_result(result: Result, options: Options) -> str:
    if result.error:
        if options.as_json:
            return json.dumps({"path": result.path, "error": result.error})
        return f"{result.path}\terror: {result.error}"
    best = result.predictions[0]
    unsure = best.score < options.threshold
    if options.as_json:
        return json.dumps({
            "path": result.path, "label": best.label, "index": best.index, "score": round(best.score, 6),
            "top_k": [[item.label, round(item.score, 6)] for item in result.predictions],
            "unsure": unsure, "ms": round(result.ms, 3),
        })
    classes = ", ".join(f"{item.label} {item.score:.2f}" for item in result.predictions)
    return f"{result.path}\t{'unsure: ' if unsure else ''}{classes}\t{result.ms:.2f} ms"


def latency_summary(milliseconds: list, errors: int, seconds: float, runtime: Runtime) -> dict:
    """Count, errors, mean/p50/p95 latency in ms and frames per second."""
    values = np.asarray(milliseconds, dtype=np.float64)
    has_values = values.size > 0

    def statistic(value: float):
        return round(float(value), 3) if has_values else None
    return {
        "count": int(values.size), "errors": errors,
        "ms_mean": statistic(values.mean() if has_values else 0),
        "ms_p50": statistic(np.percentile(values, 50) if has_values else 0),
        "ms_p95": statistic(np.percentile(values, 95) if has_values else 0),
        "fps": round(values.size / seconds, 1) if has_values and seconds > 0 else None,
        "runtime": f"{runtime.name} {runtime.version}",
    }


def format_summary(summary: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps({"summary": summary})
    text = f"summary: {summary['count']} classified, {summary['errors']} errors"
    if summary["count"]:
        text += (f"; latency mean {summary['ms_mean']:.2f} ms, p50 {summary['ms_p50']:.2f} ms, "
                 f"p95 {summary['ms_p95']:.2f} ms; {summary['fps']:.1f} frames/s")
    return text + f"; {summary['runtime']}"


def classify_sources(sources, classifier: Classifier, options: Options, runtime: Runtime) -> dict:
    """Classify every source, printing a line each, then the summary; Ctrl-C ends early."""
    milliseconds, errors, batch, number = [], 0, [], 0
    started = time.perf_counter()

    def flush():
        nonlocal errors
        for result in classify_batch(batch, classifier, options):
            print(format_result(result, options), flush=True)
            if result.error:
                errors += 1
            else:
                milliseconds.append(result.ms)
        batch.clear()
    try:
        for name, load in sources:
            number += 1
            batch.append((name, *prepare(name, load, options, number)))
            if len(batch) >= options.batch_size:
                flush()
        flush()
    except KeyboardInterrupt:
        log("interrupted")
    summary = latency_summary(milliseconds, errors, time.perf_counter() - started, runtime)
    print(format_summary(summary, options.as_json), flush=True)
    return summary


# Self-test: the manifest's cases, classified by this board's runtime.


def check_case(case: dict, scores: np.ndarray, tolerance: float, labels: list) -> tuple:
    """(failure message or "", largest probability difference) for one self-test case."""
    expected = np.asarray(case["probabilities"], dtype=np.float32)
    difference = float(np.abs(scores - expected).max())
    top1 = int(np.argmax(scores))
    if top1 != case["top1"]:
        return f"test image {case['test_index']}: top-1 {labels[top1]}, expected {labels[case['top1']]}", difference
    if difference > tolerance:
        return f"test image {case['test_index']}: probabilities differ by {difference:.4f} > {tolerance}", difference
    return "", difference


def check_tensors(classifier: Classifier, manifest: dict) -> list:
    """Failures where the model's input or output tensor differs from what the manifest says."""
    failures = []
    for key, details in (("input", classifier.input), ("output", classifier.output)):
        expected = manifest.get(key, {})
        actual = (np.dtype(details["dtype"]).name, *details["quantization"])
        wanted = (expected.get("dtype"), expected.get("scale"), expected.get("zero_point"))
        if actual[0] != wanted[0] or not np.isclose(actual[1], wanted[1]) or actual[2] != wanted[2]:
            failures.append(f"{key} tensor is {actual}, manifest says {wanted}")
    return failures


def self_test(classifier: Classifier, manifest: dict, runtime: Runtime, load_ms: float, as_json: bool) -> bool:
    """Run the manifest's self-test cases one by one and as one batch; print PASS or FAIL."""
    test = manifest.get("self_test") or {}
    cases, tolerance = test.get("cases") or [], float(test.get("tolerance", 0))
    failures = check_tensors(classifier, manifest) + ([] if cases else ["the manifest has no self-test cases"])
    images = [np.frombuffer(base64.b64decode(case["image_b64"]), np.uint8).reshape(SIDE, SIDE) for case in cases]
    started = time.perf_counter()
    single = [classifier.scores(image[None])[0] for image in images]
    inference_ms = 1000 * (time.perf_counter() - started) / max(1, len(cases))
    batched = classifier.scores(np.stack(images)) if cases else []
    largest = 0.0
    for case, one, many in zip(cases, single, batched):
        for scores, how in ((one, "alone"), (many, "in a batch")):
            failure, difference = check_case(case, scores, tolerance, classifier.labels)
            largest = max(largest, difference)
            failures += [f"{failure} ({how})"] if failure else []
    report = {"passed": not failures, "cases": len(cases), "failures": failures, "max_difference": round(largest, 6),
              "runtime": f"{runtime.name} {runtime.version}", "load_ms": round(load_ms, 2),
              "inference_ms": round(inference_ms, 3)}
    if as_json:
        print(json.dumps({"self_test": report}))
        return not failures
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{'FAIL' if failures else 'PASS'}: {len(cases)} cases, sha256 ok, largest difference {largest:.4f} "
          f"(tolerance {tolerance}); {report['runtime']}, model load {load_ms:.1f} ms, "
          f"{inference_ms:.3f} ms per image")
    return not failures


# Command line.


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_roi(text: str) -> tuple:
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or values[2] == 0 or values[3] == 0:
        raise argparse.ArgumentTypeError("expected x,y,w,h: four whole numbers, width and height above 0")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Example: python3 classify.py photo.jpg frames/ --top-k 3")
    parser.add_argument("inputs", nargs="*", help="image files, folders, or - for one image on stdin")
    parser.add_argument("--model", type=pathlib.Path, default=HERE / "model_int8.tflite")
    parser.add_argument("--labels", type=pathlib.Path, help="default: labels.txt beside the model")
    parser.add_argument("--runtime", choices=RUNTIMES, help="force one interpreter (default: the first that imports)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=32, help="images per interpreter call")
    parser.add_argument("--top_k", "--top-k", type=int, default=1, help="print the k best classes")
    parser.add_argument("--threshold", type=float, default=0.0, help="print 'unsure' below this confidence")
    parser.add_argument("--json", action="store_true", help="JSON lines (schema in the module docstring)")
    parser.add_argument("--roi", type=parse_roi, help="crop x,y,w,h of each frame first")
    parser.add_argument("--save_preprocessed", "--save-preprocessed", type=pathlib.Path, metavar="DIR",
                        help="write the 28x28 image the model saw for each input")
    parser.add_argument("--camera", action="store_true", help="classify live camera frames")
    parser.add_argument("--camera_index", "--camera-index", type=int, default=0, help="OpenCV camera number")
    parser.add_argument("--watch", type=pathlib.Path, metavar="DIR", help="classify images as they appear in DIR")
    parser.add_argument("--count", type=int, default=0, help="stop after N frames (camera, watch; 0: never)")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between frames or folder scans")
    parser.add_argument("--self_test", "--self-test", action="store_true",
                        help="check that this runtime reproduces the manifest's results; PASS or FAIL")
    parser.add_argument("--verbose", action="store_true", help="runtime, startup and per-stage times on stderr")
    parser.add_argument("--probe_model", "--probe-model", type=pathlib.Path, help=argparse.SUPPRESS)
    return parser


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    modes = bool(arguments.inputs) + arguments.camera + (arguments.watch is not None) + arguments.self_test
    if modes != 1 and arguments.probe_model is None:
        parser.error("give image files or folders, or one of --camera, --watch DIR, --self-test")
    if arguments.top_k < 1 or arguments.batch_size < 1 or arguments.threads < 1:
        parser.error("--top-k, --batch-size and --threads must be 1 or more")
    if arguments.count < 0 or arguments.interval < 0:
        parser.error("--count and --interval must not be negative")


def load_classifier(arguments: argparse.Namespace) -> tuple:
    """(classifier, runtime, manifest, load ms) for the model the arguments name."""
    runtime = find_runtime(arguments.runtime)
    imported = time.perf_counter()
    manifest = read_manifest(arguments.model)
    data = read_model(arguments.model, manifest)
    if manifest is None:
        if arguments.self_test:
            raise ModelError(f"--self-test needs manifest.json beside {arguments.model}")
        log(f"warning: no manifest.json describes {arguments.model}: its sha256 is not checked")
        probe_model(arguments.model, runtime)
    interpreter = make_interpreter(runtime, data, arguments.threads, arguments.model)
    if arguments.labels is not None and not arguments.labels.is_file():
        raise ModelError(f"--labels {arguments.labels}: no such file")
    labels = read_labels(arguments.labels or arguments.model.parent / "labels.txt", manifest)
    classifier = Classifier(interpreter, runtime, labels)
    loaded = time.perf_counter()
    if arguments.verbose:
        log(f"runtime {runtime.name} {runtime.version} (numpy {np.__version__}, Pillow {Image.__version__}); "
            f"startup {1000 * (loaded - STARTED):.0f} ms: imports {1000 * (imported - STARTED):.0f} ms, "
            f"model read, check and load {1000 * (loaded - imported):.1f} ms")
    return classifier, runtime, manifest, 1000 * (loaded - imported)


def probe(arguments: argparse.Namespace) -> None:
    """The child side of probe_model: load the model and run it once on a blank image."""
    runtime = find_runtime(arguments.runtime)
    interpreter = make_interpreter(runtime, arguments.probe_model.read_bytes(), 1, arguments.probe_model)
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(details["index"], np.zeros(details["shape"], dtype=details["dtype"]))
    interpreter.invoke()


def configure_pillow() -> None:
    """Refuse decompression bombs instead of warning and decoding gigabytes."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    Image.preinit()  # Imports the common format plugins now, so they count as startup.


def main(argv: list | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    check_arguments(parser, arguments)
    configure_pillow()
    try:
        if arguments.probe_model is not None:
            probe(arguments)
            return 0
        classifier, runtime, manifest, load_ms = load_classifier(arguments)
        if arguments.self_test:
            return 0 if self_test(classifier, manifest, runtime, load_ms, arguments.json) else 1
        if arguments.save_preprocessed is not None:
            arguments.save_preprocessed.mkdir(parents=True, exist_ok=True)
        options = Options(arguments.top_k, arguments.threshold, arguments.roi, arguments.save_preprocessed,
                          arguments.json, arguments.verbose, arguments.batch_size)
        if arguments.camera:
            options.batch_size = 1
            sources = camera_sources(arguments.camera_index, arguments.count, arguments.interval)
        elif arguments.watch is not None:
            options.batch_size = 1
            sources = watched_sources(arguments.watch, arguments.count, arguments.interval)
        else:
            sources = file_sources(arguments.inputs)
        summary = classify_sources(sources, classifier, options, runtime)
    except BrokenPipeError:  # The reader went away (`| head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError, RuntimeError) as error:  # ModelError, files, interpreter: one line.
        log(f"classify.py: error: {one_line(error)}")
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
