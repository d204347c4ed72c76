"""A bundle that looks consistent but is not: its manifest's sha256 rewritten to match a truncated or
bit-flipped model, its labels reordered, its manifest missing a field. Each is one line and a
non-zero exit on every runtime a board may have, never a crash or a traceback, and never a PASS."""

import hashlib
import json
import shutil
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from fashion_board import tflite_reader

MODEL_EXIT, FAIL_EXIT = 2, 1
# The board-like venv runs tflite-runtime and the numpy engine; this process's python has ai-edge-litert.
RUNTIMES = ["tflite_runtime", "ai_edge_litert", "numpy"]


@pytest.fixture
def bundle(tiny_build, tmp_path):
    return shutil.copytree(tiny_build / "device", tmp_path / "bundle")


@pytest.fixture
def image(tmp_path, data_dir):
    from edge_fashion.pipeline import data

    path = tmp_path / "shirt.png"
    Image.fromarray(data.load_fashion_mnist(data_dir, download=False).test_images[0]).save(path)
    return path


def python_for(runtime: str, device_python):
    return sys.executable if runtime == "ai_edge_litert" else device_python


def classify(python, bundle, *arguments):
    import subprocess

    return subprocess.run([str(python), str(bundle / "classify.py"), *map(str, arguments)],
                          capture_output=True, text=True, timeout=120, check=False)


def replace_model(bundle, content: bytes) -> None:
    """The model replaced, and the manifest's sha256 and size rewritten to match it."""
    (bundle / "model_int8.tflite").write_bytes(content)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"].update(sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content))
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def assert_one_line_refusal(result, exit_code=MODEL_EXIT):
    assert result.returncode == exit_code, (result.returncode, result.stdout[-300:], result.stderr[-500:])
    # ai-edge-litert logs its delegate's creation ("INFO: Created TensorFlow Lite XNNPACK delegate").
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("INFO: ")]
    assert len(lines) == 1 and lines[0].startswith("classify.py: error: "), result.stderr
    assert "Traceback" not in result.stderr


def weight_bytes(content: bytes) -> np.ndarray:
    """Where the model's constant data (its weights and biases) lies, as file positions."""
    root = tflite_reader.Table(content, struct.unpack_from("<I", content, 0)[0])
    positions = [np.arange(buffer.target(0) + 4, buffer.target(0) + 4 + len(buffer.bytes_vector(0)))
                 for buffer in root.tables(4) if len(buffer.bytes_vector(0))]
    return np.concatenate(positions)


def flipped(content: bytes, positions: np.ndarray, bits: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    array = np.frombuffer(content, np.uint8).copy()
    for position, bit in zip(rng.choice(positions, bits), rng.integers(0, 8, bits)):
        array[position] ^= 1 << bit
    return array.tobytes()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_truncated_model_with_a_matching_sha256_is_one_line(device_python, bundle, image, runtime):
    content = (bundle / "model_int8.tflite").read_bytes()
    for length in np.linspace(16, len(content) - 1, 12).astype(int):
        replace_model(bundle, content[:length])
        result = classify(python_for(runtime, device_python), bundle, image, "--runtime", runtime)
        assert_one_line_refusal(result)
        assert result.stdout == ""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_flipped_bits_in_the_structure_are_one_line(device_python, bundle, image, runtime):
    """Bits flipped outside the weights (offsets, vtables, shapes, indices): refused or run, never a crash."""
    content = (bundle / "model_int8.tflite").read_bytes()
    structure = np.setdiff1d(np.arange(len(content)), weight_bytes(content))
    refused = 0
    for seed in range(12):
        replace_model(bundle, flipped(content, structure, 3, seed))
        result = classify(python_for(runtime, device_python), bundle, image, "--runtime", runtime)
        assert result.returncode in (0, 1, MODEL_EXIT), (seed, result.returncode, result.stderr[-500:])
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode == MODEL_EXIT:
            assert_one_line_refusal(result)
            refused += 1
    assert refused >= 3  # These seeds damage the structure; some of it is refused, not run.


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_hundred_flipped_weight_bits_fail_the_self_test(device_python, bundle, runtime):
    content = (bundle / "model_int8.tflite").read_bytes()
    for seed in range(3):
        replace_model(bundle, flipped(content, weight_bytes(content), 100, seed))
        result = classify(python_for(runtime, device_python), bundle, "--self-test", "--runtime", runtime)
        assert result.returncode == FAIL_EXIT and result.stdout.splitlines()[-1].startswith("FAIL: "), \
            (seed, result.stdout[-500:], result.stderr[-300:])


def test_the_unchanged_bundle_passes_the_self_test_with_the_tight_tolerance(device_python, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["self_test"]["tolerance"] < 2 / 256  # Two output steps fail.
    for runtime in RUNTIMES:
        result = classify(python_for(runtime, device_python), bundle, "--self-test", "--json", "--runtime", runtime)
        report = json.loads(result.stdout.splitlines()[-1])["self_test"]
        assert result.returncode == 0 and report["passed"] and report["max_difference"] < 1 / 256, report


def test_labels_in_another_order_than_the_manifest_are_refused(device_python, bundle, image):
    labels = (bundle / "labels.txt").read_text().splitlines()
    (bundle / "labels.txt").write_text("\n".join([labels[1], labels[0], *labels[2:]]) + "\n")
    for arguments in ([image], ["--self-test"]):
        result = classify(device_python, bundle, *arguments)
        assert_one_line_refusal(result)
        assert "labels.txt" in result.stderr and "manifest.json" in result.stderr


def drop_image(manifest):
    del manifest["self_test"]["cases"][3]["image_b64"]


def short_probabilities(manifest):
    manifest["self_test"]["cases"][0]["probabilities"].pop()


def bad_top1(manifest):
    manifest["self_test"]["cases"][1]["top1"] = 10


def bad_image(manifest):
    manifest["self_test"]["cases"][2]["image_b64"] = "AAAA"


def text_tolerance(manifest):
    manifest["self_test"]["tolerance"] = "0.01"


def no_labels(manifest):
    del manifest["labels"]


def no_output_scale(manifest):
    del manifest["output"]["scale"]


@pytest.mark.parametrize("damage", [drop_image, short_probabilities, bad_top1, bad_image, text_tolerance,
                                    no_labels, no_output_scale], ids=lambda damage: damage.__name__)
def test_a_manifest_missing_a_field_is_one_line(device_python, bundle, image, damage):
    manifest = json.loads((bundle / "manifest.json").read_text())
    damage(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for arguments in (["--self-test"], [image]):
        result = classify(device_python, bundle, *arguments)
        assert_one_line_refusal(result)
        assert "manifest.json" in result.stderr
