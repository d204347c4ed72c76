"""edge-fashion.service on the board: install the unit, restart it after a switch, ask its /healthz."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pwd
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request

from edge_fashion import files
from edge_fashion.deploy.agent import common

SERVICE = "edge-fashion.service"  # Installed by `edge-fashion deploy --service`, if at all.
SETTLE_SECONDS = 2.0  # A service that crashes on start is no longer active after this.
HEALTH_SECONDS = 60  # How long its first /healthz may take: the camera starts, the first frame comes.
NO_SERVICE, RESTARTED, NOT_ACTIVE, NOT_HEALTHY = "no service", "restarted", "not active", "not healthy"
TOKEN_FILE = "serve-token"
RECORD_FILE = ".service.json"  # What `service` installed ({"port": ...}): the check after a switch asks that port.
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")  # Goes into a unit's shell line unquoted: nothing special.


def scope() -> list:
    """systemctl's scope for this user: the system's units as root, else the user's own."""
    return [] if os.geteuid() == 0 else ["--user"]


@dataclasses.dataclass(frozen=True)
class Restart:
    outcome: str  # NO_SERVICE, RESTARTED, NOT_ACTIVE or NOT_HEALTHY.
    reason: str = ""  # Why it is not up, in words: "is not active", "did not answer /healthz ...".


def restart_if_installed(board: pathlib.Path, seconds: float = HEALTH_SECONDS) -> Restart:
    """Restart edge-fashion.service when it is installed, then wait until its /healthz answers 200
    with a frame classified (at most `seconds`): RESTARTED, else NOT_ACTIVE when it stopped or NOT_HEALTHY when it runs
    but never answered, each with the reason."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or subprocess.run([systemctl, *scope(), "cat", SERVICE], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL).returncode != 0:
        return Restart(NO_SERVICE)
    subprocess.run([systemctl, *scope(), "restart", SERVICE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(SETTLE_SECONDS)
    port = installed_port(board)
    deadline = time.monotonic() + seconds
    while True:
        if subprocess.run([systemctl, *scope(), "is-active", "--quiet", SERVICE]).returncode != 0:
            return Restart(NOT_ACTIVE, f"is not active (see {journal_command(os.geteuid() == 0)})")
        if port is None:  # Installed without a record of its port: is-active is all there is to ask.
            return Restart(RESTARTED)
        answer, reason = ask_health(board, port)
        if answer is not None:
            return Restart(RESTARTED)
        if time.monotonic() >= deadline:
            return Restart(NOT_HEALTHY, f"was not healthy within {seconds:.0f} s ({reason})")
        time.sleep(1)


def installed_port(board: pathlib.Path) -> int | None:
    try:
        return int(json.loads((board / RECORD_FILE).read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unit_directory(folder: pathlib.Path) -> str:
    """The folder's absolute path, as the unit's shell line holds it unquoted."""
    directory = str(folder.resolve())
    if not SAFE_PATH.match(directory):
        raise common.AgentError(f"{directory}: a service needs a folder path of letters, digits and ._+-/ only")
    return directory


def check(folder: pathlib.Path) -> dict:
    """What install() would refuse, found before a deploy copies anything."""
    directory, system = unit_directory(folder), os.geteuid() == 0
    systemctl(system)
    return {"directory": directory, "scope": "system" if system else "user"}


def fill_unit(template: str, folder: pathlib.Path, system: bool) -> str:
    """The unit for this folder (absolute) and scope: multi-user.target as root, else default.target."""
    directory = unit_directory(folder)
    return template.replace("@DIRECTORY@", directory).replace(
        "@WANTED_BY@", "multi-user.target" if system else "default.target")


def systemctl(system: bool) -> list:
    if shutil.which("systemctl") is None or not os.path.isdir("/run/systemd/system"):
        raise common.AgentError("systemd is not running on this machine: --service needs a board booted with systemd")
    return ["systemctl"] if system else ["systemctl", "--user"]


def make_token(folder: pathlib.Path) -> str:
    """The service's token in DIR/serve-token (mode 0600), made once and kept across deploys.

    Written under a temporary name, fsynced and renamed: a power cut never leaves an empty token
    file, which the service would refuse to start with."""
    path = folder / TOKEN_FILE
    if not path.exists():
        files.atomic_write_text(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    return path.read_text().strip()


def install(folder: pathlib.Path, template: str, port: int) -> dict:
    """Write the unit (whole), make the token, enable and restart the service; answer how it went."""
    system = os.geteuid() == 0
    command = systemctl(system)
    unit_dir = pathlib.Path("/etc/systemd/system") if system else pathlib.Path.home() / ".config/systemd/user"
    unit = unit_dir / SERVICE
    files.atomic_write_text(unit, fill_unit(template, folder, system))
    files.atomic_write_json(folder / RECORD_FILE, {"port": port})
    token = make_token(folder)
    for step in (["daemon-reload"], ["enable", SERVICE], ["restart", SERVICE]):
        common.run_step(command + step, " ".join(["systemctl", *command[1:], *step]))
    os.sync()  # systemctl's links that enable the unit at boot, which it does not fsync itself.
    warning = ""
    if not system:  # Without lingering a user's units start at their login, not at boot.
        lingering = subprocess.run(["loginctl", "enable-linger", pwd.getpwuid(os.geteuid()).pw_name],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        if lingering.returncode != 0:
            warning = f"loginctl enable-linger failed, so it starts at login, not at boot: {lingering.stdout.strip()}"
    active = subprocess.run(command + ["is-active", "--quiet", SERVICE]).returncode == 0
    return {"unit": str(unit), "scope": "system" if system else "user", "token": token, "active": active,
            "warning": warning, "journal": journal_command(system)}


def journal_command(system: bool) -> str:
    return f"journalctl {'' if system else '--user '}-u {SERVICE}"


def ask_health(folder: pathlib.Path, port: int) -> tuple:
    """(the JSON of /healthz, "") when it answers 200 with a frame classified, else (None, why not).

    A service answers 200 before its first frame too (until it is stale): a camera that gives
    nothing would pass."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz",
                                     headers={"Authorization": f"Bearer {make_token(folder)}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read().decode())
        if not answer.get("frames"):
            return None, f"/healthz answered 200 but no frame was classified yet ({answer.get('errors')} errors)"
        return answer, ""
    except urllib.error.HTTPError as error:
        return None, f"/healthz answered {error.code}"
    except (OSError, ValueError) as error:
        return None, f"/healthz: {getattr(error, 'reason', error)}"


def health(folder: pathlib.Path, port: int, seconds: float) -> dict:
    """Poll /healthz on this machine until it answers 200 with a frame classified, or `seconds` pass."""
    deadline, reason = time.monotonic() + seconds, "no answer"
    while time.monotonic() < deadline:
        answer, reason = ask_health(folder, port)
        if answer is not None:
            return {"healthy": True, "health": answer}
        time.sleep(1)
    return {"healthy": False, "reason": reason, "journal": journal_command(os.geteuid() == 0)}
