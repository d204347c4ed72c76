#!/usr/bin/env python3
"""A virtual board to deploy to without hardware: Debian trixie (Raspberry Pi OS's base) under
qemu-system, with systemd as init, sshd, python3, numpy and Pillow, and the user pi with sudo.

    sudo .venv/bin/python emulation/virtual_board.py start            # arm64, the Pi's; --arch x86_64 builds faster
    sudo .venv/bin/python emulation/virtual_board.py stop

`start` builds the disk image once (board_image.py; x86_64 2-10 minutes, arm64 about 40; cached in
.cache/virtual-board/), boots a throw-away copy of it (a qcow2 overlay) in the background, waits
until its sshd answers and prints the ssh target and the `edge-fashion deploy` line to try. The
board listens only on 127.0.0.1 (qemu forwards one port to its sshd) and reaches no network: the
wheels its requirements.txt needs from PyPI are fetched here and put in the board's
/var/cache/pip-wheels, where its pip looks (/etc/pip.conf). `stop` powers it off and deletes the copy.

In Python (the tests): `with virtual_board.running(arch, folder) as board:` boots one that stops by
itself when the block ends or the process that started it dies; board.ssh(...), board.reboot(),
board.reset(), board.power_cut() and board.power_on() drive it.
Exit status: 0, or 1 with one line saying what went wrong.
"""

import argparse
import concurrent.futures
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import board_image
import board_qemu
import board_wheels
from pi_userland import EmulationError

BOOT_TIMEOUT = 600  # Seconds until sshd must answer; about 30 under TCG here (x86_64 and arm64), idle.
SSH_TIMEOUT = 600  # The longest one command on the board may take.
HOST_KEY_ALIAS = "virtual-board"  # known_hosts names the board so, whatever port it is forwarded to.
WHEELS_ON_BOARD = "/var/cache/pip-wheels"
PIP_CONFIG = f"[global]\nno-index = true\nfind-links = {WHEELS_ON_BOARD}\n"


@dataclasses.dataclass
class Board:
    image: board_image.Image
    folder: pathlib.Path  # The board's own: overlay.qcow2, console.log, qmp.sock, ssh_config, known_hosts.
    memory_mb: int = 1024
    cpus: int = 2
    port: int = 0  # The ssh port on 127.0.0.1; a new one at each power-on.
    process: subprocess.Popen | None = None
    boot_seconds: float = 0.0  # From qemu's start to sshd's first answer, for the last boot.
    started: float = 0.0  # time.monotonic() when qemu last started.

    @property
    def ssh_config(self) -> pathlib.Path:
        return self.folder / "ssh_config"

    @property
    def identity(self) -> pathlib.Path:
        return self.image.identity

    def target(self, user: str = board_image.USER) -> str:
        return f"{user}@127.0.0.1"

    def ssh_words(self, user: str = board_image.USER) -> list:
        return ["ssh", "-F", str(self.ssh_config), "-p", str(self.port), "-i", str(self.identity), self.target(user)]

    def ssh(self, script: str, user: str = board_image.USER, check: bool = True, timeout: float = SSH_TIMEOUT,
            stdin: bytes = b"") -> subprocess.CompletedProcess:
        """Run a shell script on the board as user; EmulationError if it fails and check is set."""
        try:
            result = subprocess.run([*self.ssh_words(user), script], input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"ssh {self.target(user)}: {script[:60]!r} ran over {timeout} s") from None
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()[-2000:]
            raise EmulationError(f"ssh {self.target(user)}: {script[:60]!r} exited {result.returncode}: {output}")
        return result

    def text(self, script: str, user: str = board_image.USER) -> str:
        return self.ssh(script, user).stdout.decode(errors="replace").strip()

    def console(self) -> str:
        path = self.folder / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def power_on(self, detach: bool = False) -> None:
        """Start qemu on the board's disk and wait until sshd answers (boot_seconds says how long)."""
        self.start_qemu(detach)
        self.wait_for_ssh(self.started)

    def start_qemu(self, detach: bool = False) -> None:
        """Start qemu on the board's disk (an overlay of the image, made at the first power-on).

        Unless detach, the kernel kills qemu when the thread that started it ends: start it from the
        thread that lives as long as the board."""
        if self.running():
            raise EmulationError("the board is already on")
        overlay = self.folder / "overlay.qcow2"
        if not overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.image.disk),
                            str(overlay)], check=True)
        self.port = board_qemu.free_port()
        write_ssh_files(self)
        (self.folder / "qmp.sock").unlink(missing_ok=True)
        words = board_qemu.command(
            self.image.arch, self.image.kernel, self.image.initrd, boot_line(self.image.arch),
            [(overlay, "qcow2")], self.folder / "console.log", self.memory_mb, self.cpus, self.port,
            self.folder / "qmp.sock")
        self.started = time.monotonic()
        with (self.folder / "qemu.log").open("ab") as log:
            self.process = subprocess.Popen(words, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=detach,
                                            preexec_fn=None if detach else board_qemu.die_with_parent)
        (self.folder / "qemu.pid").write_text(f"{self.process.pid}\n")

    def wait_for_ssh(self, started: float, previous_boot: str | None = None) -> str:
        """Wait until sshd answers on a boot other than previous_boot; answer the boot's id."""
        deadline = started + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running():
                raise EmulationError(f"qemu stopped while the board booted: {self.qemu_log()}")
            try:
                result = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=60)
            except EmulationError:
                continue  # sshd took the connection but the login did not finish: still booting.
            boot = result.stdout.decode().strip()
            if result.returncode == 0 and boot and boot != previous_boot:
                self.boot_seconds = time.monotonic() - started
                return boot
            time.sleep(1)
        tail = "\n".join(self.console().splitlines()[-20:])
        raise EmulationError(f"the board's sshd did not answer within {BOOT_TIMEOUT} s; its console ended:\n{tail}")

    def qemu_log(self) -> str:
        path = self.folder / "qemu.log"
        return path.read_text(errors="replace").strip()[-800:] if path.exists() else ""

    def boot_id(self) -> str:
        return self.text("cat /proc/sys/kernel/random/boot_id")

    def reboot(self) -> None:
        """`systemctl reboot` on the board, then wait for the next boot's sshd."""
        previous = self.boot_id()
        started = time.monotonic()
        self.ssh("sudo systemctl reboot", check=False, timeout=30)
        self.wait_for_ssh(started, previous)

    def reset(self) -> None:
        """The reset button: the machine restarts at once, nothing written back."""
        previous = self.boot_id()
        started = time.monotonic()
        board_qemu.qmp(self.folder / "qmp.sock", "system_reset")
        self.wait_for_ssh(started, previous)

    def power_cut(self) -> None:
        """Kill qemu: the guest's unwritten pages are lost, as on a board whose power goes."""
        if self.running():
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Power off now (quit through the monitor, else kill); the disk is kept until the folder goes."""
        if self.running():
            with contextlib.suppress(OSError, ValueError):
                board_qemu.qmp(self.folder / "qmp.sock", "quit", timeout=5)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.power_cut()


def boot_line(arch: board_qemu.Architecture) -> str:
    # No speculation mitigations (page table isolation costs most under TCG): a board for tests.
    # systemd waits up to 15 minutes for a unit or a device (not 90 s): a TCG board on a busy
    # machine runs 10 times slower than on an idle one.
    return (f"root=LABEL=board rw console={arch.console} panic=10 mitigations=off "
            "systemd.default_timeout_start_sec=900 systemd.default_device_timeout_sec=900")


def write_ssh_files(board: Board) -> None:
    """ssh_config and known_hosts in the board's folder: ssh -F checks the board's own host key."""
    (board.folder / "known_hosts").write_text(f"{HOST_KEY_ALIAS} {board.image.host_key}\n")
    board.ssh_config.write_text(
        "Host *\n"
        f"  HostKeyAlias {HOST_KEY_ALIAS}\n"
        f"  UserKnownHostsFile {board.folder / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n"
        "  IdentitiesOnly yes\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
        "  LogLevel ERROR\n")
    board.identity.chmod(0o600)


def provide_wheels(board: Board, requirements_text: str) -> list:
    """Put on the board the wheels its pip would take from PyPI for requirements_text; answer their names."""
    wheels = board_wheels.ensure_wheels(board.image, requirements_text)
    archive = subprocess.run(["tar", "-C", str(wheels), "-c", "."], capture_output=True, check=True).stdout
    board.ssh(f"mkdir -p {WHEELS_ON_BOARD} && tar -x -C {WHEELS_ON_BOARD} && "
              f"printf '{PIP_CONFIG}' > /etc/pip.conf && sync", user="root", stdin=archive)
    return sorted(path.name for path in wheels.glob("*.whl"))


@contextlib.contextmanager
def running(arch: str, folder: pathlib.Path, memory_mb: int = 1024, cpus: int = 2,
            requirements_text: str | None = None):
    """A booted board whose disk is an overlay in folder; powered off when the block ends."""
    with running_boards(arch, [folder], memory_mb, cpus, requirements_text) as boards:
        yield boards[0]


@contextlib.contextmanager
def running_boards(arch: str, folders: list, memory_mb: int = 1024, cpus: int = 2,
                   requirements_text: str | None = None):
    """Boards booted at once, one per folder (each its own overlay); all powered off when the block ends."""
    image = board_image.ensure_image(board_qemu.ARCHITECTURES[arch])
    boards = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        boards.append(Board(image, folder, memory_mb, cpus))
    try:
        for board in boards:
            board.start_qemu()
        with concurrent.futures.ThreadPoolExecutor(len(boards)) as pool:
            list(pool.map(lambda board: come_up(board, requirements_text), boards))
        yield boards
    finally:
        for board in boards:
            board.stop()


def come_up(board: Board, requirements_text: str | None) -> None:
    """Wait for the board's sshd, then give it the wheels for requirements_text."""
    board.wait_for_ssh(board.started)
    if requirements_text is not None:
        provide_wheels(board, requirements_text)


def unavailable(arch: str) -> str | None:
    """Why this machine cannot run the arch board (a missing program, no image and no root to build
    one), or None when it can."""
    chosen = board_qemu.ARCHITECTURES[arch]
    for program, package in ((chosen.qemu, chosen.qemu_package), ("qemu-img", "qemu-utils"),
                             ("ssh", "openssh-client")):
        if shutil.which(program) is None:
            return f"{program} not found: apt-get install {package} (make test-packages does)"
    if board_image.cached(chosen) is None:
        if os.geteuid() != 0:
            return f"no {arch} board image in {board_image.cache_folder()}, and building one needs root"
        for program, package in (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs")):
            if shutil.which(program) is None:
                return f"{program} not found, so no board image can be built: apt-get install {package}"
    return None


# The command line.


def run_folder(arch: str) -> pathlib.Path:
    return board_image.cache_folder() / f"running-{arch}"


def start(arch: str, memory_mb: int, requirements: pathlib.Path) -> None:
    folder = run_folder(arch)
    if (folder / "qemu.pid").exists() and qemu_alive(folder):
        raise EmulationError(f"a {arch} board is already running ({folder}): stop it first")
    shutil.rmtree(folder, ignore_errors=True)
    image = board_image.ensure_image(board_qemu.ARCHITECTURES[arch])
    folder.mkdir(parents=True)
    board = Board(image, folder, memory_mb)
    try:
        board.power_on(detach=True)
        wheels = provide_wheels(board, requirements.read_text())
    except BaseException:
        board.power_cut()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    print(f"{arch} board up in {board.boot_seconds:.0f} s: ssh {' '.join(board.ssh_words())}")
    print(f"wheels for pip there: {', '.join(wheels) or 'none needed'}")
    print("try:")
    print(f"  .venv/bin/edge-fashion deploy pi@127.0.0.1:fashion -p {board.port} -i {board.identity} "
          f"-F {board.ssh_config} --install --service")
    print(f"then: sudo .venv/bin/python {pathlib.Path(__file__).relative_to(board_image.REPO)} stop"
          f"{'' if arch == 'x86_64' else ' --arch ' + arch}")


def qemu_alive(folder: pathlib.Path) -> int | None:
    """The pid of the board's qemu if it still runs (and is that qemu, not a reused pid)."""
    try:
        pid = int((folder / "qemu.pid").read_text())
        words = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if any(str(folder).encode() in word for word in words) else None


def stop(arch: str) -> None:
    folder = run_folder(arch)
    pid = qemu_alive(folder)
    if pid is None and not folder.exists():
        raise EmulationError(f"no {arch} board is running")
    if pid is not None:
        with contextlib.suppress(OSError, ValueError):
            board_qemu.qmp(folder / "qmp.sock", "quit", timeout=5)
        for _ in range(50):
            if qemu_alive(folder) is None:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"{arch} board stopped; its disk is gone (the image in {board_image.cache_folder() / arch} stays)")


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["build", "start", "stop"])
    parser.add_argument("--arch", choices=sorted(board_qemu.ARCHITECTURES), default=board_qemu.DEFAULT_ARCH,
                        help=f"the board's architecture [{board_qemu.DEFAULT_ARCH}, the Pi's; x86_64's image builds in "
                             "2 minutes instead of 40]")
    parser.add_argument("--memory", type=int, default=1024, help="MiB of RAM [1024, a Pi 3's]")
    parser.add_argument("--requirements", type=pathlib.Path, default=board_image.REPO / "device/requirements.txt",
                        help="the requirements.txt whose wheels the board gets [device/requirements.txt]")
    arguments = parser.parse_args(argv)
    try:
        if arguments.action == "build":
            image = board_image.ensure_image(board_qemu.ARCHITECTURES[arguments.arch])
            print(f"{arguments.arch} image: {image.folder}")
        elif arguments.action == "start":
            start(arguments.arch, arguments.memory, arguments.requirements)
        else:
            stop(arguments.arch)
    except (EmulationError, ValueError, OSError) as error:
        print(f"virtual-board: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("virtual-board: interrupted; nothing left running", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
