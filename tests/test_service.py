"""`edge-fashion deploy --service`: the systemd unit passes `systemd-analyze verify`, its command runs the
bundle (flat, or DIR/current of a releases layout) and serves /healthz, and a machine without systemd
gets a one-line error before anything is copied."""

import json
import os
import shutil
import pathlib
import shlex
import signal
import subprocess
import time
import urllib.request

import numpy as np
import pytest

import sshd
from conftest import run_cli
from edge_fashion.pipeline import data
from edge_fashion.deploy import service
from edge_fashion.deploy.agent import common as agent_common
from edge_fashion.deploy.agent import service as agent_service
from test_classify import PICAMERA2_STAND_IN, camera_frame


def unit_file(folder: pathlib.Path, directory: pathlib.Path, system: bool, port: int = 8080) -> pathlib.Path:
    path = folder / service.UNIT_NAME
    path.write_text(agent_service.fill_unit(service.unit_template(port), directory, system))
    return path


@pytest.mark.parametrize("system", [True, False], ids=["system", "user"])
def test_the_unit_passes_systemd_analyze_verify(tmp_path, system):
    board = tmp_path / "fashion"
    board.mkdir()
    path = unit_file(tmp_path, board, system)
    text = path.read_text()
    assert "Restart=on-failure" in text and str(board) in text and "@" not in text.replace("file://", "")
    assert ("WantedBy=multi-user.target" if system else "WantedBy=default.target") in text
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)}
    completed = subprocess.run(["systemd-analyze", *([] if system else ["--user"]), "verify", str(path)],
                               capture_output=True, text=True, env=env, timeout=60)
    assert completed.returncode == 0 and service.UNIT_NAME not in completed.stderr, completed.stderr
    path.write_text(text.replace("Restart=on-failure", "Restart=on-failure\nExecStart=/bin/sh -c 'unbalanced"))
    completed = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0  # The check can fail: a broken unit is refused.


def test_a_folder_the_unit_cannot_hold_is_refused(tmp_path):
    with pytest.raises(agent_common.AgentError, match="letters, digits"):
        agent_service.fill_unit(service.unit_template(), tmp_path / "my fashion", system=True)


def exec_start(unit: pathlib.Path) -> list:
    """The unit's ExecStart as a command list, `$$` back to `$`."""
    line = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):].replace("$$", "$"))


@pytest.mark.parametrize("layout", ["flat", "releases"])
def test_the_units_command_serves_the_bundle(tiny_build, device_python, data_dir, tmp_path, layout):
    board = tmp_path / "fashion"
    bundle = board / "releases" / "0123abcd" if layout == "releases" else board
    shutil.copytree(tiny_build / "device", bundle)  # Either layout, as an old or a new deploy leaves it.
    if layout == "releases":
        (board / "current").symlink_to(bundle.relative_to(board))
    (bundle / ".venv").symlink_to(pathlib.Path(device_python).parent.parent)  # The board's venv, as --install makes.
    camera = tmp_path / "camera" / "picamera2"  # The stand-in camera test_classify.py uses.
    camera.mkdir(parents=True)
    (camera / "__init__.py").write_text(PICAMERA2_STAND_IN)
    image = data.load_fashion_mnist(data_dir, download=False).test_images[1]
    camera_frame(image, np.random.default_rng(1)).save(camera / "frame.png")
    token = agent_service.make_token(board)
    assert (board / agent_service.TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    env = {**os.environ, "PYTHONPATH": str(camera.parent)}
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(exec_start(unit_file(tmp_path, board, True, port=0)), cwd=board, env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        port = wait_for_port(tmp_path / "stderr.txt", process)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {token}"})
        health = wait_for_health(request)
        process.send_signal(signal.SIGTERM)  # As systemd stops it: a clean exit, not a failure to restart.
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert health["frames"] > 0 and health["status"] == "ok"
    assert token not in (tmp_path / "stderr.txt").read_text()


def wait_for_port(stderr: pathlib.Path, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for line in stderr.read_text().splitlines():
            if line.startswith("serving on "):
                return int(line.split()[2].rsplit(":", 1)[1].strip("/"))
        time.sleep(0.1)
    raise AssertionError(stderr.read_text())


def wait_for_health(request) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as response:
            health = json.loads(response.read())
        if health["frames"]:
            return health
        time.sleep(0.2)
    raise AssertionError(f"no frame in 30 s: {health}")


def test_service_to_a_folder_is_refused_before_anything_is_copied(tiny_build, tmp_path):
    result = run_cli("deploy", str(tmp_path / "board"), "--bundle", str(tiny_build / "device"), "--service",
                     expect_exit=1)
    assert result.output.strip().splitlines()[-1].startswith(
        f"Error: --service runs the service on a board over ssh, and {tmp_path / 'board'} is a folder")
    assert not (tmp_path / "board").exists()


def deploy_service_over_ssh(ssh_server, tiny_build, device_python, board: pathlib.Path):
    return run_cli("deploy", f"{sshd.HOST_ALIAS}:{board}", "--ssh-config", str(ssh_server.config),
                   "--python", str(device_python), "--bundle", str(tiny_build / "device"), "--service", expect_exit=1)


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="this machine runs systemd: it would install the unit")
def test_service_without_systemd_is_a_one_line_error_before_anything_is_copied(ssh_server, tiny_build, device_python,
                                                                               tmp_path):
    board = tmp_path / "board"
    result = deploy_service_over_ssh(ssh_server, tiny_build, device_python, board)
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {sshd.HOST_ALIAS}: systemd is not running on this machine: --service needs a board booted with systemd")
    assert not board.exists()  # Nothing copied, current not switched: the board is as it was.


def test_a_folder_no_unit_can_hold_is_refused_before_anything_is_copied(ssh_server, tiny_build, device_python,
                                                                        tmp_path):
    board = tmp_path / "my fashion"
    result = deploy_service_over_ssh(ssh_server, tiny_build, device_python, board)
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {sshd.HOST_ALIAS}: {board}: a service needs a folder path of letters, digits and ._+-/ only")
    assert not board.exists()
