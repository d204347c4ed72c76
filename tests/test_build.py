"""A real short build through the CLI: artifacts, manifest, the int8-only check, the gate, repeatability."""

import hashlib
import json
import shutil

import keras
import pytest

from conftest import REPO, TINY_CONVERT_ARGS, run_cli
from edge_fashion.converters import tflite
from edge_fashion import device_files
from edge_fashion.pipeline import data, model

TOP_LEVEL = ("model.keras", "model_float.tflite", "model_int8.tflite", "labels.txt", "report.json",
             "report.md", "confusion_int8.png", "misclassified_int8.png")
DEVICE = ("model_int8.tflite", "labels.txt", "classify.py", "requirements.txt", "manifest.json", "README.md")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_artifact_is_written(tiny_build):
    for name in TOP_LEVEL:
        assert (tiny_build / name).is_file() and (tiny_build / name).stat().st_size > 0, name
    for name in DEVICE:
        assert (tiny_build / "device" / name).is_file(), name
    assert [path.name for path in tiny_build.glob(".*")] == [".lock"], "temporary files left behind"
    assert not list((tiny_build / "runs").glob(".*")), "staging left behind"
    assert (tiny_build / "labels.txt").read_text().splitlines() == list(data.LABELS)


def test_the_saved_model_is_the_plain_mlp_with_batch_norm_folded_away(tiny_build):
    saved = keras.saving.load_model(tiny_build / "model.keras")
    assert [layer.name for layer in saved.layers] == ["pixels", "rescale", "flatten", "dense_300", "dense_150",
                                                      "probabilities"]
    assert model.count_trainable(saved) == model.TRAINABLE_PARAMETERS


def test_report_records_config_versions_metrics_and_checksums(tiny_build):
    report = json.loads((tiny_build / "report.json").read_text())
    assert report["config"]["epochs"] == 2 and report["config"]["seed"] == 7
    assert report["versions"]["tensorflow"] and report["device"].startswith("CPU")
    for name in ("model.keras", "model_float.tflite", "model_int8.tflite"):
        assert report["sha256"][name] == sha256(tiny_build / name)
        assert report["sizes"][name] == (tiny_build / name).stat().st_size
    metrics = report["metrics"]
    assert 0.6 < metrics["float_tflite"]["accuracy"] < 1 and 0.6 < metrics["int8"]["accuracy"] < 1
    assert abs(metrics["keras"]["accuracy"] - metrics["float_tflite"]["accuracy"]) < 0.002
    assert sum(map(sum, metrics["int8"]["confusion"])) == 10000
    assert metrics["int8_float_agreement"] > 0.97 and report["gate"]["passed"]
    assert all(report["timings"][key] > 0 for key in ("train_seconds", "convert_seconds", "verify_seconds", "total_seconds"))


def test_manifest_describes_the_device_model(tiny_build):
    device = tiny_build / "device"
    manifest = json.loads((device / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == sha256(device / "model_int8.tflite") == sha256(tiny_build / "model_int8.tflite")
    assert manifest["labels"] == list(data.LABELS)
    assert manifest["input"] | {"layout": None} == {"shape": [1, 28, 28], "dtype": "uint8", "scale": 1.0,
                                                     "zero_point": 0, "layout": None}
    assert manifest["output"]["dtype"] == "uint8" and manifest["output"]["scale"] > 0
    report = json.loads((tiny_build / "report.json").read_text())
    assert manifest["accuracy"]["int8"] == report["metrics"]["int8"]["accuracy"]
    cases = manifest["self_test"]["cases"]
    assert len(cases) >= 5 and all(case["top1"] == case["label"] for case in cases)
    for name in device_files.bundle_files():
        assert (device / name).read_bytes() == (REPO / "device" / name).read_bytes()


def test_int8_model_is_all_integer_and_float_model_is_refused(tiny_build):
    tflite.check_all_integer((tiny_build / "model_int8.tflite").read_bytes(), "uint8")
    with pytest.raises(ValueError, match="not all-integer"):
        tflite.check_all_integer((tiny_build / "model_float.tflite").read_bytes(), "uint8")


def test_gate_refuses_and_keeps_the_good_build(tiny_build, tmp_path, data_dir):
    out = tmp_path / "build"
    shutil.copytree(tiny_build, out, symlinks=True)
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*")
              if path.is_file() and path.name != ".lock"}
    # A negative allowance demands int8 beat float by 50 points: no model can, so the gate must refuse.
    result = run_cli("convert", *TINY_CONVERT_ARGS, "--data-dir", str(data_dir), "--out", str(out),
                     "--max-drop", "-50", expect_exit=3)
    assert "points below float" in result.output and "refused model kept at" in result.output
    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*")
             if path.is_file() and "rejected" not in path.parts and path.name != ".lock"}
    assert after == before
    assert (out / "rejected" / "model_int8.rejected.tflite").is_file()
    assert not json.loads((out / "rejected" / "report.json").read_text())["gate"]["passed"]


def test_evaluate_reverifies_an_existing_build(tiny_build, data_dir):
    result = run_cli("evaluate", "--out", str(tiny_build), "--data-dir", str(data_dir))
    assert "int8 passes the gate" in result.output


def test_same_seed_same_models(tmp_path, data_dir):
    args = ["--epochs", "1", "--train-limit", "1000", "--seed", "11", "--data-dir", str(data_dir)]
    run_cli("build", *args, "--out", str(tmp_path / "a"))
    run_cli("build", *args, "--out", str(tmp_path / "b"))
    for name in ("model_float.tflite", "model_int8.tflite"):
        assert sha256(tmp_path / "a" / name) == sha256(tmp_path / "b" / name), name


def test_missing_data_is_one_line_error(tmp_path):
    result = run_cli("build", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"), expect_exit=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert not (tmp_path / "b").exists()


def test_gpu_requested_without_one_is_a_clear_error(tmp_path, data_dir):
    result = run_cli("train", "--device", "gpu", "--data-dir", str(data_dir), "--out", str(tmp_path), expect_exit=1)
    assert "TensorFlow sees no GPU" in result.output


@pytest.mark.parametrize("command", ["build", "train", "convert", "evaluate"])
def test_every_command_has_help_with_an_example(command):
    assert "Example" in run_cli(command, "--help").output
