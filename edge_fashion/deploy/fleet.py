"""`edge-fashion deploy --fleet INVENTORY`: one bundle onto many boards, through Ansible.

Ansible does the fleet's work (connections, batches, stopping a bad roll-out): this module runs
`ansible-playbook` with the playbook shipped beside it (playbook.yml), which runs the same agent.py
on each board as a single deploy does, and then reads back each board's summary (board, old and
new release, self-test, seconds). ansible-core comes with the `fleet` extra:
pip install 'edge-fashion[fleet]'.

Usage: edge-fashion deploy --fleet boards.ini --batch 10 --max-fail 20
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import typing

from edge_fashion import files
from edge_fashion.deploy import agent as deploy_agent
from edge_fashion.deploy.agent import releases as agent_releases
from edge_fashion.deploy import transport

PLAYBOOK = pathlib.Path(__file__).with_name("playbook.yml")
BATCH = 5  # Boards updated at once after the canary: a bad release reaches few before Ansible stops.
MAX_FAIL_PERCENT = 0  # Any failed board in a batch stops the roll-out.


class FleetError(ValueError):
    """A fleet deploy that could not start, or boards that did not end on the new release."""


@dataclasses.dataclass(frozen=True)
class BoardSummary:
    board: str  # The inventory's name for it.
    old: str | None  # The release current before; None on a first deploy or when never reached.
    new: str
    self_test: str  # "passed", "FAILED" or "not run".
    status: str  # "switched", "not switched (why)", or "not run" (a batch before it failed, or unreachable).
    seconds: float


@dataclasses.dataclass(frozen=True)
class FleetResult:
    release: str
    boards: tuple[BoardSummary, ...]
    returncode: int  # ansible-playbook's exit status.

    @property
    def failed(self) -> list[BoardSummary]:
        return [board for board in self.boards if board.status != "switched"]


def ansible_command(name: str) -> str:
    """The Ansible program on PATH, or beside this Python (a venv that is not activated)."""
    found = shutil.which(name) or shutil.which(name, path=str(pathlib.Path(sys.executable).parent))
    if found is None:
        raise FleetError(f"{name} not found: --fleet needs ansible-core (pip install 'edge-fashion[fleet]')")
    return found


def deploy_fleet(bundle_dir: pathlib.Path, inventory: pathlib.Path, batch: int = BATCH,
                 max_fail: int = MAX_FAIL_PERCENT, keep: int = transport.KEEP_RELEASES,
                 progress: typing.Callable[[str], None] = lambda line: None) -> FleetResult:
    """Run the playbook over the inventory: a canary board, then batches of `batch` boards."""
    contents = transport.read_bundle(pathlib.Path(bundle_dir))
    sha256 = {name: files.sha256_bytes(data) for name, data in contents.items()}
    release = agent_releases.release_name(sha256)
    hosts = inventory_hosts(inventory)
    with tempfile.TemporaryDirectory(prefix="edge-fashion-fleet-") as folder:
        summaries = pathlib.Path(folder) / "summaries"
        summaries.mkdir()
        agent_file = pathlib.Path(folder) / "agent.py"
        agent_file.write_bytes(deploy_agent.script())
        extra = {"edge_fashion_bundle": str(pathlib.Path(bundle_dir).resolve()),
                 "edge_fashion_agent": str(agent_file), "edge_fashion_release": release,
                 "edge_fashion_files": sha256,
                 "edge_fashion_sha1": {name: hashlib.sha1(data).hexdigest() for name, data in contents.items()},
                 "edge_fashion_keep": keep, "edge_fashion_serial": [1, batch], "edge_fashion_max_fail": max_fail,
                 "edge_fashion_summary_dir": str(summaries)}
        (pathlib.Path(folder) / "extra.json").write_text(json.dumps(extra))
        progress(f"deploying releases/{release}/ to {len(hosts)} boards: 1 canary, then batches of {batch}")
        returncode = run_playbook(inventory, pathlib.Path(folder) / "extra.json", progress)
        boards = tuple(read_summary(summaries / f"{host}.json", host, release) for host in hosts)
    return FleetResult(release, boards, returncode)


def inventory_hosts(inventory: pathlib.Path) -> list[str]:
    """Every host of the inventory, in its order, as `ansible-inventory --list` reads it."""
    if not pathlib.Path(inventory).is_file():
        raise FleetError(f"{inventory}: no such inventory file")
    completed = subprocess.run([ansible_command("ansible-inventory"), "-i", str(inventory), "--list"],
                               capture_output=True, text=True, env=ansible_environment())
    try:
        groups = json.loads(completed.stdout)
    except ValueError:
        groups = {}
    hosts = []
    for group in ["ungrouped", *groups.get("all", {}).get("children", [])]:
        hosts += [host for host in groups.get(group, {}).get("hosts", []) if host not in hosts]
    if completed.returncode != 0 or not hosts:
        raise FleetError(f"{inventory}: no boards in this inventory "
                         f"({last_line(completed.stderr) or 'it lists no hosts'})")
    return hosts


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def ansible_environment() -> dict[str, str]:
    # Plain text for a log; pipelining saves a round trip per task on every board.
    return {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}


def run_playbook(inventory: pathlib.Path, extra_vars: pathlib.Path, progress: typing.Callable[[str], None]) -> int:
    """ansible-playbook's own lines go to progress as they come; answers its exit status."""
    command = [ansible_command("ansible-playbook"), "-i", str(inventory), str(PLAYBOOK), "-e", f"@{extra_vars}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=ansible_environment()) as process:
        for line in process.stdout:
            if line.strip():
                progress(line.rstrip())
    return process.returncode


def read_summary(path: pathlib.Path, host: str, release: str) -> BoardSummary:
    if not path.is_file():
        return BoardSummary(host, None, release, "not run", "not run", 0.0)
    summary = json.loads(path.read_text())
    return BoardSummary(host, summary["old"], summary["new"], summary["self_test"], summary["status"],
                        float(summary["seconds"]))


def summary_lines(result: FleetResult) -> list[str]:
    """The per-board table printed at the end."""
    width = max(len("board"), *(len(board.board) for board in result.boards))
    lines = [f"{'board':{width}}  {'old release':12}  {'new release':12}  {'self-test':9}  {'seconds':>7}  status"]
    for board in result.boards:
        lines.append(f"{board.board:{width}}  {board.old or '-':12}  {board.new:12}  {board.self_test:9}  "
                     f"{board.seconds:7.1f}  {board.status}")
    return lines


def check(result: FleetResult) -> None:
    """Raise FleetError naming the boards that are not on the new release."""
    if result.failed:
        names = ", ".join(f"{board.board} ({board.status})" for board in result.failed)
        raise FleetError(f"{len(result.failed)} of {len(result.boards)} boards not on releases/{result.release}/: {names}")
