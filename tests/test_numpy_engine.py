"""The board's numpy engine (device/fashion_board/numpy_engine.py) against the real interpreter, on
real test images and real converted models, and classify.py running on it in the board-like venv."""

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from packaging.markers import Marker

from conftest import REPO
from edge_fashion.converters import quantizers, tflite
from edge_fashion.pipeline import data, evaluate, numpy_check
from fashion_board import fixed_point, numpy_engine, numpy_kernels

IMAGES = 2000  # Real test images per comparison.
MODEL_EXIT = 2


@pytest.fixture(scope="session")
def engine():
    return numpy_engine


@pytest.fixture(scope="session")
def dataset(data_dir):
    return data.load_fashion_mnist(data_dir, download=False)


def assert_engine_matches_interpreter(content: bytes, images: np.ndarray) -> dict:
    """Top-1 identical on every image and every raw score within numpy_check.STEP_TOLERANCE steps."""
    expected, _ = evaluate.run_tflite_raw(content, images)
    raw, _ = numpy_check.engine_raw(content, images)
    steps = np.abs(raw.astype(np.int64) - expected.astype(np.int64))
    assert np.array_equal(raw.argmax(axis=1), expected.argmax(axis=1))
    assert steps.max() <= numpy_check.STEP_TOLERANCE, f"{np.count_nonzero(steps)} scores differ"
    return {"scores_differing": int(np.count_nonzero(steps))}


def run(python, *args, timeout=120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(python), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_the_tiny_builds_model_gives_the_interpreters_outputs(tiny_build, dataset, record_property):
    content = (tiny_build / "model_int8.tflite").read_bytes()
    figures = assert_engine_matches_interpreter(content, dataset.test_images[:IMAGES])
    record_property("scores_differing", figures["scores_differing"])
    report = json.loads((tiny_build / "report.json").read_text())["numpy_engine"]
    assert report["agrees"] and report["images"] == 10_000 and report["top1_differences"] == 0
    assert json.loads((tiny_build / "device" / "manifest.json").read_text())["numpy_engine"]["agrees"] is True


@pytest.mark.parametrize("quantizer", ["converter", "ai-edge"])
def test_a_model_with_per_tensor_weights_and_int8_io(tiny_build, dataset, engine, quantizer):
    model = keras.saving.load_model(tiny_build / "model.keras")
    content = quantizers.to_int8(quantizer, model, dataset.train_images[:300], "int8", per_channel=False)
    interpreter = engine.Interpreter(model_content=content)
    assert np.dtype(interpreter.get_input_details()[0]["dtype"]) == np.int8
    weights = [tensor for tensor in interpreter.model.tensors if tensor.data is not None and tensor.dtype == np.int8
               and tensor.data.ndim == 2]
    assert len(weights) == 3 and all(len(tensor.scales) == 1 for tensor in weights)
    assert_engine_matches_interpreter(content, dataset.test_images[:IMAGES])


def test_the_reader_sees_the_tensors_the_interpreter_sees(tiny_build, engine):
    content = (tiny_build / "model_int8.tflite").read_bytes()
    tensors = engine.Interpreter(model_content=content).model.tensors
    reference = evaluate.make_interpreter(content)
    reference.allocate_tensors()
    for detail in reference.get_tensor_details():
        tensor = tensors[detail["index"]]
        assert tensor.name == detail["name"] and tensor.dtype == detail["dtype"]
        assert list(tensor.shape_signature) == list(detail["shape_signature"])
        assert np.array_equal(tensor.scales, detail["quantization_parameters"]["scales"])
        assert np.array_equal(tensor.zero_points, detail["quantization_parameters"]["zero_points"])
        if tensor.data is not None:
            assert np.array_equal(tensor.data, reference.get_tensor(detail["index"]))


def test_op_numbers_follow_the_tflite_schema(engine):
    from tensorflow.lite.python import schema_py_generated as schema

    kernels = numpy_kernels
    for code, name in kernels.OP_NAMES.items():
        assert getattr(schema.BuiltinOperator, name) == code, name


def test_fixed_point_rounding_is_tflites(engine):
    kernels = fixed_point
    assert kernels.quantize_multiplier(1.0) == (1 << 30, 1)
    assert kernels.quantize_multiplier(0.75) == (3 << 29, 0)
    multiplier, shift = kernels.quantize_multiplier(0.25)
    assert (multiplier, shift) == (1 << 30, -1)
    halves = np.array([2, -2, 6, -6, 7, -7], np.int64)  # Times 0.25: 0.5, -0.5, 1.5, -1.5, 1.75, -1.75.
    # The reference kernels round halves away from zero, the interpreters' matrix kernels up, both in
    # two steps (-1.75: -3.5 at the doubling high multiply, then -3 / 2 = -1.5, up to -1).
    assert kernels.multiply_by_quantized_multiplier(halves, multiplier, shift).tolist() == [1, -1, 2, -2, 2, -2]
    assert kernels.multiply_by_quantized_multiplier_gemm(halves, multiplier, shift).tolist() == [1, 0, 2, -1, 2, -1]


def tanh_model_content(images: np.ndarray) -> bytes:
    """A real small int8 model with an op the engine lacks (TANH)."""
    inputs = keras.Input((28, 28))
    hidden = keras.layers.Dense(16, activation="tanh")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    return tflite.to_int8(model, images[:20])


def test_an_unknown_op_is_refused_in_one_line(engine, dataset, device_python, tiny_build, tmp_path):
    content = tanh_model_content(dataset.train_images)
    with pytest.raises(ValueError, match="does not implement TANH"):
        engine.Interpreter(model_content=content)
    refused = numpy_check.check(content, dataset.test_images[:10], np.zeros((10, 10), np.float32))
    assert not refused["agrees"] and "TANH" in refused["refused"] and "REFUSES" in numpy_check.verdict(refused)
    (tmp_path / "tanh.tflite").write_bytes(content)
    shutil.copy(tiny_build / "device" / "labels.txt", tmp_path / "labels.txt")
    image = tmp_path / "shirt.png"
    from PIL import Image

    Image.fromarray(dataset.test_images[0]).save(image)
    result = run(device_python, tiny_build / "device" / "classify.py", image, "--model", tmp_path / "tanh.tflite",
                 "--runtime", "numpy")
    assert result.returncode == MODEL_EXIT and "TANH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # The no-manifest warning, then the error.


def test_the_builds_check_allows_one_step_and_no_top1_change():
    step = 1 / 256
    interpreter = np.array([[0.75, 0.25, 0.0], [0.5, 0.25, 0.25]], np.float32)
    one_step = interpreter + np.array([[-step, step, 0], [0, 0, 0]], np.float32)
    assert numpy_check.compare(one_step, interpreter, step)["agrees"]
    two_steps = interpreter + np.array([[0, 2 * step, 0], [0, 0, 0]], np.float32)
    assert numpy_check.compare(two_steps, interpreter, step)["max_step_difference"] == 2
    assert not numpy_check.compare(two_steps, interpreter, step)["agrees"]
    flipped = np.array([[0.75, 0.25, 0.0], [0.25, 0.5, 0.25]], np.float32)
    assert numpy_check.compare(flipped, interpreter, step)["top1_differences"] == 1


@pytest.mark.parametrize("damage", [lambda data: data[:4000], lambda data: data[:8] + bytes(4000) + data[4008:]])
def test_damaged_bytes_are_a_model_error(engine, tiny_build, damage):
    content = damage((tiny_build / "model_int8.tflite").read_bytes())
    with pytest.raises(ValueError):
        engine.Interpreter(model_content=content)


@pytest.mark.parametrize("where", ["board venv, numpy 1.24", "this venv, numpy 2"])
def test_self_test_passes_on_the_numpy_engine(device_python, tiny_build, where):
    python = device_python if where.startswith("board") else sys.executable
    result = run(python, tiny_build / "device" / "classify.py", "--self-test", "--json", "--runtime", "numpy")
    report = json.loads(result.stdout)["self_test"]
    assert result.returncode == 0 and report["passed"], result.stdout + result.stderr
    # The manifest keeps probabilities to 6 decimals: under half an output step (1/512) means identical.
    assert report["runtime"].startswith("numpy engine") and report["max_difference"] < 1 / 512


def test_a_model_the_build_found_disagreeing_is_refused(device_python, tiny_build, tmp_path):
    bundle = shutil.copytree(tiny_build / "device", tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["numpy_engine"] = {"agrees": False, "verdict": "DISAGREES with the interpreter: top-1 differs"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run(device_python, bundle / "classify.py", "--self-test", "--runtime", "numpy")
    assert result.returncode == MODEL_EXIT and "DISAGREES" in result.stderr
    assert run(device_python, bundle / "classify.py", "--self-test").returncode == 0  # tflite-runtime still runs it.


@pytest.mark.parametrize("machine, python, interpreter", [
    ("armv7l", "3.13", None), ("armv7l", "3.12", None), ("armv6l", "3.11", None), ("armv6l", "3.13", None),
    ("armv7l", "3.11", "tflite-runtime"), ("aarch64", "3.11", "tflite-runtime"), ("aarch64", "3.13", "ai-edge-litert"),
    ("x86_64", "3.12", "ai-edge-litert")])
def test_requirements_leave_32_bit_arm_with_numpy_and_pillow(machine, python, interpreter):
    environment = {"platform_machine": machine, "python_version": python, "python_full_version": python + ".0"}
    wanted = []
    for line in (REPO / "device" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement, _, marker = line.partition(";")
            if not marker.strip() or Marker(marker).evaluate(environment):
                wanted.append(requirement.split("=")[0].split(">")[0].split("<")[0].strip())
    assert sorted(wanted) == sorted(["numpy", "pillow", *([interpreter] if interpreter else [])])
