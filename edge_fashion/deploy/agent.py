"""The target's half of `edge-fashion deploy`: a small program that runs on the board.

The host never installs it: for each call it starts the board's python3 with
`python3 -c 'import sys; exec(sys.stdin.buffer.read(SIZE))' ACTION DIR [ARGUMENT...]` (over ssh,
or locally for a folder target) and writes this file's source, then the call's data, to its
stdin; the fleet playbook copies it to the board and runs it as a script. So it imports only the
standard library and runs on Python 3.7 or newer. DIR holds one folder per bundle,
DIR/releases/<RELEASE>/, and DIR/current, a symlink to the release in use. Actions:

    prepare DIR RELEASE   read JSON {name: sha256}; move a bundle of the old layout (files
                       directly in DIR) into a release; make DIR/releases/RELEASE and link into
                       it the files other releases already hold; answer each name's sha256 there
    receive DIR RELEASE   read a JSON header line [{name, size, sha256}] and then the files' bytes;
                       write each to a temporary name, fsync and check it, then rename all
    verify DIR RELEASE NAME...   answer the sha256 of each NAME in the release (null if absent)
    install DIR RELEASE   python3 -m venv --system-site-packages DIR/.venv; pip install -r
                       the release's requirements.txt into it
    self-test DIR RELEASE [PYTHON]   run the release's classify.py --self-test with PYTHON if
                       given, else DIR/.venv/bin/python if present, else the python running this
    switch DIR RELEASE KEEP deploy|rollback   point DIR/current at the release (a symlink
                       renamed over the old one), restart edge-fashion.service if installed, keep
                       the KEEP newest releases
    releases DIR       answer the releases, their deploy time and model sha256, and the current one
    service-check DIR  answer whether this machine can run the service for DIR: systemd running,
                       DIR's absolute path one a unit can hold (nothing is written, DIR not made)
    service DIR        read a systemd unit (edge_fashion/deploy/service.py) from stdin, fill in
                       DIR and the scope (a system unit as root, else a user unit with lingering),
                       make DIR/serve-token if missing, enable and restart edge-fashion.service
    health DIR PORT SECONDS  ask http://127.0.0.1:PORT/healthz (with the token) until it answers 200
    frames DIR         (for `edge-fashion pull`) the size and sha256 of every image file under DIR,
                       hidden ones left out; DIR must exist
    send DIR           read a JSON line [NAME, ...] and answer each file's bytes, base64-encoded

Each answers one JSON object on stdout. An error it can explain ends it with exit status 3 and
one line on stderr, "edge-fashion deploy: <what went wrong>".
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import pathlib
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request

ERROR_EXIT = 3
ERROR_PREFIX = "edge-fashion deploy: "
BLOCK_BYTES = 1 << 20  # Reads and writes go in blocks of 1 MiB; a Pi Zero has 512 MB.
RELEASES, CURRENT, METADATA = "releases", "current", ".release.json"
RELEASE_NAME_LENGTH = 12  # Hex digits of the bundle's sha256 that name its release folder.
# What a bundle of the old layout held directly in DIR, beside the files its manifest names;
# anything else there is the user's and stays.
OLD_LAYOUT_FILES = ("manifest.json", "classify.py", "requirements.txt", "README.md")
OLD_LAYOUT_PACKAGE = "fashion_board"
SERVICE = "edge-fashion.service"  # Installed by `edge-fashion deploy --service`, if at all.
SERVICE_SETTLE_SECONDS = 2.0  # A service that crashes on start is no longer active after this.
TOKEN_FILE = "serve-token"
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")  # Goes into a unit's shell line unquoted: nothing special.
# What classify.py reads and --save-frames writes (fashion_board/sources.py's list).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}


class AgentError(Exception):
    """A failure on the target, said in one line."""


def main(arguments: list[str]) -> None:
    action, directory, rest = arguments[0], arguments[1], arguments[2:]
    try:
        if action in ("frames", "send"):
            answer = frames_action(action, existing_folder(directory))
            sys.stdout.write(json.dumps(answer))
            return
        board = open_folder(directory, create=action not in ("releases", "service-check"))
        if action == "releases":
            answer = list_releases(board)
        elif action == "service-check":
            answer = check_service(board)
        elif action == "prepare":
            answer = prepare(board, rest[0], json.loads(sys.stdin.buffer.readline()))
        elif action == "receive":
            answer = {"received": receive(release_folder(board, rest[0]), sys.stdin.buffer)}
        elif action == "verify":
            answer = {"sha256": {name: file_sha256(bundle_path(release_folder(board, rest[0]), name)) for name in rest[1:]}}
        elif action == "install":
            answer = {"output": install(board, release_folder(board, rest[0]))}
        elif action == "self-test":
            answer = self_test(board, release_folder(board, rest[0]), rest[1] if len(rest) > 1 else None)
        elif action == "switch":
            answer = switch(board, rest[0], int(rest[1]), rollback=rest[2] == "rollback")
        elif action == "service":
            answer = install_service(board, sys.stdin.buffer.read().decode())
        elif action == "health":
            answer = service_health(board, int(rest[0]), float(rest[1]))
        else:
            raise AgentError(f"unknown action {action!r}: the host and the agent disagree")
    except (AgentError, OSError) as error:
        sys.stderr.write(f"{ERROR_PREFIX}{explain(error, directory)}\n")
        sys.exit(ERROR_EXIT)
    sys.stdout.write(json.dumps(answer))


def explain(error: Exception, directory: str) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device that holds {directory}"
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    return str(error)


def open_folder(directory: str, create: bool) -> pathlib.Path:
    folder = pathlib.Path(directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise AgentError(f"{directory} is a file, not a folder: name a folder to deploy into")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def release_name(sha256_by_name: dict) -> str:
    """A bundle's release folder name: the start of the sha256 over its files' names and sha256s."""
    lines = "".join(f"{sha256_by_name[name]}  {name}\n" for name in sorted(sha256_by_name))
    return hashlib.sha256(lines.encode()).hexdigest()[:RELEASE_NAME_LENGTH]


def release_folder(board: pathlib.Path, release: str) -> pathlib.Path:
    if not release or release.startswith(".") or "/" in release:
        raise AgentError(f"refusing the release name {release!r}")
    return board / RELEASES / release


def current_release(board: pathlib.Path) -> str | None:
    link = board / CURRENT
    return os.path.basename(os.readlink(str(link))) if link.is_symlink() else None
def existing_folder(directory: str) -> pathlib.Path:
    folder = pathlib.Path(directory).expanduser()
    if not folder.is_dir():
        raise AgentError(f"{directory}: no such folder (classify.py --save-frames makes it)")
    return folder


def list_frames(folder: pathlib.Path) -> dict:
    """{relative name: {size, sha256}} of the image files under folder, hidden files and folders left out."""
    found = {}
    for root, folders, files in os.walk(str(folder)):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = pathlib.Path(root, name)
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size,
                                                              "sha256": file_sha256(path)}
    return found


def frames_action(action: str, folder: pathlib.Path) -> dict:
    """`frames`: what --save-frames kept under folder; `send`: the bytes of the names read from stdin."""
    if action == "frames":
        return {"files": list_frames(folder)}
    return {"files": send(folder, json.loads(sys.stdin.buffer.readline()))}


def send(folder: pathlib.Path, names: list) -> dict:
    """{name: base64 of its bytes} for the named files under folder."""
    return {name: base64.b64encode(bundle_path(folder, name).read_bytes()).decode("ascii") for name in names}


def file_sha256(path: pathlib.Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_path(folder: pathlib.Path, name: str) -> pathlib.Path:
    """folder/name for a relative name such as 'fashion_board/runtimes.py'; never a path outside folder."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise AgentError(f"refusing the file name {name!r}: not a plain path inside {folder}")
    return folder.joinpath(*parts)


def prepare(board: pathlib.Path, release: str, wanted: dict) -> dict:
    """Make the release folder and fill it with what the board already holds; answer what is there."""
    migrated = migrate_old_layout(board)
    folder = release_folder(board, release)
    folder.mkdir(parents=True, exist_ok=True)
    for name, sha256 in wanted.items():
        target = bundle_path(folder, name)
        if file_sha256(target) != sha256:
            source = find_copy(board, name, sha256, folder)
            if source is not None:
                link_or_copy(source, target)
    found = {name: file_sha256(bundle_path(folder, name)) for name in wanted}
    return {"sha256": found, "missing": [name for name in wanted if found[name] != wanted[name]],
            "current": current_release(board), "migrated": migrated}


def find_copy(board: pathlib.Path, name: str, sha256: str, exclude: pathlib.Path) -> pathlib.Path | None:
    # Only files whose sha256 matches travel no further than a hard link: nothing is trusted by name.
    folders = sorted((board / RELEASES).iterdir(), key=lambda path: path.name != current_release(board))
    for folder in folders:
        candidate = bundle_path(folder, name)
        if folder != exclude and not folder.name.startswith(".") and file_sha256(candidate) == sha256:
            return candidate
    return None


def link_or_copy(source: pathlib.Path, target: pathlib.Path) -> None:
    """A hard link (no bytes copied), or a copy where the file system has none (FAT); renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if partial.exists():
        partial.unlink()
    try:
        os.link(str(source), str(partial))
    except OSError:
        shutil.copy2(str(source), str(partial))
    os.replace(str(partial), str(target))


def migrate_old_layout(board: pathlib.Path) -> str | None:
    """A bundle deployed before releases (files directly in DIR) becomes a release, current if none
    is. Each step can be repeated, so a migration killed half way finishes on the next deploy."""
    manifest = board / "manifest.json"
    if not manifest.is_file() or manifest.is_symlink():
        return None
    try:
        described = json.loads(manifest.read_text())
        named = [described["model"]["file"], described["labels_file"]]
    except (ValueError, KeyError, TypeError):
        raise AgentError(f"{manifest} is not a bundle manifest: move it away, then deploy again") from None
    names = [name for name in (*OLD_LAYOUT_FILES, *named) if bundle_path(board, name).is_file()]
    package = board / OLD_LAYOUT_PACKAGE
    if package.is_dir():
        names += [path.relative_to(board).as_posix() for path in sorted(package.rglob("*.py"))]
    release = release_name({name: file_sha256(board / name) for name in names})
    folder = release_folder(board, release)
    if not folder.is_dir():
        staging = board / RELEASES / f".migrating-{release}"
        shutil.rmtree(str(staging), ignore_errors=True)
        for name in names:
            link_or_copy(board / name, bundle_path(staging, name))
        write_metadata(staging, manifest.stat().st_mtime)
        os.rename(str(staging), str(folder))
    if not os.path.lexists(str(board / CURRENT)):
        point_current(board, release)
    for name in names:
        (board / name).unlink()
    shutil.rmtree(str(package), ignore_errors=True)
    return release


def write_metadata(folder: pathlib.Path, deployed_at: float) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    metadata = {"deployed_at": deployed_at, "model_sha256": manifest.get("model", {}).get("sha256")}
    partial = folder / f"{METADATA}.partial-{os.getpid()}"
    partial.write_text(json.dumps(metadata))
    os.replace(str(partial), str(folder / METADATA))


def read_metadata(folder: pathlib.Path) -> dict:
    try:
        return json.loads((folder / METADATA).read_text())
    except (OSError, ValueError):
        return {}  # Never switched to: a deploy that failed its checks, or was stopped.


def list_releases(board: pathlib.Path) -> dict:
    folder = board / RELEASES
    names = sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")) \
        if folder.is_dir() else []
    releases = [dict(read_metadata(folder / name), name=name) for name in names]
    releases.sort(key=lambda release: release.get("deployed_at") or 0)
    return {"current": current_release(board), "releases": releases}


def receive(folder: pathlib.Path, stream: typing.BinaryIO) -> list[str]:
    """Write every file under a temporary name first, then rename them all (the manifest comes
    last): an interrupted copy leaves the old files whole, never a torn model."""
    header = json.loads(stream.readline())
    targets = [bundle_path(folder, entry["name"]) for entry in header]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.partial-*"):
            stale.unlink()  # Left by an earlier deploy that was killed.
    partials = [target.with_name(f".{target.name}.partial-{os.getpid()}") for target in targets]
    try:
        for entry, partial in zip(header, partials):
            write_partial(partial, entry, stream)
        for target, partial in zip(targets, partials):
            os.replace(partial, target)
        for parent in sorted({target.parent for target in targets}):
            fsync_folder(parent)
    finally:
        for partial in partials:
            if partial.exists():
                partial.unlink()
    return [entry["name"] for entry in header]


def write_partial(partial: pathlib.Path, entry: dict, stream: typing.BinaryIO) -> None:
    digest, left = hashlib.sha256(), entry["size"]
    with partial.open("wb") as output:
        while left > 0:
            block = stream.read(min(left, BLOCK_BYTES))
            if not block:
                raise AgentError(f"the copy of {partial.parent / entry['name'].rsplit('/', 1)[-1]} was cut off; the old file is kept")
            digest.update(block)
            output.write(block)
            left -= len(block)
        output.flush()
        os.fsync(output.fileno())
    if digest.hexdigest() != entry["sha256"]:
        raise AgentError(f"{partial.parent / entry['name'].rsplit('/', 1)[-1]} arrived damaged (sha256 differs); the old file is kept")


def fsync_folder(folder: pathlib.Path) -> None:
    # Makes the renames survive a power cut, as well as the files' bytes.
    descriptor = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def run_step(command: list[str], what: str) -> str:
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, errors="replace")
    if completed.returncode == 0:
        return completed.stdout
    if "ensurepip is not available" in completed.stdout or "No module named venv" in completed.stdout:
        raise AgentError("python3 -m venv needs the python3-venv package there: sudo apt install python3-venv")
    lines = [line.strip() for line in completed.stdout.splitlines() if line.strip()]
    raise AgentError(f"{what} failed: {lines[-1] if lines else f'exit status {completed.returncode}'}")


def install(board: pathlib.Path, folder: pathlib.Path) -> str:
    venv = board / ".venv"
    # --system-site-packages: Debian's numpy, Pillow and python3-picamera2 serve from apt.
    output = run_step([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "python3 -m venv")
    return output + run_step([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                              "-r", str(folder / "requirements.txt")], "pip install -r requirements.txt")


def self_test(board: pathlib.Path, folder: pathlib.Path, python: str | None) -> dict:
    venv_python = board / ".venv" / "bin" / "python"
    if python is None:
        python = str(venv_python) if venv_python.exists() else sys.executable
    if not (folder / "classify.py").is_file():
        raise AgentError(f"{folder} holds no classify.py: deploy the bundle again")
    completed = subprocess.run([python, "classify.py", "--self-test"], cwd=str(folder), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, errors="replace")
    return {"passed": completed.returncode == 0, "status": completed.returncode,
            "python": python, "output": completed.stdout}


def point_current(board: pathlib.Path, release: str) -> None:
    """DIR/current -> releases/RELEASE in one rename: a reader sees the old release or the new, never neither."""
    temporary = board / f".{CURRENT}-{os.getpid()}"
    if os.path.lexists(str(temporary)):
        temporary.unlink()
    os.symlink(os.path.join(RELEASES, release), str(temporary))
    os.replace(str(temporary), str(board / CURRENT))
    fsync_folder(board)


def switch(board: pathlib.Path, release: str, keep: int, rollback: bool) -> dict:
    """Make the release current (a deploy also stamps it as the newest), restart the service, prune."""
    folder, old = release_folder(board, release), current_release(board)
    if not (folder / "manifest.json").is_file():
        raise AgentError(f"no release {release} in {board / RELEASES}")
    if not rollback or not read_metadata(folder):
        write_metadata(folder, time.time())
    service = "unchanged"
    if old != release:
        point_current(board, release)
        service = restart_service(board, old)
    return {"old": old, "new": release, "service": service, "pruned": prune(board, keep)}


def restart_service(board: pathlib.Path, old: str | None) -> str:
    """Restart edge-fashion.service when it is installed; if it does not come up, go back to `old`.
    A check of the service's /healthz would go here, after is-active."""
    systemctl = shutil.which("systemctl")
    scope = [] if os.geteuid() == 0 else ["--user"]
    if systemctl is None or subprocess.run([systemctl, *scope, "cat", SERVICE], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL).returncode != 0:
        return "no service"
    subprocess.run([systemctl, *scope, "restart", SERVICE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(SERVICE_SETTLE_SECONDS)
    if subprocess.run([systemctl, *scope, "is-active", "--quiet", SERVICE]).returncode == 0:
        return "restarted"
    if old is not None:
        point_current(board, old)
        subprocess.run([systemctl, *scope, "restart", SERVICE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raise AgentError(f"{SERVICE} is not active after the switch; switched back to {old}")


def prune(board: pathlib.Path, keep: int) -> list[str]:
    """Remove all but the `keep` most recently deployed releases; never the current one."""
    releases = list_releases(board)
    names = [release["name"] for release in releases["releases"]]
    doomed = [name for name in names[:max(0, len(names) - keep)] if name != releases["current"]]
    for name in doomed:
        # Renamed first, so a half-removed release never looks like one.
        trash = board / RELEASES / f".removing-{name}"
        os.rename(str(board / RELEASES / name), str(trash))
        shutil.rmtree(str(trash), ignore_errors=True)
    return doomed


def unit_directory(folder: pathlib.Path) -> str:
    """The folder's absolute path, as the unit's shell line holds it unquoted."""
    directory = str(folder.resolve())
    if not SAFE_PATH.match(directory):
        raise AgentError(f"{directory}: a service needs a folder path of letters, digits and ._+-/ only")
    return directory


def check_service(folder: pathlib.Path) -> dict:
    """What install_service would refuse, found before a deploy copies anything."""
    directory, system = unit_directory(folder), os.geteuid() == 0
    systemctl(system)
    return {"directory": directory, "scope": "system" if system else "user"}


def fill_unit(template: str, folder: pathlib.Path, system: bool) -> str:
    """The unit for this folder (absolute) and scope: multi-user.target as root, else default.target."""
    directory = unit_directory(folder)
    return template.replace("@DIRECTORY@", directory).replace(
        "@WANTED_BY@", "multi-user.target" if system else "default.target")


def systemctl(system: bool) -> list[str]:
    if shutil.which("systemctl") is None or not os.path.isdir("/run/systemd/system"):
        raise AgentError("systemd is not running on this machine: --service needs a board booted with systemd")
    return ["systemctl"] if system else ["systemctl", "--user"]


def make_token(folder: pathlib.Path) -> str:
    """The service's token in DIR/serve-token (mode 0600), made once and kept across deploys."""
    path = folder / TOKEN_FILE
    if not path.exists():
        descriptor = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as output:
            output.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def install_service(folder: pathlib.Path, template: str) -> dict:
    system = os.geteuid() == 0
    command = systemctl(system)
    unit_dir = pathlib.Path("/etc/systemd/system") if system else pathlib.Path.home() / ".config/systemd/user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / SERVICE
    partial = unit.with_name(f".{SERVICE}.partial-{os.getpid()}")
    partial.write_text(fill_unit(template, folder, system))
    os.replace(str(partial), str(unit))
    token = make_token(folder)
    for step in (["daemon-reload"], ["enable", SERVICE], ["restart", SERVICE]):
        run_step(command + step, " ".join(["systemctl", *command[1:], *step]))
    warning = ""
    if not system:  # Without lingering a user's units start at their login, not at boot.
        lingering = subprocess.run(["loginctl", "enable-linger", pwd.getpwuid(os.geteuid()).pw_name],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if lingering.returncode != 0:
            warning = f"loginctl enable-linger failed, so it starts at login, not at boot: {lingering.stdout.strip()}"
    active = subprocess.run(command + ["is-active", "--quiet", SERVICE]).returncode == 0
    return {"unit": str(unit), "scope": "system" if system else "user", "token": token, "active": active,
            "warning": warning, "journal": journal_command(system)}


def journal_command(system: bool) -> str:
    return f"journalctl {'' if system else '--user '}-u {SERVICE}"


def service_health(folder: pathlib.Path, port: int, seconds: float) -> dict:
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


if __name__ == "__main__":
    main(sys.argv[1:])
