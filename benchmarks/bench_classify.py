"""Benchmark device/classify.py as a board runs it: startup, peak RSS, per-frame latency.

Usage (after `edge-fashion build`, from the repository root):
    python benchmarks/bench_classify.py --bundle artifacts/device --frames 100

Under tflite-runtime (the board's venv from tests/device_venv.py: tflite-runtime 2.14, numpy 1.24,
Pillow 9.4), ai-edge-litert (this Python) and the numpy engine (`--runtime numpy`, in both, for numpy
1.24 and numpy 2), each measured in fresh processes:
- startup: wall time of `classify.py one.png` (median of --runs), and classify.py's own figure
  (interpreter import + model read, sha256 check and load);
- peak RSS of classify.py over the 640x480 JPEG frames (os.wait4's ru_maxrss);
- per-frame latency p50/p95 (decode + preprocess + inference, one frame per interpreter call, as
  from a camera) for 28x28 PNGs and 640x480 JPEGs, from classify.py's own JSON summary;
- a folder of 28x28 PNGs in batches of 32, in frames per second;
- the inference alone for one frame, run as a batch of 1 (as classify.py runs it) and as a batch of 2
  (the first image twice), the best of 10 rounds of 30 calls.
Prints a Markdown table and writes the figures as JSON (--out).
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import device_venv  # noqa: E402  (tests/device_venv.py)
from edge_fashion.pipeline import data  # noqa: E402

LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"peak_rss_kb {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""
INFERENCE_ONLY = """
import os, pathlib, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # As classify.py does, before numpy loads.
import numpy as np
sys.path.insert(0, str(pathlib.Path(sys.argv[1]).resolve().parent))
from fashion_board import runtimes
classifier = runtimes.load_classifier(pathlib.Path(sys.argv[2]), None, sys.argv[3], 1, True, False, time.perf_counter())[0]
image = np.zeros((1, 28, 28), np.uint8)
for min_batch in (1, 2):
    classifier.min_batch = min_batch
    classifier.scores(image)
    rounds = []  # The best of 10 rounds of 30 calls: what the code costs, with little of other load.
    for _ in range(10):
        started = time.perf_counter()
        for _ in range(30):
            classifier.scores(image)
        rounds.append((time.perf_counter() - started) / 30)
    print(min_batch, 1000 * min(rounds))
"""


def run_measured(command: list) -> tuple:
    """(seconds, peak RSS in MB, stdout, stderr) of one child.

    The child is started by a small launcher: Linux carries a process's peak RSS across exec, so a
    child forked straight from this process (which holds the test set) would report ours.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        launcher = subprocess.run([sys.executable, "-c", LAUNCHER, *command], stdout=stdout, stderr=stderr,
                                  check=False)
        seconds = time.perf_counter() - started
        stdout.seek(0), stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    errors, peak_kb = errors.rsplit("peak_rss_kb ", 1)
    if launcher.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {errors.strip()}")
    return seconds, int(peak_kb) / 1024, output, errors


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.splitlines()[-1])["summary"]


def make_inputs(folder: pathlib.Path, frames: int) -> tuple:
    """Folders of 28x28 test-set PNGs and of 640x480 camera-like JPEGs of the same garments."""
    images = data.load_fashion_mnist(download=False).test_images[:frames]
    pngs, jpegs = folder / "png", folder / "jpeg"
    pngs.mkdir()
    jpegs.mkdir()
    rng = np.random.default_rng(0)
    for index, image in enumerate(images):
        Image.fromarray(image).save(pngs / f"{index:05d}.png")
        canvas = np.full((480, 640), 200, np.float32) + rng.normal(0, 4, (480, 640))
        garment = np.asarray(Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC), np.float32)
        canvas[100:380, 180:460] = garment * 200 / 255
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGB").save(jpegs / f"{index:05d}.jpg", quality=85)
    return pngs, jpegs


def measure(python: str, script: pathlib.Path, runtime: str, pngs: pathlib.Path, jpegs: pathlib.Path, runs: int) -> dict:
    base = [python, str(script), "--runtime", runtime]
    one = str(next(pngs.iterdir()))
    starts = [run_measured(base + [one, "--verbose"]) for _ in range(runs)]
    own = [float(line.split("startup ")[1].split(" ms")[0]) for _, _, _, err in starts
           for line in err.splitlines() if "startup " in line]
    png = summary_of(run_measured(base + [str(pngs), "--json", "--batch-size", "1"])[2])
    _, rss, stdout, _ = run_measured(base + [str(jpegs), "--json", "--batch-size", "1"])
    jpeg = summary_of(stdout)
    batched = summary_of(run_measured(base + [str(pngs), "--json", "--batch-size", "32"])[2])
    inference = subprocess.run([python, "-c", INFERENCE_ONLY, str(script), str(script.parent / "model_int8.tflite"), runtime],
                               capture_output=True, text=True, check=True).stdout.split()
    return {
        "runtime": png["runtime"], "startup_s": statistics.median(seconds for seconds, *_ in starts),
        "startup_own_ms": statistics.median(own), "peak_rss_mb": rss,
        "png_p50_ms": png["ms_p50"], "png_p95_ms": png["ms_p95"], "jpeg_p50_ms": jpeg["ms_p50"],
        "jpeg_p95_ms": jpeg["ms_p95"], "png_batched_fps": batched["fps"],
        "inference_batch_of_1_ms": float(inference[1]), "inference_batch_of_2_ms": float(inference[3]),
    }


def markdown(rows: list) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[key]:.3g}" if isinstance(row[key], float) else str(row[key])
                                       for key in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts" / "device")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="startup runs per runtime")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the figures as JSON here")
    arguments = parser.parse_args()
    script = arguments.bundle / "classify.py"
    board_python = str(device_venv.ensure_device_venv(REPO))
    runtimes = [(board_python, "tflite_runtime"), (sys.executable, "ai_edge_litert"),
                (board_python, "numpy"), (sys.executable, "numpy")]
    with tempfile.TemporaryDirectory() as folder:
        pngs, jpegs = make_inputs(pathlib.Path(folder), arguments.frames)
        rows = [measure(python, script, runtime, pngs, jpegs, arguments.runs) for python, runtime in runtimes]
    print(markdown(rows))
    if arguments.out:
        arguments.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
