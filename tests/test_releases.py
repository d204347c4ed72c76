"""Releases on the board: deploy, redeploy, a failing self-test, rollback, pruning and a deploy
killed half way, each on a folder target and over a real sshd."""

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

import sshd
from conftest import run_cli, small_tmpfs
from edge_fashion import files
from edge_fashion.deploy.agent import releases as agent_releases
from edge_fashion.deploy import releases
from edge_fashion.deploy import transport as deploy

MODEL = "model_int8.tflite"
KILL_WAIT_SECONDS = 30  # How long a test waits for a deploy to reach the step it kills.


@pytest.fixture(params=["folder", "ssh"])
def board(request, tmp_path, device_python):
    """A board: where its DIR is on this machine, and how deploy names it (options for the CLI)."""
    folder = tmp_path / "board"
    if request.param == "folder":
        return Board(folder, [str(folder)], str(device_python), None)
    server = request.getfixturevalue("ssh_server")
    return Board(folder, ["--ssh-config", str(server.config), f"{sshd.HOST_ALIAS}:{folder}"],
                 str(device_python), server)


class Board:
    def __init__(self, folder: pathlib.Path, cli_target: list, python: str, server):
        self.folder, self.cli_target, self.python, self.server = folder, cli_target, python, server

    def target(self, python: str | None = None) -> deploy.Target:
        options = {"python": python or self.python}
        if self.server is None:
            return deploy.parse_target(str(self.folder), **options)
        return deploy.parse_target(f"{sshd.HOST_ALIAS}:{self.folder}", ssh_config=self.server.config, **options)

    def current(self) -> str:
        return os.path.basename(os.readlink(self.folder / "current"))

    def releases(self) -> list[str]:
        return sorted(path.name for path in (self.folder / "releases").iterdir() if not path.name.startswith("."))


def variant(bundle_dir: pathlib.Path, folder: pathlib.Path, readme_line: str) -> pathlib.Path:
    """The same model with another README: another release."""
    shutil.copytree(bundle_dir, folder)
    with (folder / "README.md").open("a") as readme:
        readme.write(f"\n{readme_line}\n")
    return folder


def release_of(bundle_dir: pathlib.Path) -> str:
    contents = deploy.read_bundle(bundle_dir)
    return agent_releases.release_name({name: files.sha256_bytes(data) for name, data in contents.items()})


def assert_current_is(board: Board, bundle_dir: pathlib.Path) -> None:
    """current points at the bundle's release, holds its bytes, and passes its self-test there."""
    assert board.current() == release_of(bundle_dir)
    for name in deploy.bundle_file_names(bundle_dir):
        assert (board.folder / "current" / name).read_bytes() == (bundle_dir / name).read_bytes(), name
    self_test = subprocess.run([board.python, "classify.py", "--self-test"], cwd=board.folder / "current",
                               capture_output=True, text=True)
    assert self_test.returncode == 0 and self_test.stdout.startswith("PASS"), self_test.stdout


@pytest.fixture
def bundle_a(tiny_build) -> pathlib.Path:
    return tiny_build / "device"


@pytest.fixture
def bundle_b(bundle_a, tmp_path) -> pathlib.Path:
    return variant(bundle_a, tmp_path / "bundle_b", "Release B.")


def test_deploy_redeploy_and_a_second_release(board, bundle_a, bundle_b):
    first = run_cli("deploy", "--bundle", str(bundle_a), "--python", board.python, *board.cli_target)
    assert f"current: nothing -> releases/{release_of(bundle_a)}/" in first.output
    assert_current_is(board, bundle_a)

    again = deploy.deploy(bundle_a, board.target())
    assert (again.sent, again.release, again.previous) == ((), release_of(bundle_a), release_of(bundle_a))

    second = deploy.deploy(bundle_b, board.target())
    assert second.sent == ("README.md",)  # The rest is hard-linked from the first release.
    assert_current_is(board, bundle_b)
    models = [board.folder / "releases" / release / MODEL for release in board.releases()]
    assert len({model.stat().st_ino for model in models}) == 1

    listing = run_cli("deploy", "--list", *board.cli_target).output.splitlines()
    model_sha = json.loads((bundle_a / "manifest.json").read_text())["model"]["sha256"][:12]
    assert listing[0].startswith(f"* {release_of(bundle_b)}") and listing[0].endswith(f"model {model_sha}")
    assert listing[1].startswith(f"  {release_of(bundle_a)}")


def test_a_failing_self_test_leaves_the_old_release_current(board, bundle_a, tmp_path):
    deploy.deploy(bundle_a, board.target())
    wrong = variant(bundle_a, tmp_path / "wrong", "Expects other answers.")
    manifest = json.loads((wrong / "manifest.json").read_text())
    for case in manifest["self_test"]["cases"]:
        case["top1"] = (case["top1"] + 1) % 10
    (wrong / "manifest.json").write_text(json.dumps(manifest))

    result = run_cli("deploy", "--bundle", str(wrong), "--python", board.python, *board.cli_target, expect_exit=1)
    assert f"self-test FAILED on {board.target()}" in result.output
    assert f"releases/{release_of(wrong)}/ is not made current" in result.output
    assert_current_is(board, bundle_a)


def test_a_board_whose_runtime_is_missing_keeps_its_release(board, bundle_a, bundle_b):
    deploy.deploy(bundle_a, board.target())
    # The system python3 has no numpy or interpreter: classify.py cannot even start there.
    with pytest.raises(releases.ReleaseError, match="self-test FAILED"):
        deploy.deploy(bundle_b, board.target(python="/usr/bin/python3"))
    assert_current_is(board, bundle_a)


def test_rollback_walks_back_then_stops(board, bundle_a, bundle_b):
    deploy.deploy(bundle_a, board.target())
    deploy.deploy(bundle_b, board.target())
    result = run_cli("deploy", "--rollback", "--python", board.python, *board.cli_target)
    assert f"current: releases/{release_of(bundle_b)}/ -> releases/{release_of(bundle_a)}/" in result.output
    assert_current_is(board, bundle_a)
    refused = run_cli("deploy", "--rollback", "--python", board.python, *board.cli_target, expect_exit=1)
    assert "nothing to roll back to" in refused.output and refused.output.count("\n") == 1
    deploy.deploy(bundle_b, board.target())  # Deployed again: newest again, and current.
    assert_current_is(board, bundle_b)


def test_the_last_releases_are_kept(board, bundle_a, tmp_path):
    bundles = [bundle_a] + [variant(bundle_a, tmp_path / f"bundle_{index}", f"Release {index}.") for index in range(3)]
    for bundle in bundles:
        deploy.deploy(bundle, board.target(), keep=2)
    assert board.releases() == sorted(release_of(bundle) for bundle in bundles[-2:])
    assert_current_is(board, bundles[-1])


def slow_self_test_python(folder: pathlib.Path, python: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A board python whose self-test hangs (after touching a marker file): a deploy to kill there."""
    marker, wrapper = folder / "self-test-started", folder / "slow-python"
    folder.mkdir(parents=True, exist_ok=True)
    # The marker holds the hanging process's id (exec keeps the shell's), so the test can end it.
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *--self-test*) echo $$ > {marker}.partial; mv {marker}.partial {marker}; '
                       f'exec sleep 60;; esac\nexec {python} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, marker


def test_a_deploy_killed_before_its_switch_leaves_current_whole(board, bundle_a, bundle_b, tmp_path):
    deploy.deploy(bundle_a, board.target())
    wrapper, marker = slow_self_test_python(tmp_path / "slow", board.python)
    command = [sys.executable, "-m", "edge_fashion", "deploy", "--bundle", str(bundle_b),
               "--python", str(wrapper), *board.cli_target]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while not marker.exists():
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the deploy never reached its self-test"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if marker.exists():  # Over ssh, the board's side outlives the killed client.
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(marker.read_text()), signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert_current_is(board, bundle_a)
    assert release_of(bundle_b) in board.releases()  # Copied and verified, never switched to.

    finished = deploy.deploy(bundle_b, board.target())
    assert finished.sent == () and finished.previous == release_of(bundle_a)
    assert_current_is(board, bundle_b)


def test_a_prune_that_died_half_way_is_finished_by_the_next(board, bundle_a, bundle_b, tmp_path):
    """A death inside prune's removal leaves releases/.removing-<r>; once <r> is deployed and pruned
    again, that deploy and every later one still switch, prune down to --keep and clean it up."""
    deploy.deploy(bundle_a, board.target())
    leftover = board.folder / "releases" / f".removing-{release_of(bundle_a)}"
    shutil.copytree(board.folder / "releases" / release_of(bundle_a), leftover)  # Half removed, as a death leaves it.
    bundle_c = variant(bundle_a, tmp_path / "bundle_c", "Release C.")
    for bundle in (bundle_b, bundle_c):
        deploy.deploy(bundle, board.target(), keep=1)
        assert board.releases() == [release_of(bundle)]
        assert_current_is(board, bundle)
    assert not [path.name for path in (board.folder / "releases").iterdir() if path.name.startswith(".")]


def test_a_metadata_write_that_died_is_cleaned_by_the_next_switch(board, bundle_a):
    """What a switch's write of .release.json left when it died (a kill, or a full disk under the
    agent before it wrote files whole) goes at the next switch to that release."""
    deploy.deploy(bundle_a, board.target())
    folder = board.folder / "releases" / release_of(bundle_a)
    for stale in (".release.json.partial-4242", "..release.json.partial-4243"):
        (folder / stale).write_text('{"deployed_at": ')
    deploy.deploy(bundle_a, board.target())
    assert not list(folder.glob("*.partial-*"))
    assert_current_is(board, bundle_a)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: room for a release or two, then filled up by the test."""
    with small_tmpfs(tmp_path / "small_disk", "4m") as folder:
        yield folder


def fill(folder: pathlib.Path) -> pathlib.Path:
    """Write to folder/padding until the disk is full."""
    padding = folder / "padding"
    with contextlib.suppress(OSError), padding.open("wb") as output:
        while True:
            output.write(b"\0" * 65536)
            output.flush()
    return padding


def test_a_full_disk_at_the_switch_leaves_no_partial_and_the_old_release_current(
        bundle_a, bundle_b, small_disk, device_python):
    target = deploy.parse_target(str(small_disk / "board"), python=str(device_python))
    deploy.deploy(bundle_a, target)
    deploy.deploy(bundle_b, target)
    padding = fill(small_disk)
    # Release A is whole on the board: nothing to copy, the self-test passes, the switch has to write.
    with pytest.raises(ValueError, match="[Nn]o space left") as error:
        deploy.deploy(bundle_a, target)
    assert "\n" not in str(error.value)
    assert os.readlink(small_disk / "board" / "current") == f"releases/{release_of(bundle_b)}"
    assert not list(small_disk.rglob("*.partial-*"))
    padding.unlink()
    deploy.deploy(bundle_a, target)
    assert os.readlink(small_disk / "board" / "current") == f"releases/{release_of(bundle_a)}"
    assert not list(small_disk.rglob("*.partial-*"))
