"""Runs on the host: each build a folder of its own under OUT/runs/, OUT/latest moved only by a good
build, never by a refused, killed or second one; listing, pruning, the lock, write errors."""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_BUILD_ARGS, TINY_CONVERT_ARGS, run_cli
from edge_fashion import files
from edge_fashion.pipeline import bundle, runs, stages

RUN_NAME = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}(-\d+)?$")
SUBPROCESS_TIMEOUT_SECONDS = 600  # A tiny build takes 15-60 s on 2 busy cores; never hang the suite.


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_names(out) -> list[str]:
    return sorted(path.name for path in (out / runs.RUNS).iterdir() if not path.name.startswith("."))


def copy_build(tiny_build, tmp_path):
    """A private copy of the session's build, its links kept as links."""
    return shutil.copytree(tiny_build, tmp_path / "build", symlinks=True)


def assert_latest_is_whole(out):
    """`latest` is a run whose files, seen directly and through OUT's links, are the ones its report names."""
    run = runs.latest_run(out)
    report = json.loads((run / "report.json").read_text())
    assert report.get("run", run.name) == run.name and run.parent == (out / runs.RUNS).resolve()
    for name in stages.MODEL_NAMES:
        assert sha256(run / name) == sha256(out / name) == report["sha256"][name], name
    manifest = json.loads((out / "device" / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == sha256(out / "device" / "model_int8.tflite") == report["sha256"]["model_int8.tflite"]
    return run


def start_build(out, data_dir, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "edge_fashion", "build", *TINY_BUILD_ARGS, "--data-dir", str(data_dir),
               "--out", str(out), *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lock_holder_pid(out) -> int | None:
    try:
        return json.loads((out / runs.LOCK).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_build_is_a_run_that_latest_and_the_known_paths_point_at(tiny_build):
    (name,) = run_names(tiny_build)
    assert RUN_NAME.match(name)
    assert os.readlink(tiny_build / runs.LATEST) == f"runs/{name}"
    run = assert_latest_is_whole(tiny_build)
    assert name.endswith(json.loads((run / "report.json").read_text())["sha256"]["model_int8.tflite"][:8])
    for entry in run.iterdir():
        assert os.readlink(tiny_build / entry.name) == f"latest/{entry.name}", entry.name
    assert not list((tiny_build / runs.RUNS).glob(".*")), "staging left behind"


@pytest.fixture(scope="module")
def two_runs(tiny_build, tmp_path_factory, data_dir):
    """The session's build, then a second one (seed 8) that a third, started meanwhile, could not join."""
    out = copy_build(tiny_build, tmp_path_factory.mktemp("two_runs"))
    second = start_build(out, data_dir, "--seed", "8")
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_SECONDS
    while lock_holder_pid(out) != second.pid and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    refused = run_cli("build", *TINY_BUILD_ARGS, "--data-dir", str(data_dir), "--out", str(out), expect_exit=1)
    _, errors = second.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert second.returncode == 0, errors
    return out, refused.output, second.pid


def test_a_second_build_into_the_same_folder_stops_naming_the_holder(two_runs):
    _, output, holder_pid = two_runs
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in output
    assert "in use by another build" in errors[0] and f"pid {holder_pid}, started at" in errors[0]


def test_a_second_build_adds_a_run_and_moves_latest(two_runs, tiny_build):
    out, _, _ = two_runs
    first, second = run_names(out)
    assert first == run_names(tiny_build)[0] and os.readlink(out / runs.LATEST) == f"runs/{second}"
    assert_latest_is_whole(out)
    old = out / runs.RUNS / first
    assert sha256(old / "model_int8.tflite") == json.loads((old / "report.json").read_text())["sha256"]["model_int8.tflite"]


def test_runs_lists_seeds_accuracies_and_marks_the_latest(two_runs):
    out, _, _ = two_runs
    lines = run_cli("runs", "--out", str(out)).output.splitlines()
    first, second = run_names(out)
    assert lines[0].split() == ["run", "seed", "float", "int8", "photos", "int8", "MB", "sha256"]
    assert lines[1].split()[:2] == [first, "7"] and lines[2].split()[:3] == ["*", second, "8"]
    report = json.loads((out / runs.LATEST / "report.json").read_text())
    assert f"{100 * report['metrics']['int8']['accuracy']:.2f}%" in lines[2]
    assert report["sha256"]["model_int8.tflite"][:12] in lines[2]


def test_runs_shows_the_photo_accuracy_when_the_report_has_one(two_runs, tmp_path):
    out = shutil.copytree(two_runs[0], tmp_path / "build", symlinks=True)
    report_path = out / runs.RUNS / run_names(out)[0] / "report.json"
    report_path.write_text(json.dumps({**json.loads(report_path.read_text()), "photos": {"held_out": {"int8": {"accuracy": 0.6543}}}}))
    assert "65.43%" in run_cli("runs", "--out", str(out)).output.splitlines()[1]


def test_pruning_keeps_the_newest_and_never_the_latest(two_runs, tmp_path):
    out = shutil.copytree(two_runs[0], tmp_path / "build", symlinks=True)
    first, second = run_names(out)
    runs.point_latest(out, first)  # As if the newest run were published but `latest` not yet moved.
    run_cli("runs", "--out", str(out), "--keep", "1")
    assert run_names(out) == [first, second]
    runs.point_latest(out, second)
    output = run_cli("runs", "--out", str(out), "--keep", "1").output
    assert f"deleted {out / runs.RUNS / first}" in output and run_names(out) == [second]
    assert_latest_is_whole(out)


def test_a_refused_build_leaves_latest_where_it_was(tiny_build, tmp_path, data_dir):
    out = copy_build(tiny_build, tmp_path)
    before = os.readlink(out / runs.LATEST)
    # A negative allowance demands int8 beat float by 100 points: no model can, so the gate must refuse.
    result = run_cli("build", *TINY_BUILD_ARGS, "--data-dir", str(data_dir), "--out", str(out), "--max-drop", "-100",
                     expect_exit=3)
    assert "refused model kept at" in result.output
    assert os.readlink(out / runs.LATEST) == before and run_names(out) == run_names(tiny_build)
    assert_latest_is_whole(out)
    assert (out / "rejected" / bundle.REJECTED_NAME).is_file()
    assert not list((out / runs.RUNS).glob(".*"))


@pytest.mark.parametrize("kill_after", ["Training on", "Writing the device bundle"])
def test_a_killed_build_leaves_the_last_good_run_whole(tiny_build, tmp_path, data_dir, kill_after):
    out = copy_build(tiny_build, tmp_path)
    before = os.readlink(out / runs.LATEST)
    build = start_build(out, data_dir, "--seed", "9")
    for line in build.stderr:
        if line.startswith(kill_after):
            break
    build.kill()
    build.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert build.returncode == -signal.SIGKILL
    run = assert_latest_is_whole(out)
    if kill_after == "Training on":
        assert os.readlink(out / runs.LATEST) == before
    else:
        # Killed while bundling or publishing: `latest` is the old run or the new one, whole either way.
        assert run.name in run_names(out)
    # The next build finds the dead build's staging folder, removes it, and publishes.
    run_cli("convert", *TINY_CONVERT_ARGS, "--data-dir", str(data_dir), "--out", str(out))
    assert not list((out / runs.RUNS).glob(".*")) and not list(out.glob(".latest.tmp-*"))
    assert os.readlink(out / runs.LATEST) != before
    assert_latest_is_whole(out)


def test_train_then_convert_publishes_the_trained_model_as_a_run(tiny_build, tmp_path, data_dir):
    out = copy_build(tiny_build, tmp_path)
    run_cli("train", "--epochs", "1", "--train-limit", "1000", "--seed", "12", "--data-dir", str(data_dir),
            "--out", str(out))
    trained = sha256(out / stages.TRAINED / "model.keras")
    run_cli("convert", *TINY_CONVERT_ARGS, "--data-dir", str(data_dir), "--out", str(out))
    run = assert_latest_is_whole(out)
    assert sha256(run / "model.keras") == trained and not (out / stages.TRAINED).exists()
    assert len(run_names(out)) == 2
    assert run_cli("runs", "--out", str(out)).output.splitlines()[2].split()[:3] == ["*", run.name, "12"]


def test_deploy_accepts_a_run_latest_or_the_build_folder(tiny_build, tmp_path):
    run = runs.latest_run(tiny_build)
    for number, bundle_argument in enumerate([run, tiny_build / runs.LATEST, tiny_build]):
        board = tmp_path / f"board{number}"
        run_cli("deploy", str(board), "--bundle", str(bundle_argument))
        assert sha256(board / "current" / "model_int8.tflite") == sha256(run / "device" / "model_int8.tflite")
        assert (board / "current" / "manifest.json").read_bytes() == (run / "device" / "manifest.json").read_bytes()


def test_runs_of_a_folder_without_builds_is_a_one_line_error(tmp_path):
    result = run_cli("runs", "--out", str(tmp_path / "nowhere"), expect_exit=1)
    assert result.output.count("Error: ") == 1 and "no build in" in result.output


def test_a_write_error_names_the_path(tmp_path):
    """A real failed write: the file-size limit makes write(2) fail with EFBIG, as a full disk fails with ENOSPC."""
    target = tmp_path / "model_int8.tflite"
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, previous_limit[1]))
    try:
        with pytest.raises(ValueError, match=f"cannot write {re.escape(str(target))}: File too large"):
            files.atomic_write_bytes(target, bytes(10_000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_runs_has_help_with_an_example():
    output = run_cli("runs", "--help").output
    assert "Example" in output and "--keep" in output
