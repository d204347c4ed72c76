"""`edge-fashion bench`: size, cold start, latency, throughput and peak memory of a build's models, measured here.

Every measurement runs in a child process of its own, with the python that holds the runtime
(the device venv for tflite-runtime), so each peak RSS and cold start is that runtime's alone.
"""

import base64
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

import edge_fashion
from edge_fashion import files
from edge_fashion.bench import report as bench_report
from edge_fashion.pipeline import bundle
from fashion_board import runtimes as board_runtimes

WORKER = pathlib.Path(__file__).resolve().with_name("worker.py")
DEVICE_VENV_PYTHON = pathlib.Path(__file__).resolve().parents[2] / ".cache" / "device-venv" / "bin" / "python"
RUNTIMES = tuple(board_runtimes.INTERPRETERS)  # The board's own list of interpreters, in its order.
MODEL_RUNTIMES = {"int8": RUNTIMES, "float32": RUNTIMES, "keras": ("tensorflow",)}
CHILD_TIMEOUT_SECONDS = 600  # A hung runtime fails its own row, not the whole bench.


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    # The folder `edge-fashion build --out` wrote: the three models, report.json and device/.
    build_dir: pathlib.Path = pathlib.Path("artifacts")
    # Where bench.json, bench.md and bench.png go; None: the build folder.
    out_dir: pathlib.Path | None = None
    # Timed single-image invokes per model and runtime (at least 1,000, for a steady p95), after `warmup`.
    invokes: int = 1000
    warmup: int = 100
    # Throughput: `batches` timed invokes of `batch_size` images each.
    batch_size: int = 256
    batches: int = 20
    # classify.py runs per model and runtime; the median of their times to a first result is the cold start.
    cold_starts: int = 3
    # 640x480 JPEG camera frames that each classify.py run classifies one at a time, after a 28x28 PNG.
    frames: int = 50
    # The python of an environment with tflite-runtime; None: <repo>/.cache/device-venv when it exists.
    device_python: pathlib.Path | None = None


# --quick: fewer repetitions, for a smoke test; its figures are noisier.
QUICK = {"invokes": 200, "warmup": 20, "batches": 3, "cold_starts": 1, "frames": 10}


def make_config(build_dir: pathlib.Path, quick: bool = False, **overrides) -> BenchConfig:
    """The defaults, or QUICK's, with `overrides` applied; None values leave them as they are."""
    values = {**(QUICK if quick else {}), **{key: value for key, value in overrides.items() if value is not None}}
    if values.get("invokes", 1) < 1:
        raise ValueError("--invokes must be 1 or more")
    return dataclasses.replace(BenchConfig(), build_dir=pathlib.Path(build_dir), **values)


@dataclasses.dataclass(frozen=True)
class Child:
    returncode: int
    stdout: str
    stderr: str
    started_at: float  # Wall clock (time.time()) just before the process was started.
    first_line_seconds: float  # From just before the start to its first line on stdout (or its exit).
    seconds: float  # From just before the start to its exit.


def run_child(command: list, extra_environment: dict | None = None) -> Child:
    """Run a command to its end, noting when its first line of output came; killed after the timeout."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(extra_environment or {})}
    with tempfile.TemporaryFile("w+") as errors:
        started_at, started = time.time(), time.perf_counter()
        process = subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE, stderr=errors,
                                   text=True, env=environment)
        timer = threading.Timer(CHILD_TIMEOUT_SECONDS, process.kill)
        timer.start()
        try:
            first_line = process.stdout.readline()
            first_line_seconds = time.perf_counter() - started
            rest = process.stdout.read()
            process.wait()
        finally:
            timer.cancel()
            process.stdout.close()
        seconds = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read()
    if seconds >= CHILD_TIMEOUT_SECONDS:
        stderr += f"\ntimed out after {CHILD_TIMEOUT_SECONDS} s"
    return Child(process.returncode, first_line + rest, stderr, started_at, first_line_seconds, seconds)


def error_line(child: Child) -> str:
    """Why a child failed, in one line: its last line on stderr, else its exit status."""
    lines = [line.strip() for line in child.stderr.splitlines() if line.strip()]
    if lines:
        return lines[-1][:200]
    return f"killed by signal {-child.returncode}" if child.returncode < 0 else f"exit status {child.returncode}"


# Runtimes: which python holds which.

def device_python(config: BenchConfig) -> pathlib.Path | None:
    if config.device_python is not None:
        if not pathlib.Path(config.device_python).exists():
            raise ValueError(f"--device-python {config.device_python}: no such file")
        return pathlib.Path(config.device_python)
    return DEVICE_VENV_PYTHON if DEVICE_VENV_PYTHON.exists() else None


def find_runtimes(config: BenchConfig) -> dict[str, dict | None]:
    """For each runtime, the python that can import it, its version and numpy's; None when none can.

    tflite-runtime is looked for in the device python first (it needs numpy<2), the others in this one.
    """
    host, device = pathlib.Path(sys.executable), device_python(config)
    probes = {}
    for python in filter(None, (device, host)):
        child = run_child([python, WORKER, "probe",
                           *(f"{name}={distribution}" for name, distribution in board_runtimes.INTERPRETERS.items())])
        if child.returncode != 0:
            raise ValueError(f"{python} cannot run the bench worker: {error_line(child)}")
        probes[python] = json.loads(child.stdout)
    found = {}
    for runtime in RUNTIMES:
        order = (device, host) if runtime == "tflite_runtime" else (host, device)
        holders = [python for python in order if python in probes and runtime in probes[python]["runtimes"]]
        found[runtime] = None if not holders else {
            "python": str(holders[0]), "version": probes[holders[0]]["runtimes"][runtime],
            "numpy": probes[holders[0]]["numpy"]}
    return found


# Interpreters: one model under one runtime.

def measure_interpreter(config: BenchConfig, model: str, runtime: str, holder: dict | None,
                        images_path: pathlib.Path) -> dict:
    path = config.build_dir / bench_report.MODEL_FILES[model]
    record = {"model": model, "file": path.name, "runtime": runtime, "size_bytes": path.stat().st_size}
    if holder is None:
        return {**record, "status": "not installed"}
    child = run_child([holder["python"], WORKER, "measure", "--runtime", runtime, "--model", path,
                       "--images", images_path, "--invokes", config.invokes, "--warmup", config.warmup,
                       "--batch-size", config.batch_size, "--batches", config.batches])
    if child.returncode != 0:
        return {**record, "status": "failed", "error": error_line(child)}
    measured = json.loads(child.stdout.splitlines()[-1])
    latency = bench_report.summary_stats(measured["latencies_us"])
    operations = bench_report.multiply_adds_per_image()
    return {
        **record, "status": "ok", "runtime_version": holder["version"],
        "python": holder["python"], "numpy": measured["numpy"],
        "start_to_first_result_seconds": measured["first_result_at"] - child.started_at,
        "import_and_load_seconds": measured["import_and_load_seconds"],
        "latency_us": latency, "multiply_adds_per_second": operations / (latency["p50"] / 1e6),
        "batch_size": measured["batch_size"], "images_per_second": measured["images_per_second"],
        "batched_multiply_adds_per_second": operations * measured["images_per_second"],
        "peak_rss_bytes": measured["peak_rss_bytes"], "top1": measured["top1"],
    }


# classify.py: cold start, peak RSS and camera-frame latency of the device script itself.

def run_classify(holder: dict, script: pathlib.Path, arguments: list, work: pathlib.Path) -> tuple[Child, int]:
    """Run classify.py through the worker's `script` wrapper, which reports the peak RSS at exit."""
    rss_file = work / "peak_rss"
    rss_file.unlink(missing_ok=True)
    child = run_child([holder["python"], WORKER, "script", script, *arguments],
                      {"BENCH_PEAK_RSS_FILE": str(rss_file)})
    return child, int(rss_file.read_text()) if rss_file.is_file() else 0


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def measure_classify(config: BenchConfig, model: str, runtime: str, holder: dict | None,
                     bundle_folder: pathlib.Path, inputs: dict, work: pathlib.Path) -> dict:
    """Under one runtime, `cold_starts` runs of classify.py on a 28x28 PNG then 640x480 JPEG frames.

    The cold start is the time from the process's start to its first result line (the PNG's); the
    frames are classified one at a time (classify.py classifies each image as soon as it is decoded), as
    from a camera.
    """
    record = {"model": model, "runtime": runtime}
    if holder is None:
        return {**record, "status": "not installed"}
    arguments = ["--model", bundle_folder / bench_report.MODEL_FILES[model], "--runtime", runtime, "--json",
                 inputs["png"], *[inputs["jpeg"]] * config.frames]
    cold_starts, frame_ms, peak_rss, summaries = [], [], 0, []
    for _ in range(config.cold_starts):
        child, rss = run_classify(holder, bundle_folder / "classify.py", arguments, work)
        lines = json_lines(child.stdout)
        summaries = [line["summary"] for line in lines if "summary" in line]
        if child.returncode != 0 or not summaries or summaries[0]["count"] != config.frames + 1:
            return {**record, "status": "failed", "error": error_line(child)}
        cold_starts.append(child.first_line_seconds)
        frame_ms += [line["ms"] for line in lines if line.get("path") == str(inputs["jpeg"])]
        peak_rss = max(peak_rss, rss)
    return {
        **record, "status": "ok", "runtime_version": summaries[0]["runtime"].split()[-1], "python": holder["python"],
        "cold_start_seconds": statistics.median(cold_starts), "cold_start_runs": cold_starts,
        "peak_rss_bytes": peak_rss, "frame_ms": bench_report.summary_stats(frame_ms),
    }


def float_bundle(config: BenchConfig, work: pathlib.Path) -> pathlib.Path:
    """A copy of the bundle holding the float32 model instead, its manifest's model entry rewritten to match."""
    folder = work / "float-bundle"
    shutil.copytree(config.build_dir / "device", folder)
    (folder / bundle.INT8_NAME).unlink()
    content = (config.build_dir / bench_report.MODEL_FILES["float32"]).read_bytes()
    (folder / bench_report.MODEL_FILES["float32"]).write_bytes(content)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"] = {"file": bench_report.MODEL_FILES["float32"], "sha256": files.sha256_bytes(content),
                         "size_bytes": len(content)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# Inputs: real test images from the bundle's manifest, and a camera frame made from one.

def test_images(manifest: dict) -> tuple[np.ndarray, list[int]]:
    """The manifest's self-test images, (N, 28, 28) uint8, and the build's top-1 class for each."""
    cases = manifest["self_test"]["cases"]
    if not cases:
        raise ValueError("the bundle's manifest.json has no self-test images to measure with")
    images = [np.frombuffer(base64.b64decode(case["image_b64"]), np.uint8).reshape(28, 28) for case in cases]
    return np.stack(images), [case["top1"] for case in cases]


def camera_frame(image: np.ndarray, seed: int = 0) -> Image.Image:
    """A 640x480 camera-like frame: the garment dark on a light, unevenly lit, noisy background."""
    generator = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:480, 0:640]
    background = 200 + 30 * columns / 640 - 20 * rows / 480  # (480, 640) light, lit from one side.
    garment = np.asarray(Image.fromarray(image).resize((336, 336), Image.BICUBIC), dtype=np.float64)
    frame = background.copy()
    frame[72:408, 160:496] -= garment * 0.7
    frame += generator.normal(0, 6, frame.shape)
    return Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).convert("RGB")


def write_inputs(images: np.ndarray, work: pathlib.Path) -> dict:
    paths = {"raw": work / "images.u8", "png": work / "image_28x28.png", "jpeg": work / "frame_640x480.jpg"}
    paths["raw"].write_bytes(images.tobytes())
    Image.fromarray(images[0]).save(paths["png"])
    camera_frame(images[0]).save(paths["jpeg"], quality=90)
    return paths


# The machine and the build.

def describe_machine() -> dict:
    cpu = platform.processor() or platform.machine()
    if pathlib.Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu, "cores": os.cpu_count(), "architecture": platform.machine(),
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        "system": platform.platform(terse=True), "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }


def check_build(build_dir: pathlib.Path) -> dict:
    """The bundle's manifest; ValueError when the folder is not a finished build."""
    needed = [*bench_report.MODEL_FILES.values(), "report.json", "device/manifest.json"]
    missing = [name for name in needed if not (build_dir / name).is_file()]
    if missing:
        raise ValueError(f"{build_dir}: missing {', '.join(missing)}; run `edge-fashion build --out {build_dir}` first")
    return json.loads((build_dir / "device" / "manifest.json").read_text())


# The whole bench.

def runtime_label(runtime: str, holder: dict | None) -> str:
    name = bench_report.RUNTIME_NAMES[runtime]
    return f"{name} {holder['version']}" if holder else f"{name} (not installed)"


def measure_all(config: BenchConfig, runtimes: dict, manifest: dict, work: pathlib.Path, progress) -> dict:
    images, expected_top1 = test_images(manifest)
    inputs = write_inputs(images, work)
    interpreters = []
    for model, model_runtimes in MODEL_RUNTIMES.items():
        for runtime in model_runtimes:
            progress(f"Measuring {model} under {runtime_label(runtime, runtimes[runtime])}")
            record = measure_interpreter(config, model, runtime, runtimes[runtime], inputs["raw"])
            record["images_as_built"] = sum(map(int.__eq__, record.pop("top1", []), expected_top1))
            interpreters.append(record)
    bundles = {"int8": config.build_dir / "device", "float32": float_bundle(config, work)}
    classify = []
    for model, folder in bundles.items():
        for runtime in RUNTIMES:
            progress(f"Running classify.py, {model}, under {runtime_label(runtime, runtimes[runtime])}")
            classify.append(measure_classify(config, model, runtime, runtimes[runtime], folder, inputs, work))
    return {"interpreters": interpreters, "classify": classify, "test_images": len(images)}


def run_bench(config: BenchConfig, progress=lambda message: None) -> dict:
    """Measure everything, write bench.json, bench.md and bench.png; return the result."""
    manifest = check_build(config.build_dir)
    machine = describe_machine()  # Before measuring: the load average says how busy the machine already was.
    progress("Looking for runtimes")
    runtimes = find_runtimes(config)
    with tempfile.TemporaryDirectory(prefix="edge-fashion-bench-") as work:
        measured = measure_all(config, runtimes, manifest, pathlib.Path(work), progress)
    report = json.loads((config.build_dir / "report.json").read_text())
    result = {
        "bench_format": 1, "created_by": f"edge-fashion {edge_fashion.__version__}",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_dir": str(config.build_dir), "machine": machine,
        "settings": {key: value for key, value in dataclasses.asdict(config).items()
                     if key not in ("build_dir", "out_dir", "device_python")},
        "runtimes": runtimes,
        "sizes": {name: (config.build_dir / name).stat().st_size for name in bench_report.MODEL_FILES.values()},
        "floor": {"layers": list(bench_report.MODEL_LAYERS),
                  "multiply_adds_per_image": bench_report.multiply_adds_per_image()},
        **measured,
        "build": bench_report.build_timings(report),
        "load_average_at_end": os.getloadavg()[0],
    }
    result["targets"] = bench_report.targets(result)
    write_outputs(result, config.out_dir or config.build_dir)
    return result


def write_outputs(result: dict, out_dir: pathlib.Path) -> None:
    files.atomic_write_json(out_dir / "bench.json", result)
    files.atomic_write_text(out_dir / "bench.md", bench_report.markdown(result))
    files.atomic_write_bytes(out_dir / "bench.png", bench_report.chart_png(result))
