#!/usr/bin/env python3
"""Prove a device bundle on Raspberry Pi OS Bookworm's userland, emulated with qemu-user.

Raspberry Pi OS Bookworm is Debian bookworm (Python 3.11, numpy 1.24, Pillow 9.4) built for arm64
(64-bit) and armhf (32-bit). For each, this script builds that userland with debootstrap from the
Debian mirror apt uses here, adds the matching tflite-runtime 2.14 wheel from PyPI, copies the
bundle in and runs `classify.py --self-test`, then `classify.py --json` on real Fashion-MNIST test
images written as PNG, under qemu-user-static. Every top-1 must equal that of the same classify.py
run on this machine in the device venv (tflite-runtime 2.14, numpy<2, Pillow), and every class
score must be within MAX_SCORE_STEPS output quantization steps of it.

Usage:
    sudo python3 device/emulate_pi.py build/device all

Needs root (debootstrap), Debian's debootstrap and qemu-user-static, the mirror and PyPI. Userlands
are cached in .cache/pi-userland/<arch> ($EDGE_FASHION_PI_CACHE moves it) and reused; delete one
to rebuild it. Exit status: 0 when every check passed, 1 otherwise.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

REPO = pathlib.Path(__file__).resolve().parent.parent
SUITE = "bookworm"
DEBIAN_PACKAGES = "python3,python3-numpy,python3-pil"
TFLITE_RUNTIME = "tflite-runtime==2.14.0"
RECIPE = f"1 {SUITE} {DEBIAN_PACKAGES} {TFLITE_RUNTIME}"  # Change it to rebuild cached userlands.
# What Raspberry Pi OS Bookworm ships; a userland with anything else is refused.
EXPECTED_VERSIONS = {"python": "3.11.", "numpy": "1.24.", "pillow": "9.4.", "tflite_runtime": "2.14.0"}
# tflite-runtime on x86 and on Arm round a requantized value differently about 3 times in 100,000.
MAX_SCORE_STEPS = 1
GUEST_TIMEOUT = 900  # Seconds; an emulated run that takes longer has hung.
# Where things go inside a userland. The guest is given their host paths, not /home/pi/...:
# qemu-arm 7.2 maps open() into the -L root but not statx(), so a 32-bit guest's stat misses them.
BUNDLE_IN_USERLAND = "home/pi/edge-fashion"
IMAGES_IN_USERLAND = "home/pi/test-images"
WHEEL_IN_USERLAND = "opt/tflite-runtime"
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATA_DIRS = (pathlib.Path.home() / ".keras/datasets/fashion-mnist",
             pathlib.Path("/usr/share/datasets/fashion-mnist"))


@dataclasses.dataclass(frozen=True)
class Architecture:
    debian: str  # Debian's name, as debootstrap --arch takes it.
    qemu: str  # The qemu-user-static binary that runs it.
    cpu: str  # The core qemu emulates: the oldest one Bookworm's Pi OS for it runs on.
    machine: str  # What platform.machine() says in the guest.
    multiarch: str  # The folder under usr/lib holding its shared libraries.
    wheel_platform: str  # The tflite-runtime wheel's platform tag.


ARCHITECTURES = {
    # 64-bit Pi OS runs on the Pi 3, 4, 5 and Zero 2 W; the Pi 4's Cortex-A72 has no dot product.
    "arm64": Architecture("arm64", "qemu-aarch64-static", "cortex-a72", "aarch64",
                          "aarch64-linux-gnu", "manylinux_2_34_aarch64"),
    # 32-bit Pi OS on a Pi 2 (Cortex-A7) or newer; the armv7l wheel cannot run on ARMv6 boards.
    "armhf": Architecture("armhf", "qemu-arm-static", "cortex-a7", "armv7l",
                          "arm-linux-gnueabihf", "manylinux_2_34_armv7l"),
}


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


# Debian mirror.


def debian_mirror() -> str:
    """The URI apt on this machine uses for bookworm's main component."""
    folder = pathlib.Path("/etc/apt/sources.list.d")
    for path in [folder.parent / "sources.list", *sorted(folder.glob("*.list")),
                 *sorted(folder.glob("*.sources"))]:
        if path.is_file():
            mirror = mirror_in(path.read_text(errors="replace"), deb822=path.suffix == ".sources")
            if mirror:
                return mirror
    raise EmulationError(f"no 'deb' source for {SUITE} main in /etc/apt; pass --mirror URI")


def mirror_in(text: str, deb822: bool) -> str | None:
    """The first deb URI serving SUITE main, from a one-line .list or a deb822 .sources file."""
    # A comment line is dropped, not blanked: in deb822 a blank line ends the stanza.
    lines = [line.split("#")[0].rstrip() for line in text.splitlines()
             if not line.lstrip().startswith("#")]
    if not deb822:
        for words in (re.sub(r"\[[^]]*\]", " ", line).split() for line in lines):
            if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE and "main" in words[3:]:
                return words[1]
        return None
    for stanza in "\n".join(lines).split("\n\n"):
        pairs = (line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != " ")
        fields = {key.strip().lower(): value.split() for key, value in pairs}
        if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                and "main" in fields.get("components", []) and fields.get("uris")):
            return fields["uris"][0]
    return None


# Userland: build, check, cache.


def run_guest(arch: Architecture, userland: pathlib.Path, *arguments) -> subprocess.CompletedProcess:
    """Run the userland's python3 under qemu with the userland as its root and a clean environment.

    Python writes .pyc files into the userland, as Debian's py3compile does on a board: without them
    every emulated start compiles numpy again (7 s instead of 2 s of CPU here).
    """
    command = [arch.qemu, "-cpu", arch.cpu, "-L", userland, userland / "usr/bin/python3", *arguments]
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/home/pi", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
                   "PYTHONPATH": str(userland / WHEEL_IN_USERLAND)}
    return run(command, env=environment, cwd=userland / "home/pi", timeout=GUEST_TIMEOUT)


def unpack(package: pathlib.Path, root: pathlib.Path) -> None:
    """Unpack a .deb as debootstrap does, keeping /bin, /lib and /sbin links into /usr."""
    contents = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)], stdout=subprocess.PIPE)
    run(["tar", "-x", "--keep-directory-symlink", "-C", root], stdin=contents.stdout)
    contents.stdout.close()
    if contents.wait() != 0:
        raise EmulationError(f"dpkg-deb could not read {package}")


def debootstrap(arch: Architecture, root: pathlib.Path, mirror: str) -> None:
    """Download bookworm's minimal base with Python, numpy and Pillow, and unpack every package."""
    run(["debootstrap", "--foreign", f"--arch={arch.debian}", "--variant=minbase",
         f"--include={DEBIAN_PACKAGES}", SUITE, root, mirror])
    # The second stage would run maintainer scripts in the guest; unpacking is all Python needs.
    packages = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    for package in packages:
        unpack(package, root)
        package.unlink()
    say(f"{arch.debian}: unpacked {len(packages)} Debian packages")


def link_blas(arch: Architecture, root: pathlib.Path) -> None:
    """Do what update-alternatives would: point libblas.so.3 and liblapack.so.3 at Debian's copies."""
    libraries = root / "usr/lib" / arch.multiarch
    for name, folder in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        if not (libraries / folder / name).is_file():
            raise EmulationError(f"{libraries / folder / name} is missing: numpy cannot load")
        (libraries / name).unlink(missing_ok=True)
        (libraries / name).symlink_to(f"{folder}/{name}")


def install_wheel(arch: Architecture, root: pathlib.Path, wheels: pathlib.Path) -> str:
    """Fetch the cp311 tflite-runtime wheel for the architecture from PyPI and unpack it."""
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--platform", arch.wheel_platform, "--python-version", "3.11", "--implementation", "cp",
         "--dest", wheels, TFLITE_RUNTIME])
    version = TFLITE_RUNTIME.split("==")[1]
    matches = sorted(wheels.glob(f"tflite_runtime-{version}-cp311-*{arch.wheel_platform}.whl"))
    if not matches:
        raise EmulationError(f"pip downloaded no {arch.wheel_platform} wheel into {wheels}")
    with zipfile.ZipFile(matches[0]) as wheel:
        wheel.extractall(root / WHEEL_IN_USERLAND)
    return matches[0].name


VERSION_PROBE = """
import json, platform, time
started = time.perf_counter()
import numpy, PIL, PIL.Image, tflite_runtime, tflite_runtime.interpreter
imported = time.perf_counter() - started
print(json.dumps({"python": platform.python_version(), "numpy": numpy.__version__,
                  "pillow": PIL.__version__, "tflite_runtime": tflite_runtime.__version__,
                  "machine": platform.machine(), "import_seconds": round(imported, 2)}))
"""


def check_userland(arch: Architecture, root: pathlib.Path) -> dict:
    """The guest's versions, after checking they are Pi OS Bookworm's and that tflite_runtime imports."""
    run_guest(arch, root, "-c", VERSION_PROBE)  # The first run compiles and caches the bytecode.
    versions = json.loads(run_guest(arch, root, "-c", VERSION_PROBE).stdout)
    for name, expected in EXPECTED_VERSIONS.items():
        if not versions[name].startswith(expected):
            raise EmulationError(f"{arch.debian}: {name} {versions[name]}, expected {expected}")
    if versions["machine"] != arch.machine:
        raise EmulationError(f"{arch.debian}: the guest says {versions['machine']}, not {arch.machine}")
    return versions


def build_userland(arch: Architecture, target: pathlib.Path, mirror: str) -> dict:
    """Build and check the userland beside target, then move it into place; return its record."""
    if os.geteuid() != 0:
        raise EmulationError("debootstrap needs root to build a userland: run with sudo")
    if shutil.which("debootstrap") is None:
        raise EmulationError("debootstrap not found: apt-get install debootstrap")
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    say(f"{arch.debian}: debootstrap {SUITE} from {mirror} into {partial} (about 150 packages, 1-3 minutes)")
    debootstrap(arch, partial, mirror)
    link_blas(arch, partial)
    (partial / "home/pi").mkdir(parents=True, exist_ok=True)
    wheel = install_wheel(arch, partial, target.parent / "wheels")
    record = {"recipe": RECIPE, "mirror": mirror, "wheel": wheel, **check_userland(arch, partial)}
    record["setup_seconds"] = round(time.monotonic() - started, 1)
    (partial / "userland.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return record


@contextlib.contextmanager
def locked(cache: pathlib.Path, arch: Architecture):
    """Hold the architecture's lock: one process at a time builds or runs in a userland."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{arch.debian}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if this process dies.
        yield


def ensure_userland(arch: Architecture, cache: pathlib.Path, mirror: str | None) -> tuple[pathlib.Path, dict]:
    """The cached userland when this recipe built it, else a new one; with its record."""
    target = cache / arch.debian
    record_path = target / "userland.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("recipe") == RECIPE:
        record = json.loads(record_path.read_text())
        say(f"{arch.debian}: reusing {target} (built in {record['setup_seconds']} s)")
        return target, {**record, "reused": True}
    record = build_userland(arch, target, mirror or debian_mirror())
    say(f"{arch.debian}: built in {record['setup_seconds']} s: Python {record['python']}, numpy "
        f"{record['numpy']}, Pillow {record['pillow']}, tflite_runtime {record['tflite_runtime']}")
    return target, {**record, "reused": False}


# Real test images.


def find_test_set(data_dir: pathlib.Path | None) -> pathlib.Path:
    """The folder with the test images and labels: --data-dir, $EDGE_FASHION_DATA, Keras', Debian's."""
    if data_dir is None and os.environ.get("EDGE_FASHION_DATA"):
        data_dir = pathlib.Path(os.environ["EDGE_FASHION_DATA"])
    folders = [data_dir] if data_dir else DATA_DIRS
    for folder in folders:
        if all((folder / name).is_file() for name in TEST_FILES):
            return folder
    raise EmulationError(f"{' and '.join(TEST_FILES)} not in {', '.join(map(str, folders))}: "
                         "apt-get install dataset-fashion-mnist or pass --data-dir")


def read_idx(path: pathlib.Path, magic: int, dimensions: int) -> tuple[list, bytes]:
    """The shape and the unsigned bytes of an IDX file, after checking its magic number and size."""
    data = gzip.decompress(path.read_bytes())
    header = 4 * (1 + dimensions)
    found, *shape = struct.unpack(f">{1 + dimensions}I", data[:header])
    size = 1
    for extent in shape:
        size *= extent
    if found != magic or len(data) != header + size:
        raise EmulationError(f"{path}: not an IDX file of {dimensions} dimension(s), or truncated")
    return shape, data[header:]


def png_bytes(pixels: bytes, width: int, height: int) -> bytes:
    """8-bit grayscale pixels (row-major) as a PNG file, made with the stdlib alone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    # Each row starts with its filter type, 0 (none).
    rows = b"".join(b"\0" + pixels[row * width:(row + 1) * width] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def write_test_images(folder: pathlib.Path, count: int, data_dir: pathlib.Path | None) -> dict:
    """Write the first count test-set images as PNG; return {file name: true class index}."""
    source = find_test_set(data_dir)
    (number, height, width), pixels = read_idx(source / TEST_FILES[0], 0x803, 3)
    _, labels = read_idx(source / TEST_FILES[1], 0x801, 1)
    truth = {}
    for index in range(min(count, number)):
        name = f"t10k-{index:05d}.png"
        image = pixels[index * height * width:(index + 1) * height * width]
        (folder / name).write_bytes(png_bytes(image, width, height))
        truth[name] = labels[index]
    say(f"wrote {len(truth)} test images from {source}")
    return truth


# Classify on this machine and in the guest; compare.


def predictions_from(output: str) -> dict:
    """{image file name: its JSON result} from classify.py's JSON lines."""
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {pathlib.PurePath(record["path"]).name: record for record in records if "path" in record}


def classify_on_host(host_python: pathlib.Path, bundle: pathlib.Path, images: pathlib.Path,
                     classes: int) -> dict:
    """The reference: the same classify.py on this machine, in the device venv, every class's score."""
    say(f"x86 reference: {host_python} {bundle / 'classify.py'}")
    command = [host_python, bundle / "classify.py", "--json", "--top-k", classes, images]
    result = run(command, timeout=GUEST_TIMEOUT)
    return predictions_from(result.stdout)


def run_in_guest(arch: Architecture, userland: pathlib.Path, bundle: pathlib.Path, images: pathlib.Path,
                 classes: int) -> dict:
    """Copy the bundle and images in, run the self-test and classify the images; return the figures."""
    for source, place in ((bundle, BUNDLE_IN_USERLAND), (images, IMAGES_IN_USERLAND)):
        shutil.rmtree(userland / place, ignore_errors=True)
        shutil.copytree(source, userland / place)
    script = userland / BUNDLE_IN_USERLAND / "classify.py"
    started = time.monotonic()
    try:
        self_test = run_guest(arch, userland, script, "--self-test").stdout.strip()
    except EmulationError as error:
        raise EmulationError(f"{arch.debian}: the self-test failed on the emulated board: {error}") from None
    middle = time.monotonic()
    output = run_guest(arch, userland, script, "--json", "--top-k", classes, userland / IMAGES_IN_USERLAND)
    finished = time.monotonic()
    say(f"{arch.debian}: {self_test}")
    predictions = predictions_from(output.stdout)
    summary = next(json.loads(line)["summary"] for line in output.stdout.splitlines() if '"summary"' in line)
    return {"self_test": self_test, "self_test_seconds": round(middle - started, 1),
            "classify_seconds": round(finished - middle, 1), "classify_fps": summary["fps"],
            "images_per_second": round(len(predictions) / (finished - middle), 1), "predictions": predictions}


def score_steps(reference: dict, guest: dict, scale: float) -> int:
    """The largest difference between two results' class scores, in output quantization steps."""
    reference_scores, guest_scores = dict(reference["top_k"]), dict(guest["top_k"])
    return max(round(abs(reference_scores[label] - guest_scores[label]) / scale)
               for label in reference_scores)


def compare(reference: dict, guest: dict, truth: dict, scale: float) -> dict:
    """Agreement figures of the guest's predictions with the reference's, image by image."""
    if set(guest) != set(reference) or set(reference) != set(truth):
        raise EmulationError(f"classified {len(reference)} images here, {len(guest)} in the guest, "
                             f"of {len(truth)}")
    names = sorted(truth)
    steps = {name: score_steps(reference[name], guest[name], scale) for name in names}
    top1_differ = [name for name in names if guest[name]["index"] != reference[name]["index"]]
    return {"images": len(names), "top1_equal": len(names) - len(top1_differ),
            "scores_equal": sum(step == 0 for step in steps.values()),
            "max_score_steps": max(steps.values()),
            "accuracy": sum(guest[name]["index"] == truth[name] for name in names) / len(names),
            "top1_differ": top1_differ[:10],
            "scores_differ": [name for name in names if steps[name] > MAX_SCORE_STEPS][:10]}


# Command line.


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example: sudo python3 device/emulate_pi.py build/device all")
    parser.add_argument("bundle", type=pathlib.Path, help="the bundle folder (build/device)")
    parser.add_argument("arch", nargs="?", default="all", choices=[*ARCHITECTURES, "all"],
                        help="64-bit or 32-bit Pi OS, or both (the default)")
    parser.add_argument("--images", type=int, default=500, help="how many test images to classify")
    parser.add_argument("--data_dir", "--data-dir", type=pathlib.Path, help="Fashion-MNIST's folder")
    parser.add_argument("--cache", type=pathlib.Path, help="userland cache folder",
                        default=os.environ.get("EDGE_FASHION_PI_CACHE", REPO / ".cache/pi-userland"))
    parser.add_argument("--host_python", "--host-python", type=pathlib.Path,
                        default=REPO / ".cache/device-venv/bin/python",
                        help="python of an x86 venv with tflite-runtime 2.14, numpy<2 and Pillow")
    parser.add_argument("--mirror", help="Debian mirror URI (default: the one apt uses)")
    parser.add_argument("--report", type=pathlib.Path, help="write the figures to this JSON file")
    return parser.parse_args()


def check_inputs(arguments: argparse.Namespace, architectures: list) -> None:
    for name in ("classify.py", "manifest.json", "model_int8.tflite"):
        if not (arguments.bundle / name).is_file():
            raise EmulationError(f"{arguments.bundle} is not a bundle: {name} is missing")
    if not arguments.host_python.is_file():
        raise EmulationError(f"no device venv at {arguments.host_python}: make it with "
                             "python3 tests/device_venv.py, or pass --host-python")
    for arch in architectures:
        if shutil.which(arch.qemu) is None:
            raise EmulationError(f"{arch.qemu} not found: apt-get install qemu-user-static")


def prove(arguments: argparse.Namespace, architectures: list, images: pathlib.Path) -> dict:
    """Run every check; return {arch: figures}."""
    manifest = json.loads((arguments.bundle / "manifest.json").read_text())
    classes, scale = len(manifest["labels"]), manifest["output"]["scale"]
    if not scale:
        raise EmulationError("the bundle's model has a float output: this proof is for the int8 model")
    truth = write_test_images(images, arguments.images, arguments.data_dir)
    reference = classify_on_host(arguments.host_python, arguments.bundle, images, classes)
    cache, figures = arguments.cache.resolve(), {}
    for arch in architectures:
        with locked(cache, arch):
            userland, record = ensure_userland(arch, cache, arguments.mirror)
            run_figures = run_in_guest(arch, userland, arguments.bundle, images, classes)
        agreement = compare(reference, run_figures.pop("predictions"), truth, scale)
        figures[arch.debian] = {"userland": record, "cpu": arch.cpu, **run_figures, **agreement}
        say(summary_line(arch.debian, figures[arch.debian]))
    return figures


def summary_line(name: str, figures: dict) -> str:
    userland = figures["userland"]
    setup = "cached" if userland["reused"] else f"built in {userland['setup_seconds']} s"
    return (f"{name} ({figures['cpu']}, userland {setup}): self-test {figures['self_test_seconds']} s; "
            f"{figures['images']} images in {figures['classify_seconds']} s "
            f"({figures['images_per_second']}/s with start-up, {figures['classify_fps']}/s classifying); "
            f"top-1 equal to x86 "
            f"{figures['top1_equal']}/{figures['images']}, scores equal {figures['scores_equal']}/"
            f"{figures['images']} (largest difference {figures['max_score_steps']} step); "
            f"accuracy {figures['accuracy']:.2%}")


def passed(figures: dict) -> bool:
    return all(not each["top1_differ"] and not each["scores_differ"] for each in figures.values())


def main() -> None:
    arguments = parse_arguments()
    chosen = list(ARCHITECTURES) if arguments.arch == "all" else [arguments.arch]
    architectures = [ARCHITECTURES[name] for name in chosen]
    try:
        check_inputs(arguments, architectures)
        with tempfile.TemporaryDirectory(prefix="emulate-pi-") as images:
            figures = prove(arguments, architectures, pathlib.Path(images))
    except EmulationError as error:
        sys.exit(f"emulate-pi: error: {error}")
    if arguments.report:
        arguments.report.write_text(json.dumps(figures, indent=2) + "\n")
    if not passed(figures):
        for name, each in figures.items():
            say(f"{name}: top-1 differs on {each['top1_differ']}; scores differ by more than "
                f"{MAX_SCORE_STEPS} step on {each['scores_differ']}")
        sys.exit("emulate-pi: FAIL: the emulated board does not compute what this machine computes")
    say("PASS: every emulated board computed what this machine computed")


if __name__ == "__main__":
    main()
