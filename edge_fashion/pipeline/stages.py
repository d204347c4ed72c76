"""The build from end to end: read the data, train, then convert, verify, report and bundle into a
staging folder that is published whole as a run (runs.py), or kept aside when the gate refuses the
int8 model. Each stage that writes holds OUT's lock."""

import dataclasses
import datetime
import json
import pathlib
import time

import keras
import numpy as np

import edge_fashion
from edge_fashion import config as config_module
from edge_fashion import files
from edge_fashion.converters import quantizers, tflite
from edge_fashion.pipeline import (bundle, data, evaluate, inputs, numpy_check, photo_report, photos,
                                   quantization_report, report, runs, train)


MODEL_NAMES, TRAINED = inputs.MODEL_NAMES, inputs.TRAINED  # The names the commands' quick checks look for.


@dataclasses.dataclass(frozen=True)
class Converted:
    """The two TFLite models, and what int8 was calibrated on."""
    float_content: bytes
    int8_content: bytes
    calibration: np.ndarray  # (N, 28, 28) uint8
    calibration_sources: dict  # How many of each: {"fashion_mnist": N, "photos": M}.
    seconds: float


@dataclasses.dataclass(frozen=True)
class Checked:
    """What verification found: the models on the test set, the numpy engine, the held-out photos, int8 per layer."""
    verdict: evaluate.Verdict
    numpy_engine: dict
    photos: dict | None  # report.json's `photos`; None when no photos trained.
    quantization_layers: list
    seconds: float  # The three models on the test set.


def representative_images(config: config_module.BuildConfig, split: train.Split) -> tuple[np.ndarray, dict]:
    """(calibration images, how many of each source): from the training split (never validation or
    test), stratified and seeded, and from the training photos in the share that training draws them."""
    count = min(config.representative_samples, len(split.train_labels))
    share = train.photo_slots(config, split) / config.batch_size
    photo_count = min(len(split.photo_labels), round(count * share))
    fashion = split.train_images[data.stratified_indices(split.train_labels, count - photo_count, config.seed)]
    chosen = np.random.default_rng(config.seed).permutation(len(split.photo_labels))[:photo_count]
    return (np.concatenate([fashion, split.photo_images[chosen]]),
            {"fashion_mnist": len(fashion), "photos": photo_count})


def convert(config: config_module.BuildConfig, split: train.Split, keras_model, stage: pathlib.Path,
            progress) -> Converted:
    """Float and all-integer int8 TFLite models, written into `stage`; raises ValueError if int8 has a
    float tensor inside."""
    started = time.perf_counter()
    calibration, sources = representative_images(config, split)
    progress("Converting to float32 TFLite")
    float_content = tflite.to_float(keras_model)
    progress(f"Converting to int8 TFLite ({config.quantizer}), calibrated on {len(calibration)} training images")
    int8_content = quantizers.to_int8(config.quantizer, keras_model, calibration, config.io_dtype, config.per_channel)
    tflite.check_all_integer(int8_content, config.io_dtype)
    files.atomic_write_bytes(stage / "model_float.tflite", float_content)
    files.atomic_write_bytes(stage / "model_int8.tflite", int8_content)
    return Converted(float_content, int8_content, calibration, sources, time.perf_counter() - started)


def check(config: config_module.BuildConfig, dataset: data.Dataset, keras_model, converted: Converted,
          stage: pathlib.Path, progress, photo_split: photos.PhotoSplit) -> Checked:
    """The models against each other on the test set, the numpy engine against the interpreter, both
    models on the held-out photos (their contact sheet written into `stage`), and int8 layer by layer."""
    progress(f"Verifying on {len(dataset.test_labels):,} test images: Keras, float TFLite, int8 TFLite")
    started = time.perf_counter()
    verdict = evaluate.verify(keras_model, converted.float_content, converted.int8_content,
                              dataset.test_images, dataset.test_labels)
    verify_seconds = time.perf_counter() - started
    progress(f"Checking the board's numpy engine against the interpreter on {len(dataset.test_labels):,} test images")
    engine = numpy_check.check(converted.int8_content, dataset.test_images, verdict.int8_probabilities)
    trained_photos = len(photo_split.stock) + len(photo_split.train)
    held_out = held_out_report(config, photo_split, converted, stage, progress) if trained_photos else None
    progress("Measuring the int8 error layer by layer")
    layers = quantization_report.layer_errors(keras_model, converted.calibration, converted.calibration[:100])
    return Checked(verdict, engine, held_out, layers, verify_seconds)


def write_bundle(stage: pathlib.Path, dataset: data.Dataset, converted: Converted, checked: Checked,
                 result: dict) -> None:
    cases = bundle.self_test_cases(dataset.test_images, dataset.test_labels, checked.verdict.int8_probabilities,
                                   converted.int8_content)
    accuracy = {"float": result["metrics"]["float_tflite"]["accuracy"],
                "int8": result["metrics"]["int8"]["accuracy"], "test_images": len(dataset.test_labels)}
    io_specs = result["int8_tensors"]["input"], result["int8_tensors"]["output"]
    manifest = bundle.manifest(converted.int8_content, io_specs, list(data.LABELS), accuracy, cases)
    manifest["numpy_engine"] = numpy_check.manifest_record(checked.numpy_engine)
    bundle.write_device_bundle(stage / "device", converted.int8_content, list(data.LABELS), manifest)


def held_out_report(config, photo_split: photos.PhotoSplit, converted: Converted, stage: pathlib.Path,
                    progress) -> dict:
    """report.json's `photos`: how the photos were used, and both models on the held-out ones."""
    result = {"training": {"stock": len(photo_split.stock), "folders": [str(folder) for folder in config.photos],
                           "train": len(photo_split.train), "held_out": len(photo_split.held_out),
                           "photo_share": config.photo_share, "photo_balance": config.photo_balance,
                           "held_out_share": config.photo_held_out}}
    if len(photo_split.held_out):
        section, sheet = photo_report.evaluate_photos(converted.float_content, converted.int8_content,
                                                      photo_split.held_out, config.photos, "photos_held_out.png")
        report.save_png(sheet, stage / section["contact_sheet"])
        progress("  " + photo_report.summary_line(section, "held-out photos:"))
        result["held_out"] = section
    return result


def make_report(config, dataset: data.Dataset, trained: train.TrainResult, converted: Converted,
                checked: Checked, stage: pathlib.Path) -> dict:
    """report.json's content, from what each stage returned."""
    drop = checked.verdict.drop_points
    input_spec, output_spec = tflite.io_specs(converted.int8_content)
    record = trained.record()
    result = {
        "edge_fashion": edge_fashion.__version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config_module.to_json(config),
        "versions": report.package_versions(),
        "device": trained.device,
        "data": {"source": str(dataset.source), "test_images": len(dataset.test_labels)},
        "training": {key: record[key] for key in ("seed", "best_epoch", "best_validation_accuracy", "history",
                                                  "images")},
        "timings": {"train_seconds": trained.seconds, "convert_seconds": converted.seconds,
                    "verify_seconds": checked.seconds},
        "metrics": checked.verdict.to_json(),
        "gate": {"max_drop": config.max_drop, "drop_points": drop, "passed": evaluate.gate_passed(drop, config.max_drop)},
        "int8_tensors": {"input": input_spec, "output": output_spec},
        "sizes": {name: (stage / name).stat().st_size for name in MODEL_NAMES},
        "sha256": {name: files.sha256_file(stage / name) for name in MODEL_NAMES},
        "numpy_engine": checked.numpy_engine,
        "calibration": converted.calibration_sources,
        "quantization_layers": checked.quantization_layers,
    }
    return result if checked.photos is None else {**result, "photos": checked.photos}


def summary(result: dict, out_dir: pathlib.Path) -> str:
    """The few lines a user reads after a build."""
    metrics, sizes = result["metrics"], result["sizes"]
    ratio = sizes["model_int8.tflite"] / sizes["model_float.tflite"]
    return "\n".join([
        f"float32 test accuracy  {100 * metrics['float_tflite']['accuracy']:6.2f}%   (Keras {100 * metrics['keras']['accuracy']:.2f}%)",
        f"int8 test accuracy     {100 * metrics['int8']['accuracy']:6.2f}%   ({evaluate.drop_phrase(metrics['drop_points'])}, "
        f"top-1 agreement {100 * metrics['int8_float_agreement']:.2f}%)",
        f"sizes                  int8 {sizes['model_int8.tflite'] / 1e6:.3f} MB, float {sizes['model_float.tflite'] / 1e6:.3f} MB "
        f"({ratio:.2f}x)",
        f"trained on             {result['device']} in {result['timings']['train_seconds']:.0f} s"
        f"{speed_phrase(result)}; whole build {result['timings'].get('total_seconds', 0):.0f} s",
        *photo_lines(result),
        f"numpy engine           {numpy_check.verdict(result['numpy_engine'])}",
        f"written to             {out_dir / runs.RUNS / result['run']}/, now {out_dir / runs.LATEST}; "
        f"copy {out_dir / 'device'}/ to the board",
    ])


def speed_phrase(result: dict) -> str:
    """' (2,950 images a second)', or nothing when the report has no count."""
    images, seconds = result["training"].get("images"), result["timings"]["train_seconds"]
    return f" ({images / seconds:,.0f} images a second)" if images and seconds else ""


def photo_lines(result: dict) -> list[str]:
    section = result.get("photos", {}).get("held_out")
    return [photo_report.summary_line(section, "held-out photos       ")] if section else []


# The stages the commands chain: each takes the config and a progress callback, none prints.


def build(config: config_module.BuildConfig, progress) -> dict:
    """Train, then convert, verify, report, bundle and publish; raises GateError when int8 is refused."""
    started = time.perf_counter()
    dataset = load_data(config, progress)
    with runs.lock(config.out_dir):
        photo_split = load_photos(config, progress)
        split = training_split(config, dataset, photo_split, progress)
        trained = run_training(config, split, progress)
        with runs.staging(config.out_dir) as stage:
            bundle.save_keras_atomically(trained.model, stage / "model.keras")
            return finish(config, dataset, split, trained, stage, started, progress, photo_split)


def reconvert(config: config_module.BuildConfig, progress) -> dict:
    """Convert, verify and publish as a new run the model `train` left in OUT/trained/, else the
    latest run's model, without training; a published trained/ model is then removed from there."""
    started = time.perf_counter()
    if not config.out_dir.is_dir():
        raise ValueError(f"{config.out_dir} not found: run `edge-fashion build --out {config.out_dir}` first")
    with runs.lock(config.out_dir):
        source = training_source(config.out_dir)
        trained = read_training(source)
        dataset = load_data(config, progress)
        photo_split = load_photos(config, progress)
        split = training_split(config, dataset, photo_split, progress)
        with runs.staging(config.out_dir) as stage:
            runs.copy_file(source / "model.keras", stage / "model.keras")
            result = finish(config, dataset, split, trained, stage, started, progress, photo_split)
        if source == config.out_dir / TRAINED:
            runs.retire(source)
        return result


def train_only(config: config_module.BuildConfig, progress) -> train.TrainResult:
    """Train and write OUT/trained/model.keras and train.json (swapped in whole)."""
    dataset = load_data(config, progress)
    with runs.lock(config.out_dir):
        split = training_split(config, dataset, load_photos(config, progress), progress)
        trained = run_training(config, split, progress)
        with runs.staging(config.out_dir) as stage:
            bundle.save_keras_atomically(trained.model, stage / "model.keras")
            files.atomic_write_json(stage / "train.json", {**trained.record(), "config": config_module.to_json(config)})
            runs.swap_folder(stage, config.out_dir / TRAINED)
    return trained


def training_source(out_dir: pathlib.Path) -> pathlib.Path:
    """The folder `convert` reads model.keras from: OUT/trained/, else the finished build's models
    (runs.models_folder: OUT's latest run, or OUT itself when it is a run)."""
    trained = out_dir / TRAINED
    return trained if (trained / "model.keras").is_file() else runs.models_folder(out_dir)


def load_data(config: config_module.BuildConfig, progress) -> data.Dataset:
    progress("Reading Fashion-MNIST")
    dataset = data.load_fashion_mnist(config.data_dir)
    progress(f"  {len(dataset.train_labels):,} training and {len(dataset.test_labels):,} test images from {dataset.source}")
    return dataset


def load_photos(config: config_module.BuildConfig, progress) -> photos.PhotoSplit:
    """The stock set, and the --photos folders' training and held-out parts (stratified, seeded)."""
    stock = photos.no_photos()
    if config.stock_photos:
        progress("Reading the stock photos through the board's preprocessing")
        stock = photos.read_stock(progress)
    if not config.photos:
        return photos.PhotoSplit(photos.no_photos(), photos.no_photos(), stock=stock)
    progress(f"Reading photos from {', '.join(map(str, config.photos))} through the board's preprocessing")
    own = photos.split(photos.read_photos(config.photos, progress), config.photo_held_out, config.seed, config.photos)
    progress(f"  {len(own.train):,} photos to train on, {len(own.held_out):,} held out to report on")
    return dataclasses.replace(own, stock=stock)


def training_split(config: config_module.BuildConfig, dataset: data.Dataset,
                   photo_split: photos.PhotoSplit, progress) -> train.Split:
    """What trains and validates: the data set's split, and the training photos' frames beside it."""
    split = dataclasses.replace(train.make_split(config, dataset), photo_images=photo_split.train_frames,
                                photo_labels=photo_split.train_labels)
    if len(split.photo_labels):
        progress(f"  {len(split.photo_labels):,} photos fill {train.photo_slots(config, split)} of each batch's "
                 f"{config.batch_size} places")
    return split


def run_training(config: config_module.BuildConfig, split: train.Split, progress) -> train.TrainResult:
    progress(f"Training on {len(split.train_labels):,} images, validating on {len(split.validation_labels):,}")
    trained = train.train(config, split)
    progress(f"  best epoch {trained.best_epoch}: validation accuracy {100 * trained.best_validation_accuracy:.2f}%, "
             f"{trained.seconds:.0f} s on {trained.device}, {trained.images_per_second:,.0f} images a second")
    return trained


def read_training(folder: pathlib.Path) -> train.TrainResult:
    """model.keras and what is known of its training: train.json, else a run's report."""
    if not (folder / "model.keras").is_file():
        raise ValueError(f"{folder / 'model.keras'} not found: run `edge-fashion train --out {folder}` first")
    if (folder / "train.json").is_file():
        record = json.loads((folder / "train.json").read_text())
    else:
        run_report = runs.read_report(folder)
        record = {**run_report.get("training", {}), "device": run_report.get("device"),
                  "seconds": run_report.get("timings", {}).get("train_seconds")}
    return train.TrainResult(
        model=keras.saving.load_model(folder / "model.keras"), history=record.get("history"),
        best_epoch=record.get("best_epoch"), best_validation_accuracy=record.get("best_validation_accuracy"),
        device=record.get("device") or "unknown (trained earlier)", seconds=record.get("seconds") or 0.0,
        seed=record.get("seed"), images=record.get("images"))


def read_models(out_dir: pathlib.Path):
    """(Keras model, float TFLite bytes, int8 TFLite bytes) of a finished build: OUT's latest run, or
    `out_dir` itself when it is a run (or a build of the layout before runs)."""
    out_dir = runs.models_folder(out_dir)
    missing = [name for name in MODEL_NAMES if not (out_dir / name).is_file()]
    if missing:
        raise ValueError(f"{out_dir}: missing {', '.join(missing)}; run `edge-fashion build --out {out_dir}` first")
    return (keras.saving.load_model(out_dir / MODEL_NAMES[0]),
            (out_dir / MODEL_NAMES[1]).read_bytes(), (out_dir / MODEL_NAMES[2]).read_bytes())


def finish(config: config_module.BuildConfig, dataset: data.Dataset, split: train.Split, trained: train.TrainResult,
           stage: pathlib.Path, started: float, progress, photo_split: photos.PhotoSplit) -> dict:
    """Convert, verify, report and bundle in `stage`; publish it and return the report, or keep it
    aside and raise GateError if int8 is refused."""
    converted = convert(config, split, trained.model, stage, progress)
    checked = check(config, dataset, trained.model, converted, stage, progress, photo_split)
    files.atomic_write_text(stage / "labels.txt", "\n".join(data.LABELS) + "\n")
    result = make_report(config, dataset, trained, converted, checked, stage)
    report.write(stage, result, list(data.LABELS), dataset.test_images, dataset.test_labels,
                 checked.verdict.int8_probabilities)
    if not result["gate"]["passed"]:
        rejected = bundle.reject(stage, config.out_dir)
        metrics = result["metrics"]
        message = evaluate.gate_message(metrics["float_tflite"]["accuracy"], metrics["int8"]["accuracy"], config.max_drop)
        raise evaluate.GateError(f"{message}; refused model kept at {rejected}; the build in {config.out_dir} "
                                 f"and its latest run are unchanged")
    progress("Writing the device bundle")
    write_bundle(stage, dataset, converted, checked, result)
    result = {**result, "timings": {**result["timings"], "total_seconds": time.perf_counter() - started},
              "run": runs.run_name(config.out_dir, result["sha256"]["model_int8.tflite"])}
    files.atomic_write_json(stage / "report.json", result)
    runs.publish(stage, config.out_dir, result["run"])
    return result


def evaluate_photos(config: config_module.BuildConfig, float_content: bytes, int8_content: bytes, progress) -> dict:
    """Both models of the build in OUT on every photo of the --photos folders; the figures and the
    contact sheet go into OUT's report (report.json `photos.evaluated`, report.md)."""
    if not (config.out_dir / "report.json").is_file():
        raise ValueError(f"{config.out_dir / 'report.json'} not found: run `edge-fashion build --out {config.out_dir}` first")
    out_dir = (config.out_dir / "report.json").resolve().parent  # The run itself: OUT's files are links into it.
    progress(f"Reading photos from {', '.join(map(str, config.photos))} through the board's preprocessing")
    every = photos.read_photos(config.photos, progress)
    section, sheet = photo_report.evaluate_photos(float_content, int8_content, every, config.photos,
                                                  "photos_evaluated.png")
    result = json.loads((out_dir / "report.json").read_text())
    result.setdefault("photos", {})["evaluated"] = section
    report.save_png(sheet, out_dir / section["contact_sheet"])
    files.atomic_write_text(out_dir / "report.md", report.markdown(result, list(data.LABELS)))
    files.atomic_write_json(out_dir / "report.json", result)
    return section
