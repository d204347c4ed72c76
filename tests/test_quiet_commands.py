"""Quiet and whole commands: the real commands, run as a user runs them (a subprocess, its stderr read),
print their own progress and no TensorFlow or LiteRT start-up lines unless --verbose; each command
takes only the options it uses; a missing input fails before TensorFlow loads."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, TINY_BUILD_ARGS, run_cli
from test_package import CHECK_ONLY  # Runs the CLI in-process; says whether TensorFlow was imported.

EDGE_FASHION = pathlib.Path(sys.executable).with_name("edge-fashion")
CLASSIFY = REPO / "device" / "classify.py"
# What TensorFlow and LiteRT print on their own: absl's and cudart's start-up lines, the CPU feature
# note, oneDNN's, the XNNPACK delegate's, absl-style log lines (I0000 ..., W0000 ...), Python warnings.
NOISE = re.compile(r"absl::|cudart|cpu_feature_guard|oneDNN|XNNPACK|^[IWE]\d{4} |WARNING:tensorflow|Warning:",
                   re.MULTILINE)
COMMAND_TIMEOUT_SECONDS = 900


def run(*command, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    """A command with the environment a user has: no TF_CPP_MIN_LOG_LEVEL of the test session's."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, env=environment,
                          cwd=cwd, timeout=COMMAND_TIMEOUT_SECONDS, check=False)


def assert_quiet(completed: subprocess.CompletedProcess) -> None:
    assert completed.returncode == 0, completed.stderr
    assert not NOISE.search(completed.stderr), completed.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
    """A tiny build made by `edge-fashion build` in a subprocess: (its folder, the finished process)."""
    out = tmp_path_factory.mktemp("quiet") / "build"
    completed = run(EDGE_FASHION, "build", *TINY_BUILD_ARGS, "--train-limit", "1000", "--data-dir", data_dir,
                    "--out", out)
    return out, completed


def test_build_prints_its_progress_and_no_tensorflow_start_up_lines(built):
    _, completed = built
    assert_quiet(completed)
    assert "Reading Fashion-MNIST" in completed.stderr and "Converting to int8 TFLite" in completed.stderr


def test_evaluate_and_convert_are_quiet_and_verbose_shows_what_was_hidden(built, data_dir):
    out, _ = built
    evaluated = run(EDGE_FASHION, "evaluate", "--out", out, "--data-dir", data_dir)
    assert_quiet(evaluated)
    assert "int8 passes the gate" in evaluated.stdout
    assert_quiet(run(EDGE_FASHION, "convert", "--out", out, "--data-dir", data_dir, "--train-limit", "1000",
                     "--seed", "7"))
    verbose = run(EDGE_FASHION, "evaluate", "--out", out, "--data-dir", data_dir, "--verbose")
    assert verbose.returncode == 0 and NOISE.search(verbose.stderr), verbose.stderr


def test_bench_is_quiet(built, device_python, tmp_path):
    out, _ = built
    completed = run(EDGE_FASHION, "bench", out, "--quick", "--invokes", "20", "--out", tmp_path,
                    "--device-python", device_python)
    assert_quiet(completed)
    assert "| int8 | tflite-runtime" in completed.stdout


@pytest.mark.parametrize("runtime", ["tflite_runtime", "ai_edge_litert", "tensorflow"])
def test_the_self_test_is_quiet_under_every_runtime(built, device_python, runtime):
    out, _ = built
    python = device_python if runtime == "tflite_runtime" else sys.executable
    completed = run(python, out / "device" / "classify.py", "--self-test", "--runtime", runtime)
    assert_quiet(completed)
    assert completed.stdout.startswith("PASS") and completed.stderr == ""


def test_the_self_test_shows_the_interpreters_lines_with_verbose(built):
    out, _ = built
    completed = run(sys.executable, out / "device" / "classify.py", "--self-test", "--runtime", "ai_edge_litert",
                    "--verbose")
    assert completed.returncode == 0 and "XNNPACK" in completed.stderr, completed.stderr


# Each command takes only the options it uses.

def no_such_option(option: str, output: str) -> bool:
    """click's usage error for an unknown option, as 8.1 ("No such option: --x") or 8.2 ('--x') words it."""
    return re.search(rf"No such option:? '?{option}\b", output) is not None


TRAINING_ONLY = ["--preset", "fast", "--epochs", "5", "--batch-size", "64", "--learning-rate", "9",
                 "--dropout", "0.1", "--device", "cpu"]


# convert takes --preset (whether the stock photos join the int8 calibration); evaluate takes none of them.
UNUSED = [(command, option) for command in ("evaluate", "convert") for option in TRAINING_ONLY[::2]
          if (command, option) != ("convert", "--preset")]


@pytest.mark.parametrize("command, option", UNUSED)
def test_options_a_command_does_not_use_are_usage_errors(command, option):
    value = TRAINING_ONLY[TRAINING_ONLY.index(option) + 1]
    result = run_cli(command, option, value, expect_exit=2)
    assert no_such_option(option, result.output)
    assert option not in run_cli(command, "--help").output


@pytest.mark.parametrize("option, value", [("--quantizer", "ai-edge"), ("--representative-samples", "10"),
                                           ("--seed", "1"), ("--photo-share", "0.5"), ("--io-dtype", "int8")])
def test_evaluate_refuses_building_options_too(option, value):
    assert no_such_option(option, run_cli("evaluate", option, value, expect_exit=2).output)


def test_train_takes_no_conversion_options():
    for option, value in (("--quantizer", "ai-edge"), ("--max-drop", "1"), ("--io-dtype", "int8")):
        assert no_such_option(option, run_cli("train", option, value, expect_exit=2).output)


@pytest.mark.parametrize("arguments, fragment", [
    (["--fleet", "inventory.ini", "pi@board:fashion"], "TARGET: not used here (--fleet"),
    (["--fleet", "inventory.ini", "--install", "--service"], "--install, --service: not used here"),
    (["pi@board:fashion", "--list", "--bundle", "."], "--bundle: not used here (--list and --rollback"),
    (["pi@board:fashion", "--rollback", "--install"], "--install: not used here"),
    (["pi@board:fashion", "--batch", "3"], "--batch: not used here"),
    (["pi@board:fashion", "--service-port", "9000"], "--service-port: not used here"),
])
def test_deploy_refuses_options_its_kind_of_deploy_ignores(tmp_path, monkeypatch, arguments, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory.ini").write_text("[boards]\n")
    result = run_cli("deploy", *arguments, expect_exit=2)
    assert fragment in result.output


# Every command checks its inputs before slow work.

def check_only(*arguments: str, cwd: pathlib.Path) -> list[str]:
    """[error, 'tensorflow imported: ...'] of `edge-fashion ARGUMENTS`, run in a fresh python."""
    completed = run(sys.executable, "-c", CHECK_ONLY, *arguments, cwd=cwd)
    return completed.stdout.strip().splitlines()[-2:]


@pytest.mark.parametrize("arguments, fragment", [
    (["evaluate", "--out", "/nonexistent"], "/nonexistent: missing model.keras, model_float.tflite, model_int8.tflite"),
    (["convert", "--out", "/nonexistent"], "/nonexistent not found"),
    (["convert", "--out", "."], "no model.keras to convert"),
    (["evaluate", "--data-dir", "nowhere"], "nowhere"),
])
def test_a_missing_input_fails_before_tensorflow_loads(built, tmp_path, arguments, fragment):
    out, _ = built
    if "--data-dir" in arguments:
        arguments = [*arguments, "--out", str(out)]
    error, loaded = check_only(*arguments, cwd=tmp_path)
    assert fragment in error and loaded == "tensorflow imported: False", (error, loaded)


def test_evaluate_photos_needs_the_builds_report_before_tensorflow_loads(built, tmp_path):
    out, _ = built
    run_folder = tmp_path / "run"
    shutil.copytree(out / "latest", run_folder)
    (run_folder / "report.json").unlink()
    error, loaded = check_only("evaluate", "--out", str(run_folder), "--photos", str(REPO / "tests" / "photos"),
                               cwd=tmp_path)
    assert "missing report.json" in error and loaded == "tensorflow imported: False", (error, loaded)
