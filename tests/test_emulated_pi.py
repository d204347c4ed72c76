"""Proof on the board's userland: the bundle's classify.py on Raspberry Pi OS Bookworm (Debian 12:
Python 3.11, numpy 1.24, Pillow 9.4, tflite-runtime 2.14) and trixie (Debian 13: Python 3.13, numpy
2.2, Pillow 11.1; ai-edge-litert on arm64, the numpy engine on armhf), each for arm64 and armhf, under
qemu-user, computes what it computes on this machine. emulation/emulate_pi.py does the work; the
userlands are cached in .cache/pi-userland (1-3 minutes each to build, then reused)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from packaging import requirements, utils
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "emulation"))  # emulate_pi.py and the modules beside it.

import emulate_pi  # noqa: E402
import pi_packages  # noqa: E402
import pi_userland  # noqa: E402

SCRIPT = REPO / "emulation" / "emulate_pi.py"
IMAGES = 100  # Real test images per userland: start-up, not the images, takes most of a run's 10-30 s.
TIMEOUT = 2400  # Seconds; a first run builds the four userlands (5-10 minutes).
# What each Pi OS ships, and the interpreter the bundle's requirements.txt gives it.
EXPECTED = {
    "bookworm-arm64": (["3.11", "1.24", "9.4"], "tflite_runtime 2.14.0"),
    "bookworm-armhf": (["3.11", "1.24", "9.4"], "tflite_runtime 2.14.0"),
    "trixie-arm64": (["3.13", "2.2", "11.1"], "ai_edge_litert"),
    "trixie-armhf": (["3.13", "2.2", "11.1"], "numpy"),
}


def cache_folder() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EDGE_FASHION_PI_CACHE", REPO / ".cache/pi-userland"))


def guest(suite: str, arch: str) -> dict:
    """The marker environment of the suite's Python on the architecture."""
    python = EXPECTED[f"{suite}-{arch}"][0][0] + ".0"
    return pi_packages.guest_environment(python, pi_userland.ARCHITECTURES[arch].machine)


def requirement_names(suite: str, arch: str) -> set:
    text = (REPO / "device/requirements.txt").read_text()
    return {utils.canonicalize_name(each.name) for each in pi_packages.applicable(text, guest(suite, arch))}


def skip_reason(suite: str, arch: str) -> str | None:
    """Why this machine cannot run the proof for the userland, or None when it can."""
    chosen, architecture = pi_userland.SUITES[suite], pi_userland.ARCHITECTURES[arch]
    if chosen.qemu_from is None and shutil.which(f"qemu-{architecture.qemu}-static") is None:
        return f"qemu-{architecture.qemu}-static not found: apt-get install qemu-user-static (make test-packages does)"
    qemu_cached = chosen.qemu_from is None or (cache_folder() / f"qemu-{chosen.qemu_from}/qemu.json").is_file()
    if qemu_cached and (cache_folder() / chosen.folder(architecture) / "userland.json").is_file():
        return None
    if shutil.which("debootstrap") is None:
        return "debootstrap not found and no cached userland: apt-get install debootstrap"
    if os.geteuid() != 0:
        return "no cached userland or qemu, and building them needs root"
    return None


def prove(bundle: pathlib.Path, suite: str, arch: str, device_python: pathlib.Path, report: pathlib.Path,
          images: int):
    command = [sys.executable, str(SCRIPT), str(bundle), arch, "--suite", suite, "--images", str(images),
               "--host-python", str(device_python), "--report", str(report)]
    # A home of its own: pip's cache goes there, not into the user's (module fixtures run before conftest's).
    environment = {**os.environ, "HOME": str(report.parent / "home")}
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=environment)


@pytest.fixture(scope="module")
def proofs(tiny_build, device_python, tmp_path_factory) -> dict:
    """{userland: (emulate_pi.py's result, its report)}: one run over all four when this machine can run
    them all (it writes the test images and runs each x86 reference once), else one run per userland."""
    runnable = [name for name in EXPECTED if not skip_reason(*name.split("-"))]
    groups = [("all", "all", runnable)] if runnable == list(EXPECTED) else \
        [(*name.split("-"), [name]) for name in runnable]
    found = {}
    for suite, arch, names in groups:
        report = tmp_path_factory.mktemp("emulated") / "report.json"
        result = prove(tiny_build / "device", suite, arch, device_python, report, IMAGES)
        figures = json.loads(report.read_text()) if result.returncode == 0 else {}
        found.update({name: (result, figures.get(name)) for name in names})
    return found


@pytest.mark.parametrize("name", list(EXPECTED))
def test_emulated_board_computes_what_this_machine_computes(name, proofs):
    suite, arch = name.split("-")
    if skip_reason(suite, arch):
        pytest.skip(skip_reason(suite, arch))
    result, figures = proofs[name]
    assert result.returncode == 0, result.stdout + result.stderr
    print(emulate_pi.summary_line(name, figures))
    assert figures["self_test"].startswith("PASS")
    assert figures["images"] == figures["top1_equal"] == IMAGES
    assert figures["max_score_steps"] <= emulate_pi.MAX_SCORE_STEPS
    # What that Pi OS ships, on the board's own machine type, with the interpreter pip gives it there.
    versions, runtime = EXPECTED[name]
    userland = figures["userland"]
    assert [userland[field].rsplit(".", 1)[0] for field in ("python", "numpy", "pillow")] == versions
    assert userland["machine"] == pi_userland.ARCHITECTURES[arch].machine
    assert figures["runtime"].startswith(runtime) and runtime in figures["self_test"]


def test_a_failing_self_test_fails_the_proof(tiny_build, device_python, tmp_path):
    """A bundle whose stored expectations the board cannot meet makes the script exit non-zero."""
    if skip_reason("bookworm", "arm64"):
        pytest.skip(skip_reason("bookworm", "arm64"))
    bundle = tmp_path / "device"
    shutil.copytree(tiny_build / "device", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    case = manifest["self_test"]["cases"][0]
    case["top1"] = (case["top1"] + 1) % len(manifest["labels"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = prove(bundle, "bookworm", "arm64", device_python, tmp_path / "report.json", images=5)
    assert result.returncode != 0
    assert "bookworm-arm64: the self-test failed on the emulated board" in result.stderr
    assert "FAIL" in result.stderr
    assert not (tmp_path / "report.json").exists()


def test_requirements_give_each_pi_os_its_interpreter():
    """The markers pick tflite-runtime on Bookworm (cp311), ai-edge-litert on 64-bit trixie (cp313), and
    no interpreter on 32-bit trixie, where none has a wheel: the numpy engine runs there."""
    for arch in pi_userland.ARCHITECTURES:
        assert requirement_names("bookworm", arch) == {"tflite-runtime", "numpy", "pillow"}
    assert requirement_names("trixie", "arm64") == {"ai-edge-litert", "numpy", "pillow"}
    assert requirement_names("trixie", "armhf") == {"numpy", "pillow"}


def write_wheel(folder: pathlib.Path, name: str, version: str, requires: list) -> pathlib.Path:
    """A real wheel file holding only its METADATA, enough for the resolver to read."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
    return path


def test_resolver_keeps_debian_packages_and_follows_markers(tmp_path):
    """As pip in a --system-site-packages venv: Debian's numpy is kept when it is new enough, a
    dependency is fetched only when its marker holds for the guest, a conflict is an error."""
    index = tmp_path / "index"
    index.mkdir()
    write_wheel(index, "runtime", "2.0", ["numpy>=1.23", "helper; python_version < '3.12'",
                                          "tester; extra == 'test'"])
    write_wheel(index, "helper", "1.0", ["numpy>=9"])
    write_wheel(index, "numpy", "9.0", [])
    fetched = []

    def fetch(missing: list, folder: pathlib.Path) -> list:
        fetched.extend(str(requirement) for requirement in missing)
        return [pathlib.Path(shutil.copy(next(index.glob(f"{requirement.name}-*")), folder)) for requirement in missing]

    provided = {"numpy": utils.Version("2.2.4")}
    for python, expected in (("3.13.5", ["runtime"]), ("3.11.2", ["helper", "numpy", "runtime"])):
        fetched.clear()
        scratch = tmp_path / python
        scratch.mkdir()
        environment = pi_packages.guest_environment(python, "aarch64")
        wanted = pi_packages.applicable("# the runtime\nruntime>=1  # any\nnumpy>=1.24\n", environment)
        wheels = pi_packages.resolve(wanted, provided, environment, fetch, scratch)
        assert sorted(wheel.name.split("-")[0] for wheel in wheels) == expected
    assert fetched == ["runtime>=1", "helper", "numpy>=9"]  # Debian's 2.2.4 met numpy>=1.23 and >=1.24.
    write_wheel(index, "helper", "0.5", ["runtime<2"])
    (index / "helper-1.0-py3-none-any.whl").unlink()
    environment = pi_packages.guest_environment("3.11.2", "aarch64")
    (tmp_path / "conflict").mkdir()
    with pytest.raises(ValueError, match="runtime<2 conflicts with runtime 2.0"):
        pi_packages.resolve([requirements.Requirement("runtime")], provided, environment, fetch,
                            tmp_path / "conflict")


def test_platform_tags_cover_every_older_glibc():
    tags = pi_packages.platform_tags("armv7l", 36)
    assert tags[0] == "manylinux_2_36_armv7l" and tags[-1] == "manylinux_2_17_armv7l" and len(tags) == 20
    assert "manylinux_2_34_armv7l" in tags  # tflite-runtime 2.14's wheel.


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
    assert pi_userland.mirror_in(deb822, deb822=True) == "http://mirror.example/debian"
    one_line = ("# deb http://old.example/debian bookworm main\n"
                "deb [ arch=amd64 ] http://m.example/debian bookworm main contrib\n")
    assert pi_userland.mirror_in(one_line, deb822=False) == "http://m.example/debian"
    # A trixie host's mirror serves Bookworm too: the same archive holds every release.
    assert pi_userland.mirror_in("deb http://t.example/debian trixie main\n", deb822=False) == "http://t.example/debian"
    assert pi_userland.mirror_in("deb http://m.example/debian bullseye main\n", deb822=False) is None


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
