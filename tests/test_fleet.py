"""`edge-fashion deploy --fleet`: three boards, each a real OpenSSH server on its own loopback port,
updated by ansible-playbook with the shipped playbook; one board's self-test fails there."""

import contextlib
import os
import pathlib

import pytest

import sshd
from conftest import run_cli
from edge_fashion import files
from edge_fashion.deploy import fleet
from edge_fashion.deploy.agent import releases as agent_releases
from edge_fashion.deploy import transport as deploy

FAILING = "board-c"  # Its python for the self-test has no numpy: classify.py cannot run there.


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    if not sshd.SSHD.exists():
        pytest.skip("no /usr/sbin/sshd: apt-get install openssh-server openssh-client")
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(sshd.running_sshd(tmp_path_factory.mktemp(f"sshd-{name}")))
               for name in ("board-a", "board-b", "board-c")}


@pytest.fixture(autouse=True)
def ansible_available(monkeypatch):
    # The test sshd serves no sftp subsystem: Ansible's copies go through the ssh session itself.
    monkeypatch.setenv("ANSIBLE_SSH_TRANSFER_METHOD", "piped")
    try:
        fleet.ansible_command("ansible-playbook")
    except fleet.FleetError as error:
        pytest.skip(str(error))


@pytest.fixture
def boards(servers, tmp_path, tiny_build, device_python) -> dict[str, pathlib.Path]:
    """Each board's DIR, already holding the tiny build's bundle as its current release."""
    folders = {name: tmp_path / name / "fashion" for name in servers}
    for name, server in servers.items():
        deploy.deploy(tiny_build / "device", board_target(server, folders[name], str(device_python)))
    return folders


def board_target(server: sshd.SshServer, folder: pathlib.Path, python: str) -> deploy.Target:
    return deploy.parse_target(f"{sshd.HOST_ALIAS}:{folder}", ssh_config=server.config, python=python)


def write_inventory(path: pathlib.Path, servers, folders, order: list[str], device_python) -> pathlib.Path:
    lines = ["[boards]"]
    for name in order:
        server = servers[name]
        python = "/usr/bin/python3" if name == FAILING else device_python
        lines.append(f"{name} ansible_host=127.0.0.1 ansible_port={server.port} ansible_user={server.user} "
                     f"ansible_ssh_private_key_file={server.identity} ansible_ssh_common_args='-F {server.config}' "
                     f"edge_fashion_dir={folders[name]} edge_fashion_python={python}")
    lines += ["[boards:vars]", "ansible_python_interpreter=/usr/bin/python3"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def new_bundle(tiny_build, tmp_path) -> pathlib.Path:
    folder = tmp_path / "new_bundle"
    deploy.shutil.copytree(tiny_build / "device", folder)
    with (folder / "README.md").open("a") as readme:
        readme.write("\nThe fleet's release.\n")
    return folder


def current(folder: pathlib.Path) -> str:
    return os.path.basename(os.readlink(folder / "current"))


def summary_row(output: str, board: str) -> list[str]:
    """The board's row of the summary edge-fashion prints after Ansible's own output."""
    summary = output[output.rindex("\nboard "):]
    rows = [line.split() for line in summary.splitlines() if line.startswith(f"{board} ")]
    assert len(rows) == 1, output
    return rows[0]


def fleet_deploy(bundle: pathlib.Path, inventory: pathlib.Path, batch: int, max_fail: int) -> str:
    return run_cli("deploy", "--bundle", str(bundle), "--fleet", str(inventory), "--batch", str(batch),
                   "--max-fail", str(max_fail), expect_exit=1).output


def test_canary_batches_and_max_fail(servers, boards, new_bundle, tmp_path, device_python):
    old = current(boards["board-a"])
    new = agent_releases.release_name({name: files.sha256_bytes(data)
                                            for name, data in deploy.read_bundle(new_bundle).items()})

    # The failing board as the canary: nothing else runs, whatever --max-fail allows.
    canary_first = write_inventory(tmp_path / "canary.ini", servers, boards, [FAILING, "board-a", "board-b"],
                                   device_python)
    output = fleet_deploy(new_bundle, canary_first, batch=2, max_fail=50)
    assert summary_row(output, FAILING)[1:4] == [old, new, "FAILED"]
    assert summary_row(output, "board-a")[-2:] == summary_row(output, "board-b")[-2:] == ["not", "run"]
    assert [current(folder) for folder in boards.values()] == [old, old, old]

    # A good canary, then a batch of two where one fails: with --max-fail 0 Ansible stops the batch
    # before its switch, so neither board of it moves.
    inventory = write_inventory(tmp_path / "boards.ini", servers, boards, ["board-a", FAILING, "board-b"], device_python)
    output = fleet_deploy(new_bundle, inventory, batch=2, max_fail=0)
    canary = summary_row(output, "board-a")
    assert canary[1:4] == [old, new, "passed"] and float(canary[4]) > 0 and canary[-1] == "switched"
    assert summary_row(output, FAILING)[1:4] == [old, new, "FAILED"]
    assert " ".join(summary_row(output, FAILING)[5:]) == "not switched (self-test FAILED)"
    assert " ".join(summary_row(output, "board-b")[3:4] + summary_row(output, "board-b")[5:]) == \
        "passed not switched (stopped before the switch)"
    assert output.splitlines()[-1].startswith(f"Error: 2 of 3 boards not on releases/{new}/")
    assert (current(boards["board-a"]), current(boards[FAILING]), current(boards["board-b"])) == (new, old, old)

    # Half a batch may fail: the roll-out goes on past the failing board, which keeps its release.
    output = fleet_deploy(new_bundle, inventory, batch=2, max_fail=50)
    assert summary_row(output, "board-b")[-1] == "switched"
    assert output.splitlines()[-1].startswith(f"Error: 1 of 3 boards not on releases/{new}/: {FAILING}")
    assert (current(boards["board-a"]), current(boards[FAILING]), current(boards["board-b"])) == (new, old, new)
    assert (boards[FAILING] / "current" / "classify.py").is_file()


def test_a_missing_inventory_is_one_line(tmp_path, tiny_build):
    result = run_cli("deploy", "--bundle", str(tiny_build / "device"), "--fleet", str(tmp_path / "empty.ini"),
                     expect_exit=2)
    assert "does not exist" in result.output
    (tmp_path / "empty.ini").write_text("# no boards yet\n")
    result = run_cli("deploy", "--bundle", str(tiny_build / "device"), "--fleet", str(tmp_path / "empty.ini"),
                     expect_exit=1)
    assert result.output.startswith("Error: ") and "no boards in this inventory" in result.output
    assert result.output.count("\n") == 1
