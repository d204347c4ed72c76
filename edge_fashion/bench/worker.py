"""Measure one model under one runtime in a process of its own; imports nothing from edge_fashion.

`edge_fashion.bench.run` runs this file with the python of the environment that holds the runtime (the
device venv for tflite-runtime), so it needs only the standard library, numpy and the runtime.

    python worker.py probe tflite_runtime=tflite-runtime ai_edge_litert=ai-edge-litert
    python worker.py measure --runtime ai_edge_litert --model model_int8.tflite \
        --images images.u8 --invokes 1000 --warmup 100 --batch-size 256 --batches 20
    BENCH_PEAK_RSS_FILE=rss.txt python worker.py script classify.py --json photo.png

`probe` and `measure` print one JSON object on stdout. `script` runs a script as `__main__` and, at
exit, writes the process's peak RSS in bytes to $BENCH_PEAK_RSS_FILE.
"""

import argparse
import atexit
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import runpy
import sys
import time

# Run as a script, this file's folder (edge_fashion/, with config.py, data.py...) would come first
# on sys.path and could shadow what a runtime or a measured script imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

IMAGE_BYTES = 28 * 28


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    VmHWM belongs to the process's own address space; ru_maxrss would also count the parent's
    memory when the child was started with vfork, as Python's subprocess does.
    """
    try:
        with open("/proc/self/status") as status:
            match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024  # Bytes on macOS, KiB on Linux.


def probe(runtimes: list[str]) -> dict:
    """Which of `runtimes` ('import_name=distribution', the board's runtimes.INTERPRETERS) this python
    can import, with versions; nothing is imported, so it is fast."""
    found = {}
    for module, distribution in (runtime.split("=", 1) for runtime in runtimes):
        if importlib.util.find_spec(module) is not None:
            found[module] = importlib.metadata.version(distribution)
    numpy_version = importlib.metadata.version("numpy") if importlib.util.find_spec("numpy") else None
    return {"python": platform.python_version(), "executable": sys.executable,
            "numpy": numpy_version, "runtimes": found}


def as_input(images, detail, numpy):
    """Raw pixels (N, 28, 28) uint8 as the input tensor wants them: q = round(x / scale) + zero_point."""
    dtype = numpy.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not numpy.issubdtype(dtype, numpy.integer):
        return images.astype(dtype)
    if scale == 0:
        return images.astype(dtype)
    limits = numpy.iinfo(dtype)
    quantized = numpy.round(images.astype(numpy.float64) / scale) + zero_point
    return numpy.clip(quantized, limits.min, limits.max).astype(dtype)


class TfliteRunner:
    """One interpreter with the runtime's default options, resized once from single images to batches."""

    def __init__(self, runtime: str, model_path: str):
        if runtime == "tensorflow":
            module = importlib.import_module("tensorflow").lite  # The package folder tensorflow/lite is not the API.
        else:
            module = importlib.import_module(runtime + ".interpreter")
        with open(model_path, "rb") as handle:
            content = handle.read()  # model_content, not model_path: a file changed while mmapped gives SIGBUS.
        self.interpreter = module.Interpreter(model_content=content)
        self.resize(1)

    def resize(self, batch_size: int) -> None:
        detail = self.interpreter.get_input_details()[0]
        self.interpreter.resize_tensor_input(detail["index"], [batch_size, 28, 28])
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def prepare(self, images, numpy):
        return as_input(images, self.input, numpy)

    def run(self, batch):
        """(B, 28, 28) prepared input -> (B, 10) raw output; B must be the size last resized to."""
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)


class KerasRunner:
    """The Keras model through `predict_on_batch`, Keras' fastest call for one small batch here."""

    def __init__(self, model_path: str):
        import keras

        self.model = keras.saving.load_model(model_path)

    def resize(self, batch_size: int) -> None:
        pass

    def prepare(self, images, numpy):
        return images.astype(numpy.float32)

    def run(self, batch):
        return self.model.predict_on_batch(batch)



def single_image_latencies(runner, prepared, invokes: int, warmup: int, numpy) -> tuple[list[float], list[int]]:
    """Microseconds of each timed set-input, invoke and read-output of one image, after `warmup` untimed.

    Also returns the top-1 class of each prepared image, so the parent can check the model computes.
    """
    runner.resize(1)
    singles = [prepared[index:index + 1] for index in range(len(prepared))]
    top1 = [int(numpy.argmax(runner.run(single))) for single in singles]
    latencies = []
    for count in range(warmup + invokes):
        single = singles[count % len(singles)]
        started = time.perf_counter_ns()
        runner.run(single)
        if count >= warmup:
            latencies.append((time.perf_counter_ns() - started) / 1000)
    return latencies, top1


def batched_images_per_second(runner, prepared, batch_size: int, batches: int, numpy) -> float:
    """Images per second through batches of `batch_size` (the test images repeated), after one untimed."""
    runner.resize(batch_size)
    batch = numpy.resize(prepared, (batch_size,) + prepared.shape[1:])
    runner.run(batch)
    started = time.perf_counter()
    for _ in range(batches):
        runner.run(batch)
    return batch_size * batches / (time.perf_counter() - started)


def measure(arguments) -> dict:
    started = time.perf_counter()
    import numpy

    if arguments.model.endswith(".keras"):
        runner = KerasRunner(arguments.model)
    else:
        runner = TfliteRunner(arguments.runtime, arguments.model)
    loaded = time.perf_counter()
    with open(arguments.images, "rb") as handle:
        raw = handle.read()
    images = numpy.frombuffer(raw, numpy.uint8).reshape(-1, 28, 28)  # (N, 28, 28) raw pixels.
    prepared = runner.prepare(images, numpy)
    runner.resize(1)
    runner.run(prepared[:1])
    first_result_at = time.time()
    latencies, top1 = single_image_latencies(runner, prepared, arguments.invokes, arguments.warmup, numpy)
    images_per_second = batched_images_per_second(runner, prepared, arguments.batch_size, arguments.batches, numpy)
    return {
        "runtime": arguments.runtime,
        "python": platform.python_version(), "numpy": numpy.__version__,
        "import_and_load_seconds": loaded - started, "first_result_at": first_result_at,
        "latencies_us": latencies, "top1": top1,
        "batch_size": arguments.batch_size, "images_per_second": images_per_second,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def run_script(path: str, arguments: list[str]) -> None:
    """Run `path` as `__main__` with `arguments`, as `python path arguments` would, and record the peak RSS."""
    report_file = os.environ.get("BENCH_PEAK_RSS_FILE")

    def report():
        if report_file:
            with open(report_file, "w") as handle:
                handle.write(str(peak_rss_bytes()))

    atexit.register(report)
    sys.argv = [path] + arguments
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    runpy.run_path(path, run_name="__main__")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("probe").add_argument("runtimes", nargs="+", help="import_name=distribution")
    measuring = commands.add_parser("measure")
    measuring.add_argument("--runtime", required=True, help="an import name, as probe gave it")
    measuring.add_argument("--model", required=True, help=".tflite, or .keras (needs --runtime tensorflow)")
    measuring.add_argument("--images", required=True, help="raw 28x28 uint8 images, back to back")
    measuring.add_argument("--invokes", type=int, default=1000)
    measuring.add_argument("--warmup", type=int, default=100)
    measuring.add_argument("--batch-size", type=int, default=256)
    measuring.add_argument("--batches", type=int, default=20)
    return parser.parse_args(argv)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "script":
        run_script(sys.argv[2], sys.argv[3:])
        return
    arguments = parse_arguments(sys.argv[1:])
    result = probe(arguments.runtimes) if arguments.command == "probe" else measure(arguments)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
