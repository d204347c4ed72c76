"""A throwaway OpenSSH server on 127.0.0.1, for the deploy tests.

`running_sshd(folder)` starts Debian's `/usr/sbin/sshd` at a free port with a fresh host key and
a fresh user key, all inside `folder`, and stops it afterwards. It yields an `SshServer` whose
`config` is an ssh_config file: `Host edge-test` reaches the server with the user key, and every
host is checked against a known_hosts file that holds only this server's key, so no test reads
or writes the user's ~/.ssh.

Run as a script, this file is also a slow link for ssh's ProxyCommand:

    python3 tests/sshd.py relay HOST PORT BYTES_PER_SECOND

It copies stdin to HOST:PORT no faster than BYTES_PER_SECOND and the answers back to stdout, so a
test can stop a transfer half way, as a flaky Wi-Fi link to a board would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

SSHD = pathlib.Path("/usr/sbin/sshd")
HOST_ALIAS = "edge-test"
SLOW_HOST_ALIAS = "edge-test-slow"  # The same server behind a 2 MB/s link.
SLOW_BYTES_PER_SECOND = 2_000_000
START_TIMEOUT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    identity: pathlib.Path  # The private key that authorized_keys accepts.
    other_identity: pathlib.Path  # A private key the server refuses.
    config: pathlib.Path  # An ssh_config file for `ssh -F`.
    folder: pathlib.Path  # Keys, configuration and the server's log.

    @property
    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_key(path: pathlib.Path) -> pathlib.Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


def write_server_config(folder: pathlib.Path, port: int) -> pathlib.Path:
    # StrictModes no: pytest's tmp_path is not laid out like a home directory.
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        f"PidFile {folder / 'sshd.pid'}\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "LogLevel VERBOSE\n"
    )
    return config


def write_client_config(folder: pathlib.Path, port: int, user: str) -> pathlib.Path:
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    config = folder / "ssh_config"
    config.write_text(
        f"Host {HOST_ALIAS} {SLOW_HOST_ALIAS}\n"
        "    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        f"    User {user}\n"
        f"    IdentityFile {folder / 'user_key'}\n"
        f"Host {SLOW_HOST_ALIAS}\n"
        f"    ProxyCommand {sys.executable} {pathlib.Path(__file__).resolve()} relay %h %p {SLOW_BYTES_PER_SECOND}\n"
        "Host *\n"
        "    IdentitiesOnly yes\n"
        "    IdentityAgent none\n"
        f"    UserKnownHostsFile {folder / 'known_hosts'}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
    )
    return config


def wait_for_port(port: int, process: subprocess.Popen, log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on port {port} within {START_TIMEOUT_SECONDS} s")


@contextlib.contextmanager
def running_sshd(folder: pathlib.Path):
    """Start sshd with throwaway keys in `folder`; yield an SshServer; stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key", "other_key"):
        make_key(folder / name)
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    port, user = free_port(), getpass.getuser()
    config = write_server_config(folder, port)
    if os.geteuid() == 0:
        # The privilege separation directory, which the Debian package makes at boot.
        pathlib.Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = folder / "sshd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process, log)
        client_config = write_client_config(folder, port, user)
        yield SshServer(port, user, folder / "user_key", folder / "other_key", client_config, folder)
    finally:
        process.terminate()
        process.wait(timeout=10)


def relay(host: str, port: int, bytes_per_second: float) -> None:
    """Copy stdin to host:port at most bytes_per_second, and host:port to stdout."""
    connection = socket.create_connection((host, port))

    def send_slowly() -> None:
        while chunk := os.read(0, 4096):
            connection.sendall(chunk)
            time.sleep(len(chunk) / bytes_per_second)
        connection.shutdown(socket.SHUT_WR)

    threading.Thread(target=send_slowly, daemon=True).start()
    while chunk := connection.recv(65536):
        os.write(1, chunk)


if __name__ == "__main__":
    if sys.argv[1:2] != ["relay"] or len(sys.argv) != 5:
        sys.exit("usage: python3 tests/sshd.py relay HOST PORT BYTES_PER_SECOND")
    relay(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
