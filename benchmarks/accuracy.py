"""Accuracy experiments: train a variant of the build config, quantize it, log the result, render the log.

Every run appends one JSON line to benchmarks/accuracy.jsonl; `render` turns the log into the
tables of docs/accuracy.md. Levers are chosen on validation accuracy (5,000 held-out training
images); test accuracy is logged for the verdict only.

Usage:
    python benchmarks/accuracy.py train --name shift2 --seeds 42 --set shift_pixels=2
    python benchmarks/accuracy.py quantize --name final --seed 42 --set epochs=40 --samples 100 300 1000
    python benchmarks/accuracy.py render
"""

import argparse
import ast
import dataclasses
import datetime
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_fashion import config as config_module  # noqa: E402
from edge_fashion.pipeline import data, evaluate, stages, train  # noqa: E402
from edge_fashion.converters import quantizers, tflite  # noqa: E402

LOG = REPO / "benchmarks" / "accuracy.jsonl"
DOC = REPO / "docs" / "accuracy.md"
BEGIN, END = "<!-- tables: begin (benchmarks/accuracy.py render) -->", "<!-- tables: end -->"


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` pairs into config overrides; values are Python literals (2, 0.1, True, "one-cycle")."""
    overrides = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def append(record: dict, log: pathlib.Path = LOG) -> None:
    """Stamp the record, append it to the JSON-lines log and print it."""
    record["logged_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    record["load_average"] = os.getloadavg()[0]
    with log.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def int8_figures(config, dataset, split, keras_model, float_content, int8_content) -> dict:
    """int8 against float on the test set (the verdict) and on validation (for choosing levers)."""
    verdict = evaluate.verify(keras_model, float_content, int8_content, dataset.test_images, dataset.test_labels)
    validation_int8 = evaluate.run_tflite(int8_content, split.validation_images)
    validation_float = evaluate.run_tflite(float_content, split.validation_images)
    return {
        "float_test": verdict.float_tflite.accuracy, "int8_test": verdict.int8.accuracy,
        "agreement_test": verdict.int8_float_agreement, "drop_points": verdict.drop_points,
        "float_validation": float(evaluate.metrics(split.validation_labels, validation_float).accuracy),
        "int8_validation": float(evaluate.metrics(split.validation_labels, validation_int8).accuracy),
        "agreement_validation": evaluate.agreement(validation_int8, validation_float),
    }


def train_one(name: str, seed: int, overrides: dict, dataset) -> tuple[dict, object]:
    config = config_module.make_config("default", seed=seed, **overrides)
    split = train.make_split(config, dataset)
    started = time.perf_counter()
    result = train.train(config, split)
    float_content = tflite.to_float(result.model)
    int8_content = tflite.to_int8(result.model, stages.representative_images(config, split)[0], config.io_dtype)
    record = {"kind": "train", "name": name, "seed": seed, "overrides": overrides,
              "best_epoch": result.best_epoch, "best_validation": result.best_validation_accuracy,
              "train_seconds": result.seconds, "device": result.device, "config": config_module.to_json(config)}
    record.update(int8_figures(config, dataset, split, result.model, float_content, int8_content))
    record["run_seconds"] = time.perf_counter() - started
    return record, result.model


def command_train(arguments) -> None:
    dataset = data.load_fashion_mnist()
    overrides = parse_overrides(arguments.set)
    for seed in arguments.seeds:
        record, model = train_one(arguments.name, seed, overrides, dataset)
        append(record)
        if arguments.save:
            model.save(arguments.save / f"{arguments.name}-{seed}.keras")


def command_quantize(arguments) -> None:
    """Re-quantize one saved model with each representative-set size and per-channel setting."""
    import keras

    dataset = data.load_fashion_mnist()
    overrides = parse_overrides(arguments.set)
    config = config_module.make_config("default", seed=arguments.seed, **overrides)
    split = train.make_split(config, dataset)
    model = keras.saving.load_model(arguments.model)
    float_content = tflite.to_float(model)
    for samples in arguments.samples:
        for per_channel in (True, False):
            calibration_config = dataclasses.replace(config, representative_samples=samples)
            started = time.perf_counter()
            calibration = stages.representative_images(calibration_config, split)[0]
            io_dtype = "int8" if arguments.quantizer == "ai-edge" else config.io_dtype
            int8_content = quantizers.to_int8(arguments.quantizer, model, calibration, io_dtype, per_channel)
            record = {"kind": "quantize", "name": arguments.name, "seed": arguments.seed, "overrides": overrides,
                      "quantizer": arguments.quantizer, "samples": samples, "per_channel": per_channel,
                      "convert_seconds": time.perf_counter() - started}
            record.update(int8_figures(config, dataset, split, model, float_content, int8_content))
            append(record)


def read_log() -> list[dict]:
    return [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()] if LOG.exists() else []


def percent(values: list[float]) -> str:
    """Mean in percent, ± half the range (max - min) when there is more than one value."""
    mean = 100 * sum(values) / len(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {50 * (max(values) - min(values)):.2f}"


def describe(overrides: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items()) or "defaults"


def training_table(records: list[dict]) -> list[str]:
    """One row per run name, seeds pooled: mean ± half the range."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["name"], []).append(record)
    lines = ["| run | overrides | seeds | validation % | float test % | int8 test % | agreement % | "
             "train s | load |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, runs in groups.items():
        column = lambda key: percent([run[key] for run in runs])  # noqa: E731
        seconds = sum(run["train_seconds"] for run in runs) / len(runs)
        load = sum(run["load_average"] for run in runs) / len(runs)
        overrides = max(runs, key=lambda run: len(run["overrides"]))["overrides"]
        lines.append(f"| {name} | {describe(overrides)} | {', '.join(str(run['seed']) for run in runs)} | "
                     f"{column('best_validation')} | {column('float_test')} | {column('int8_test')} | "
                     f"{column('agreement_test')} | {seconds:.0f} | {load:.1f} |")
    return lines


def quantize_table(records: list[dict]) -> list[str]:
    lines = ["| model | quantizer | calibration images | weights | int8 validation % | agreement validation % | "
             "int8 test % | agreement test % | float test % |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for record in records:
        weights = "per-channel" if record["per_channel"] else "per-tensor"
        lines.append(f"| {record['name']} (seed {record['seed']}) | {record['quantizer']} | {record['samples']} | "
                     f"{weights} | {100 * record['int8_validation']:.2f} | {100 * record['agreement_validation']:.2f} | "
                     f"{100 * record['int8_test']:.2f} | {100 * record['agreement_test']:.2f} | "
                     f"{100 * record['float_test']:.2f} |")
    return lines


def command_render(arguments) -> None:
    """Replace the text between the markers in docs/accuracy.md with tables made from the log."""
    records = read_log()
    tables = ["### Training runs (in the order they ran)", "", *training_table([r for r in records if r["kind"] == "train"]),
              "", "### int8 calibration and quantizer", "",
              *quantize_table([r for r in records if r["kind"] == "quantize"])]
    text = DOC.read_text() if DOC.exists() else f"# Accuracy experiments\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{chr(10).join(tables)}\n{END}{tail}")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="train and quantize a config variant, once per seed")
    trainer.add_argument("--name", required=True)
    trainer.add_argument("--seeds", type=int, nargs="+", default=[42])
    trainer.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    trainer.add_argument("--save", type=pathlib.Path, help="folder for the trained models")
    quantizer = commands.add_parser("quantize", help="re-quantize a saved model with each calibration choice")
    quantizer.add_argument("--name", required=True)
    quantizer.add_argument("--model", type=pathlib.Path, required=True)
    quantizer.add_argument("--seed", type=int, default=42, help="the seed the model was trained with")
    quantizer.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    quantizer.add_argument("--samples", type=int, nargs="+", default=[100, 300, 1000])
    quantizer.add_argument("--quantizer", choices=["converter", "ai-edge"], default="converter")
    commands.add_parser("render", help="rewrite the tables in docs/accuracy.md from the log")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    {"train": command_train, "quantize": command_quantize, "render": command_render}[arguments.command](arguments)


if __name__ == "__main__":
    main()
