"""Real-photo accuracy: the default build (and its levers) on phone photos, through the board's preprocessing.

The photos (/work/shared/photos, 1,562 phone photos in one folder per class; see its README) are
split once, stratified by class with seed 0, into a choosing part (80%) and a reporting part (20%).
Every lever is chosen on the choosing part (and on Fashion-MNIST validation); the reporting part and
Fashion-MNIST's test set give only the final figures (`--report`). Each run appends a JSON line to
benchmarks/real_photos.jsonl.

Usage (from the repository root):
    python benchmarks/real_photos.py frames --sheet /tmp/frames.png     # preprocessing figures, a contact sheet
    python benchmarks/real_photos.py train --name base10 --set epochs=10
    python benchmarks/real_photos.py train --name final --seeds 42 43 44 --report
    python benchmarks/real_photos.py photos --name w40 --folds 0 1 --set epochs=10 augment_camera=0.3 photo_weight=40
    python benchmarks/real_photos.py photos --name w40-final --report --set augment_camera=0.3 photo_weight=40
"""

import argparse
import dataclasses
import io
import os
import pathlib
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from edge_fashion import config as config_module  # noqa: E402
from fashion_board import preprocess  # noqa: E402
from edge_fashion.pipeline import data, evaluate, stages, train  # noqa: E402
from edge_fashion.converters import tflite  # noqa: E402
import accuracy  # noqa: E402  (benchmarks/accuracy.py: its override parser)

PHOTOS = pathlib.Path(os.environ.get("EDGE_FASHION_PHOTOS", "/work/shared/photos"))
LOG = REPO / "benchmarks" / "real_photos.jsonl"
SPLIT_SEED = 0  # The one split of the photos; never changed once figures were reported.
REPORTING_SHARE = 0.2


def read_photos() -> tuple[list[pathlib.Path], np.ndarray]:
    """Every photo path and its Fashion-MNIST label index, from labels.csv."""
    rows = [line.split(",") for line in (PHOTOS / "labels.csv").read_text().splitlines()[1:] if line]
    return [PHOTOS / row[0] for row in rows], np.array([int(row[1]) for row in rows], dtype=np.int64)


def split_photos(labels: np.ndarray) -> np.ndarray:
    """True for the reporting part: 20% of each class, drawn with SPLIT_SEED."""
    generator = np.random.default_rng(SPLIT_SEED)
    reporting = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(REPORTING_SHARE * len(members)))
        reporting[generator.choice(members, count, replace=False)] = True
    return reporting


def make_frames(paths: list[pathlib.Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(N, 28, 28) uint8 frames through the board's preprocessing, the unsure flags, ms each, errors."""
    frames = np.zeros((len(paths), 28, 28), dtype=np.uint8)
    unsure, milliseconds, errors = np.zeros(len(paths), dtype=bool), np.zeros(len(paths)), []
    for number, path in enumerate(paths):
        started = time.perf_counter()
        try:
            image = preprocess.decode(path, use_draft=True)
            if hasattr(preprocess, "preprocess_with_doubt"):
                frames[number], unsure[number] = preprocess.preprocess_with_doubt(image, None)
            else:  # An older board package (before the colour cut), for before-and-after figures.
                frames[number] = preprocess.preprocess(image, None)
        except ValueError as error:
            errors.append(f"{path.name}: {error}")
            unsure[number] = True
        milliseconds[number] = 1000 * (time.perf_counter() - started)
    return frames, unsure, milliseconds, errors


def per_class(labels: np.ndarray, predictions: np.ndarray) -> dict:
    return {data.LABELS[label]: round(float((predictions[labels == label] == label).mean()), 4)
            for label in np.unique(labels)}


def photo_figures(probabilities: np.ndarray, labels: np.ndarray, unsure: np.ndarray, prefix: str) -> dict:
    predictions = probabilities.argmax(axis=1)
    return {f"{prefix}": float((predictions == labels).mean()),
            f"{prefix}_sure": float((predictions == labels)[~unsure].mean()) if (~unsure).any() else None,
            f"{prefix}_unsure_share": float(unsure.mean()),
            f"{prefix}_per_class": per_class(labels, predictions),
            f"{prefix}_predicted": np.bincount(predictions, minlength=10).tolist()}


def append(record: dict) -> None:
    accuracy.append(record, LOG)


def contact_sheet(paths, frames, labels, predictions, out: pathlib.Path, columns: int = 12) -> None:
    """Photo beside the frame the model saw, true and predicted label under them."""
    cell_width, cell_height = 2 * 84 + 4, 84 + 24
    rows = -(-len(paths) // columns)
    sheet = Image.new("RGB", (columns * cell_width, rows * cell_height), "white")
    draw = ImageDraw.Draw(sheet)
    for number, (path, frame) in enumerate(zip(paths, frames)):
        left, top = (number % columns) * cell_width, (number // columns) * cell_height
        with Image.open(path) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((84, 84))
            sheet.paste(photo, (left, top))
        sheet.paste(Image.fromarray(frame).resize((84, 84), Image.Resampling.NEAREST).convert("RGB"), (left + 86, top))
        wrong = predictions is not None and predictions[number] != labels[number]
        text = data.LABELS[labels[number]][:9] + (f">{data.LABELS[predictions[number]][:9]}" if predictions is not None else "")
        draw.text((left + 2, top + 86), text, fill="red" if wrong else "black")
    sheet.save(out)


def camera_frame_timing(paths: list[pathlib.Path]) -> str:
    """Decode and preprocess each photo as a 640x480 camera JPEG (quality 90): the issue's 5 ms budget."""
    jpegs = []
    for path in paths:
        with Image.open(path) as photo:
            buffer = io.BytesIO()
            photo.convert("RGB").resize((640, 480), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
            jpegs.append(buffer.getvalue())
    milliseconds = []
    for content in jpegs * 3:
        started = time.perf_counter()
        try:
            preprocess.preprocess_with_doubt(preprocess.decode(io.BytesIO(content), use_draft=True), None)
        except ValueError:
            pass  # No garment found: it still took its time.
        milliseconds.append(1000 * (time.perf_counter() - started))
    return (f"640x480 JPEG decode + preprocess: p50 {np.percentile(milliseconds, 50):.2f} ms, "
            f"p95 {np.percentile(milliseconds, 95):.2f} ms over {len(milliseconds)} frames "
            f"(load average {os.getloadavg()[0]:.1f})")


def command_frames(arguments) -> None:
    paths, labels = read_photos()
    reporting = split_photos(labels)
    choosing = np.flatnonzero(~reporting)
    chosen_paths = [paths[index] for index in choosing]
    frames, unsure, milliseconds, errors = make_frames(chosen_paths)
    print(f"choosing part: {len(choosing)} photos, reporting part: {int(reporting.sum())}")
    print(f"preprocess (decode included) p50 {np.percentile(milliseconds, 50):.2f} ms, "
          f"p95 {np.percentile(milliseconds, 95):.2f} ms; unsure {unsure.mean():.1%}; errors {len(errors)}")
    for error in errors[:10]:
        print("  ", error)
    print(camera_frame_timing(chosen_paths[:arguments.count]))
    if arguments.sheet:
        generator = np.random.default_rng(1)
        shown = np.sort(generator.choice(len(choosing), min(arguments.count, len(choosing)), replace=False))
        contact_sheet([chosen_paths[i] for i in shown], frames[shown], labels[choosing][shown], None, arguments.sheet)
        print(f"contact sheet: {arguments.sheet}")


def train_one(name: str, seed: int, overrides: dict, dataset, photo_sets: dict, report: bool,
              save: pathlib.Path | None = None) -> dict:
    config = config_module.make_config("default", seed=seed, **overrides)
    split = train.make_split(config, dataset)
    result = train.train(config, split)
    if save:
        result.model.save(save / f"{name}-{seed}.keras")
    record = {"kind": "train", "name": name, "seed": seed, "overrides": overrides, "best_epoch": result.best_epoch,
              "best_validation": result.best_validation_accuracy, "train_seconds": result.seconds}
    frames, labels, unsure = photo_sets["choosing"]
    record.update(photo_figures(evaluate.run_keras(result.model, frames), labels, unsure, "choosing"))
    if report:
        record.update(final_figures(config, dataset, result.model, photo_sets))
    return record


def final_figures(config, dataset, model, photo_sets: dict, split=None) -> dict:
    """The verdict only: Fashion-MNIST's test set and the photos' reporting part, float and int8;
    calibrated as `build` does, on the split's training photos too."""
    float_content = tflite.to_float(model)
    calibration, _ = stages.representative_images(config, split or train.make_split(config, dataset))
    int8_content = tflite.to_int8(model, calibration, config.io_dtype)
    verdict = evaluate.verify(model, float_content, int8_content, dataset.test_images, dataset.test_labels)
    record = {"float_test": verdict.float_tflite.accuracy, "int8_test": verdict.int8.accuracy,
              "drop_points": verdict.drop_points}
    frames, labels, unsure = photo_sets["reporting"]
    record.update(photo_figures(evaluate.run_tflite(int8_content, frames), labels, unsure, "reporting_int8"))
    record.update(photo_figures(evaluate.run_tflite(float_content, frames), labels, unsure, "reporting_float"))
    return record


def command_report(arguments) -> None:
    """The final figures of a model saved by `train --save` (trained with --seed and --set as given)."""
    import keras  # noqa: PLC0415

    sets, dataset = photo_sets(), data.load_fashion_mnist()
    config = config_module.make_config("default", seed=arguments.seed, **accuracy.parse_overrides(arguments.set))
    model = keras.saving.load_model(arguments.model)
    record = {"kind": "train", "name": arguments.name, "seed": arguments.seed, "overrides": accuracy.parse_overrides(arguments.set)}
    frames, labels, unsure = sets["choosing"]
    record.update(photo_figures(evaluate.run_keras(model, frames), labels, unsure, "choosing"))
    record.update(final_figures(config, dataset, model, sets))
    append(record)


def photo_sets() -> dict:
    """{"choosing" | "reporting": (frames, labels, unsure)} through today's board preprocessing."""
    paths, labels = read_photos()
    reporting = split_photos(labels)
    frames, unsure, _, _ = make_frames(paths)
    return {"choosing": (frames[~reporting], labels[~reporting], unsure[~reporting]),
            "reporting": (frames[reporting], labels[reporting], unsure[reporting])}


def command_evaluate(arguments) -> None:
    """A saved Keras model on the choosing part, to compare preprocessing variants without training."""
    import keras  # noqa: PLC0415

    frames, labels, unsure = photo_sets()["choosing"]
    for path in arguments.models:
        model = keras.saving.load_model(path)
        record = {"kind": "evaluate", "name": arguments.name, "model": path.name}
        record.update(photo_figures(evaluate.run_keras(model, frames), labels, unsure, "choosing"))
        append(record)


def command_train(arguments) -> None:
    sets = photo_sets()
    dataset = data.load_fashion_mnist()
    overrides = accuracy.parse_overrides(arguments.set)
    for seed in arguments.seeds:
        append(train_one(arguments.name, seed, overrides, dataset, sets, arguments.report, arguments.save))


FOLD_COUNT = 3  # Folds of the choosing part for levers of `build --photos`: train on two thirds, measure on one.


def choosing_folds(labels: np.ndarray) -> np.ndarray:
    """Each choosing photo's fold (0..FOLD_COUNT-1), stratified by class, drawn with SPLIT_SEED."""
    generator = np.random.default_rng(SPLIT_SEED)
    folds = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        folds[members] = np.arange(len(members)) % FOLD_COUNT
    return folds


def with_photos(config, dataset, frames: np.ndarray, labels: np.ndarray):
    """The training split with these photo frames mixed in, as `build --photos` does (frames the
    board could not make, all zeros here, are left out as the build leaves them out)."""
    framed = frames.reshape(len(frames), -1).max(axis=1) > 0
    return dataclasses.replace(train.make_split(config, dataset), photo_images=frames[framed],
                               photo_labels=labels[framed].astype(np.uint8))


def photos_one(name: str, seed: int, overrides: dict, dataset, sets: dict, fold: int | None) -> dict:
    """A build with photos: trained on the choosing part less one fold and measured on that fold, or
    (fold None) trained on the whole choosing part and measured on the reporting part."""
    # With photos, as `build --photos` makes it (photo_epochs unless epochs is set).
    config = config_module.make_config("default", seed=seed, photos=(PHOTOS,), **overrides)
    frames, labels, unsure = sets["choosing"]
    folds = choosing_folds(labels)
    training = folds != fold if fold is not None else np.ones(len(labels), dtype=bool)
    split = with_photos(config, dataset, frames[training], labels[training])
    result = train.train(config, split)
    record = {"kind": "photos", "name": name, "seed": seed, "fold": fold, "overrides": overrides,
              "train_photos": len(split.photo_labels), "best_epoch": result.best_epoch,
              "best_validation": result.best_validation_accuracy, "train_seconds": result.seconds}
    if fold is not None:
        measured = ~training
        record.update(photo_figures(evaluate.run_keras(result.model, frames[measured]), labels[measured],
                                    unsure[measured], "held_fold"))
        return record
    record.update(final_figures(config, dataset, result.model, sets, split))
    return record


def command_photos(arguments) -> None:
    sets, dataset = photo_sets(), data.load_fashion_mnist()
    overrides = accuracy.parse_overrides(arguments.set)
    for seed in arguments.seeds:
        for fold in (arguments.folds if not arguments.report else [None]):
            append(photos_one(arguments.name, seed, overrides, dataset, sets, fold))


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    framer = commands.add_parser("frames", help="preprocess the choosing part: time, unsure share, a contact sheet")
    framer.add_argument("--sheet", type=pathlib.Path, help="write a contact sheet of photo and frame here")
    framer.add_argument("--count", type=int, default=120, help="photos on the contact sheet")
    trainer = commands.add_parser("train", help="train a config variant per seed, measure it on the photos")
    trainer.add_argument("--name", required=True)
    trainer.add_argument("--seeds", type=int, nargs="+", default=[42])
    trainer.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    trainer.add_argument("--report", action="store_true",
                         help="also the final figures: the reporting part and Fashion-MNIST's test set, int8")
    trainer.add_argument("--save", type=pathlib.Path, help="folder for the trained Keras models")
    reporter = commands.add_parser("report", help="the final figures of a saved model")
    reporter.add_argument("--name", required=True)
    reporter.add_argument("--seed", type=int, required=True, help="the seed it was trained with")
    reporter.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="its config overrides")
    reporter.add_argument("model", type=pathlib.Path)
    evaluator = commands.add_parser("evaluate", help="saved Keras models on the choosing part (preprocessing variants)")
    evaluator.add_argument("--name", required=True, help="what the preprocessing variant is called in the log")
    evaluator.add_argument("models", type=pathlib.Path, nargs="+")
    with_photos_parser = commands.add_parser("photos", help="build --photos levers: in folds of the choosing part, or --report")
    with_photos_parser.add_argument("--name", required=True)
    with_photos_parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    with_photos_parser.add_argument("--folds", type=int, nargs="+", default=list(range(FOLD_COUNT)),
                                    help=f"folds to hold out in turn (0..{FOLD_COUNT - 1})")
    with_photos_parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    with_photos_parser.add_argument("--report", action="store_true",
                                    help="train on the whole choosing part; measure the reporting part and the test set")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    {"frames": command_frames, "train": command_train, "evaluate": command_evaluate, "report": command_report,
     "photos": command_photos}[arguments.command](arguments)


if __name__ == "__main__":
    main()
