"""Proof on the board's userland: the bundle's classify.py on Raspberry Pi OS Bookworm (Debian
bookworm, Python 3.11, numpy 1.24, Pillow 9.4, tflite-runtime 2.14) for arm64 and armhf, under
qemu-user, computes what it computes on this machine. device/emulate_pi.py does the work; the
userlands are cached in .cache/pi-userland (about 1-2 minutes each to build, then reused)."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "device" / "emulate_pi.py"
IMAGES = 200  # Real test images per architecture: about 5 s emulated on arm64, 15 s on armhf.
TIMEOUT = 1200  # Seconds; a first run builds the userland.

spec = importlib.util.spec_from_file_location("emulate_pi", SCRIPT)
emulate_pi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(emulate_pi)


def cache_folder() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EDGE_FASHION_PI_CACHE", REPO / ".cache/pi-userland"))


def skip_reason(arch: str) -> str | None:
    """Why this machine cannot run the proof for arch, or None when it can."""
    architecture = emulate_pi.ARCHITECTURES[arch]
    if shutil.which(architecture.qemu) is None:
        return f"{architecture.qemu} not found: apt-get install qemu-user-static (make test-packages does)"
    if (cache_folder() / arch / "userland.json").is_file():
        return None
    if shutil.which("debootstrap") is None:
        return "debootstrap not found and no cached userland: apt-get install debootstrap"
    if os.geteuid() != 0:
        return "no cached userland and debootstrap needs root to build one"
    return None


def prove(bundle: pathlib.Path, arch: str, device_python: pathlib.Path, report: pathlib.Path, images: int):
    command = [sys.executable, str(SCRIPT), str(bundle), arch, "--images", str(images),
               "--host-python", str(device_python), "--report", str(report)]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_emulated_board_computes_what_this_machine_computes(arch, tiny_build, device_python, tmp_path):
    if skip_reason(arch):
        pytest.skip(skip_reason(arch))
    report = tmp_path / "report.json"
    result = prove(tiny_build / "device", arch, device_python, report, IMAGES)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(report.read_text())[arch]
    print(emulate_pi.summary_line(arch, figures))
    assert figures["self_test"].startswith("PASS")
    assert figures["images"] == figures["top1_equal"] == IMAGES
    assert figures["max_score_steps"] <= emulate_pi.MAX_SCORE_STEPS
    # What Raspberry Pi OS Bookworm ships, on the board's own machine type.
    userland = figures["userland"]
    versions = [userland[name] for name in ("python", "numpy", "pillow", "tflite_runtime")]
    assert [version.rsplit(".", 1)[0] for version in versions] == ["3.11", "1.24", "9.4", "2.14"]
    assert userland["machine"] == emulate_pi.ARCHITECTURES[arch].machine


def test_a_failing_self_test_fails_the_proof(tiny_build, device_python, tmp_path):
    """A bundle whose stored expectations the board cannot meet makes the script exit non-zero."""
    if skip_reason("arm64"):
        pytest.skip(skip_reason("arm64"))
    bundle = tmp_path / "device"
    shutil.copytree(tiny_build / "device", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    case = manifest["self_test"]["cases"][0]
    case["top1"] = (case["top1"] + 1) % len(manifest["labels"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = prove(bundle, "arm64", device_python, tmp_path / "report.json", images=5)
    assert result.returncode != 0
    assert "arm64: the self-test failed on the emulated board" in result.stderr
    assert "FAIL" in result.stderr
    assert not (tmp_path / "report.json").exists()


def test_png_writer_keeps_every_pixel(data_dir, tmp_path):
    truth = emulate_pi.write_test_images(tmp_path, 3, data_dir)
    assert sorted(truth) == ["t10k-00000.png", "t10k-00001.png", "t10k-00002.png"]
    _, pixels = emulate_pi.read_idx(data_dir / emulate_pi.TEST_FILES[0], 0x803, 3)
    for index, name in enumerate(sorted(truth)):
        with Image.open(tmp_path / name) as image:
            assert image.mode == "L" and image.size == (28, 28)
            decoded = np.asarray(image)
        expected = np.frombuffer(pixels[index * 784:(index + 1) * 784], np.uint8).reshape(28, 28)
        assert np.array_equal(decoded, expected)


def test_mirror_comes_from_apt_sources_in_both_formats():
    deb822 = ("Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\n"
              "Suites: bookworm bookworm-updates\nComponents: main\n\n"
              "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
              "Components: main\n")
    assert emulate_pi.mirror_in(deb822, deb822=True) == "http://mirror.example/debian"
    one_line = ("# deb http://old.example/debian bookworm main\n"
                "deb [ arch=amd64 ] http://m.example/debian bookworm main contrib\n")
    assert emulate_pi.mirror_in(one_line, deb822=False) == "http://m.example/debian"
    assert emulate_pi.mirror_in("deb http://m.example/debian bullseye main\n", deb822=False) is None


def result_line(scores: list) -> dict:
    labels = [f"class{number}" for number in range(len(scores))]
    return {"index": int(np.argmax(scores)),
            "top_k": [[label, score] for label, score in zip(labels, scores)]}


def test_compare_counts_top1_and_score_steps():
    step = 1 / 256
    reference = {"a.png": result_line([200 * step, 56 * step]), "b.png": result_line([10 * step, 246 * step])}
    close = {"a.png": result_line([199 * step, 57 * step]), "b.png": reference["b.png"]}
    figures = emulate_pi.compare(reference, close, {"a.png": 0, "b.png": 1}, step)
    assert (figures["top1_equal"], figures["scores_equal"], figures["max_score_steps"]) == (2, 1, 1)
    assert figures["top1_differ"] == figures["scores_differ"] == [] and figures["accuracy"] == 1.0
    flipped = {"a.png": result_line([100 * step, 156 * step]), "b.png": reference["b.png"]}
    figures = emulate_pi.compare(reference, flipped, {"a.png": 0, "b.png": 1}, step)
    assert figures["top1_differ"] == ["a.png"] and figures["scores_differ"] == ["a.png"]
