"""Kill builds at random moments and race two builds into one folder; count what is left whole.

Usage:
    python benchmarks/kill_and_race.py --kills 20 --races 5            # into a temporary folder
    python benchmarks/kill_and_race.py --out /tmp/k --kills 40 -- --representative-samples 100

Makes one tiny real build, then, as a user's Ctrl-C never could, SIGKILLs `edge-fashion convert`
(which re-quantizes, verifies, bundles and publishes a new run) after a random delay between 0 and
1.05 times its uninterrupted duration, and after every kill checks that OUT/latest is a whole run
(every model's sha256 equal to its report's, seen directly and through OUT's links, the bundle's
manifest too) and that every published run is whole. Then starts two converts at the same instant,
--races times. Prints the counts; options after `--` go to `edge-fashion convert`.
"""

import argparse
import hashlib
import json
import pathlib
import random
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--preset", "fast", "--epochs", "2", "--train-limit", "3000", "--seed", "7"]
# What convert takes of those: the calibration images are drawn from the images the model trained on.
TINY_CONVERT = ["--train-limit", "3000", "--seed", "7"]
MODEL_NAMES = ("model.keras", "model_float.tflite", "model_int8.tflite")


def command(verb: str, out: pathlib.Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "edge_fashion", verb, *(TINY if verb == "build" else TINY_CONVERT), "--out", str(out),
            *extra]


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def problems_of_run(run: pathlib.Path) -> list[str]:
    report = json.loads((run / "report.json").read_text())
    found = [f"{run.name}/{name} differs from its report" for name in MODEL_NAMES
             if sha256(run / name) != report["sha256"][name]]
    manifest = json.loads((run / "device" / "manifest.json").read_text())
    if not manifest["model"]["sha256"] == sha256(run / "device" / "model_int8.tflite") == report["sha256"]["model_int8.tflite"]:
        found.append(f"{run.name}/device differs from its report")
    return found


def problems(out: pathlib.Path) -> list[str]:
    """What is not whole in OUT: latest, the links through it, every published run."""
    latest = (out / "latest").resolve()
    if not (latest / "report.json").is_file():
        return ["latest is not a run"]
    found = [f"{name} through OUT's link is not latest's" for name in MODEL_NAMES
             if sha256(out / name) != sha256(latest / name)]
    for run in sorted((out / "runs").iterdir()):
        if not run.name.startswith("."):
            try:
                found += problems_of_run(run)
            except (OSError, ValueError, KeyError) as error:
                found.append(f"{run.name}: {error}")
    return found


def timed(arguments: list[str]) -> tuple[int, float, str]:
    started = time.perf_counter()
    finished = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, check=False)
    return finished.returncode, time.perf_counter() - started, finished.stderr


def kills(out: pathlib.Path, count: int, duration: float, extra: list[str]) -> dict:
    tally = {"kills": 0, "latest_moved": 0, "whole_after_kill": 0, "staging_left": 0, "whole_after_next": 0}
    for _ in range(count):
        before = (out / "latest").resolve()
        process = subprocess.Popen(command("convert", out, extra), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0, 1.05 * duration))
        process.kill()
        process.wait()
        tally["kills"] += process.returncode == -9
        tally["latest_moved"] += (out / "latest").resolve() != before
        found = problems(out)
        tally["whole_after_kill"] += not found
        for line in found:
            print(f"  after a kill: {line}", file=sys.stderr)
        tally["staging_left"] += bool(list((out / "runs").glob(".staging-*")))
    status, _, error = timed(command("convert", out, extra))
    tally["whole_after_next"] = int(status == 0 and not problems(out) and not list((out / "runs").glob(".*")))
    if status:
        print(error, file=sys.stderr)
    return tally


def races(out: pathlib.Path, count: int, extra: list[str]) -> dict:
    tally = {"races": count, "one_ran_one_stopped": 0, "both_succeeded": 0, "whole_after": 0}
    for _ in range(count):
        pair = [subprocess.Popen(command("convert", out, extra), cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(process.wait(), process.stderr.read()) for process in pair]
        statuses = sorted(status for status, _ in results)
        stopped = any("in use by another build" in error for _, error in results)
        tally["one_ran_one_stopped"] += statuses == [0, 1] and stopped
        tally["both_succeeded"] += statuses == [0, 0]
        tally["whole_after"] += not problems(out)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="Build folder [default: a temporary one].")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--races", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="Seeds the kill delays.")
    parser.add_argument("convert_arguments", nargs="*")
    arguments = parser.parse_args()
    random.seed(arguments.seed)
    with tempfile.TemporaryDirectory() as temporary:
        out = arguments.out or pathlib.Path(temporary) / "build"
        if not (out / "latest").exists():
            status, seconds, error = timed(command("build", out, []))
            if status:
                sys.exit(f"kill_and_race.py: the first build failed:\n{error}")
        status, duration, error = timed(command("convert", out, arguments.convert_arguments))
        if status:
            sys.exit(f"kill_and_race.py: a convert failed:\n{error}")
        print(f"uninterrupted convert: {duration:.1f} s")
        print(json.dumps(kills(out, arguments.kills, duration, arguments.convert_arguments)))
        print(json.dumps(races(out, arguments.races, arguments.convert_arguments)))
        print(f"runs kept: {len([path for path in (out / 'runs').iterdir() if not path.name.startswith('.')])}")


if __name__ == "__main__":
    main()
