"""Sources fed what is not an image file: a FIFO named *.jpg, a link to /dev/zero, a FIFO whose
writer never writes. Each gets one error line (or is left out of a replay) and the run goes on:
no hang, no flood of memory. Each run is bounded in time and, against a flood, in address space."""

import json
import os
import resource
import subprocess
import threading
import time

import pytest
from PIL import Image

RUN_SECONDS = 60  # A hang fails the test instead of the suite.
ADDRESS_SPACE_BYTES = 3 * 2**30  # A run reading /dev/zero without bound dies here, not in the machine's memory.


@pytest.fixture
def device(tiny_build):
    return tiny_build / "device"


@pytest.fixture
def images(data_dir):
    from edge_fashion.pipeline import data

    return data.load_fashion_mnist(data_dir, download=False).test_images[:3]


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))


def start(python, device, *arguments, stderr_path):
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen([str(python), str(device / "classify.py"), *map(str, arguments), "--json"],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=limited)


def records(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines()]


def special_files(folder):
    """A FIFO and a link to /dev/zero, both named as images."""
    os.mkfifo(folder / "a_fifo.jpg")
    (folder / "b_zero.jpg").symlink_to("/dev/zero")


def test_watch_reports_a_fifo_and_a_device_once_and_goes_on(device_python, device, images, tmp_path):
    watched = tmp_path / "incoming"
    watched.mkdir()
    stderr_path = tmp_path / "stderr.txt"
    process = start(device_python, device, "--watch", watched, "--count", "3", stderr_path=stderr_path)
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while "watching" not in stderr_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        special_files(watched)
        time.sleep(1)  # Both seen, and reported, before the image comes.
        Image.fromarray(images[0]).save(watched / "c.png")
        stdout, _ = process.communicate(timeout=RUN_SECONDS)
    finally:
        process.kill()
    found = {os.path.basename(record["path"]): record for record in records(stdout) if "path" in record}
    assert found["a_fifo.jpg"]["error"] == "a FIFO, not an image file: skipped"
    assert found["b_zero.jpg"]["error"] == "a character device, not an image file: skipped"
    assert "label" in found["c.png"] and process.returncode == 1
    assert "Traceback" not in stderr_path.read_text()


def test_replay_leaves_a_fifo_and_a_device_out(device_python, device, images, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    special_files(folder)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"c{index}.png")
    stderr_path = tmp_path / "stderr.txt"
    process = start(device_python, device, "--replay", folder, "--fps", "0", "--count", "6", stderr_path=stderr_path)
    try:
        stdout, _ = process.communicate(timeout=RUN_SECONDS)
    finally:
        process.kill()
    lines = records(stdout)
    assert [os.path.basename(line["path"]) for line in lines[:-1]] == ["c0.png", "c1.png", "c2.png"] * 2
    assert all("label" in line for line in lines[:-1]) and process.returncode == 0
    stderr = stderr_path.read_text()
    assert "a_fifo.jpg is a FIFO, not an image file: skipped" in stderr
    assert "b_zero.jpg is a character device, not an image file: skipped" in stderr


def test_a_named_fifo_whose_writer_never_writes_is_an_error_and_the_next_image_is_answered(
        device_python, device, images, tmp_path):
    fifo, image = tmp_path / "held.png", tmp_path / "next.png"
    os.mkfifo(fifo)
    Image.fromarray(images[0]).save(image)
    opened, release = threading.Event(), threading.Event()

    def hold_open():
        with open(fifo, "wb"):  # Waits for classify.py to open it for reading, then writes nothing.
            opened.set()
            release.wait(RUN_SECONDS)
    writer = threading.Thread(target=hold_open, daemon=True)
    writer.start()
    stderr_path = tmp_path / "stderr.txt"
    started = time.monotonic()
    process = start(device_python, device, fifo, image, stderr_path=stderr_path)
    try:
        stdout, _ = process.communicate(timeout=RUN_SECONDS - 10)
    finally:
        process.kill()
        release.set()
        writer.join(10)
    lines = records(stdout)
    assert opened.is_set() and {key: lines[0][key] for key in ("path", "error")} == {
        "path": str(fifo), "error": f"the FIFO {fifo} sent nothing for 5 s"}
    assert lines[1]["path"] == str(image) and "label" in lines[1] and process.returncode == 1
    assert time.monotonic() - started < RUN_SECONDS - 10
