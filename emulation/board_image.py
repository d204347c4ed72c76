"""The disk image of a virtual board: Debian trixie (the userland Raspberry Pi OS is built on) with
systemd as init, openssh-server, python3, numpy, Pillow and venv, and Debian's kernel and initramfs.

debootstrap downloads and unpacks the packages (its first stage); this module writes what a board
needs beside them (users' keys, network, sshd). For this machine's own architecture, debootstrap's
second stage (every package's configuration; the kernel's hook makes the initramfs) and the set-up
of users and units run in a chroot, and mkfs.ext4 -d writes the tree into the disk image. For
another (arm64 on an x86_64 machine), the same chroot runs the board's binaries under qemu-user
(qemu-aarch64-static, registered with the kernel's binfmt_misc for the set-up only), which takes
minutes; where binfmt_misc or qemu-user is missing, the tree is packed as an initramfs and booted
once under qemu-system, where it is the root file system in RAM: the same steps run there (up to an
hour under TCG), the tree is copied onto the virtual disk, and the guest hands the kernel, the
initramfs and its record back on a second disk (a tar archive) and powers off.

The image lives in .cache/virtual-board/<arch>/ ($EDGE_FASHION_BOARD_CACHE moves the folder): board.qcow2
(never written after the build: each boot writes an overlay of it), vmlinuz, initrd.img, the login
key id_ed25519 (for root and pi), the board's host key host_ed25519.pub and image.json, how it was
built. It is built in <arch>.partial/ under a lock and renamed into place whole.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import stat
import subprocess
import tarfile
import time

import board_qemu
import pi_userland
from pi_userland import EmulationError

REPO = pathlib.Path(__file__).resolve().parent.parent
SUITE = "trixie"
# Change RECIPE to rebuild every cached image.
RECIPE = "2"
PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "libpam-systemd", "openssh-server", "sudo",
            "python3", "python3-numpy", "python3-pil", "python3-venv", "initramfs-tools", "kmod", "zstd")
DISK_SIZE = "6G"  # The board's SD card; qcow2 stores only what is written.
SETUP_MEMORY_MB = 4096  # The tree (about 1 GB once configured) lives in RAM during the setup boot.
SETUP_TIMEOUT = 5400  # Seconds; the second stage takes minutes in a chroot, up to an hour under TCG.
BINFMT = pathlib.Path("/proc/sys/fs/binfmt_misc")
# binfmt_misc's entry for arm64 ELF executables, as Debian's qemu-user-static registers it: the ELF
# header's bytes and the mask of those compared, in the escapes binfmt_misc reads. Flag F: the kernel
# opens qemu-user when the entry is registered, so it runs the chroot's binaries though the chroot
# holds no qemu.
BINFMT_NAME = "virtual-board-aarch64"
AARCH64_MAGIC = rb"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = rb"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
HOSTNAME = "virtual-board"
USER = "pi"  # Raspberry Pi OS's login user, with sudo and without a password, as there.
# The user network of qemu: the board is 10.0.2.15, qemu's gateway 10.0.2.2 (no DNS: nothing is reached).
NETWORK_UNIT = """\
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
"""
SSHD_CONFIG = """\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""
# Units a test board would only be slowed by (timers a real Pi keeps, a login on the serial console
# that only carries the log, a graphics module for no screen).
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
                "fstrim.timer", "systemd-tmpfiles-clean.timer", "serial-getty@ttyS0.service",
                "serial-getty@ttyAMA0.service", "modprobe@drm.service")
# Modules udev would load for qemu's devices that a board without them never needs.
MODPROBE_CONFIG = "".join(f"blacklist {name}\n" for name in (
    "cfg80211", "psmouse", "pcspkr", "kvm", "kvm_amd", "kvm_intel", "ccp", "vmw_vmci", "vmw_vsock_vmci_transport"))
# Run in the configured tree, as root, by both ways of building: the users, their keys, the units.
CONFIGURE_SCRIPT = """\
#!/bin/sh
set -eu
export PATH=/usr/sbin:/usr/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive SYSTEMD_OFFLINE=1
useradd --create-home --shell /bin/bash --groups sudo,adm,video,plugdev,users {user}
for home in /root /home/{user}; do
    install -d -m 0700 "$home/.ssh"
    install -m 0600 /authorized_keys "$home/.ssh/authorized_keys"
done
chown -R {user}:{user} /home/{user}/.ssh
mkdir -p /var/lib/systemd/linger
touch /var/lib/systemd/linger/{user}
systemctl enable systemd-networkd.service ssh.service
systemctl mask {masked}
systemctl set-default multi-user.target
ls /boot/initrd.img-* >/dev/null 2>&1 || update-initramfs -c -k all
python3 - > /virtual-board.json <<'RECORD'
import glob, json, platform, subprocess, numpy, PIL
kernel = sorted(glob.glob("/boot/vmlinuz-*"))[0][len("/boot/vmlinuz-"):]
systemd = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout.split()[1]
print(json.dumps({{"debian": open("/etc/debian_version").read().strip(), "kernel": kernel, "systemd": systemd,
                  "python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__}}))
RECORD
rm /authorized_keys /virtual-board-configure
# The first boot need not redo what the set-up did (ldconfig, hwdb, sysusers): /etc and /var are up to date.
/usr/lib/systemd/systemd-update-done
"""
# /init of the setup boot of a foreign architecture: the whole tree is the root file system, in RAM.
SETUP_INIT = """\
#!/bin/sh
set -eu
export PATH=/usr/sbin:/usr/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
trap 'echo "virtual-board setup FAILED at line $LINENO"' EXIT
echo "virtual-board setup: debootstrap's second stage"
/debootstrap/debootstrap --second-stage
echo "virtual-board setup: users, keys, services"
/bin/sh /virtual-board-configure
echo "virtual-board setup: copying the tree onto the disk"
modprobe -a virtio_pci virtio_blk ext4
for second in $(seq 60); do [ -b /dev/vdb ] && break; sleep 1; done
mkfs.ext4 -q -L board /dev/vda
mount /dev/vda /mnt
tar -C / --one-file-system --exclude=./init --exclude=./mnt --exclude=./virtual-board.json -cf - . | tar -C /mnt -xpf -
mkdir -p /mnt/mnt /mnt/proc /mnt/sys /mnt/dev /mnt/run
umount /mnt
release=$(python3 -c 'import json; print(json.load(open("/virtual-board.json"))["kernel"])')
tar -C / -cf /dev/vdb "boot/vmlinuz-$release" "boot/initrd.img-$release" virtual-board.json
sync
trap - EXIT
echo "virtual-board setup: done"
echo 1 > /proc/sys/kernel/sysrq
echo o > /proc/sysrq-trigger
sleep 60
"""


@dataclasses.dataclass(frozen=True)
class Image:
    arch: board_qemu.Architecture
    folder: pathlib.Path
    record: dict  # image.json.

    @property
    def disk(self) -> pathlib.Path:
        return self.folder / "board.qcow2"

    @property
    def kernel(self) -> pathlib.Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> pathlib.Path:
        return self.folder / "initrd.img"

    @property
    def identity(self) -> pathlib.Path:
        """The private key that root and pi accept."""
        return self.folder / "id_ed25519"

    @property
    def host_key(self) -> str:
        """The board's ssh host key, as known_hosts holds it after the host name ('ssh-ed25519 AAAA...')."""
        return " ".join((self.folder / "host_ed25519.pub").read_text().split()[:2])


def cache_folder() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EDGE_FASHION_BOARD_CACHE", REPO / ".cache/virtual-board"))


def recipe(arch: board_qemu.Architecture) -> str:
    return f"{RECIPE} {SUITE} {arch.name} {','.join(PACKAGES)},{arch.kernel_package}"


def cached(arch: board_qemu.Architecture, cache: pathlib.Path | None = None) -> Image | None:
    """The cached image for arch when this recipe built it, else None."""
    folder = (cache or cache_folder()) / arch.name
    record_path = folder / "image.json"
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    return Image(arch, folder, record) if record.get("recipe") == recipe(arch) else None


def ensure_image(arch: board_qemu.Architecture, cache: pathlib.Path | None = None, mirror: str | None = None) -> Image:
    """The cached image, built first if there is none for this recipe (one process at a time)."""
    cache = cache or cache_folder()
    found = cached(arch, cache)
    if found is not None:
        return found
    with pi_userland.locked(cache, arch.name):
        found = cached(arch, cache)  # Another process may have built it while this one waited.
        if found is not None:
            return found
        return build_image(arch, cache, mirror or pi_userland.debian_mirror())


def build_image(arch: board_qemu.Architecture, cache: pathlib.Path, mirror: str) -> Image:
    """Build the image in <arch>.partial/, then rename it into place. Call it holding the lock."""
    if os.geteuid() != 0:
        raise EmulationError("debootstrap needs root to build the board's image: run with sudo")
    for program in ("debootstrap", "dpkg-deb", "mkfs.ext4", "qemu-img", arch.qemu):
        if shutil.which(program) is None:
            raise EmulationError(f"{program} not found: apt-get install debootstrap e2fsprogs qemu-utils "
                                 f"{arch.qemu_package}")
    started = time.monotonic()
    partial = cache / f"{arch.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "root").mkdir(parents=True)
    say(arch, f"debootstrap {SUITE} from {mirror} (about 180 packages, 1-3 minutes)")
    pi_userland.run(["debootstrap", "--foreign", f"--arch={arch.debian}", "--variant=minbase",
                     f"--include={','.join((*PACKAGES, arch.kernel_package))}", SUITE, partial / "root", mirror],
                    timeout=1800)
    make_keys(partial)
    write_board_files(partial / "root", partial)
    if arch.debian == host_architecture():
        record = configure_here(arch, partial)
    else:
        with foreign_binaries(arch) as runs_here:
            record = configure_here(arch, partial, emulated=True) if runs_here else configure_in_guest(arch, partial)
    record.update(recipe=recipe(arch), mirror=mirror, setup_seconds=round(time.monotonic() - started, 1))
    (partial / "image.json").write_text(json.dumps(record, indent=2) + "\n")
    (partial / "board.qcow2").chmod(0o444)
    shutil.rmtree(cache / arch.name, ignore_errors=True)
    partial.rename(cache / arch.name)
    say(arch, f"built in {record['setup_seconds']} s: Debian {record['debian']}, kernel {record['kernel']}, "
        f"systemd {record['systemd']}, Python {record['python']}, numpy {record['numpy']}, Pillow {record['pillow']}")
    return Image(arch, cache / arch.name, record)


def host_architecture() -> str:
    return pi_userland.run(["dpkg", "--print-architecture"]).stdout.strip()


@contextlib.contextmanager
def foreign_binaries(arch: board_qemu.Architecture):
    """While in the block, this machine runs arch's executables under qemu-user through binfmt_misc
    (mounted first when it is not); yields False, registering nothing, where it cannot."""
    qemu = shutil.which(f"qemu-{arch.machine_name}-static")
    if arch.machine_name != "aarch64" or qemu is None:
        yield False
        return
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, check=False)
    entry = BINFMT / BINFMT_NAME
    try:
        if entry.exists():  # Left by a build that was killed.
            entry.write_text("-1")
        (BINFMT / "register").write_bytes(b":%s:M::%s:%s:%s:F" % (BINFMT_NAME.encode(), AARCH64_MAGIC, AARCH64_MASK,
                                                                  os.fsencode(qemu)))
    except OSError as error:
        say(arch, f"binfmt_misc refused qemu-user ({error}): the set-up boots under qemu-system instead")
        yield False
        return
    try:
        yield True
    finally:
        entry.write_text("-1")  # Unregistered: arm64 binaries no longer run here.


def configure_here(arch: board_qemu.Architecture, partial: pathlib.Path, emulated: bool = False) -> dict:
    """In a chroot (this machine's own architecture, or another's under qemu-user): the second stage
    and the set-up; the tree becomes an ext4 file system with mkfs.ext4 -d (nothing is mounted but the
    chroot's /proc and /sys, in a mount namespace of its own that ends with it). emulated: under qemu-user."""
    root = partial / "root"
    say(arch, "debootstrap's second stage and the set-up in a chroot "
              + ("(30-45 minutes, under qemu-user)" if emulated else "(2-5 minutes)"))
    script = (f"mount -t proc proc {root}/proc && mount -t sysfs sysfs {root}/sys && "
              f"chroot {root} /debootstrap/debootstrap --second-stage && chroot {root} /bin/sh /virtual-board-configure")
    pi_userland.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], timeout=SETUP_TIMEOUT)
    record = json.loads((root / "virtual-board.json").read_text())
    (root / "virtual-board.json").unlink()
    shutil.copyfile(root / f"boot/vmlinuz-{record['kernel']}", partial / "vmlinuz")
    shutil.copyfile(root / f"boot/initrd.img-{record['kernel']}", partial / "initrd.img")
    board_qemu.unpack_kernel(partial / "vmlinuz")
    say(arch, "writing the tree into an ext4 file system")
    raw = partial / "board.raw"
    pi_userland.run(["mkfs.ext4", "-q", "-L", "board", "-d", root, raw, DISK_SIZE], timeout=SETUP_TIMEOUT)
    pi_userland.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, partial / "board.qcow2"],
                    timeout=SETUP_TIMEOUT)
    raw.unlink()
    shutil.rmtree(root)
    return record


def configure_in_guest(arch: board_qemu.Architecture, partial: pathlib.Path) -> dict:
    """Another architecture: the tree is packed as an initramfs and booted under qemu, where the
    second stage and the set-up run and the tree is copied onto the virtual disk."""
    kernel = setup_kernel(partial / "root", partial / "setup-vmlinuz")
    say(arch, "packing the tree as the setup boot's root file system")
    write_newc(partial / "root", partial / "setup.cpio")
    shutil.rmtree(partial / "root")
    pi_userland.run(["qemu-img", "create", "-q", "-f", "qcow2", partial / "board.qcow2", DISK_SIZE])
    say(arch, f"setup boot of {kernel}: debootstrap's second stage under qemu (15-60 minutes)")
    record = setup_boot(arch, partial)
    for name in ("setup-vmlinuz", "setup.cpio", "handback.tar"):
        (partial / name).unlink()
    return record


def say(arch: board_qemu.Architecture, message: str) -> None:
    print(f"[virtual-board] {arch.name}: {message}", flush=True)


def make_keys(folder: pathlib.Path) -> None:
    """The login key (id_ed25519) and the board's host key, made here so this machine knows both."""
    for name in ("id_ed25519", "host_ed25519"):
        pi_userland.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"virtual-board-{name}",
                         "-f", folder / name])


def write_board_files(root: pathlib.Path, keys: pathlib.Path) -> None:
    """What the board holds beside Debian's packages: keys, host name, disk, network, sshd, setup script."""
    files = {
        "authorized_keys": (keys / "id_ed25519.pub").read_text(),
        "etc/hostname": f"{HOSTNAME}\n",
        "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n",
        "etc/fstab": "LABEL=board / ext4 errors=remount-ro 0 1\n",
        "etc/systemd/network/10-qemu.network": NETWORK_UNIT,
        "etc/ssh/sshd_config.d/virtual-board.conf": SSHD_CONFIG,
        f"etc/sudoers.d/010_{USER}-nopasswd": f"{USER} ALL=(ALL) NOPASSWD: ALL\n",
        "etc/initramfs-tools/conf.d/resume": "RESUME=none\n",
        "etc/modprobe.d/virtual-board.conf": MODPROBE_CONFIG,
        "etc/ssh/ssh_host_ed25519_key": (keys / "host_ed25519").read_text(),
        "etc/ssh/ssh_host_ed25519_key.pub": (keys / "host_ed25519.pub").read_text(),
        "virtual-board-configure": CONFIGURE_SCRIPT.format(user=USER, masked=" ".join(MASKED_UNITS)),
        "init": SETUP_INIT,  # Run only by a setup boot under qemu; it removes itself from the disk.
    }
    for name in ("proc", "sys", "dev", "run"):
        # debootstrap in a container links proc to the container's /proc: the board mounts its own.
        if (root / name).is_symlink():
            (root / name).unlink()
        (root / name).mkdir(exist_ok=True)
    modes = {"init": 0o755, "etc/ssh/ssh_host_ed25519_key": 0o600, f"etc/sudoers.d/010_{USER}-nopasswd": 0o440}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(modes.get(name, 0o644))
    (keys / "host_ed25519").unlink()  # The board's secret; only its public half stays here.


def setup_kernel(root: pathlib.Path, destination: pathlib.Path) -> str:
    """Take the kernel out of the downloaded linux-image package for the setup boot; answer its name."""
    packages = sorted((root / "var/cache/apt/archives").glob("linux-image-[0-9]*.deb"))
    if not packages:
        raise EmulationError("debootstrap downloaded no linux-image package")
    contents = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(packages[-1])], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)  # It complains of the pipe closed early.
    with tarfile.open(fileobj=contents.stdout, mode="r|") as archive:
        for member in archive:
            if member.name.startswith("./boot/vmlinuz-"):
                destination.write_bytes(archive.extractfile(member).read())
                name = member.name
                break
        else:
            raise EmulationError(f"{packages[-1].name} holds no boot/vmlinuz-*")
    contents.stdout.close()
    contents.wait()
    board_qemu.unpack_kernel(destination)
    return pathlib.PurePath(name).name


def newc_header(inode: int, mode: int, size: int, name: bytes, device: tuple = (0, 0)) -> bytes:
    # newc: "070701", then 13 fields of 8 hex digits; the header and name are padded to 4 bytes.
    fields = (inode, mode, 0, 0, 1, 0, size, 0, 0, device[0], device[1], len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % field for field in fields) + name + b"\0"
    return header + b"\0" * (-len(header) % 4)


def write_newc(root: pathlib.Path, destination: pathlib.Path) -> None:
    """The tree as an uncompressed newc cpio archive, the format the kernel unpacks as its initramfs.

    Every file is owned by root (debootstrap's tree is) and stored whole, hard links included.
    """
    with destination.open("wb") as output:
        inode = 0
        for folder, folders, files in os.walk(root):
            folders.sort()
            for name in [*folders, *sorted(files)]:
                path = pathlib.Path(folder, name)
                info = path.lstat()
                relative = os.fsencode(path.relative_to(root))
                inode += 1
                if stat.S_ISLNK(info.st_mode):
                    target = os.fsencode(os.readlink(path))
                    output.write(newc_header(inode, info.st_mode, len(target), relative) + target)
                    output.write(b"\0" * (-len(target) % 4))
                elif stat.S_ISREG(info.st_mode):
                    output.write(newc_header(inode, info.st_mode, info.st_size, relative))
                    with path.open("rb") as source:
                        shutil.copyfileobj(source, output)
                    output.write(b"\0" * (-info.st_size % 4))
                elif stat.S_ISDIR(info.st_mode):
                    output.write(newc_header(inode, info.st_mode, 0, relative))
                elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                    device = (os.major(info.st_rdev), os.minor(info.st_rdev))
                    output.write(newc_header(inode, info.st_mode, 0, relative, device))
        output.write(newc_header(0, 0, 0, b"TRAILER!!!"))


def setup_boot(arch: board_qemu.Architecture, folder: pathlib.Path) -> dict:
    """Boot the packed tree once; answer the record it hands back with the kernel and initramfs."""
    handback = folder / "handback.tar"
    with handback.open("wb") as empty:
        empty.truncate(512 << 20)
    command = board_qemu.command(
        arch, kernel=folder / "setup-vmlinuz", initrd=folder / "setup.cpio", memory_mb=SETUP_MEMORY_MB,
        append=f"console={arch.console} panic=1 rdinit=/init mitigations=off",
        drives=[(folder / "board.qcow2", "qcow2"), (handback, "raw")], console_log=folder / "setup-console.log")
    try:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=SETUP_TIMEOUT, check=False, preexec_fn=board_qemu.die_with_parent)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"the setup boot ran over {SETUP_TIMEOUT} s; see {folder / 'setup-console.log'}") from None
    log = (folder / "setup-console.log").read_text(errors="replace")
    if "virtual-board setup: done" not in log:
        tail = "\n".join(log.splitlines()[-30:])
        raise EmulationError(f"the setup boot failed; the end of {folder / 'setup-console.log'}:\n{tail}")
    with tarfile.open(handback) as archive:
        record = json.loads(archive.extractfile("virtual-board.json").read())
        for name in ("vmlinuz", "initrd.img"):
            (folder / name).write_bytes(archive.extractfile(f"boot/{name}-{record['kernel']}").read())
    board_qemu.unpack_kernel(folder / "vmlinuz")
    return record
