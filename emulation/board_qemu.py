"""qemu-system for the virtual board: the architectures, the command line, its kernel, QMP.

The board runs under TCG (qemu's own code generator): KVM's virtual CPU does not start Debian's
kernel on every machine this runs on, and arm64 has no KVM on an x86 machine at all.
$EDGE_FASHION_BOARD_ACCEL=kvm asks for KVM where it truly runs. The network is qemu's user mode with
`restrict=on`: the board reaches nothing, and this machine listens for it only on the forwarded ssh
port of 127.0.0.1. The monitor (QMP) is a Unix socket in the board's own folder.
"""

import ctypes
import dataclasses
import gzip
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str  # The board's name for it: x86_64 or arm64.
    debian: str  # Debian's, for debootstrap --arch.
    qemu: str  # The qemu-system program.
    qemu_package: str  # The Debian package that holds it.
    machine: tuple  # -M and -cpu.
    console: str  # The serial console's device in the guest.
    kernel_package: str

    @property
    def machine_name(self) -> str:
        """What `uname -m` says on the board."""
        return "aarch64" if self.name == "arm64" else self.name


# The virtual board's architecture unless one is asked for: the Pi's own, which boots to sshd in about
# 30 s under TCG here (as fast as x86_64); its image takes about 40 minutes to build, x86_64's 2.
DEFAULT_ARCH = "arm64"
ARCHITECTURES = {
    "x86_64": Architecture("x86_64", "amd64", "qemu-system-x86_64", "qemu-system-x86",
                           ("-M", "q35", "-cpu", "max"), "ttyS0", "linux-image-amd64"),
    # The Pi 4's core; `-cpu max` would emulate pointer authentication, much slower under TCG.
    "arm64": Architecture("arm64", "arm64", "qemu-system-aarch64", "qemu-system-arm",
                          ("-M", "virt", "-cpu", "cortex-a72"), "ttyAMA0", "linux-image-arm64"),
}


def command(arch: Architecture, kernel: pathlib.Path, initrd: pathlib.Path, append: str, drives: list,
            console_log: pathlib.Path, memory_mb: int = 1024, cpus: int = 2, ssh_port: int | None = None,
            qmp: pathlib.Path | None = None) -> list:
    """The qemu-system command line: a direct kernel boot, virtio disks (drives: [(path, format)]),
    the serial console into console_log, and with ssh_port the user network forwarding only ssh."""
    accel = os.environ.get("EDGE_FASHION_BOARD_ACCEL", "tcg")
    words = [arch.qemu, *arch.machine, "-accel", "tcg,thread=multi" if accel == "tcg" else accel,
             "-smp", str(cpus), "-m", str(memory_mb), "-nodefaults", "-no-user-config", "-display", "none",
             "-serial", f"file:{console_log}", "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
             "-device", "virtio-rng-pci"]
    for index, (path, disk_format) in enumerate(drives):
        words += ["-drive", f"if=none,id=disk{index},file={path},format={disk_format},cache=writeback",
                  "-device", f"virtio-blk-pci,drive=disk{index}"]
    if ssh_port is None:
        words += ["-nic", "none", "-no-reboot"]
    else:
        words += ["-netdev", f"user,id=net,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                  "-device", "virtio-net-pci,netdev=net"]
    if qmp is not None:
        words += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    return words


def die_with_parent() -> None:
    """For preexec_fn: the kernel kills qemu when the process that started it dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def unpack_kernel(path: pathlib.Path) -> None:
    """Leave at path a kernel qemu 7.2 can boot: arm64's EFI zboot or gzip wrapping is taken off."""
    data = path.read_bytes()
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        # EFI zboot: offset and size of the compressed Image at 8 and 12, its compression's name at 24.
        offset, size = struct.unpack_from("<II", data, 8)
        kind = data[24:32].split(b"\0")[0].decode()
        payload = data[offset:offset + size]
        if kind == "gzip":
            data = gzip.decompress(payload)
        elif kind == "zstd":
            data = subprocess.run(["zstd", "-d", "-c"], input=payload, capture_output=True, check=True).stdout
        else:
            raise ValueError(f"{path}: an EFI zboot kernel compressed with {kind}, which this cannot unpack")
    elif data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    else:
        return
    path.write_bytes(data)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qmp(path: pathlib.Path, execute: str, timeout: float = 10) -> dict:
    """Run one QMP command on the monitor socket at path; answer its reply."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(timeout)
        connection.connect(str(path))
        stream = connection.makefile("rwb")
        json.loads(stream.readline())  # The greeting.
        replies = []
        for name in ("qmp_capabilities", execute):
            stream.write(json.dumps({"execute": name}).encode() + b"\n")
            stream.flush()
            reply = {}
            while "return" not in reply and "error" not in reply:  # Events may come first.
                line = stream.readline()
                if not line:
                    return {"return": {}, "closed": True}  # `quit` closes the socket before answering.
                reply = json.loads(line)
            replies.append(reply)
        return replies[-1]
