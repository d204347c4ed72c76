"""Time a real build, stage by stage: each stage's seconds.

Usage:
    python benchmarks/build_time.py                      # a default build into a temporary folder
    python benchmarks/build_time.py --out /tmp/b -- --device cpu --preset fast

Runs `edge-fashion build` in a child process, as a user would, then reads its report.json. Prints a
Markdown table: the process's wall time (Python and TensorFlow start-up included), each stage, the
seconds of each epoch, and the device that trained; with --out, also OUT/build_time.json.
Options after `--` go to `edge-fashion build` unchanged.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

LIMIT_SECONDS = 180  # The target set for a default build.


def run_build(out_dir: pathlib.Path, build_arguments: list[str]) -> float:
    """Wall seconds of `edge-fashion build --out OUT_DIR BUILD_ARGUMENTS`; its progress goes to our stderr."""
    command = [sys.executable, "-m", "edge_fashion", "build", "--out", str(out_dir), *build_arguments]
    started = time.perf_counter()
    finished = subprocess.run(command, stdout=sys.stderr, check=False)
    if finished.returncode != 0:
        sys.exit(f"build_time.py: `{' '.join(command)}` failed with exit status {finished.returncode}")
    return time.perf_counter() - started


def stage_timings(report: dict, wall_seconds: float) -> dict:
    """Seconds per stage; `other` is data loading, saving, the report pictures and the bundle."""
    timings = report["timings"]
    epochs = report["training"]["history"]["seconds"]
    staged = timings["train_seconds"] + timings["convert_seconds"] + timings["verify_seconds"]
    return {
        "device": report["device"], "config": report["config"], "machine": describe_machine(),
        "wall_seconds": wall_seconds, "startup_seconds": wall_seconds - timings["total_seconds"],
        "total_seconds": timings["total_seconds"], "train_seconds": timings["train_seconds"],
        "convert_seconds": timings["convert_seconds"], "verify_seconds": timings["verify_seconds"],
        "other_seconds": timings["total_seconds"] - staged,
        "epoch_seconds": epochs, "first_epoch_seconds": epochs[0],
        "later_epoch_seconds": sum(epochs[1:]) / max(1, len(epochs) - 1),
    }


def describe_machine() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(terse=True),
            "load_average": os.getloadavg()[0]}


def table(timings: dict) -> str:
    machine = timings["machine"]
    rows = [
        ("trained on", timings["device"]),
        ("machine", f"{machine['cpu']}, {machine['cores']} cores; load average {machine['load_average']:.2f} after"),
        ("epochs", f"{len(timings['epoch_seconds'])} (batch {timings['config']['batch_size']})"),
        ("first epoch", f"{timings['first_epoch_seconds']:.1f} s (tracing included)"),
        ("later epochs, mean", f"{timings['later_epoch_seconds']:.1f} s"),
        ("train", f"{timings['train_seconds']:.1f} s"),
        ("convert (float32 and int8)", f"{timings['convert_seconds']:.1f} s"),
        ("verify (3 models, 10,000 test images)", f"{timings['verify_seconds']:.1f} s"),
        ("other (data, saving, report, bundle)", f"{timings['other_seconds']:.1f} s"),
        ("build, as report.json counts it", f"{timings['total_seconds']:.1f} s"),
        ("process start-up (Python, TensorFlow)", f"{timings['startup_seconds']:.1f} s"),
        ("wall clock, command start to exit", f"{timings['wall_seconds']:.1f} s "
                                              f"({timings['wall_seconds'] / LIMIT_SECONDS:.2f}x the 3-minute target)"),
    ]
    return "\n".join(["| stage | time |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="build folder (default: a temporary one, removed after)")
    parser.add_argument("build_arguments", nargs="*", help="options for `edge-fashion build`, after --")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-fashion-build-time-") as temporary:
        out_dir = arguments.out or pathlib.Path(temporary) / "build"
        wall_seconds = run_build(out_dir, arguments.build_arguments)
        timings = stage_timings(json.loads((out_dir / "report.json").read_text()), wall_seconds)
        (out_dir / "build_time.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(table(timings))


if __name__ == "__main__":
    main()
