"""Peak memory of device/classify.py on large images, as a 512 MB board would run it.

Usage (after `edge-fashion build`, from the repository root):
    python benchmarks/bench_memory.py --bundle artifacts/device

Makes the images of tests/test_memory.py (50-megapixel RGBA PNG, 16-bit PNG, float TIFF and WebP,
which must be refused, and the largest images of each kind that fit the decoding budget), runs
classify.py on each alone in the board-like venv (tests/device_venv.py), with and without a
full-image --roi (which keeps full resolution), and prints a Markdown table of the outcome and the
peak RSS (os.wait4's ru_maxrss, through a launcher).
"""

import argparse
import json
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import device_venv  # noqa: E402  (tests/device_venv.py)
import test_memory  # noqa: E402  (tests/test_memory.py: the images and the launcher)
from PIL import Image  # noqa: E402


def make_images(folder: pathlib.Path) -> list:
    for name, ((mode, background, fill), options) in test_memory.HUGE.items():
        size = (test_memory.SIDE, test_memory.SIDE)
        test_memory.garment(mode, size, background, fill).save(folder / name, **options)
    for name, ((mode, size, background, fill), options) in test_memory.FITTING.items():
        test_memory.garment(mode, size, background, fill).save(folder / name, **options)
    return sorted(folder.iterdir())


def outcome(stdout: str) -> str:
    line = json.loads(stdout.splitlines()[0])
    return f"error: {line['error']}" if "error" in line else f"{line['label']} {line['score']:.2f}, {line['ms']:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts" / "device")
    arguments = parser.parse_args()
    python = device_venv.ensure_device_venv(REPO)
    script = arguments.bundle / "classify.py"
    print("| image | pixels | file KB | --roi | outcome | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for path in make_images(pathlib.Path(folder)):
            with Image.open(path) as image:
                width, height, mode = image.width, image.height, image.mode
            for roi in ([], ["--roi", f"0,0,{width},{height}"]):
                result, peak_mb = test_memory.measured(python, script, path, "--json", *roi)
                print(f"| {path.name} ({mode}) | {width}x{height} | {path.stat().st_size / 1000:,.0f} | "
                      f"{'whole' if roi else '-'} | {outcome(result.stdout)} | {peak_mb:.0f} |", flush=True)


if __name__ == "__main__":
    main()
