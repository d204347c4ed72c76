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


def representative_images(config: config_module.BuildConfig, dataset: data.Dataset, photo_parts=None):
    """(calibration images, how many of each source): from the training split (never validation or
    test), stratified and seeded, and from the training photos in the share that training draws them."""
    split = train.make_split(config, dataset)
    count = min(config.representative_samples, len(split.train_labels))
    frames = training_frames(photo_parts)
    drawn = config.photo_weight * len(frames)
    photo_count = min(len(frames), round(count * drawn / (len(split.train_labels) + drawn)))
    fashion = split.train_images[data.stratified_indices(split.train_labels, count - photo_count, config.seed)]
    chosen = np.random.default_rng(config.seed).permutation(len(frames))[:photo_count]
    return np.concatenate([fashion, frames[chosen]]), {"fashion_mnist": len(fashion), "photos": photo_count}


def training_frames(photo_parts) -> np.ndarray:
    """(N, 28, 28) uint8 frames of the training photos; none without --photos."""
    if photo_parts is None:
        return np.zeros((0, 28, 28), np.uint8)
    return photo_parts[0].frames[photo_parts[0].framed]


def convert(config: config_module.BuildConfig, calibration, keras_model, progress) -> tuple[bytes, bytes]:
    """Float and all-integer int8 TFLite models; raises ValueError if int8 has a float tensor inside."""
    progress("Converting to float32 TFLite")
    float_content = tflite.to_float(keras_model)
    progress(f"Converting to int8 TFLite ({config.quantizer}), calibrated on {len(calibration)} training images")
    int8_content = quantizers.to_int8(config.quantizer, keras_model, calibration, config.io_dtype, config.per_channel)
    tflite.check_all_integer(int8_content, config.io_dtype)
    return float_content, int8_content


def convert_and_verify(config: config_module.BuildConfig, dataset: data.Dataset, training: dict,
                       stage: pathlib.Path, progress, photo_parts=None) -> dict:
    """Write the TFLite models, the report and the device bundle into `stage`; return the report."""
    started = time.perf_counter()
    calibration, calibration_sources = representative_images(config, dataset, photo_parts)
    float_content, int8_content = convert(config, calibration, training["model"], progress)
    files.atomic_write_bytes(stage / "model_float.tflite", float_content)
    files.atomic_write_bytes(stage / "model_int8.tflite", int8_content)
    converted = time.perf_counter()
    progress(f"Verifying on {len(dataset.test_labels):,} test images: Keras, float TFLite, int8 TFLite")
    verdict = evaluate.verify(training["model"], float_content, int8_content,
                              dataset.test_images, dataset.test_labels)
    verified = time.perf_counter()
    labels = list(data.LABELS)
    files.atomic_write_text(stage / "labels.txt", "\n".join(labels) + "\n")
    result = make_report(config, dataset, training, verdict, stage, int8_content)
    progress(f"Checking the board's numpy engine against the interpreter on {len(dataset.test_labels):,} test images")
    result["numpy_engine"] = numpy_check.check(int8_content, dataset.test_images, verdict.int8_probabilities)
    result["calibration"] = calibration_sources
    if photo_parts is not None:
        result["photos"] = held_out_report(config, photo_parts, float_content, int8_content, stage, progress)
    progress("Measuring the int8 error layer by layer")
    result["quantization_layers"] = quantization_report.layer_errors(training["model"], calibration, calibration[:100])
    result["timings"].update(convert_seconds=converted - started, verify_seconds=verified - converted)
    report.write(stage, result, labels, dataset.test_images, dataset.test_labels, verdict.int8_probabilities)
    if result["gate"]["passed"]:
        progress("Writing the device bundle")
        write_bundle(stage, dataset, int8_content, verdict.int8_probabilities, result)
    return result


def write_bundle(stage: pathlib.Path, dataset: data.Dataset, int8_content: bytes, int8_probabilities,
                 result: dict) -> None:
    cases = bundle.self_test_cases(dataset.test_images, dataset.test_labels, int8_probabilities, int8_content)
    accuracy = {"float": result["metrics"]["float_tflite"]["accuracy"],
                "int8": result["metrics"]["int8"]["accuracy"], "test_images": len(dataset.test_labels)}
    io_specs = result["int8_tensors"]["input"], result["int8_tensors"]["output"]
    manifest = bundle.manifest(int8_content, io_specs, list(data.LABELS), accuracy, cases)
    manifest["numpy_engine"] = numpy_check.manifest_record(result["numpy_engine"])
    bundle.write_device_bundle(stage / "device", int8_content, list(data.LABELS), manifest)


def held_out_report(config, photo_parts, float_content: bytes, int8_content: bytes, stage: pathlib.Path,
                    progress) -> dict:
    """report.json's `photos`: how the photos were used, and both models on the held-out ones."""
    train_part, held_out = photo_parts
    result = {"training": {"folders": [str(folder) for folder in config.photos], "train": len(train_part),
                           "held_out": len(held_out), "photo_weight": config.photo_weight,
                           "held_out_share": config.photo_held_out}}
    if len(held_out):
        section, sheet = photo_report.evaluate_photos(float_content, int8_content, held_out, config.photos,
                                                      "photos_held_out.png")
        report.save_png(sheet, stage / section["contact_sheet"])
        progress("  " + photo_report.summary_line(section, "held-out photos:"))
        result["held_out"] = section
    return result


def make_report(config, dataset, training, verdict, stage, int8_content) -> dict:
    drop = verdict.drop_points
    input_spec, output_spec = tflite.io_specs(int8_content)
    return {
        "edge_fashion": edge_fashion.__version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config_module.to_json(config),
        "versions": report.package_versions(),
        "device": training["device"],
        "data": {"source": str(dataset.source), "test_images": len(dataset.test_labels)},
        "training": {key: training.get(key) for key in ("seed", "best_epoch", "best_validation_accuracy", "history")},
        "timings": {"train_seconds": training["seconds"]},
        "metrics": verdict.to_json(),
        "gate": {"max_drop": config.max_drop, "drop_points": drop, "passed": evaluate.gate_passed(drop, config.max_drop)},
        "int8_tensors": {"input": input_spec, "output": output_spec},
        "sizes": {name: (stage / name).stat().st_size for name in MODEL_NAMES},
        "sha256": {name: files.sha256_file(stage / name) for name in MODEL_NAMES},
    }


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
        f"trained on             {result['device']} in {result['timings']['train_seconds']:.0f} s; "
        f"whole build {result['timings'].get('total_seconds', 0):.0f} s",
        *photo_lines(result),
        f"numpy engine           {numpy_check.verdict(result['numpy_engine'])}",
        f"written to             {out_dir / runs.RUNS / result['run']}/, now {out_dir / runs.LATEST}; "
        f"copy {out_dir / 'device'}/ to the board",
    ])


def photo_lines(result: dict) -> list[str]:
    section = result.get("photos", {}).get("held_out")
    return [photo_report.summary_line(section, "held-out photos       ")] if section else []


# The stages the commands chain: each takes the config and a progress callback, none prints.


def build(config: config_module.BuildConfig, progress) -> dict:
    """Train, then convert, verify, report, bundle and publish; raises GateError when int8 is refused."""
    started = time.perf_counter()
    dataset = load_data(config, progress)
    with runs.lock(config.out_dir):
        photo_parts = load_photos(config, progress)
        training = run_training(config, dataset, progress, photo_parts)
        with runs.staging(config.out_dir) as stage:
            bundle.save_keras_atomically(training["model"], stage / "model.keras")
            return finish(config, dataset, training, stage, started, progress, photo_parts)


def reconvert(config: config_module.BuildConfig, progress) -> dict:
    """Convert, verify and publish as a new run the model `train` left in OUT/trained/, else the
    latest run's model, without training; a published trained/ model is then removed from there."""
    started = time.perf_counter()
    if not config.out_dir.is_dir():
        raise ValueError(f"{config.out_dir} not found: run `edge-fashion build --out {config.out_dir}` first")
    with runs.lock(config.out_dir):
        source = training_source(config.out_dir)
        training = read_training(source)
        dataset = load_data(config, progress)
        photo_parts = load_photos(config, progress)
        with runs.staging(config.out_dir) as stage:
            runs.copy_file(source / "model.keras", stage / "model.keras")
            result = finish(config, dataset, training, stage, started, progress, photo_parts)
        if source == config.out_dir / TRAINED:
            runs.retire(source)
        return result


def train_only(config: config_module.BuildConfig, progress) -> dict:
    """Train and write OUT/trained/model.keras and train.json (swapped in whole); return what train.json holds."""
    dataset = load_data(config, progress)
    with runs.lock(config.out_dir):
        training = run_training(config, dataset, progress, load_photos(config, progress))
        with runs.staging(config.out_dir) as stage:
            bundle.save_keras_atomically(training.pop("model"), stage / "model.keras")
            files.atomic_write_json(stage / "train.json", training)
            runs.swap_folder(stage, config.out_dir / TRAINED)
    return training


def training_source(out_dir: pathlib.Path) -> pathlib.Path:
    """The folder `convert` reads model.keras from: OUT/trained/, else the latest run, else OUT itself
    (a `train` of the layout before runs)."""
    trained = out_dir / TRAINED
    return trained if (trained / "model.keras").is_file() else runs.latest_run(out_dir) or out_dir


def load_data(config: config_module.BuildConfig, progress) -> data.Dataset:
    progress("Reading Fashion-MNIST")
    dataset = data.load_fashion_mnist(config.data_dir)
    progress(f"  {len(dataset.train_labels):,} training and {len(dataset.test_labels):,} test images from {dataset.source}")
    return dataset


def load_photos(config: config_module.BuildConfig, progress):
    """(training part, held-out part) of the --photos folders, stratified and seeded; None without them."""
    if not config.photos:
        return None
    progress(f"Reading photos from {', '.join(map(str, config.photos))} through the board's preprocessing")
    train_part, held_out = photos.split(photos.read_photos(config.photos, progress), config.photo_held_out, config.seed)
    progress(f"  {len(train_part):,} photos to train on, {len(held_out):,} held out to report on")
    return train_part, held_out


def run_training(config: config_module.BuildConfig, dataset: data.Dataset, progress, photo_parts=None) -> dict:
    split = train.make_split(config, dataset)
    if photo_parts is not None:
        frames = training_frames(photo_parts)
        split = dataclasses.replace(split, photo_images=frames,
                                    photo_labels=photo_parts[0].labels[photo_parts[0].framed])
        progress(f"  each of {len(frames):,} photos drawn {config.photo_weight} times an epoch")
    progress(f"Training on {len(split.train_labels):,} images, validating on {len(split.validation_labels):,}")
    result = train.train(config, split)
    progress(f"  best epoch {result.best_epoch}: validation accuracy {100 * result.best_validation_accuracy:.2f}%, "
             f"{result.seconds:.0f} s on {result.device}")
    return {"model": result.model, "device": result.device, "seconds": result.seconds, "seed": config.seed,
            "best_epoch": result.best_epoch, "best_validation_accuracy": result.best_validation_accuracy,
            "history": result.history, "config": config_module.to_json(config)}


def read_training(folder: pathlib.Path) -> dict:
    """model.keras and what is known of its training: train.json, else a run's report."""
    if not (folder / "model.keras").is_file():
        raise ValueError(f"{folder / 'model.keras'} not found: run `edge-fashion train --out {folder}` first")
    if (folder / "train.json").is_file():
        training = json.loads((folder / "train.json").read_text())
    else:
        run_report = runs.read_report(folder)
        training = {**run_report.get("training", {}), "device": run_report.get("device"),
                    "seconds": run_report.get("timings", {}).get("train_seconds")}
    training["device"] = training.get("device") or "unknown (trained earlier)"
    training["seconds"] = training.get("seconds") or 0.0
    training["model"] = keras.saving.load_model(folder / "model.keras")
    return training


def read_models(out_dir: pathlib.Path):
    """(Keras model, float TFLite bytes, int8 TFLite bytes) of a finished build: OUT's latest run, or
    `out_dir` itself when it is a run (or a build of the layout before runs)."""
    out_dir = runs.models_folder(out_dir)
    missing = [name for name in MODEL_NAMES if not (out_dir / name).is_file()]
    if missing:
        raise ValueError(f"{out_dir}: missing {', '.join(missing)}; run `edge-fashion build --out {out_dir}` first")
    return (keras.saving.load_model(out_dir / MODEL_NAMES[0]),
            (out_dir / MODEL_NAMES[1]).read_bytes(), (out_dir / MODEL_NAMES[2]).read_bytes())


def finish(config: config_module.BuildConfig, dataset: data.Dataset, training: dict, stage: pathlib.Path,
           started: float, progress, photo_parts=None) -> dict:
    """Convert, verify, report and bundle in `stage`; publish it and return the report, or keep it
    aside and raise GateError if int8 is refused."""
    result = convert_and_verify(config, dataset, training, stage, progress, photo_parts)
    if not result["gate"]["passed"]:
        rejected = bundle.reject(stage, config.out_dir)
        metrics = result["metrics"]
        message = evaluate.gate_message(metrics["float_tflite"]["accuracy"], metrics["int8"]["accuracy"], config.max_drop)
        raise evaluate.GateError(f"{message}; refused model kept at {rejected}; the build in {config.out_dir} "
                                 f"and its latest run are unchanged")
    result["timings"]["total_seconds"] = time.perf_counter() - started
    result["run"] = runs.run_name(config.out_dir, result["sha256"]["model_int8.tflite"])
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
