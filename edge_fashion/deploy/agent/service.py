"""edge-fashion.service on the board: install the unit, restart it after a switch, ask its /healthz."""

from __future__ import annotations

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
NO_SERVICE, RESTARTED, NOT_ACTIVE = "no service", "restarted", "not active"
TOKEN_FILE = "serve-token"
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")  # Goes into a unit's shell line unquoted: nothing special.


def scope() -> list:
    """systemctl's scope for this user: the system's units as root, else the user's own."""
    return [] if os.geteuid() == 0 else ["--user"]


def restart_if_installed() -> str:
    """Restart edge-fashion.service when it is installed: NO_SERVICE, RESTARTED, or NOT_ACTIVE when
    it did not stay up. A check of the service's /healthz would go here, after is-active."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or subprocess.run([systemctl, *scope(), "cat", SERVICE], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL).returncode != 0:
        return NO_SERVICE
    subprocess.run([systemctl, *scope(), "restart", SERVICE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(SETTLE_SECONDS)
    active = subprocess.run([systemctl, *scope(), "is-active", "--quiet", SERVICE]).returncode == 0
    return RESTARTED if active else NOT_ACTIVE


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
    """The service's token in DIR/serve-token (mode 0600), made once and kept across deploys."""
    path = folder / TOKEN_FILE
    if not path.exists():
        descriptor = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as output:
            output.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def install(folder: pathlib.Path, template: str) -> dict:
    """Write the unit (whole), make the token, enable and restart the service; answer how it went."""
    system = os.geteuid() == 0
    command = systemctl(system)
    unit_dir = pathlib.Path("/etc/systemd/system") if system else pathlib.Path.home() / ".config/systemd/user"
    unit = unit_dir / SERVICE
    files.atomic_write_text(unit, fill_unit(template, folder, system))
    token = make_token(folder)
    for step in (["daemon-reload"], ["enable", SERVICE], ["restart", SERVICE]):
        common.run_step(command + step, " ".join(["systemctl", *command[1:], *step]))
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


def health(folder: pathlib.Path, port: int, seconds: float) -> dict:
    """Poll /healthz on this machine until it answers 200 or `seconds` pass."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz",
                                     headers={"Authorization": f"Bearer {make_token(folder)}"})
    deadline, reason = time.monotonic() + seconds, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return {"healthy": True, "health": json.loads(response.read().decode())}
        except urllib.error.HTTPError as error:
            reason = f"/healthz answered {error.code}"
        except (OSError, ValueError) as error:
            reason = f"/healthz: {getattr(error, 'reason', error)}"
        time.sleep(1)
    return {"healthy": False, "reason": reason, "journal": journal_command(os.geteuid() == 0)}
