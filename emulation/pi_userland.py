"""Raspberry Pi OS userlands for emulate_pi.py: built with debootstrap, run under qemu-user, cached.

Raspberry Pi OS is Debian built for arm64 (64-bit) and armhf (32-bit): Bookworm is Debian 12 (Python
3.11, numpy 1.24, Pillow 9.4), trixie, today's release, Debian 13 (Python 3.13, numpy 2.2, Pillow
11.1). A userland is debootstrap's minimal base with Debian's python3, python3-numpy and python3-pil,
unpacked without running maintainer scripts, plus the wheels the bundle's requirements.txt adds
(pi_packages.py picks them as pip on the board would). Each lives in its own folder of the cache with
a userland.json recording how it was built; a recipe change rebuilds it, a requirements change only
reinstalls the wheels.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pi_packages

DEBIAN_PACKAGES = "python3,python3-numpy,python3-pil"
GUEST_TIMEOUT = 900  # Seconds; an emulated run that takes longer has hung.
PACKAGES_IN_USERLAND = "opt/requirements"  # The wheels requirements.txt adds; on the guest's PYTHONPATH.
QEMU_SUITE = "trixie"  # The Debian release whose qemu-user runs the guests that Bookworm's qemu cannot.


class EmulationError(Exception):
    """A step failed; the message says which and why."""


def say(message: str) -> None:
    print(f"[emulate-pi] {message}", flush=True)


def run(command: list, **options) -> subprocess.CompletedProcess:
    """Run a command and capture its output; EmulationError with the output's tail if it fails."""
    words = [str(word) for word in command]
    try:
        result = subprocess.run(words, capture_output=True, text=True, **options)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{' '.join(words[:8])} ... ran over {options['timeout']} s") from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-3000:]
        raise EmulationError(f"{' '.join(words[:8])} ... exited {result.returncode}:\n{tail}")
    return result


@dataclasses.dataclass(frozen=True)
class Architecture:
    debian: str  # Debian's name, as debootstrap --arch takes it.
    qemu: str  # qemu-user's name for it: qemu-<qemu>, qemu-<qemu>-static.
    cpu: str  # The core qemu emulates: the oldest one Pi OS for it runs on.
    machine: str  # What platform.machine() says in the guest.
    multiarch: str  # The folder under usr/lib holding its shared libraries.


ARCHITECTURES = {
    # 64-bit Pi OS runs on the Pi 3, 4, 5 and Zero 2 W; the Pi 4's Cortex-A72 has no dot product.
    "arm64": Architecture("arm64", "aarch64", "cortex-a72", "aarch64", "aarch64-linux-gnu"),
    # 32-bit Pi OS on a Pi 2 (Cortex-A7) or newer; armv7l wheels cannot run on ARMv6 boards.
    "armhf": Architecture("armhf", "arm", "cortex-a7", "armv7l", "arm-linux-gnueabihf"),
}


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str  # Debian's codename, as debootstrap and apt take it.
    recipe: str  # Change it to rebuild this suite's cached userlands.
    versions: dict  # What this Pi OS ships: version prefixes of python, numpy, pillow.
    glibc_minor: int  # Its glibc is 2.<glibc_minor>: the newest manylinux wheels its pip takes.
    qemu_from: str | None  # The Debian release whose qemu-user runs it; None: the host's qemu-user-static.
    older_recipes: tuple = ()  # Earlier recipes whose userlands hold the same Debian part.

    def folder(self, arch: Architecture) -> str:
        """The userland's folder in the cache; Bookworm's keep the names they had before trixie."""
        return arch.debian if self.name == "bookworm" else f"{self.name}-{arch.debian}"


SUITES = {
    # Bookworm's first recipe also unpacked tflite-runtime into opt/; it is ignored now, the wheels
    # come from requirements.txt, so those userlands are reused as they are.
    "bookworm": Suite("bookworm", f"2 bookworm {DEBIAN_PACKAGES}",
                      {"python": "3.11.", "numpy": "1.24.", "pillow": "9.4."}, 36, None,
                      (f"1 bookworm {DEBIAN_PACKAGES} tflite-runtime==2.14.0",)),
    # Bookworm's qemu-user 7.2 segfaults in ai-edge-litert creating an Interpreter; trixie's 10.0 runs it.
    "trixie": Suite("trixie", f"1 trixie {DEBIAN_PACKAGES}",
                    {"python": "3.13.", "numpy": "2.2.", "pillow": "11.1."}, 41, QEMU_SUITE),
}


@dataclasses.dataclass(frozen=True)
class Userland:
    suite: Suite
    arch: Architecture
    root: pathlib.Path
    qemu: pathlib.Path  # The qemu-user binary that runs it.
    record: dict  # Its userland.json, with "reused" and its requirements' record added.

    @property
    def name(self) -> str:
        return f"{self.suite.name}-{self.arch.debian}"


# Debian mirror.


def debian_mirror() -> str:
    """The URI apt on this machine uses for a Debian release's main component."""
    folder = pathlib.Path("/etc/apt/sources.list.d")
    for path in [folder.parent / "sources.list", *sorted(folder.glob("*.list")),
                 *sorted(folder.glob("*.sources"))]:
        if path.is_file():
            mirror = mirror_in(path.read_text(errors="replace"), deb822=path.suffix == ".sources")
            if mirror:
                return mirror
    raise EmulationError(f"no 'deb' source for {' or '.join(SUITES)} main in /etc/apt; pass --mirror URI")


def mirror_in(text: str, deb822: bool, suites: tuple = tuple(SUITES)) -> str | None:
    """The first deb URI serving one of suites' main, from a one-line .list or a deb822 .sources file."""
    # A comment line is dropped, not blanked: in deb822 a blank line ends the stanza.
    lines = [line.split("#")[0].rstrip() for line in text.splitlines()
             if not line.lstrip().startswith("#")]
    if not deb822:
        for words in (re.sub(r"\[[^]]*\]", " ", line).split() for line in lines):
            if len(words) >= 4 and words[0] == "deb" and words[2] in suites and "main" in words[3:]:
                return words[1]
        return None
    for stanza in "\n".join(lines).split("\n\n"):
        pairs = (line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != " ")
        fields = {key.strip().lower(): value.split() for key, value in pairs}
        if ("deb" in fields.get("types", []) and set(suites) & set(fields.get("suites", []))
                and "main" in fields.get("components", []) and fields.get("uris")):
            return fields["uris"][0]
    return None


# qemu-user.


def apt_options(folder: pathlib.Path) -> list:
    """apt-get options that keep its sources, lists and cache in folder, away from the host's apt."""
    return ["-o", f"Dir::Etc::SourceList={folder / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={folder / 'parts'}",
            "-o", f"Dir::Etc::PreferencesParts={folder / 'parts'}", "-o", f"Dir::State::Lists={folder / 'lists'}",
            "-o", f"Dir::Cache={folder / 'cache'}", "-o", "Dir::State::status=/dev/null",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]


def fetch_qemu(release: str, folder: pathlib.Path, mirror: str) -> None:
    """Download release's qemu-user .deb with a private apt configuration and keep its static binaries."""
    apt = folder / "apt"
    for name in ("parts", "lists/partial", "cache/archives/partial", "deb"):
        (apt / name).mkdir(parents=True, exist_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (apt / "sources.list").write_text(f"deb [signed-by={keyring}] {mirror} {release} main\n")
    run(["apt-get", *apt_options(apt), "update"], timeout=600)
    run(["apt-get", *apt_options(apt), "download", "qemu-user"], cwd=apt / "deb", timeout=600)
    package = next((apt / "deb").glob("qemu-user_*.deb"))
    unpacked = folder / "unpacked"
    run(["dpkg-deb", "-x", package, unpacked])
    for arch in ARCHITECTURES.values():
        shutil.copy2(unpacked / "usr/bin" / f"qemu-{arch.qemu}", folder / f"qemu-{arch.qemu}")
    version = run([folder / "qemu-aarch64", "--version"]).stdout.splitlines()[0]
    (folder / "qemu.json").write_text(json.dumps({"package": package.name, "version": version}) + "\n")
    shutil.rmtree(unpacked)
    shutil.rmtree(apt)


def qemu_binary(suite: Suite, arch: Architecture, cache: pathlib.Path, mirror: str | None) -> pathlib.Path:
    """The qemu-user binary for the suite's guests: the host's, or one fetched once into the cache."""
    if suite.qemu_from is None:
        found = shutil.which(f"qemu-{arch.qemu}-static")
        if found is None:
            raise EmulationError(f"qemu-{arch.qemu}-static not found: apt-get install qemu-user-static")
        return pathlib.Path(found)
    folder = cache / f"qemu-{suite.qemu_from}"
    with locked(cache, folder.name):
        if not (folder / "qemu.json").is_file():
            say(f"fetching {suite.qemu_from}'s qemu-user (about 70 MB) into {folder}")
            shutil.rmtree(folder, ignore_errors=True)
            fetch_qemu(suite.qemu_from, folder, mirror or debian_mirror())
    return folder / f"qemu-{arch.qemu}"


# Userland: build, check, cache.


def run_guest(userland: Userland, *arguments, root: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    """Run the userland's python3 under qemu with the userland as its root and a clean environment.

    Python writes .pyc files into the userland, as Debian's py3compile does on a board: without them
    every emulated start compiles numpy again (7 s instead of 2 s of CPU here).
    """
    root = root or userland.root
    command = [userland.qemu, "-cpu", userland.arch.cpu, "-L", root, root / "usr/bin/python3", *arguments]
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/home/pi", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
                   "PYTHONPATH": str(root / PACKAGES_IN_USERLAND)}
    return run(command, env=environment, cwd=root / "home/pi", timeout=GUEST_TIMEOUT)


def unpack(package: pathlib.Path, root: pathlib.Path) -> None:
    """Unpack a .deb as debootstrap does, keeping /bin, /lib and /sbin links into /usr."""
    contents = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)], stdout=subprocess.PIPE)
    run(["tar", "-x", "--keep-directory-symlink", "-C", root], stdin=contents.stdout)
    contents.stdout.close()
    if contents.wait() != 0:
        raise EmulationError(f"dpkg-deb could not read {package}")


def debootstrap(suite: Suite, arch: Architecture, root: pathlib.Path, mirror: str) -> None:
    """Download the suite's minimal base with Python, numpy and Pillow, and unpack every package."""
    run(["debootstrap", "--foreign", f"--arch={arch.debian}", "--variant=minbase",
         f"--include={DEBIAN_PACKAGES}", suite.name, root, mirror])
    # The second stage would run maintainer scripts in the guest; unpacking is all Python needs.
    packages = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    for package in packages:
        unpack(package, root)
        package.unlink()
    say(f"{suite.name}-{arch.debian}: unpacked {len(packages)} Debian packages")


def link_blas(arch: Architecture, root: pathlib.Path) -> None:
    """Do what update-alternatives would: point libblas.so.3 and liblapack.so.3 at Debian's copies."""
    libraries = root / "usr/lib" / arch.multiarch
    for name, folder in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        if not (libraries / folder / name).is_file():
            raise EmulationError(f"{libraries / folder / name} is missing: numpy cannot load")
        (libraries / name).unlink(missing_ok=True)
        (libraries / name).symlink_to(f"{folder}/{name}")


VERSION_PROBE = """
import json, platform, time
started = time.perf_counter()
import numpy, PIL, PIL.Image
imported = time.perf_counter() - started
print(json.dumps({"python": platform.python_version(), "numpy": numpy.__version__,
                  "pillow": PIL.__version__, "machine": platform.machine(),
                  "import_seconds": round(imported, 2)}))
"""


def check_userland(userland: Userland, root: pathlib.Path) -> dict:
    """The guest's versions, after checking they are what the suite's Pi OS ships."""
    run_guest(userland, "-c", VERSION_PROBE, root=root)  # The first run compiles and caches the bytecode.
    versions = json.loads(run_guest(userland, "-c", VERSION_PROBE, root=root).stdout)
    for name, expected in userland.suite.versions.items():
        if not versions[name].startswith(expected):
            raise EmulationError(f"{userland.name}: {name} {versions[name]}, expected {expected}")
    if versions["machine"] != userland.arch.machine:
        raise EmulationError(f"{userland.name}: the guest says {versions['machine']}, not {userland.arch.machine}")
    return versions


def build_userland(userland: Userland, mirror: str) -> dict:
    """Build and check the userland beside its folder, then move it into place; return its record."""
    if os.geteuid() != 0:
        raise EmulationError("debootstrap needs root to build a userland: run with sudo")
    if shutil.which("debootstrap") is None:
        raise EmulationError("debootstrap not found: apt-get install debootstrap")
    started = time.monotonic()
    partial = userland.root.with_name(userland.root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    say(f"{userland.name}: debootstrap from {mirror} into {partial} (about 150 packages, 1-3 minutes)")
    debootstrap(userland.suite, userland.arch, partial, mirror)
    link_blas(userland.arch, partial)
    (partial / "home/pi").mkdir(parents=True, exist_ok=True)
    record = {"recipe": userland.suite.recipe, "mirror": mirror, **check_userland(userland, partial)}
    record["setup_seconds"] = round(time.monotonic() - started, 1)
    (partial / "userland.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(userland.root, ignore_errors=True)
    partial.rename(userland.root)
    return record


@contextlib.contextmanager
def locked(cache: pathlib.Path, name: str):
    """Hold the lock called name: one process at a time builds or runs in a userland."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if this process dies.
        yield


def ensure_userland(suite: Suite, arch: Architecture, cache: pathlib.Path, mirror: str | None) -> Userland:
    """The cached userland when this recipe built it, else a new one. Call it holding its lock."""
    userland = Userland(suite, arch, cache / suite.folder(arch), qemu_binary(suite, arch, cache, mirror), {})
    record_path = userland.root / "userland.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("recipe") in (suite.recipe, *suite.older_recipes):
        record = json.loads(record_path.read_text())
        say(f"{userland.name}: reusing {userland.root} (built in {record['setup_seconds']} s)")
        return dataclasses.replace(userland, record={**record, "reused": True})
    record = build_userland(userland, mirror or debian_mirror())
    say(f"{userland.name}: built in {record['setup_seconds']} s: Python {record['python']}, numpy "
        f"{record['numpy']}, Pillow {record['pillow']}")
    return dataclasses.replace(userland, record={**record, "reused": False})


def ensure_requirements(userland: Userland, requirements_text: str) -> dict:
    """Install what requirements.txt adds to the userland, unless the same text installed it already."""
    target = userland.root / PACKAGES_IN_USERLAND
    record_path = target / "requirements.json"
    key = {"requirements_txt": requirements_text, "glibc_minor": userland.suite.glibc_minor}
    if record_path.is_file() and json.loads(record_path.read_text()).get("key") == key:
        return json.loads(record_path.read_text())["installed"]
    host_python_check()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        installed = pi_packages.install(requirements_text, userland.root, partial, userland.record["python"],
                                        userland.arch.machine, userland.suite.glibc_minor)
    except ValueError as error:
        raise EmulationError(f"{userland.name}: {error}") from None
    (partial / "requirements.json").write_text(json.dumps({"key": key, "installed": installed}, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    say(f"{userland.name}: requirements.txt adds {', '.join(installed['wheels']) or 'nothing'}; from Debian: "
        f"{', '.join(installed['from_debian']) or 'nothing'}")
    return installed


def host_python_check() -> None:
    """pip downloads the guests' wheels: the Python running this needs it."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise EmulationError(f"{sys.executable} has no pip: apt-get install python3-pip, or use a venv's python")
