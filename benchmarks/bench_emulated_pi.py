"""Benchmark the emulated Raspberry Pi OS proof: set-up, self-test and classifying time per userland.

Usage (after `edge-fashion build` and `python3 tests/device_venv.py`, from the repository root, as root):
    python benchmarks/bench_emulated_pi.py --bundle artifacts/device --runs 3 --images 500

Runs emulation/emulate_pi.py --suite all over both architectures --runs times, each run a fresh process
(the userlands are cached after the first: their set-up time is the one userland.json recorded when
they were built). Prints a Markdown table per userland: qemu-user, the interpreter requirements.txt
gave it, set-up seconds, the self-test's seconds (median, fastest), images per second with the
interpreter's start-up and classify.py's own frames per second, and the load average while it ran.
These are qemu-user's times on this machine, not a Raspberry Pi's: qemu translates every Arm
instruction, so a board is typically faster, and the ratio differs per workload and runtime.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "emulation" / "emulate_pi.py"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts/device")
    parser.add_argument("--runs", type=int, default=3, help="fresh emulate_pi.py runs")
    parser.add_argument("--images", type=int, default=500, help="test images classified per userland and run")
    parser.add_argument("--suite", default="all", help="bookworm, trixie or all")
    parser.add_argument("--out", type=pathlib.Path, help="write every run's figures as JSON")
    return parser.parse_args()


def one_run(arguments: argparse.Namespace, report: pathlib.Path) -> dict:
    """One emulate_pi.py run over every chosen userland; {userland: figures}."""
    command = [sys.executable, str(SCRIPT), str(arguments.bundle), "all", "--suite", arguments.suite,
               "--images", str(arguments.images), "--report", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"bench_emulated_pi: emulate_pi.py failed:\n{(result.stdout + result.stderr)[-2000:]}")
    return json.loads(report.read_text())


def table(runs: list, loads: list) -> str:
    """A Markdown row per userland, with the medians over the runs."""
    lines = ["| userland | qemu-user | runtime | set-up s | self-test s (median, fastest) | "
             "images/s with start-up | classifying images/s | top-1 equal to x86 | largest score difference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in runs[0]:
        each = [run[name] for run in runs]
        self_test = [figures["self_test_seconds"] for figures in each]
        qemu = each[0]["qemu"].split(" (")[0].replace(" version", "")
        lines.append(
            f"| {name} ({each[0]['cpu']}) | {qemu} | {each[0]['runtime']} | "
            f"{each[0]['userland']['setup_seconds']} | {statistics.median(self_test):.1f}, {min(self_test):.1f} | "
            f"{statistics.median(figures['images_per_second'] for figures in each):.1f} | "
            f"{statistics.median(figures['classify_fps'] for figures in each):.1f} | "
            f"{each[-1]['top1_equal']}/{each[-1]['images']} | "
            f"{max(figures['max_score_steps'] for figures in each)} step |")
    lines.append(f"\n{len(runs)} runs of {runs[0][next(iter(runs[0]))]['images']} images; load average "
                 f"(1 min) {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores. Emulated times, "
                 "not a board's.")
    return "\n".join(lines)


def main() -> None:
    arguments = parse_arguments()
    runs, loads = [], []
    with tempfile.TemporaryDirectory(prefix="bench-emulated-pi-") as scratch:
        for number in range(arguments.runs):
            loads.append(os.getloadavg()[0])
            runs.append(one_run(arguments, pathlib.Path(scratch) / f"run-{number}.json"))
            loads.append(os.getloadavg()[0])
            print(f"run {number + 1}/{arguments.runs}: "
                  + ", ".join(f"{name} self-test {figures['self_test_seconds']} s" for name, figures in runs[-1].items()),
                  flush=True)
    print(table(runs, loads))
    if arguments.out:
        arguments.out.write_text(json.dumps({"runs": runs, "loads": loads}, indent=2) + "\n")


if __name__ == "__main__":
    main()
