"""After training: convert, verify, report and bundle into a staging folder, and say how it went."""

import datetime
import pathlib
import time

import edge_fashion
from edge_fashion import bundle, data, evaluate, quantization_report, report, train
from edge_fashion import config as config_module
from converters import quantizers, tflite

MODEL_NAMES = ("model.keras", "model_float.tflite", "model_int8.tflite")


def representative_images(config: config_module.BuildConfig, dataset: data.Dataset):
    """Calibration images from the training split (never validation or test), stratified and seeded."""
    split = train.make_split(config, dataset)
    count = min(config.representative_samples, len(split.train_labels))
    return split.train_images[data.stratified_indices(split.train_labels, count, config.seed)]


def convert(config: config_module.BuildConfig, calibration, keras_model, progress) -> tuple[bytes, bytes]:
    """Float and all-integer int8 TFLite models; raises ValueError if int8 has a float tensor inside."""
    progress("Converting to float32 TFLite")
    float_content = tflite.to_float(keras_model)
    progress(f"Converting to int8 TFLite ({config.quantizer}), calibrated on {len(calibration)} training images")
    int8_content = quantizers.to_int8(config.quantizer, keras_model, calibration, config.io_dtype, config.per_channel)
    tflite.check_all_integer(int8_content, config.io_dtype)
    return float_content, int8_content


def convert_and_verify(config: config_module.BuildConfig, dataset: data.Dataset, training: dict,
                       stage: pathlib.Path, progress) -> dict:
    """Write the TFLite models, the report and the device bundle into `stage`; return the report."""
    started = time.perf_counter()
    calibration = representative_images(config, dataset)
    float_content, int8_content = convert(config, calibration, training["model"], progress)
    bundle.atomic_write_bytes(stage / "model_float.tflite", float_content)
    bundle.atomic_write_bytes(stage / "model_int8.tflite", int8_content)
    converted = time.perf_counter()
    progress(f"Verifying on {len(dataset.test_labels):,} test images: Keras, float TFLite, int8 TFLite")
    verdict = evaluate.verify(training["model"], float_content, int8_content,
                              dataset.test_images, dataset.test_labels)
    verified = time.perf_counter()
    labels = list(data.LABELS)
    bundle.atomic_write_text(stage / "labels.txt", "\n".join(labels) + "\n")
    result = make_report(config, dataset, training, verdict, stage, int8_content)
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
    bundle.write_device_bundle(stage / "device", int8_content, list(data.LABELS), manifest)


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
        "training": {key: training.get(key) for key in ("best_epoch", "best_validation_accuracy", "history")},
        "timings": {"train_seconds": training["seconds"]},
        "metrics": verdict.to_json(),
        "gate": {"max_drop": config.max_drop, "drop_points": drop, "passed": evaluate.gate_passed(drop, config.max_drop)},
        "int8_tensors": {"input": input_spec, "output": output_spec},
        "sizes": {name: (stage / name).stat().st_size for name in MODEL_NAMES},
        "sha256": {name: bundle.sha256_file(stage / name) for name in MODEL_NAMES},
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
        f"written to             {out_dir}/ (report.md, model_*.tflite); copy {out_dir / 'device'}/ to the board",
    ])
