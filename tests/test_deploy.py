"""`edge-fashion deploy`: into a local folder and, through a real OpenSSH server, into this machine.

Every deploy runs the bundle's self-test on the target, so the targets' python is the board-like
venv (`device_python`). The release layout itself (rollback, migration, kills) is tested in
test_releases.py."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import sshd
from conftest import run_cli, small_tmpfs
from edge_fashion import files
from edge_fashion.deploy import releases
from edge_fashion.deploy import transport as deploy

MODEL = "model_int8.tflite"
TEST_CALL_TIMEOUT_SECONDS = 60  # No agent call in these tests may hang the suite for long.


@pytest.fixture(autouse=True)
def bounded_calls(monkeypatch):
    monkeypatch.setattr(deploy, "CALL_TIMEOUT_SECONDS", TEST_CALL_TIMEOUT_SECONDS)


@pytest.fixture
def bundle_dir(tiny_build) -> pathlib.Path:
    return tiny_build / "device"


def over_ssh(server: sshd.SshServer, directory: pathlib.Path, **options) -> deploy.Target:
    return deploy.parse_target(f"{sshd.HOST_ALIAS}:{directory}", ssh_config=server.config, **options)


def assert_same_files(bundle_dir: pathlib.Path, board: pathlib.Path) -> None:
    """The board's current release holds exactly the bundle's bytes, and no partial file is left."""
    for name in deploy.bundle_file_names(bundle_dir):
        assert (board / "current" / name).read_bytes() == (bundle_dir / name).read_bytes(), name
    assert not list(board.rglob(".*.partial-*"))


def bundle_with_model(bundle_dir: pathlib.Path, folder: pathlib.Path, model: bytes) -> pathlib.Path:
    """A copy of the bundle with another model, and a manifest whose sha256 matches it."""
    shutil.copytree(bundle_dir, folder)
    (folder / MODEL).write_bytes(model)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"].update(sha256=files.sha256_bytes(model), size_bytes=len(model))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def flip_byte(path: pathlib.Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("text, host, directory", [
    ("pi@raspberrypi.local:fashion", "pi@raspberrypi.local", "fashion"),
    ("board:/opt/fashion", "board", "/opt/fashion"),
    ("pi@[fe80::1]:fashion", "pi@fe80::1", "fashion"),
    ("/media/sd/rootfs/home/pi/fashion", None, "/media/sd/rootfs/home/pi/fashion"),
    ("./odd:name", None, "./odd:name"),
])
def test_parse_target(text, host, directory):
    target = deploy.parse_target(text, port=2222)
    assert (target.host, target.directory, target.port) == (host, directory, 2222)
    assert str(target) == text.replace("[fe80::1]", "fe80::1")


def test_a_target_without_a_folder_is_refused():
    with pytest.raises(deploy.DeployError, match="name a folder after the colon"):
        deploy.parse_target("pi@raspberrypi.local:")


def test_local_deploy_then_redeploy_sends_nothing(bundle_dir, tmp_path, device_python):
    card = tmp_path / "card" / "fashion"
    local = deploy.parse_target(str(card), python=str(device_python))
    first = deploy.deploy(bundle_dir, local)
    assert set(first.sent) == set(deploy.bundle_file_names(bundle_dir))
    assert first.sent[-1] == "manifest.json"
    assert_same_files(bundle_dir, card)
    again = deploy.deploy(bundle_dir, local)
    assert (again.sent, again.bytes_sent, again.verified) == ((), 0, len(first.sent))


def test_a_model_that_fails_its_manifest_is_never_shipped(bundle_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    flip_byte(broken / MODEL)
    with pytest.raises(deploy.DeployError, match="does not match the sha256 in its manifest"):
        deploy.deploy(broken, deploy.parse_target(str(tmp_path / "card")))
    assert not (tmp_path / "card").exists()


def test_install_needs_a_board(bundle_dir, tmp_path):
    with pytest.raises(deploy.DeployError, match="needs an ssh target"):
        deploy.deploy(bundle_dir, deploy.parse_target(str(tmp_path / "card")), install=True)


def test_deploy_over_ssh_redeploy_and_repair(ssh_server, bundle_dir, tmp_path, device_python):
    board = tmp_path / "board"
    result = run_cli("deploy", "--bundle", str(bundle_dir), "--ssh-config", str(ssh_server.config),
                     "--python", str(device_python), f"{sshd.HOST_ALIAS}:{board}")
    count = len(deploy.bundle_file_names(bundle_dir))
    assert f"sending {MODEL}" in result.output
    assert f"{count} sent" in result.output and f"{count} verified by sha256" in result.output
    assert_same_files(bundle_dir, board)

    again = deploy.deploy(bundle_dir, over_ssh(ssh_server, board, python=str(device_python)))
    assert (again.sent, again.bytes_sent, again.verified) == ((), 0, count)

    flip_byte(board / "current" / MODEL)
    with (board / "current" / "labels.txt").open("a") as labels:
        labels.write("Sock\n")
    repaired = deploy.deploy(bundle_dir, over_ssh(ssh_server, board, python=str(device_python)))
    assert sorted(repaired.sent) == ["labels.txt", MODEL]
    assert_same_files(bundle_dir, board)


def test_port_and_identity_options(ssh_server, bundle_dir, tmp_path, device_python):
    # No alias here: user, port and key come from the options, host keys from the config.
    target = deploy.parse_target(f"{ssh_server.user}@127.0.0.1:{tmp_path / 'board'}", port=ssh_server.port,
                                 identity=ssh_server.identity, ssh_config=ssh_server.config,
                                 python=str(device_python))
    assert len(deploy.deploy(bundle_dir, target).sent) == len(deploy.bundle_file_names(bundle_dir))


def test_a_killed_deploy_leaves_the_current_release_whole(ssh_server, bundle_dir, tmp_path, device_python):
    board = tmp_path / "board"
    deploy.deploy(bundle_dir, over_ssh(ssh_server, board, python=str(device_python)))
    old_release = os.readlink(board / "current")
    # A 4 MB extra file over a 2 MB/s link: the deploy is killed once 1 MB of it has landed.
    big_bundle = tmp_path / "big"
    shutil.copytree(bundle_dir, big_bundle)
    (big_bundle / "padding.bin").write_bytes(os.urandom(4_000_000))
    command = [sys.executable, "-m", "edge_fashion", "deploy", "--bundle", str(big_bundle), "--python",
               str(device_python), "--ssh-config", str(ssh_server.config), f"{sshd.SLOW_HOST_ALIAS}:{board}"]
    with tempfile.TemporaryDirectory() as temporary:  # Takes what SIGKILL leaves in $TMPDIR.
        process = subprocess.Popen(command, start_new_session=True, env={**os.environ, "TMPDIR": temporary},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_partial(board, ".padding.bin.partial-*", 1_000_000, process)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert os.readlink(board / "current") == old_release
    wait_until(lambda: not list(board.rglob(".*.partial-*")), "the agent removes its partial files")
    assert_same_files(bundle_dir, board)
    passed = subprocess.run([str(device_python), "classify.py", "--self-test"], cwd=board / "current")
    assert passed.returncode == 0

    finished = deploy.deploy(big_bundle, over_ssh(ssh_server, board, python=str(device_python)))
    assert finished.sent == ("padding.bin",)
    assert_same_files(big_bundle, board)


def wait_for_partial(board: pathlib.Path, pattern: str, size: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not any(partial.stat().st_size >= size for partial in board.rglob(pattern)):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, f"no {pattern} of {size} bytes within 30 s"
        time.sleep(0.01)


def wait_until(condition, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


def test_install_makes_a_venv_with_system_site_packages(ssh_server, bundle_dir, tmp_path, device_python):
    # Nothing to download: the real requirements.txt is tested where the device venv is made.
    offline = tmp_path / "offline"
    shutil.copytree(bundle_dir, offline)
    (offline / "requirements.txt").write_text("# Nothing to install in this test.\n")
    board = tmp_path / "board"
    # The venv is made by the board-like python, which also runs the self-test (--python wins over DIR/.venv).
    deploy.deploy(offline, over_ssh(ssh_server, board, python=str(device_python)), install=True)
    assert (board / ".venv" / "bin" / "python").exists()
    assert "include-system-site-packages = true" in (board / ".venv" / "pyvenv.cfg").read_text()


def test_self_test_over_ssh(ssh_server, bundle_dir, tmp_path, device_python):
    board = tmp_path / "board"
    target = over_ssh(ssh_server, board, python=str(device_python))
    result = deploy.deploy(bundle_dir, target)
    assert "PASS" in result.self_test_output
    flip_byte(board / "current" / MODEL)
    with deploy.on_board(target) as call, pytest.raises(releases.ReleaseError, match="self-test FAILED"):
        releases.self_test(call, result.release, target.python, str(target), progress=lambda line: None)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: too small for the model."""
    with small_tmpfs(tmp_path / "tiny_disk", "64k") as folder:
        yield folder


def test_no_space_left(ssh_server, bundle_dir, tiny_disk):
    for target in (over_ssh(ssh_server, tiny_disk / "fashion"), deploy.parse_target(str(tiny_disk / "card"))):
        with pytest.raises(deploy.DeployError, match="no space left on the device that holds") as error:
            deploy.deploy(bundle_dir, target)
        assert "\n" not in str(error.value)
    assert not list(tiny_disk.rglob(".*.partial-*"))
    assert not list(tiny_disk.rglob(MODEL))


@pytest.mark.parametrize("case, expected", [
    ("unreachable", r"^cannot reach .*: connection refused"),
    ("unknown host", r"^cannot reach nosuchhost\.invalid: unknown host name"),
    ("wrong key", r"refused authentication"),
    ("unknown host key", r"^.*@localhost's host key is unknown or has changed"),
    ("no python3", r"^no python3\.99 on edge-test: install it"),
    ("dir is a file", r"^edge-test: .*/labels\.txt is a file, not a folder"),
])
def test_one_line_errors(ssh_server, bundle_dir, tmp_path, case, expected):
    board = tmp_path / "board"
    targets = {
        "unreachable": deploy.parse_target(f"127.0.0.1:{board}", port=sshd.free_port(), ssh_config=ssh_server.config),
        "unknown host": deploy.parse_target(f"nosuchhost.invalid:{board}", ssh_config=ssh_server.config),
        "wrong key": deploy.parse_target(f"{ssh_server.user}@127.0.0.1:{board}", port=ssh_server.port,
                                         identity=ssh_server.other_identity, ssh_config=ssh_server.config),
        "unknown host key": deploy.parse_target(f"{ssh_server.user}@localhost:{board}", port=ssh_server.port,
                                               identity=ssh_server.identity, ssh_config=ssh_server.config),
        "no python3": over_ssh(ssh_server, board, python="python3.99"),
        "dir is a file": over_ssh(ssh_server, board / "labels.txt"),
    }
    board.mkdir()
    (board / "labels.txt").write_text("not a folder\n")
    with pytest.raises(deploy.DeployError, match=expected) as error:
        deploy.deploy(bundle_dir, targets[case])
    assert "\n" not in str(error.value)


def test_the_cli_says_it_in_one_line(ssh_server, bundle_dir, tmp_path):
    result = run_cli("deploy", "--bundle", str(bundle_dir), "--ssh-config", str(ssh_server.config),
                     "--port", str(sshd.free_port()), f"127.0.0.1:{tmp_path}", expect_exit=1)
    assert result.output.startswith("Error: cannot reach 127.0.0.1: connection refused")
    assert result.output.count("\n") == 1
