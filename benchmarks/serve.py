"""What serving costs: classify.py --replay at full speed, with --serve and 5 browsers' worth of clients
(each the page's Server-Sent Events stream, which carries every frame shown with its pictures),
against the same without --serve.

Usage (after `edge-fashion build`, from the repository root):
    python benchmarks/serve.py --bundle artifacts/device --photos /work/shared/photos --frames 3000

Runs the board's venv (tests/device_venv.py: tflite-runtime 2.14, numpy 1.24, Pillow 9.4), plain and
served in turn, --runs times each; prints frames per second and ms per frame (classify.py's own
summary), the CPU the classify.py process used (user + system over wall time, from os.wait4, and
per frame: the cost that does not depend on how busy the machine is), the
frames and bytes the clients received, and the cost of serving in frames per second (target: at most 10%).
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import device_venv  # noqa: E402  (tests/device_venv.py)

BROWSERS = 5
TARGET_COST = 0.10  # Serving may cost at most this share of the frames per second.


def replay_folder(photos: pathlib.Path, count: int, folder: pathlib.Path) -> pathlib.Path:
    """`count` real phone photos, a few of each class, copied into one folder to replay."""
    files = sorted(path for path in photos.rglob("*.jpg"))
    chosen = files[:: max(1, len(files) // count)][:count]
    for index, path in enumerate(chosen):
        shutil.copyfile(path, folder / f"{index:03d}.jpg")
    return folder


def page_client(url: str, received: list) -> None:
    """One browser's page: its event stream, read until the server goes away; the frames' events
    (each a record, the frame's pictures and the rates) and the bytes."""
    counts = {"events": 0, "bytes": 0}
    try:
        with urllib.request.urlopen(url + "events", timeout=30) as response:
            for line in response:
                counts["bytes"] += len(line)
                counts["events"] += line.startswith(b"id: ")  # Each frame's events start with its id.
    except OSError:
        pass  # The server stopped at the end of the run.
    received.append(counts)


def run(python: str, bundle: pathlib.Path, folder: pathlib.Path, frames: int, serve: bool) -> dict:
    command = [python, str(bundle / "classify.py"), "--replay", str(folder), "--fps", "0", "--count", str(frames),
               "--json"]
    if serve:
        command += ["--serve", "--port", "0"]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        received, threads = [], []
        if serve:
            url = wait_for_url(stderr, process)
            threads = [threading.Thread(target=page_client, args=(url, received)) for _ in range(BROWSERS)]
            for thread in threads:
                thread.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        for thread in threads:
            thread.join(30)
        stdout.seek(0)
        summary = json.loads(stdout.read().splitlines()[-1])["summary"]
    if status != 0:
        raise SystemExit(f"classify.py failed: {command}")
    return {"fps": summary["fps"], "ms_p50": summary["ms_p50"], "count": summary["count"],
            "cpu": (usage.ru_utime + usage.ru_stime) / seconds,
            "cpu_ms": 1000 * (usage.ru_utime + usage.ru_stime) / summary["count"], "received": received}


def wait_for_url(stderr, process) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        stderr.seek(0)
        for line in stderr.read().decode().splitlines():
            if line.startswith("serving on "):
                return line.split()[2]
        time.sleep(0.02)
    raise SystemExit("classify.py --serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts" / "device")
    parser.add_argument("--photos", type=pathlib.Path, default=pathlib.Path("/work/shared/photos"))
    parser.add_argument("--images", type=int, default=60, help="photos in the replayed folder")
    parser.add_argument("--frames", type=int, default=3000, help="frames per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind, alternated")
    arguments = parser.parse_args()
    python = str(device_venv.ensure_device_venv(REPO))
    results = {False: [], True: []}
    with tempfile.TemporaryDirectory() as temporary:
        folder = replay_folder(arguments.photos, arguments.images, pathlib.Path(temporary))
        for number in range(arguments.runs):
            for serve in (False, True):
                results[serve].append(run(python, arguments.bundle, folder, arguments.frames, serve))
                figures = results[serve][-1]
                print(f"run {number + 1} {'served' if serve else 'plain '}: {figures['fps']:.1f} frames/s, "
                      f"p50 {figures['ms_p50']:.2f} ms, CPU {100 * figures['cpu']:.0f}%, "
                      f"{figures['cpu_ms']:.2f} CPU ms/frame", flush=True)
    report(results, arguments)


def report(results: dict, arguments) -> None:
    print(f"\n{arguments.frames} frames of {arguments.images} real photos (JPEG, up to 320 px), --fps 0, "
          f"median of {arguments.runs} runs each; served: {BROWSERS} browsers (the page's events and pictures)\n")
    print("| | frames/s | ms/frame p50 | CPU of classify.py | its CPU ms per frame |")
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for serve, name in ((False, "plain --replay"), (True, "--serve --replay")):
        medians[serve] = {key: statistics.median(run[key] for run in results[serve]) for key in ("fps", "ms_p50", "cpu", "cpu_ms")}
        print(f"| {name} | {medians[serve]['fps']:.1f} | {medians[serve]['ms_p50']:.2f} | "
              f"{100 * medians[serve]['cpu']:.0f}% | {medians[serve]['cpu_ms']:.2f} |")
    cost = 1 - medians[True]["fps"] / medians[False]["fps"]
    last = results[True][-1]["received"]
    events = [counts["events"] for counts in last]
    megabytes = sum(counts["bytes"] for counts in last) / 1e6
    print(f"\nclients (last run): {len(last)} pages got {min(events)}-{max(events)} frames with their pictures, "
          f"{megabytes:.1f} MB in all")
    print(f"serving costs {100 * cost:.1f}% of the frames per second "
          f"({'within' if cost <= TARGET_COST else 'OVER'} the {100 * TARGET_COST:.0f}% target), and "
          f"{100 * (medians[True]['cpu_ms'] / medians[False]['cpu_ms'] - 1):.1f}% more CPU per frame "
          "(the steadier figure on a shared machine: frames/s follow the CPU share the process gets)")


if __name__ == "__main__":
    main()
