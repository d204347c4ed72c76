"""Real-photo accuracy: builds and their levers on real photos of garments, through the board's preprocessing.

The photos (two folders of labelled real photos, 2,932 in all; see edge_fashion/stock_photos/README.md)
are split once (benchmarks/stock_photos_split.csv, made by make_stock_photos.py) into a choosing part
(80%, three folds), shipped downscaled as the stock set that every default build trains on, and a
reporting part (20%), never shipped and never trained on. Levers are chosen in folds of the choosing
part: a build trains on the stock copies of two folds and is measured on the third fold's originals,
beside Fashion-MNIST validation. `final` runs the real `build` (the stock set in, as a user runs it)
and measures it on the reporting part, Fashion-MNIST's test set and the synthetic camera frames: the
figures reported, looked at once. Each run appends a JSON line to benchmarks/real_photos.jsonl.

Usage (from the repository root):
    python benchmarks/real_photos.py frames --sheet /tmp/frames.png       # preprocessing figures, a contact sheet
    python benchmarks/real_photos.py folds --name share25 --folds 0 1 --set epochs=10 photo_share=0.25
    python benchmarks/real_photos.py final --name default --seeds 42 43 44
    python benchmarks/real_photos.py final --name fashion-mnist --preset fashion-mnist --seeds 42
"""

import argparse
import dataclasses
import hashlib
import io
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from edge_fashion import config as config_module  # noqa: E402
from fashion_board import capture, preprocess  # noqa: E402
from edge_fashion.pipeline import data, evaluate, photos, stages, train  # noqa: E402
import accuracy  # noqa: E402  (benchmarks/accuracy.py: its override parser and log writer)
import make_stock_photos  # noqa: E402  (the split and the source folders)
from test_classify import camera_frame  # noqa: E402  (the tests' camera frames, as benchmarks/proxies.py makes them)

LOG = REPO / "benchmarks" / "real_photos.jsonl"
CACHE = pathlib.Path(os.environ.get("EDGE_FASHION_FRAME_CACHE", "/tmp/edge-fashion-frames"))
SYNTHETIC_PER_CLASS = 200  # Fashion-MNIST test images per class made into synthetic camera frames.


@dataclasses.dataclass(frozen=True)
class PhotoSet:
    frames: np.ndarray  # (N, 28, 28) uint8; zeros where no garment was found.
    labels: np.ndarray  # (N,) int64
    unsure: np.ndarray  # (N,) bool: the board's doubt about its cut.
    sources: np.ndarray  # (N,) str: the folder each photo came from.
    folds: np.ndarray  # (N,) int64: the choosing part's fold, -1 in the reporting part.
    paths: tuple

    def subset(self, chosen: np.ndarray) -> "PhotoSet":
        return PhotoSet(self.frames[chosen], self.labels[chosen], self.unsure[chosen], self.sources[chosen],
                        self.folds[chosen], tuple(self.paths[index] for index in np.flatnonzero(chosen)))


def board_fingerprint() -> str:
    """Frames change when the board's preprocessing does: its sources name the cache."""
    folder = REPO / "device" / "fashion_board"
    return hashlib.sha256(b"".join(path.read_bytes() for path in sorted(folder.glob("*.py")))).hexdigest()[:16]


def make_frames(paths: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 frames through the board's preprocessing, the unsure flags, ms each."""
    frames = np.zeros((len(paths), 28, 28), dtype=np.uint8)
    unsure, milliseconds = np.zeros(len(paths), dtype=bool), np.zeros(len(paths))
    for number, path in enumerate(paths):
        started = time.perf_counter()
        try:
            frame = photos.board_frame(preprocess.decode(path, True))
            frames[number], unsure[number] = frame.pixels, frame.unsure
        except ValueError:
            unsure[number] = True  # No garment found: an empty frame, a wrong answer.
        milliseconds[number] = 1000 * (time.perf_counter() - started)
    return frames, unsure, milliseconds


def photo_set(copies: bool = False) -> PhotoSet:
    """Every photo of the split, from its original (or, `copies`, the choosing part's shipped copy),
    through today's board preprocessing; cached by the board's sources."""
    rows = make_stock_photos.read_split()
    if copies:
        rows = [row for row in rows if row["part"] == "choosing"]
    classes = {(row["source"], row["file"]): row["class"] for row in make_stock_photos.read_labels()}
    paths = [make_stock_photos.STOCK / capture.folder_name(classes[(row["source"], row["file"])])
             / pathlib.Path(row["file"]).name if copies else make_stock_photos.source_folder(row["source"]) / row["file"]
             for row in rows]
    cache = CACHE / f"{'copies' if copies else 'originals'}-{board_fingerprint()}.npz"
    if cache.is_file():
        stored = np.load(cache)
        frames, unsure = stored["frames"], stored["unsure"]
    else:
        frames, unsure, _ = make_frames(paths)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cache, frames=frames, unsure=unsure)
    return PhotoSet(frames, np.array([int(row["label"]) for row in rows]), unsure,
                    np.array([row["source"] for row in rows]),
                    np.array([int(row["fold"]) if row["fold"] else -1 for row in rows]), tuple(paths))


def per_class(labels: np.ndarray, predictions: np.ndarray) -> dict:
    return {data.LABELS[label]: round(float((predictions[labels == label] == label).mean()), 4)
            for label in np.unique(labels)}


def photo_figures(probabilities: np.ndarray, photos_: PhotoSet, prefix: str) -> dict:
    """Accuracy overall, per class, their mean, per source folder, on frames marked sure; answers per class."""
    predictions = probabilities.argmax(axis=1)
    right = predictions == photos_.labels
    classes = per_class(photos_.labels, predictions)
    return {prefix: float(right.mean()),
            f"{prefix}_class_mean": float(np.mean(list(classes.values()))),
            f"{prefix}_per_class": classes,
            f"{prefix}_per_source": {source: float(right[photos_.sources == source].mean())
                                     for source in np.unique(photos_.sources)},
            f"{prefix}_sure": float(right[~photos_.unsure].mean()) if (~photos_.unsure).any() else None,
            f"{prefix}_predicted": np.bincount(predictions, minlength=10).tolist()}


def synthetic_frame(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A Fashion-MNIST image as a camera might see the garment on a floor: dark on a light, textured,
    unevenly lit background (wood-like grain and blotches), enlarged, off centre, noisy, warm light;
    a (480, 640) RGB image."""
    side = int(28 * rng.uniform(6, 12))
    garment = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC), np.float32)
    rows, columns = np.mgrid[0:480, 0:640] / 640.0
    grain = 0.04 * np.sin(2 * np.pi * (rows * rng.uniform(20, 60) + 0.3 * np.sin(2 * np.pi * columns * 3)))
    blotches = np.asarray(Image.fromarray(rng.uniform(0, 255, (6, 8)).astype(np.uint8)).resize(
        (640, 480), Image.Resampling.BICUBIC), np.float32) / 255
    reflectance = 0.8 + grain + 0.1 * (blotches - 0.5)
    top, left = rng.integers(0, 480 - side + 1), rng.integers(0, 640 - side + 1)
    reflectance[top:top + side, left:left + side] -= 0.7 * garment / 255
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 0.75 + 0.25 * (np.cos(angle) * columns + np.sin(angle) * rows)
    gray = 220 * gradient * np.clip(reflectance, 0.02, 1) + rng.normal(0, 5, reflectance.shape)
    return Image.fromarray(np.clip(gray[..., None] * np.array([1.0, 0.95, 0.85]), 0, 255).astype(np.uint8))


SYNTHETIC = {"camera": camera_frame, "textured": synthetic_frame}  # How a frame is made of an image.


def synthetic_set(images: np.ndarray, labels: np.ndarray, name: str, kind: str):
    """(clean images, their synthetic frames of `kind` through the board's preprocessing, labels, in
    the even sample): SYNTHETIC_PER_CLASS of each class, seeded, and all the bags besides; the frames made
    once and cached under `name`."""
    sample = np.zeros(len(labels), bool)
    sample[data.stratified_indices(labels, SYNTHETIC_PER_CLASS * 10, 5)] = True
    chosen = sample | (labels == data.LABELS.index("Bag"))
    images, labels, sample = images[chosen], labels[chosen].astype(np.int64), sample[chosen]
    cache = CACHE / f"synthetic-{kind}-{name}-{board_fingerprint()}.npz"
    if cache.is_file():
        return images, np.load(cache)["frames"], labels, sample
    rng = np.random.default_rng(5)
    frames = np.zeros_like(images)
    for number, image in enumerate(images):
        buffer = io.BytesIO()
        SYNTHETIC[kind](image, rng).save(buffer, "JPEG", quality=90)
        buffer.seek(0)
        try:
            frames[number] = photos.board_frame(preprocess.decode(buffer, True)).pixels
        except ValueError:
            pass  # No garment found: an empty frame, a wrong answer.
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, frames=frames)
    return images, frames, labels, sample


def synthetic_figures(model, images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    """A model (TFLite bytes, or Keras) on synthetic frames of `images` (the tests' camera frames, and
    textured floors) against the same images clean, over an even sample of the classes and over every
    bag. Folds use validation images (`name` says which), finals the test set's."""
    run = (lambda pixels: evaluate.run_tflite(model, pixels)) if isinstance(model, bytes) else (
        lambda pixels: evaluate.run_keras(model, pixels))
    record = {}
    for kind in SYNTHETIC:
        chosen, frames, chosen_labels, sample = synthetic_set(images, labels, name, kind)
        clean = run(chosen).argmax(axis=1) == chosen_labels
        framed = run(frames).argmax(axis=1) == chosen_labels
        bags = chosen_labels == data.LABELS.index("Bag")
        record.update({f"{kind}_clean": float(clean[sample].mean()), f"{kind}": float(framed[sample].mean()),
                       f"{kind}_bags_clean": float(clean[bags].mean()), f"{kind}_bags": float(framed[bags].mean()),
                       f"{kind}_bag_count": int(bags.sum())})
    return record


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


def camera_frame_timing(paths: list) -> str:
    """Decode and preprocess each photo as a 640x480 camera JPEG (quality 90): the 5 ms budget."""
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
            preprocess.make_frame(preprocess.decode(io.BytesIO(content), use_draft=True), None)
        except ValueError:
            pass  # No garment found: it still took its time.
        milliseconds.append(1000 * (time.perf_counter() - started))
    return (f"640x480 JPEG decode + preprocess: p50 {np.percentile(milliseconds, 50):.2f} ms, "
            f"p95 {np.percentile(milliseconds, 95):.2f} ms over {len(milliseconds)} frames "
            f"(load average {os.getloadavg()[0]:.1f})")


def command_frames(arguments) -> None:
    every = photo_set()
    choosing = every.subset(every.folds >= 0)
    _, _, milliseconds = make_frames(list(choosing.paths[:arguments.count]))
    print(f"choosing part: {len(choosing.labels)} photos, reporting part: {int((every.folds < 0).sum())}")
    print(f"preprocess (decode included) p50 {np.percentile(milliseconds, 50):.2f} ms, "
          f"p95 {np.percentile(milliseconds, 95):.2f} ms; unsure {choosing.unsure.mean():.1%}; "
          f"no garment found {int((choosing.frames.reshape(len(choosing.frames), -1).max(axis=1) == 0).sum())}")
    print(camera_frame_timing(list(choosing.paths[:arguments.count])))
    if arguments.sheet:
        shown = np.sort(np.random.default_rng(1).choice(len(choosing.labels), arguments.count, replace=False))
        contact_sheet([choosing.paths[index] for index in shown], choosing.frames[shown], choosing.labels[shown],
                      None, arguments.sheet)
        print(f"contact sheet: {arguments.sheet}")


def fold_one(name: str, seed: int, preset: str, overrides: dict, dataset, originals: PhotoSet, copies: PhotoSet,
             fold: int) -> dict:
    """Train as the default build does, with the stock copies of the other folds for the stock set;
    measure the fold's originals (Keras, float) and Fashion-MNIST validation."""
    config = config_module.make_config(preset, seed=seed, **overrides)
    training = (copies.folds != fold) & (copies.frames.reshape(len(copies.frames), -1).max(axis=1) > 0)
    split = train.make_split(config, dataset)
    if config.stock_photos:
        split = dataclasses.replace(split, photo_images=copies.frames[training],
                                    photo_labels=copies.labels[training].astype(np.uint8))
    cpu_started = time.process_time()
    result = train.train(config, split)
    cpu_seconds = time.process_time() - cpu_started
    measured = originals.subset(originals.folds == fold)
    record = {"kind": "fold", "split": "stock", "name": name, "seed": seed, "fold": fold, "preset": preset,
              "overrides": overrides, "train_photos": len(split.photo_labels), "best_epoch": result.best_epoch,
              "best_validation": result.best_validation_accuracy, "train_seconds": result.seconds,
              "train_cpu_seconds": cpu_seconds, "images_per_second": result.images_per_second}
    record.update(photo_figures(evaluate.run_keras(result.model, measured.frames), measured, "held_fold"))
    if len(split.photo_labels):  # How well the photos it trained on are fitted: against the held fold, overfitting.
        fitted = evaluate.run_keras(result.model, split.photo_images).argmax(axis=1) == split.photo_labels
        record["trained_photos_accuracy"] = float(fitted.mean())
    record.update(synthetic_figures(result.model, split.validation_images, split.validation_labels,
                                    f"validation-{seed}"))
    return record


def command_folds(arguments) -> None:
    originals, copies, dataset = photo_set(), photo_set(copies=True), data.load_fashion_mnist()
    overrides = accuracy.parse_overrides(arguments.set)
    for seed in arguments.seeds:
        for fold in arguments.folds:
            accuracy.append(fold_one(arguments.name, seed, arguments.preset, overrides, dataset, originals, copies,
                                     fold), LOG)


def final_one(name: str, seed: int, preset: str, overrides: dict, dataset, reporting: PhotoSet) -> dict:
    """`edge-fashion build` itself (into a temporary folder), then its models on the reporting part,
    Fashion-MNIST's test set (from the build's report) and the synthetic camera frames."""
    config = config_module.make_config(preset, seed=seed, **overrides)
    with tempfile.TemporaryDirectory() as folder:
        config = dataclasses.replace(config, out_dir=pathlib.Path(folder) / "build")
        result = stages.build(config, lambda message: print(message, flush=True))
        float_content, int8_content = ((config.out_dir / name).read_bytes()
                                       for name in ("model_float.tflite", "model_int8.tflite"))
    metrics = result["metrics"]
    record = {"kind": "final", "split": "stock", "name": name, "seed": seed, "preset": preset, "overrides": overrides,
              "best_epoch": result["training"]["best_epoch"],
              "best_validation": result["training"]["best_validation_accuracy"],
              "train_seconds": result["timings"]["train_seconds"], "build_seconds": result["timings"]["total_seconds"],
              "images_trained": result["training"]["images"], "float_test": metrics["float_tflite"]["accuracy"],
              "int8_test": metrics["int8"]["accuracy"], "drop_points": metrics["drop_points"],
              "numpy_engine_agrees": result["numpy_engine"]["agrees"]}
    record.update(photo_figures(evaluate.run_tflite(int8_content, reporting.frames), reporting, "reporting_int8"))
    record.update(photo_figures(evaluate.run_tflite(float_content, reporting.frames), reporting, "reporting_float"))
    record.update(synthetic_figures(int8_content, dataset.test_images, dataset.test_labels, "test"))
    return record


def command_final(arguments) -> None:
    every, dataset = photo_set(), data.load_fashion_mnist()
    reporting = every.subset(every.folds < 0)
    overrides = accuracy.parse_overrides(arguments.set)
    for seed in arguments.seeds:
        accuracy.append(final_one(arguments.name, seed, arguments.preset, overrides, dataset, reporting), LOG)


def command_evaluate(arguments) -> None:
    """Saved Keras models on the choosing part's originals, to compare preprocessing variants without training."""
    import keras  # noqa: PLC0415

    every = photo_set()
    choosing = every.subset(every.folds >= 0)
    for path in arguments.models:
        record = {"kind": "evaluate", "split": "stock", "name": arguments.name, "model": path.name}
        record.update(photo_figures(evaluate.run_keras(keras.saving.load_model(path), choosing.frames), choosing,
                                    "choosing"))
        accuracy.append(record, LOG)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    framer = commands.add_parser("frames", help="preprocess the choosing part: time, unsure share, a contact sheet")
    framer.add_argument("--sheet", type=pathlib.Path, help="write a contact sheet of photo and frame here")
    framer.add_argument("--count", type=int, default=120, help="photos timed and on the contact sheet")
    for command, text in (("folds", "a lever in folds of the choosing part"),
                          ("final", "the real build, measured on the reporting part (the figures reported)")):
        runner = commands.add_parser(command, help=text)
        runner.add_argument("--name", required=True)
        runner.add_argument("--seeds", type=int, nargs="+", default=[42])
        runner.add_argument("--preset", default="default", choices=sorted(config_module.PRESETS))
        runner.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
        if command == "folds":
            runner.add_argument("--folds", type=int, nargs="+", default=list(range(make_stock_photos.FOLDS)))
    evaluator = commands.add_parser("evaluate", help="saved Keras models on the choosing part (preprocessing variants)")
    evaluator.add_argument("--name", required=True, help="what the preprocessing variant is called in the log")
    evaluator.add_argument("models", type=pathlib.Path, nargs="+")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    {"frames": command_frames, "folds": command_folds, "final": command_final,
     "evaluate": command_evaluate}[arguments.command](arguments)


if __name__ == "__main__":
    main()
