"""Proxies for real camera frames, made from Fashion-MNIST's test set and run through a bundle's classify.py.

Usage (after `edge-fashion build`, from the repository root):
    python benchmarks/proxies.py --bundle artifacts/device
    python benchmarks/proxies.py --bundle artifacts/device --keep /tmp/proxies   # keep the PNGs

Each proxy is written as image files and classified by the bundle's own classify.py (under the
board-like venv of tests/device_venv.py: tflite-runtime 2.14, numpy 1.24, Pillow 9.4), and printed
beside the same images plain (their 28x28 test images as they are):
- mirrored: 2,000 test images (200 a class, seed 0) mirrored left to right; and the whole test set
  mirrored. Fashion-MNIST's shoes all point their toe left.
- pairs: 600 pairs of test-set shoes of one class (200 a shoe class, seed 1), each scaled 4x (112 px)
  on black, side by side 8 px apart, touching, or 8 px apart with one of the two 15% larger; a
  16 px black border. Garments: 280 pairs of garments of one class (40 a class, seed 4), apart. The share of them for
  which classify.py saw two objects is printed too.
- camera: 1,000 test images (100 a class, seed 2) as a phone would see them: dark on a light,
  unevenly lit, noisy background, enlarged and off centre (tests/test_classify.py's camera_frame).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import device_venv  # noqa: E402  (tests/device_venv.py)
from edge_fashion.pipeline import data  # noqa: E402
from test_classify import camera_frame, enlarged, side_by_side  # noqa: E402  (as the tests make them)

SHOES = (5, 7, 9)  # Sandal, Sneaker, Ankle boot.
SCALE, GAP, LARGER = 4, 8, 1.15


def per_class(labels: np.ndarray, count: int, seed: int, classes=range(10)) -> np.ndarray:
    """`count` test indices of each class in `classes`, drawn with `seed`, sorted."""
    generator = np.random.default_rng(seed)
    return np.sort(np.concatenate([generator.choice(np.flatnonzero(labels == label), count, replace=False)
                                   for label in classes]))


def pairs(images: np.ndarray, labels: np.ndarray, classes, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) test indices of `count` pairs of each class, drawn with `seed`."""
    generator = np.random.default_rng(seed)
    chosen = [generator.choice(np.flatnonzero(labels == label), (count, 2), replace=False) for label in classes]
    both = np.concatenate(chosen)
    return both[:, 0], both[:, 1]


def write(folder: pathlib.Path, images: list, suffix: str = ".png", quality: int = 90) -> list[pathlib.Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{index:05d}{suffix}" for index in range(len(images))]
    for path, image in zip(paths, images):
        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        image.save(path, quality=quality) if suffix == ".jpg" else image.save(path)
    return paths


def make_proxies(folder: pathlib.Path, images: np.ndarray, labels: np.ndarray) -> dict:
    """{name: (paths, labels, plain paths)}: each proxy's files and the plain images beside it."""
    proxies = {}
    chosen = per_class(labels, 200, seed=0)
    plain = write(folder / "plain-2000", list(images[chosen]))
    proxies["mirrored, 2,000 test images"] = (write(folder / "mirrored-2000", list(images[chosen, :, ::-1])),
                                              labels[chosen], plain)
    shoes = np.isin(labels[chosen], SHOES)
    mirrored = proxies["mirrored, 2,000 test images"][0]
    proxies["mirrored, their shoes"] = ([path for path, shoe in zip(mirrored, shoes) if shoe], labels[chosen][shoes],
                                        [path for path, shoe in zip(plain, shoes) if shoe])
    whole = write(folder / "plain-test", list(images))
    proxies["mirrored, whole test set"] = (write(folder / "mirrored-test", list(images[:, :, ::-1])), labels, whole)
    first, second = pairs(images, labels, SHOES, 200, seed=1)
    alone = write(folder / "pair-shoes", list(images[first]))
    generator = np.random.default_rng(3)
    larger = generator.random(len(first)) < 0.5  # Which of the two is the larger one.
    layouts = {
        "pairs of shoes, 8 px apart": [side_by_side(enlarged(images[a], SCALE), enlarged(images[b], SCALE), GAP)
                                       for a, b in zip(first, second)],
        "pairs of shoes, touching": [side_by_side(enlarged(images[a], SCALE), enlarged(images[b], SCALE), 0)
                                     for a, b in zip(first, second)],
        "pairs of shoes, one 15% larger": [
            side_by_side(enlarged(images[a], SCALE * (LARGER if big else 1)),
                         enlarged(images[b], SCALE * (1 if big else LARGER)), GAP)
            for a, b, big in zip(first, second, larger)],
    }
    for number, (name, made) in enumerate(layouts.items()):
        proxies[name] = (write(folder / f"pairs-{number}", made), labels[first], alone)
    garments = [label for label in range(10) if label not in SHOES]
    first, second = pairs(images, labels, garments, 40, seed=4)
    proxies["pairs of garments, 8 px apart"] = (
        write(folder / "pairs-garments", [side_by_side(enlarged(images[a], SCALE), enlarged(images[b], SCALE), GAP)
                                          for a, b in zip(first, second)]),
        labels[first], write(folder / "pair-garments", list(images[first])))
    chosen = per_class(labels, 100, seed=2)
    generator = np.random.default_rng(20261125)
    frames = [camera_frame(images[index], generator) for index in chosen]
    proxies["camera frames (640x480 JPEG)"] = (write(folder / "camera", frames, ".jpg", quality=85), labels[chosen],
                                               write(folder / "camera-plain", list(images[chosen])))
    return proxies


def classify(python: str, script: pathlib.Path, paths: list[pathlib.Path]) -> dict:
    """{path: JSON record} of classify.py on the folders holding `paths`."""
    folders = sorted({str(path.parent) for path in paths})
    completed = subprocess.run([python, str(script), *folders, "--json"], capture_output=True, text=True, check=False)
    if completed.returncode not in (0, 1):
        raise SystemExit(f"classify.py failed: {completed.stderr.strip()}")
    return {record["path"]: record for record in map(json.loads, completed.stdout.splitlines()) if "path" in record}


def accuracy(records: dict, paths: list, labels: np.ndarray) -> float:
    return float(np.mean([records.get(str(path), {}).get("index") == label for path, label in zip(paths, labels)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts" / "device")
    parser.add_argument("--python", help="the python that runs classify.py (default: the board-like venv)")
    parser.add_argument("--keep", type=pathlib.Path, help="write the images here and keep them")
    arguments = parser.parse_args()
    python = arguments.python or str(device_venv.ensure_device_venv(REPO))
    dataset = data.load_fashion_mnist(download=False)
    with tempfile.TemporaryDirectory() as temporary:
        folder = arguments.keep or pathlib.Path(temporary)
        proxies = make_proxies(folder, dataset.test_images, dataset.test_labels)
        everything = sorted({path for paths, _, plain in proxies.values() for path in [*paths, *plain]})
        records = classify(python, arguments.bundle / "classify.py", everything)
    print(f"bundle {arguments.bundle}; classify.py under {python}")
    print("| proxy | images | right | plain (the same 28x28 test images) | two objects seen |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (paths, labels, plain) in proxies.items():
        objects = np.mean([records.get(str(path), {}).get("objects", 0) >= 2 for path in paths])
        print(f"| {name} | {len(paths):,} | {100 * accuracy(records, paths, labels):.1f}% | "
              f"{100 * accuracy(records, plain, labels):.1f}% | {100 * objects:.1f}% |")


if __name__ == "__main__":
    main()
