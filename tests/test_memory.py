"""classify.py on a 512 MB board: huge images within a memory budget, results printed as they come,
special files skipped. Run on the board's software (tests/device_venv.py), each run measured by a
launcher (os.wait4's ru_maxrss) and, where this machine allows, inside a 400 MiB memory cgroup."""

import json
import os
import pathlib
import select
import socket
import subprocess
import sys
import threading

import pytest
from PIL import Image, ImageDraw
from fashion_board import record

from test_classify import by_path, device, records, save_png, test_set  # noqa: F401 (device, test_set: fixtures)

PEAK_RSS_LIMIT_MB = 150
CGROUP_LIMIT_BYTES = 400 * 1024 * 1024
SIDE = 7071  # 50 megapixels, just under classify.py's decompression-bomb limit.
# Each file is small, its pixels many: the old decoding took 0.8-1.5 GB on such files.
HUGE = {
    "rgba.png": (("RGBA", (230, 230, 230, 255), (40, 40, 40, 255)), {"compress_level": 1}),
    "sixteen_bit.png": (("I;16", 60000, 8000), {"compress_level": 1}),
    "float.tif": (("F", 0.9, 0.1), {"compression": "tiff_adobe_deflate"}),
    "rgb.webp": (("RGB", (230, 230, 230), (40, 40, 40)), {"lossless": True, "quality": 0, "method": 0}),
}
# The largest of each kind that still fits the budget: classified, not refused.
FITTING = {
    "rgb_12mp.png": (("RGB", (4000, 3000), (230, 230, 230), (40, 40, 40)), {}),
    "gray_47mp.png": (("L", (6900, 6900), 230, 40), {}),
    "rgba_5mp.png": (("RGBA", (2400, 2400), (230, 230, 230, 255), (40, 40, 40, 255)), {}),
    "palette_47mp.gif": (("P", (6900, 6900), 1, 200), {}),
    "jpeg_50mp.jpg": (("RGB", (SIDE, SIDE), (230, 230, 230), (40, 40, 40)), {}),
    "sixteen_bit_11mp.png": (("I;16", (3400, 3400), 60000, 8000), {}),
    "float_5mp.tif": (("F", (2400, 2400), 0.9, 0.1), {"compression": "tiff_adobe_deflate"}),
    "rgb_2mp.webp": (("RGB", (1700, 1700), (230, 230, 230), (40, 40, 40)), {"lossless": True, "quality": 0, "method": 0}),
}
LAUNCHER = """
import os, sys
procs, command = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    if procs:
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    os.execv(command[0], command)
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"peak_rss_kb {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def garment(mode: str, size: tuple, background, fill) -> Image.Image:
    """A dark garment-like block on a light background."""
    image = Image.new(mode, size, background)
    width, height = size
    ImageDraw.Draw(image).rectangle((width // 3, height // 4, 2 * width // 3, 3 * height // 4), fill=fill)
    return image


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("large")
    for name, ((mode, background, fill), options) in HUGE.items():
        garment(mode, (SIDE, SIDE), background, fill).save(folder / name, **options)
    for name, ((mode, size, background, fill), options) in FITTING.items():
        garment(mode, size, background, fill).save(folder / name, **options)
    return folder


def measured(python, script, *args, procs: str = "", timeout: int = 300) -> tuple:
    """(CompletedProcess, peak RSS in MB) of `python script ARGS`, started in the cgroup `procs` names."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, procs, str(python), str(script), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, check=False)
    errors, peak = result.stderr.rsplit("peak_rss_kb ", 1)
    result.stderr = errors
    assert "Traceback" not in errors, errors
    return result, int(peak) / 1024


@pytest.mark.parametrize("name", [*HUGE, *FITTING])
def test_each_large_image_is_refused_or_classified_within_the_budget(name, large_images, device_python, device):
    result, peak_mb = measured(device_python, device / "classify.py", large_images / name, "--json")
    lines = records(result.stdout)
    assert len(lines) == 2 and "summary" in lines[1], result.stdout
    if name in HUGE:
        assert result.returncode == 1 and "MB to decode, more than the 48 MB allowed" in lines[0]["error"]
    else:
        assert result.returncode == 0 and lines[0]["label"], lines[0]
    assert peak_mb <= PEAK_RSS_LIMIT_MB, f"{name}: peak RSS {peak_mb:.0f} MB"


def memory_cgroup(name: str) -> pathlib.Path | None:
    """A fresh memory cgroup limited to CGROUP_LIMIT_BYTES without swap (v2, else v1), or None."""
    v2 = pathlib.Path("/sys/fs/cgroup")
    v1 = v2 / "memory"
    own_v1 = next((line.split(":", 2)[2].strip() for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines()
                   if line.split(":")[1] == "memory"), None)
    controllers = v2 / "cgroup.controllers"
    candidates = [(v2, "memory.max", "memory.swap.max")] if controllers.exists() and "memory" in controllers.read_text() else []
    if own_v1 is not None:
        candidates += [(v1 / own_v1.lstrip("/"), "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
                       (v1, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes")]
    for parent, limit, swap in candidates:
        folder = parent / name
        try:
            folder.mkdir()
        except OSError:
            continue
        try:
            if not (folder / limit).exists():  # Made by the kernel in a real cgroup; not a cgroup then.
                raise OSError(f"{folder} has no {limit}")
            (folder / limit).write_text(str(CGROUP_LIMIT_BYTES))
            if (folder / swap).exists():
                (folder / swap).write_text("0" if swap == "memory.swap.max" else str(CGROUP_LIMIT_BYTES))
            return folder
        except OSError:
            folder.rmdir()
    return None


@pytest.fixture
def cgroup():
    folder = memory_cgroup(f"edge-fashion-test-{os.getpid()}")
    if folder is None:
        pytest.skip("no memory cgroup can be made here (needs root and cgroup v2 at /sys/fs/cgroup or v1's "
                    "memory controller); the per-image peak RSS test still holds each input to 150 MB")
    yield folder
    folder.rmdir()


def test_no_run_is_killed_under_a_400_mib_cgroup(cgroup, large_images, device_python, device, test_set, tmp_path):
    folder = tmp_path / "inputs"
    for name in [*HUGE, *FITTING]:
        (folder / name).parent.mkdir(exist_ok=True)
        os.link(large_images / name, folder / name)
    normal = save_png(folder / "normal", test_set[0][:5])
    result, _ = measured(device_python, device / "classify.py", folder, "--json", procs=str(cgroup / "cgroup.procs"))
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr[-500:]}"
    found = by_path(result.stdout)
    assert sorted(found) == sorted(str(path) for path in [*folder.glob("*.*"), *normal])
    assert all("label" in found[str(path)] for path in normal)
    assert {name for name in [*HUGE, *FITTING] if "error" in found[str(folder / name)]} == set(HUGE)
    events = cgroup / "memory.events"
    if events.exists():  # cgroup v2; v1 counts OOM kills in memory.oom_control.
        assert "oom_kill 0" in events.read_text()
        peak = cgroup / "memory.peak"
    else:
        assert "oom_kill 0" in (cgroup / "memory.oom_control").read_text()
        peak = cgroup / "memory.max_usage_in_bytes"
    if peak.exists():  # The run was charged to this cgroup: it did run under the limit.
        assert 0 < int(peak.read_text()) <= CGROUP_LIMIT_BYTES


def test_special_files_in_a_folder_are_reported_and_skipped(device_python, device, test_set, tmp_path):
    folder = tmp_path / "inputs"
    save_png(folder, test_set[0][:2])  # 00000.png, 00001.png
    os.mkfifo(folder / "b.png")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "c.png"))
        result = subprocess.run([str(device_python), str(device / "classify.py"), str(folder), "--json"],
                                capture_output=True, text=True, timeout=60, check=False)
    found = by_path(result.stdout)
    assert found[str(folder / "b.png")]["error"] == "a FIFO, not an image file: skipped"
    assert found[str(folder / "c.png")]["error"] == "a socket, not an image file: skipped"
    assert "label" in found[str(folder / "00000.png")] and "label" in found[str(folder / "00001.png")]
    assert result.returncode == 1


def test_a_fifo_named_on_the_command_line_never_hangs(device_python, device, test_set, tmp_path):
    save_png(tmp_path, test_set[0][:1])
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    alone = subprocess.run([str(device_python), str(device / "classify.py"), str(fifo), "--json"],
                           capture_output=True, text=True, timeout=60, check=False)
    line = records(alone.stdout)[0]
    record.validate(line)
    assert (line["path"], line["error"], line["frame"]) == (str(fifo), f"the FIFO {fifo} is empty", 1)
    image = (tmp_path / "00000.png").read_bytes()
    # A writer waiting in open() already counts as one, so classify.py's read waits for its bytes.
    writer = threading.Thread(target=lambda: fifo.write_bytes(image), daemon=True)
    writer.start()
    process = subprocess.Popen([str(device_python), str(device / "classify.py"), str(fifo), "--json"],
                               stdout=subprocess.PIPE, text=True)
    stdout, _ = process.communicate(timeout=60)
    writer.join(timeout=10)
    assert "label" in records(stdout)[0], stdout


def test_each_result_is_printed_before_the_next_input_is_read(device_python, device, test_set, tmp_path):
    """The second input is standard input, written only once the first result has been printed:
    if results waited for a batch, both sides would wait forever."""
    first = save_png(tmp_path, test_set[0][:2])
    process = subprocess.Popen([str(device_python), str(device / "classify.py"), str(first[0]), "-", "--json"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "no result printed while the next input waits"
        assert json.loads(process.stdout.readline())["path"] == str(first[0])
        process.stdin.write(first[1].read_bytes())
        process.stdin.close()
        assert json.loads(process.stdout.readline())["path"] == "-"
    finally:
        process.kill()
        process.wait()
