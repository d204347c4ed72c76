"""Shoes either way round: a canonical orientation (the board's preprocess.canonical_orientation applied
to every image trained, calibrated and tested on) against teaching the model both ways (random flips).

Usage (from the repository root; trains one quick model per variant, seed 42):
    nice -n 10 python benchmarks/orientation.py --epochs 10
    nice -n 10 python benchmarks/orientation.py --epochs 10 --variants canonical --bundles /tmp/bundles

For each variant, the float model's accuracy on Fashion-MNIST validation (the best epoch's) and on
the test set plain and mirrored left to right, all images and the shoes alone (Sandal, Sneaker,
Ankle boot). With the canonical orientation a mirrored image is turned back before the model sees
it, as the board does. --bundles writes a board bundle per variant (classify.py, the board package,
the int8 model and labels, no manifest) for benchmarks/proxies.py. Appends a JSON line per variant
to benchmarks/orientation.jsonl.
"""

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_fashion import config as config_module  # noqa: E402
from edge_fashion import device_files  # noqa: E402
from edge_fashion.converters import tflite  # noqa: E402
from edge_fashion.pipeline import data, evaluate, stages, train  # noqa: E402
from fashion_board import preprocess  # noqa: E402

LOG = REPO / "benchmarks" / "orientation.jsonl"
SHOES = (5, 7, 9)
# name: (images turned canonically, config overrides). "canonical" never mirrors in augmentation
# (every image the board gives the model is turned); "canonical-mirrored-garments" keeps the camera
# augmentation's mirroring of garments; "both-ways" mirrors a random half of all images (flip).
VARIANTS = {
    "default": (False, {}),
    "canonical": (True, {"augment_flip_classes": ()}),
    "canonical-mirrored-garments": (True, {}),
    "both-ways": (False, {"flip": True}),
}


def turned(dataset: data.Dataset) -> data.Dataset:
    """The data set with every image in its canonical orientation."""
    return dataclasses.replace(dataset, train_images=preprocess.canonical_orientation(dataset.train_images),
                               test_images=preprocess.canonical_orientation(dataset.test_images))


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(evaluate.run_keras(model, images).argmax(axis=1) == labels))


def figures(model, dataset: data.Dataset, canonical: bool) -> dict:
    """Test accuracy plain and mirrored, all and shoes; mirrored images are turned as the board turns them."""
    images, labels = dataset.test_images, dataset.test_labels
    mirrored = images[:, :, ::-1]
    if canonical:
        images, mirrored = preprocess.canonical_orientation(images), preprocess.canonical_orientation(mirrored)
    shoes = np.isin(labels, SHOES)
    return {"test": accuracy(model, images, labels), "test_mirrored": accuracy(model, mirrored, labels),
            "shoes": accuracy(model, images[shoes], labels[shoes]),
            "shoes_mirrored": accuracy(model, mirrored[shoes], labels[shoes])}


def write_bundle(folder: pathlib.Path, int8_content: bytes) -> None:
    """A bundle classify.py runs: the board's code, the int8 model and labels (no manifest)."""
    shutil.rmtree(folder, ignore_errors=True)
    for name, source in device_files.bundle_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)
    (folder / "model_int8.tflite").write_bytes(int8_content)
    (folder / "labels.txt").write_text("\n".join(data.LABELS) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--bundles", type=pathlib.Path, help="write a bundle per variant under this folder")
    arguments = parser.parse_args()
    original = data.load_fashion_mnist(download=False)
    canonical_data = turned(original)
    zero_scores = int(np.sum(np.all(canonical_data.test_images == canonical_data.test_images[:, :, ::-1], axis=(1, 2))))
    print(f"test images equal to their own mirror image: {zero_scores}")
    for name in arguments.variants:
        canonical, overrides = VARIANTS[name]
        dataset = canonical_data if canonical else original
        config = config_module.make_config("default", seed=arguments.seed, epochs=arguments.epochs, **overrides)
        result = train.train(config, train.make_split(config, dataset))
        record = {"variant": name, "epochs": arguments.epochs, "seed": arguments.seed, "overrides": overrides,
                  "validation": result.best_validation_accuracy, **figures(result.model, dataset, canonical),
                  "train_seconds": round(result.seconds)}
        with LOG.open("a") as log:
            log.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        if arguments.bundles:
            calibration = stages.representative_images(config, dataset)[0]
            write_bundle(arguments.bundles / name, tflite.to_int8(result.model, calibration, config.io_dtype))


if __name__ == "__main__":
    main()
