"""The interpreter chain (tflite-runtime, ai-edge-litert, TensorFlow, then the numpy engine), the checked
model, the Classifier."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from . import manifest_check, quantization, tflite_check
from .common import SIDE, ModelError, hidden_stderr, log, one_line

CLASSIFY_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "classify.py"  # Run again to probe a model.
# The interpreters, in the order they are tried: import name -> the distribution that installs it.
INTERPRETERS = {"tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert", "tensorflow": "tensorflow"}
# The numpy engine comes last: it runs where no interpreter has a wheel (32-bit Arm, Python 3.12+), slower.
RUNTIMES = (*INTERPRETERS, "numpy")


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclasses.dataclass
class Runtime:
    name: str  # One of RUNTIMES.
    version: str
    interpreter_class: type


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
    elif name == "numpy":
        from . import numpy_engine

        module, version = numpy_engine, f"engine (numpy {np.__version__})"
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
    manifest_check.check(manifest, str(manifest_path))
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


def check_engine_allowed(manifest: dict | None, runtime: Runtime) -> None:
    """The build runs the numpy engine on every test image; a model it disagreed on is refused here."""
    record = (manifest or {}).get("numpy_engine")
    if runtime.name == "numpy" and isinstance(record, dict) and record.get("agrees") is False:
        raise ModelError(f"the build found that the numpy engine {record.get('verdict', 'disagrees')}; "
                         "install tflite-runtime or ai-edge-litert (requirements.txt) for this model")


def probe_model(model_path: pathlib.Path, runtime: Runtime) -> None:
    """Load and run an unverified model in a child process, since a corrupt one can crash ours."""
    command = [sys.executable, str(CLASSIFY_SCRIPT), "--probe-model", str(model_path),
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
    """Class names from labels.txt (or --labels), else from the manifest; when the manifest describes
    the model, the file must name its classes in its order: a reordered file would print wrong names."""
    if not labels_path.is_file():
        if manifest is not None:
            return list(manifest["labels"])
        raise ModelError(f"no labels: {labels_path} not found and no manifest beside the model")
    try:
        lines = labels_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as error:
        raise ModelError(f"{labels_path}: not readable as text ({one_line(error)})") from None
    labels = [line.strip() for line in lines if line.strip()]
    if manifest is not None and labels != manifest["labels"]:
        raise ModelError(f"{labels_path} does not list the classes of manifest.json in its order "
                         f"({', '.join(manifest['labels'])}): copy the bundle again")
    return labels


# Quantization: real = scale * (q - zero_point), so q = round(real / scale) + zero_point.


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
        # The fewest images an interpreter call runs (benchmarks may set it). A lone image as a batch
        # of one: under tflite-runtime 2.14 on x86 it takes 0.30 ms of CPU against 0.47 as a batch of two.
        self.min_batch = 1
        # (256,) of the input dtype: each pixel value 0-255 quantized once, so a frame is a lookup (or
        # none, when quantizing leaves uint8 pixels as they are).
        self.pixel_table = quantization.quantize(np.arange(256, dtype=np.float32), self.input["dtype"],
                                                 *self.input["quantization"])
        self.pixels_as_they_are = self.pixel_table.dtype == np.uint8 and bool(
            (self.pixel_table == np.arange(256)).all())
        # (256,) float32 scores of a byte output, by its bit pattern: dequantized once, so a result is a lookup.
        output_dtype = np.dtype(self.output["dtype"])
        self.score_table = (quantization.dequantize(np.arange(256, dtype=np.uint8).view(output_dtype),
                                                    *self.output["quantization"])
                            if output_dtype.itemsize == 1 and np.issubdtype(output_dtype, np.integer) else None)
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
        if len(images) <= self.batch_size:
            return self.invoke(images)
        return np.concatenate([self.invoke(images[start: start + self.batch_size])
                               for start in range(0, len(images), self.batch_size)])

    def invoke(self, images: np.ndarray) -> np.ndarray:
        """At most batch_size images, the batch filled up with copies of the first."""
        count = len(images)
        if count < self.batch_size:
            images = np.concatenate([images, images[:1].repeat(self.batch_size - count, axis=0)])
        batch = images.reshape((self.batch_size, *self.image_shape))
        if batch.dtype == np.uint8:  # The same values as quantize() element by element.
            tensor = np.ascontiguousarray(batch) if self.pixels_as_they_are else self.pixel_table[batch]
        else:
            tensor = quantization.quantize(batch.astype(np.float32), self.input["dtype"], *self.input["quantization"])
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.output["index"])[:count].reshape(count, -1)
        if self.score_table is not None:  # The same values as dequantize() element by element.
            return self.score_table[raw.view(np.uint8)]
        return quantization.dequantize(raw, *self.output["quantization"])


def top_predictions(scores: np.ndarray, labels: list, top_k: int) -> list:
    """The top_k classes of one (classes,) score row, best first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [Prediction(labels[index], int(index), float(scores[index])) for index in order]


def load_classifier(model_path: pathlib.Path, labels_path: pathlib.Path | None, runtime_name: str | None,
                    threads: int, need_manifest: bool, verbose: bool, started: float) -> tuple:
    """(classifier, runtime, manifest, load ms) for a model file; `started` is when the process began.
    The interpreter's own start-up lines are shown only when `verbose`."""
    with hidden_stderr(not verbose):
        runtime = find_runtime(runtime_name)
    imported = time.perf_counter()
    manifest = read_manifest(model_path)
    data = read_model(model_path, manifest)
    check_engine_allowed(manifest, runtime)
    tflite_check.check_model(data)  # Before any interpreter: a corrupt file can crash one.
    if manifest is None:
        if need_manifest:
            raise ModelError(f"--self-test needs manifest.json beside {model_path}")
        log(f"warning: no manifest.json describes {model_path}: its sha256 is not checked")
        probe_model(model_path, runtime)
    with hidden_stderr(not verbose):
        interpreter = make_interpreter(runtime, data, threads, model_path)
    if labels_path is not None and not labels_path.is_file():
        raise ModelError(f"--labels {labels_path}: no such file")
    labels = read_labels(labels_path or model_path.parent / "labels.txt", manifest)
    classifier = Classifier(interpreter, runtime, labels)
    loaded = time.perf_counter()
    if verbose:
        log(f"runtime {runtime.name} {runtime.version} (numpy {np.__version__}, Pillow {Image.__version__}); "
            f"startup {1000 * (loaded - started):.0f} ms: imports {1000 * (imported - started):.0f} ms, "
            f"model read, check and load {1000 * (loaded - imported):.1f} ms")
    return classifier, runtime, manifest, 1000 * (loaded - imported)


def probe(model_path: pathlib.Path, runtime_name: str | None) -> None:
    """The child side of probe_model: load the model and run it once on a blank image."""
    runtime = find_runtime(runtime_name)
    data = model_path.read_bytes()
    tflite_check.check_model(data)
    interpreter = make_interpreter(runtime, data, 1, model_path)
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(details["index"], np.zeros(details["shape"], dtype=details["dtype"]))
    interpreter.invoke()
