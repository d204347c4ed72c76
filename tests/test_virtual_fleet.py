"""`edge-fashion deploy --fleet` on two virtual boards running at once (emulation/virtual_board.py),
each with edge-fashion.service running under systemd: the canary switches and its service comes up
on the new release; on the board of the next batch the camera has gone, so after the switch its
service stops, its agent switches it back, and the summary says why."""

import concurrent.futures
import pathlib
import shutil
import subprocess

import pytest

import board_checks
from board_checks import virtual_board
from conftest import run_cli
from edge_fashion.deploy import fleet, releases

ARCH = board_checks.ARCH
HEALTH_SECONDS = 120  # The bound each switch gives the service here (TCG on a busy machine).
NAMES = ("board-a", "board-b")
FAILING = "board-b"  # Its camera is gone before the roll-out.


@pytest.fixture(scope="module")
def boards(tmp_path_factory, data_dir, tiny_build):
    reason = board_checks.skip_reason(ARCH)
    if reason:
        pytest.skip(reason)
    try:
        fleet.ansible_command("ansible-playbook")
    except fleet.FleetError as error:
        pytest.skip(str(error))
    folders = [tmp_path_factory.mktemp(name) for name in NAMES]
    requirements = (tiny_build / "device" / "requirements.txt").read_text()
    # Two boards on two cores: one virtual CPU each.
    with virtual_board.running_boards(ARCH, folders, cpus=1, requirements_text=requirements) as running:
        for board in running:
            board_checks.give_camera(board, data_dir)
        with concurrent.futures.ThreadPoolExecutor(len(running)) as pool:
            deploys = list(pool.map(lambda board: subprocess.run(
                board_checks.deploy_command(board, tiny_build / "device", "--install", "--service"),
                capture_output=True, text=True, timeout=board_checks.DEPLOY_TIMEOUT), running))
        for deployed in deploys:
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        yield dict(zip(NAMES, running))


@pytest.fixture(autouse=True)
def bounded_health(monkeypatch):
    monkeypatch.setattr(releases, "HEALTH_SECONDS", HEALTH_SECONDS)


def write_inventory(path: pathlib.Path, boards: dict) -> pathlib.Path:
    lines = ["[boards]"]
    for name, board in boards.items():
        lines.append(f"{name} ansible_host=127.0.0.1 ansible_port={board.port} ansible_user=pi "
                     f"ansible_ssh_private_key_file={board.identity} ansible_ssh_common_args='-F {board.ssh_config}'")
    lines += ["[boards:vars]", "ansible_python_interpreter=/usr/bin/python3"]
    path.write_text("\n".join(lines) + "\n")
    return path


def summary_row(output: str, board: str) -> str:
    summary = output[output.rindex("\nboard "):]
    rows = [line for line in summary.splitlines() if line.startswith(f"{board} ")]
    assert len(rows) == 1, output
    return rows[0]


def test_a_canary_then_a_batch_whose_board_fails_its_health_check(boards, tiny_build, tmp_path):
    new_bundle = tmp_path / "new_bundle"
    shutil.copytree(tiny_build / "device", new_bundle)
    with (new_bundle / "README.md").open("a") as readme:
        readme.write("\nThe fleet's release.\n")
    old, new = board_checks.release_of(tiny_build / "device"), board_checks.release_of(new_bundle)
    boards[FAILING].ssh(f"rm {board_checks.CAMERA_ON_BOARD}/frame.png", user="root")

    output = run_cli("deploy", "--bundle", str(new_bundle), "--fleet", str(write_inventory(tmp_path / "boards.ini",
                     boards)), "--batch", "1", expect_exit=1).output

    canary = summary_row(output, "board-a").split()
    assert canary[1:4] == [old, new, "passed"] and canary[-1] == "switched"
    failing = summary_row(output, FAILING)
    assert failing.split()[1:4] == [old, new, "passed"]
    # Without its camera's frames the service stops (it is not active) on the new release and on the old.
    assert (f"not switched (edge-fashion.service is not active (see journalctl --user -u edge-fashion.service) "
            f"after the switch to {new}; switched back to {old}, but it is not active") in failing
    assert output.splitlines()[-1].startswith(f"Error: 1 of 2 boards not on releases/{new}/: {FAILING}")
    assert board_checks.current(boards["board-a"]) == new and board_checks.current(boards[FAILING]) == old
    assert board_checks.problems(boards["board-a"], [new_bundle]) == []
