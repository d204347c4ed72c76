"""Frame speed: decode + preprocessing + inference of a 640x480 JPEG against Pillow's draft decode alone.

Usage (after `edge-fashion build`, from the repository root):
    python benchmarks/frame_speed.py --bundle artifacts/device
    python benchmarks/frame_speed.py --bundle artifacts/device --photos tests/photos --rounds 5

100 real photos (--photos, one folder per class) are re-encoded as 640x480 JPEGs (quality 90). In
one process of the board-like venv (tests/device_venv.py: tflite-runtime 2.14, numpy 1.24, Pillow
9.4; OpenBLAS pinned to one thread, as classify.py pins it), each frame is timed, interleaved:
- draft decode: Image.open, draft to the preprocessing's work size, load;
- whole frame: the bundle's decode, make_frame and one interpreter call, as classify.py does, and
  each of the three alone;
- camera frame: the same photo as Picamera2's 320x240 YUV420 lores array (made here; no camera),
  its YCbCr image and make_frame from its planes, and the interpreter call.
Prints p50 and p95 in ms and the whole frame's p50 over the draft decode's p50 (the bar is 2.5),
then classify.py's own summary over the same files. Wall time, as classify.py's `ms`, or with
--cpu-time the CPU time each step used (a busy machine stretches the wall time of many small steps
far more than that of one decode); the load average is printed.
"""

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import device_venv  # noqa: E402  (tests/device_venv.py)

BOARD_SIDE = r"""
import io, json, os, pathlib, sys, time
bundle, tests, folder, rounds = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
clock = time.thread_time if sys.argv[5] == "cpu" else time.perf_counter
sys.path[:0] = [str(bundle), tests]
import numpy as np
from PIL import Image
from fashion_board import preprocess, runtimes, yuv
import picamera2_stand_in
preprocess.configure_pillow()
classifier = runtimes.load_classifier(bundle / "model_int8.tflite", None, None, 1, False, False, time.perf_counter())[0]
files = [path.read_bytes() for path in sorted(folder.glob("*.jpg"))]
lores = [picamera2_stand_in.yuv420_array(Image.open(io.BytesIO(data)), 320, 240) for data in files]
times = {name: [] for name in ("draft decode", "whole frame", "decode", "preprocess", "inference", "camera frame")}
for _ in range(rounds):
    for data, array in zip(files, lores):
        started = clock()
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (preprocess.WORK_SIDE, preprocess.WORK_SIDE))
        image.load()
        times["draft decode"].append(clock() - started)
        started = clock()
        image = preprocess.decode(io.BytesIO(data), True)
        decoded = clock()
        try:
            pixels = preprocess.make_frame(image, None).pixels
        except ValueError:  # No garment found: it took its time all the same.
            pixels = None
        prepared = clock()
        if pixels is not None:
            classifier.scores(pixels[np.newaxis])
        finished = clock()
        times["whole frame"].append(finished - started)
        times["decode"].append(decoded - started)
        times["preprocess"].append(prepared - decoded)
        times["inference"].append(finished - prepared)
        started = clock()
        try:
            pixels = preprocess.make_frame(yuv.Yuv420.from_array(array, 320, 240).image(), None).pixels
            classifier.scores(pixels[np.newaxis])
        except ValueError:
            pass
        times["camera frame"].append(clock() - started)
print(json.dumps({name: [1000 * value for value in values] for name, values in times.items()}))
"""


def make_jpegs(photos: pathlib.Path, folder: pathlib.Path, count: int) -> None:
    """`count` photos (seeded choice) re-encoded as 640x480 JPEGs, quality 90."""
    paths = sorted(path for path in photos.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(paths)
    for number, path in enumerate(paths[:count]):
        with Image.open(path) as photo:
            frame = photo.convert("RGB").resize((640, 480), Image.Resampling.BILINEAR)
            frame.save(folder / f"{number:03d}.jpg", quality=90)


def percentile(values: list, share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts" / "device")
    parser.add_argument("--photos", type=pathlib.Path, default=pathlib.Path("/work/shared/photos"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time each step by the CPU time it used, not the clock: steadier on a busy machine")
    arguments = parser.parse_args()
    python = str(device_venv.ensure_device_venv(REPO))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        make_jpegs(arguments.photos, pathlib.Path(folder), arguments.count)
        board = subprocess.run([python, "-c", BOARD_SIDE, str(arguments.bundle.resolve()), str(REPO / "tests"), folder,
                                str(arguments.rounds), "cpu" if arguments.cpu_time else "wall"],
                               capture_output=True, text=True, check=True, env=env)
        times = json.loads(board.stdout.splitlines()[-1])
        classify = subprocess.run([python, str(arguments.bundle / "classify.py"), folder, "--json"],
                                  capture_output=True, text=True, check=False, env=env)
    summary = json.loads(classify.stdout.splitlines()[-1])["summary"]
    print(f"{arguments.count} photos as 640x480 JPEGs, {arguments.rounds} rounds, "
          f"{'CPU time' if arguments.cpu_time else 'wall time'}; load average {os.getloadavg()[0]:.1f}")
    print("| step | p50 ms | p95 ms |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {percentile(values, 0.5):.3f} | {percentile(values, 0.95):.3f} |")
    ratio = percentile(times["whole frame"], 0.5) / percentile(times["draft decode"], 0.5)
    camera = percentile(times["camera frame"], 0.5) / percentile(times["draft decode"], 0.5)
    print(f"whole frame / draft decode (p50): {ratio:.2f}x (bar 2.5x); camera frame / draft decode: {camera:.2f}x")
    print(f"classify.py over the same files: p50 {summary['ms_p50']:.3f} ms, p95 {summary['ms_p95']:.3f} ms "
          f"({summary['count']} classified, {summary['errors']} errors; {summary['runtime']})")


if __name__ == "__main__":
    main()
