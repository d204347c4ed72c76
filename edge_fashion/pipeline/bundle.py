"""Artifacts on disk: the Keras model saved whole, the refused build kept aside, the device bundle
(runs.py publishes; files.py writes each file whole)."""

import base64
import datetime
import os
import pathlib
import shutil

import numpy as np

import edge_fashion
from edge_fashion import device_files, files
from edge_fashion.pipeline import evaluate, runs

INT8_NAME, REJECTED_NAME = "model_int8.tflite", "model_int8.rejected.tflite"
# Dequantized probability: 1.5 output steps of 1/256, so a board one step apart passes and a model
# two steps off fails. tflite-runtime and the numpy engine give the host check's very outputs;
# XNNPACK (ai-edge-litert, TensorFlow) rounds differently on some images (up to 3 steps on 321 of
# 100,000 outputs of a 2-epoch build), never on the cases chosen below. A model with 100 flipped
# bits that still loads is 2 steps or more off on some case (docs/bundle.md).
SELF_TEST_TOLERANCE = 1.5 / 256
SELF_TEST_MARGIN = 0.3  # Top-1 minus top-2 probability: a tolerance-sized wobble cannot flip the class.


def save_keras_atomically(model, path: pathlib.Path) -> None:
    """Keras insists on a `.keras` suffix, so the temporary name keeps it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise files.write_error(path, error) from None
    finally:
        temporary.unlink(missing_ok=True)


def reject(stage: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """Keep a refused build aside in `out_dir/rejected/` (the previous one swapped out whole); return
    the rejected model's path. Refused builds never become runs, so `latest` cannot reach them."""
    rejected = out_dir / "rejected"
    shutil.rmtree(stage / "device", ignore_errors=True)
    os.replace(stage / INT8_NAME, stage / REJECTED_NAME)
    runs.swap_folder(stage, rejected)
    return rejected / REJECTED_NAME


def self_test_cases(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                    int8_content: bytes) -> list[dict]:
    """One real test image per class that the int8 model gets right by a clear margin, with its raw
    outputs, among those on which XNNPACK's rounding gives the very same outputs (so that every
    runtime of a board can be held to SELF_TEST_TOLERANCE).

    `probabilities` (N, 10) are the int8 model's on `images`, as the build's verification computed
    them; the chosen images are run again, for their raw outputs.
    """
    ordered = np.sort(probabilities, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    correct = probabilities.argmax(axis=1) == labels
    raw, _ = evaluate.run_tflite_raw(int8_content, images)
    alike = (evaluate.run_tflite_raw(int8_content, images, resolver=evaluate.XNNPACK)[0] == raw).all(axis=1)
    chosen = []
    for label in np.unique(labels):
        candidates = np.flatnonzero(correct & alike & (labels == label) & (margin >= SELF_TEST_MARGIN))
        if len(candidates):
            # The least confident of the clear cases exercises unsaturated outputs.
            chosen.append(int(candidates[np.argmin(margin[candidates])]))
    return [{
        "test_index": index, "label": int(labels[index]), "top1": int(probabilities[index].argmax()),
        "image_b64": base64.b64encode(images[index].tobytes()).decode("ascii"),
        "output_raw": [int(value) for value in row],
        "probabilities": [round(float(value), 6) for value in probabilities[index]],
    } for index, row in zip(chosen, raw[chosen])]


def manifest(int8_content: bytes, io_specs: tuple[dict, dict], labels: list[str],
             accuracy: dict, cases: list[dict]) -> dict:
    """What the board needs to trust and use the model; see docs/bundle.md."""
    input_spec, output_spec = io_specs
    from ai_edge_litert import __version__ as litert_version  # Only for the record.

    return {
        "format_version": 1,
        "created_by": f"edge-fashion {edge_fashion.__version__}",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"file": INT8_NAME, "sha256": files.sha256_bytes(int8_content), "size_bytes": len(int8_content)},
        "labels_file": "labels.txt",
        "labels": list(labels),
        "input": {**input_spec, "layout": "28x28 grayscale, light garment on black, raw pixels 0-255"},
        "output": output_spec,
        "accuracy": accuracy,
        "self_test": {
            "runtime": f"ai_edge_litert {litert_version}, builtin kernels without XNNPACK",
            "tolerance": SELF_TEST_TOLERANCE,
            "cases": cases,
        },
    }


def write_device_bundle(folder: pathlib.Path, int8_content: bytes, labels: list[str], manifest_value: dict) -> None:
    """The folder a user copies to the board."""
    files.atomic_write_bytes(folder / INT8_NAME, int8_content)
    files.atomic_write_text(folder / "labels.txt", "\n".join(labels) + "\n")
    files.atomic_write_json(folder / "manifest.json", manifest_value)
    for name, path in device_files.bundle_files().items():
        files.atomic_write_bytes(folder / name, path.read_bytes())
