"""Cut a virtual board's power at seeded random moments during a deploy; count what is left whole.

Usage (as root: the first run builds the board's image):
    sudo .venv/bin/python benchmarks/power_cuts.py --trials 20
    sudo .venv/bin/python benchmarks/power_cuts.py --trials 20 --first-seed 100 --install
    sudo .venv/bin/python benchmarks/power_cuts.py --trials 10 --builds /tmp/power-cut-builds   # builds kept

Makes two tiny real builds (A, and B with another seed: another model), boots one virtual board
(emulation/virtual_board.py; arm64, the Pi's, unless --arch or $EDGE_FASHION_BOARD_ARCH says) with
the stand-in camera, deploys A with --install --service, and times an uninterrupted deploy that
switches to the other bundle. Then each trial deploys the other bundle and kills qemu (SIGKILL:
what the guest had not written out is lost) uniform(0, 1.05 x that time) seconds in, seeded by its
number, boots the board again and checks it
(tests/board_checks.problems): `current` names A's or B's release, holds exactly its files, its
self-test passes there, and the service answers /healthz with that release's model; then the same
deploy must succeed. --install adds --install to each deploy (pip runs again, and finds nothing to
do). Prints one line per trial, then the counts.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import board_checks  # noqa: E402  (tests/board_checks.py)

TINY = ["--preset", "fast", "--epochs", "2", "--train-limit", "3000"]
DATA = pathlib.Path(os.environ.get("EDGE_FASHION_DATA", "/usr/share/datasets/fashion-mnist"))


def build(folder: pathlib.Path, seed: int) -> pathlib.Path:
    """A tiny real build in folder, made unless a finished one is there."""
    if (folder / "device" / "manifest.json").is_file():
        return folder / "device"
    subprocess.run([sys.executable, "-m", "edge_fashion", "build", *TINY, "--seed", str(seed), "--data-dir",
                    str(DATA), "--out", str(folder)], check=True, capture_output=True)
    return folder / "device"


def deploy(board, bundle: pathlib.Path, *options: str) -> float:
    started = time.monotonic()
    completed = subprocess.run(board_checks.deploy_command(board, bundle, *options), capture_output=True, text=True,
                               timeout=board_checks.DEPLOY_TIMEOUT)
    if completed.returncode != 0:
        raise SystemExit(f"power-cuts: the deploy failed before any cut: {completed.stdout[-2000:]}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--arch", default=board_checks.ARCH)
    parser.add_argument("--install", action="store_true", help="deploy with --install in every trial")
    parser.add_argument("--builds", type=pathlib.Path,
                        help="the folder for builds A and B, reused when they are there [a temporary one]")
    arguments = parser.parse_args()
    options = ["--install"] if arguments.install else []
    with tempfile.TemporaryDirectory(prefix="power-cuts-") as scratch:
        folder = pathlib.Path(scratch)
        builds = arguments.builds or folder
        bundles = [build(builds / "a", 7), build(builds / "b", 8)]
        with board_checks.board_with_camera(arguments.arch, folder / "board", DATA, bundles[0] / "requirements.txt") \
                as board:
            deploy(board, bundles[0], "--install", "--service")
            window = 1.05 * deploy(board, bundles[1], *options)
            print(f"an uninterrupted deploy takes {window / 1.05:.1f} s; cuts fall in [0, {window:.1f}] s", flush=True)
            trials = []
            for seed in range(arguments.first_seed, arguments.first_seed + arguments.trials):
                old = bundles[1] if board_checks.current(board) == board_checks.release_of(bundles[1]) else bundles[0]
                new = bundles[0] if old == bundles[1] else bundles[1]
                trial = board_checks.power_cut(board, old, new, seed, window, *options)
                trials.append(trial)
                verdict = "ok" if not trial.problems and trial.next_deploy_ok else f"FAILED {list(trial.problems)}"
                print(f"seed {seed}: cut at {trial.cut_after:5.1f} s ({'after' if trial.deploy_finished else 'during'} "
                      f"the deploy), on the {trial.landed_on} release, boot {trial.boot_seconds:.1f} s, next deploy "
                      f"{'ok' if trial.next_deploy_ok else 'FAILED'}: {verdict}", flush=True)
    whole = sum(1 for trial in trials if not trial.problems and trial.next_deploy_ok)
    landed_new = sum(1 for trial in trials if trial.landed_on == "new")
    print(f"{whole} of {len(trials)} trials whole: {landed_new} on the new release, {len(trials) - landed_new} on "
          f"the old; {sum(trial.deploy_finished for trial in trials)} cuts came after the deploy had finished")
    return 0 if whole == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
