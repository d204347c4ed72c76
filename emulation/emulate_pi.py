#!/usr/bin/env python3
"""Prove a device bundle on Raspberry Pi OS userlands, Bookworm's and trixie's, emulated with qemu-user.

Raspberry Pi OS is Debian built for arm64 (64-bit) and armhf (32-bit): Bookworm (Python 3.11, numpy
1.24, Pillow 9.4) and trixie, today's release (Python 3.13, numpy 2.2, Pillow 11.1). For each suite
and architecture, this script builds that userland with debootstrap from the Debian mirror apt uses
here, adds what the bundle's requirements.txt asks for there as pip on the board would (Bookworm:
tflite-runtime 2.14; trixie arm64: ai-edge-litert; trixie armhf: numpy and Pillow only, the numpy
engine), copies the bundle in and runs `classify.py --self-test`, then `classify.py --json` on real
Fashion-MNIST test images written as PNG, under qemu-user (the host's qemu-user-static for Bookworm,
trixie's qemu-user 10 for trixie). Every top-1 must equal that of the same classify.py run on this
machine with the runtime the guest ran (tflite-runtime 2.14 and the numpy engine in the device venv,
ai-edge-litert in --litert-python), and every class score must be within MAX_SCORE_STEPS output
quantization steps of it. Emulated times are qemu's on this machine, not a board's.

Usage:
    sudo .venv/bin/python emulation/emulate_pi.py artifacts/device all --suite all

Needs root (debootstrap), Debian's debootstrap and qemu-user-static, the mirror, PyPI, and a Python
with pip and packaging (a venv's; Debian's python3 needs python3-pip and python3-packaging). Userlands
are cached in .cache/pi-userland/ ($EDGE_FASHION_PI_CACHE moves it): Bookworm's in arm64/ and armhf/,
trixie's in trixie-arm64/ and trixie-armhf/, trixie's qemu in qemu-trixie/; delete one to rebuild it.
Exit status: 0 when every check passed, 1 otherwise.
"""

import argparse
import gzip
import json
import os
import pathlib
import shutil
import struct
import sys
import tempfile
import time
import zlib

import pi_userland
from pi_userland import EmulationError, say

REPO = pathlib.Path(__file__).resolve().parent.parent
# One runtime on x86 and on Arm rounds a requantized value differently about 3 times in 100,000.
MAX_SCORE_STEPS = 1
# Where things go inside a userland. The guest is given their host paths, not /home/pi/...:
# qemu-arm 7.2 maps open() into the -L root but not statx(), so a 32-bit guest's stat misses them.
BUNDLE_IN_USERLAND = "home/pi/edge-fashion"
IMAGES_IN_USERLAND = "home/pi/test-images"
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATA_DIRS = (pathlib.Path.home() / ".keras/datasets/fashion-mnist",
             pathlib.Path("/usr/share/datasets/fashion-mnist"))


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
                     classes: int, runtime: str) -> dict:
    """The reference: the same classify.py on this machine with the same runtime, every class's score."""
    say(f"x86 reference: {host_python} {bundle / 'classify.py'} --runtime {runtime}")
    command = [host_python, bundle / "classify.py", "--json", "--top-k", classes, "--runtime", runtime, images]
    result = pi_userland.run(command, timeout=pi_userland.GUEST_TIMEOUT)
    return predictions_from(result.stdout)


def reference_python(arguments: argparse.Namespace, runtime: str) -> pathlib.Path:
    """The python on this machine that has the runtime: ai-edge-litert's, or the device venv's."""
    python = arguments.litert_python if runtime == "ai_edge_litert" else arguments.host_python
    if not python.is_file():
        raise EmulationError(f"no python at {python} for the {runtime} reference: pass "
                             f"{'--litert-python' if runtime == 'ai_edge_litert' else '--host-python'}")
    return python


def run_in_guest(userland: pi_userland.Userland, bundle: pathlib.Path, images: pathlib.Path,
                 classes: int) -> dict:
    """Copy the bundle and images in, run the self-test and classify the images; return the figures."""
    root = userland.root
    for source, place in ((bundle, BUNDLE_IN_USERLAND), (images, IMAGES_IN_USERLAND)):
        shutil.rmtree(root / place, ignore_errors=True)
        shutil.copytree(source, root / place)
    script = root / BUNDLE_IN_USERLAND / "classify.py"
    started = time.monotonic()
    try:
        self_test = pi_userland.run_guest(userland, script, "--self-test").stdout.strip()
    except EmulationError as error:
        raise EmulationError(f"{userland.name}: the self-test failed on the emulated board: {error}") from None
    middle = time.monotonic()
    output = pi_userland.run_guest(userland, script, "--json", "--top-k", classes, root / IMAGES_IN_USERLAND)
    finished = time.monotonic()
    say(f"{userland.name}: {self_test}")
    predictions = predictions_from(output.stdout)
    summary = next(json.loads(line)["summary"] for line in output.stdout.splitlines() if '"summary"' in line)
    return {"self_test": self_test, "self_test_seconds": round(middle - started, 1),
            "classify_seconds": round(finished - middle, 1), "classify_fps": summary["fps"],
            "runtime": summary["runtime"],
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
                                     epilog="Example: sudo .venv/bin/python emulation/emulate_pi.py artifacts/device all --suite trixie")
    parser.add_argument("bundle", type=pathlib.Path, help="the bundle folder (artifacts/device)")
    parser.add_argument("arch", nargs="?", default="all", choices=[*pi_userland.ARCHITECTURES, "all"],
                        help="64-bit or 32-bit Pi OS, or both (the default)")
    parser.add_argument("--suite", default="all", choices=[*pi_userland.SUITES, "all"],
                        help="Pi OS Bookworm (Debian 12), trixie (Debian 13), or both (the default)")
    parser.add_argument("--images", type=int, default=500, help="how many test images to classify")
    parser.add_argument("--data_dir", "--data-dir", type=pathlib.Path, help="Fashion-MNIST's folder")
    parser.add_argument("--cache", type=pathlib.Path, help="userland cache folder",
                        default=os.environ.get("EDGE_FASHION_PI_CACHE", REPO / ".cache/pi-userland"))
    parser.add_argument("--host_python", "--host-python", type=pathlib.Path,
                        default=REPO / ".cache/device-venv/bin/python",
                        help="python of an x86 venv with tflite-runtime 2.14, numpy<2 and Pillow")
    parser.add_argument("--litert_python", "--litert-python", type=pathlib.Path, default=pathlib.Path(sys.executable),
                        help="python with ai-edge-litert, the reference for guests that run it (default: this one)")
    parser.add_argument("--mirror", help="Debian mirror URI (default: the one apt uses)")
    parser.add_argument("--report", type=pathlib.Path, help="write the figures to this JSON file")
    return parser.parse_args()


def chosen_userlands(arguments: argparse.Namespace) -> list:
    """[(Suite, Architecture)] the arguments name, Bookworm's first."""
    suites = list(pi_userland.SUITES) if arguments.suite == "all" else [arguments.suite]
    architectures = list(pi_userland.ARCHITECTURES) if arguments.arch == "all" else [arguments.arch]
    return [(pi_userland.SUITES[suite], pi_userland.ARCHITECTURES[arch]) for suite in suites for arch in architectures]


def check_inputs(arguments: argparse.Namespace) -> None:
    for name in ("classify.py", "manifest.json", "model_int8.tflite", "requirements.txt"):
        if not (arguments.bundle / name).is_file():
            raise EmulationError(f"{arguments.bundle} is not a bundle: {name} is missing")
    if not arguments.host_python.is_file():
        raise EmulationError(f"no device venv at {arguments.host_python}: make it with "
                             "python3 tests/device_venv.py, or pass --host-python")


def prove(arguments: argparse.Namespace, images: pathlib.Path) -> dict:
    """Run every check; return {userland name: figures}."""
    manifest = json.loads((arguments.bundle / "manifest.json").read_text())
    classes, scale = len(manifest["labels"]), manifest["output"]["scale"]
    if not scale:
        raise EmulationError("the bundle's model has a float output: this proof is for the int8 model")
    requirements_text = (arguments.bundle / "requirements.txt").read_text()
    truth = write_test_images(images, arguments.images, arguments.data_dir)
    cache, figures, references = arguments.cache.resolve(), {}, {}
    for suite, arch in chosen_userlands(arguments):
        with pi_userland.locked(cache, suite.folder(arch)):
            userland = pi_userland.ensure_userland(suite, arch, cache, arguments.mirror)
            installed = pi_userland.ensure_requirements(userland, requirements_text)
            run_figures = run_in_guest(userland, arguments.bundle, images, classes)
        # Runtimes round some scores differently (ai-edge-litert and tflite-runtime by up to 2 steps):
        # the guest is held to this machine running what it ran.
        runtime = run_figures["runtime"].split()[0]
        if runtime not in references:
            python = reference_python(arguments, runtime)
            references[runtime] = classify_on_host(python, arguments.bundle, images, classes, runtime)
        agreement = compare(references[runtime], run_figures.pop("predictions"), truth, scale)
        figures[userland.name] = {"userland": userland.record, "packages": installed, "cpu": arch.cpu,
                                  "qemu": qemu_version(userland.qemu), "reference": f"{runtime} on x86_64",
                                  **run_figures, **agreement}
        say(summary_line(userland.name, figures[userland.name]))
    return figures


def qemu_version(qemu: pathlib.Path) -> str:
    """'qemu-aarch64 version 10.0.13 (Debian ...)': which qemu-user ran a guest, for the record."""
    return pi_userland.run([qemu, "--version"]).stdout.splitlines()[0]


def summary_line(name: str, figures: dict) -> str:
    userland = figures["userland"]
    setup = "cached" if userland["reused"] else f"built in {userland['setup_seconds']} s"
    return (f"{name} ({figures['cpu']}, userland {setup}, {figures['runtime']}): self-test "
            f"{figures['self_test_seconds']} s; {figures['images']} images in {figures['classify_seconds']} s "
            f"({figures['images_per_second']}/s with start-up, {figures['classify_fps']}/s classifying; "
            f"emulated); top-1 equal to {figures['reference']} "
            f"{figures['top1_equal']}/{figures['images']}, scores equal {figures['scores_equal']}/"
            f"{figures['images']} (largest difference {figures['max_score_steps']} step); "
            f"accuracy {figures['accuracy']:.2%}")


def passed(figures: dict) -> bool:
    return all(not each["top1_differ"] and not each["scores_differ"] for each in figures.values())


def main() -> None:
    arguments = parse_arguments()
    try:
        check_inputs(arguments)
        with tempfile.TemporaryDirectory(prefix="emulate-pi-") as images:
            figures = prove(arguments, pathlib.Path(images))
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
