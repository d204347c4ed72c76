"""`classify.py --watch` loses no frame: files written slowly, replaced under one name, or vanishing,
with the board-like venv and real test images."""

import io
import json
import os
import pathlib
import subprocess
import time

import pytest
from PIL import Image

from edge_fashion.pipeline import data

CHUNK_PAUSE_SECONDS = 0.3  # At this pause between a writer's chunks, the old watcher lost every file.


@pytest.fixture(scope="module")
def jpegs(data_dir) -> list:
    """Six real test images as JPEG bytes, enlarged as a camera's files are."""
    images = data.load_fashion_mnist(data_dir, download=False).test_images[:6]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).resize((224, 224)).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    return encoded


@pytest.fixture(scope="module")
def expected(device_python, tiny_build, jpegs, tmp_path_factory) -> list:
    """The label a plain classify.py run gives each of the JPEGs."""
    folder = tmp_path_factory.mktemp("plain")
    for index, jpeg in enumerate(jpegs):
        (folder / f"{index}.jpg").write_bytes(jpeg)
    completed = subprocess.run([str(device_python), str(tiny_build / "device" / "classify.py"), str(folder), "--json"],
                               capture_output=True, text=True, timeout=120, check=True)
    lines = [json.loads(line) for line in completed.stdout.splitlines()][:-1]
    return [line["label"] for line in sorted(lines, key=lambda line: line["path"])]


class Watcher:
    def __init__(self, python, bundle, folder: pathlib.Path, count: int):
        self.process = subprocess.Popen([str(python), str(bundle / "classify.py"), "--watch", str(folder),
                                         "--count", str(count), "--json"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr.readline().startswith("watching ")

    def finish(self) -> list:
        """The JSON lines (summary last), once --count frames came."""
        try:
            stdout, stderr = self.process.communicate(timeout=60)
        finally:
            self.process.kill()
        assert "Traceback" not in stderr, stderr
        return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def watch(device_python, tiny_build, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder, lambda count: Watcher(device_python, tiny_build / "device", folder, count)


def write_in_chunks(path: pathlib.Path, content: bytes, chunks: int = 3) -> None:
    size = -(-len(content) // chunks)
    with open(path, "wb") as output:
        for start in range(0, len(content), size):
            output.write(content[start:start + size])
            output.flush()
            time.sleep(CHUNK_PAUSE_SECONDS)


def test_files_written_in_slow_chunks_are_read_once_complete(watch, jpegs, expected):
    folder, start = watch
    watcher = start(3)
    for index in range(3):
        write_in_chunks(folder / f"slow{index}.jpg", jpegs[index])
    lines = watcher.finish()
    assert [pathlib.Path(line["path"]).name for line in lines[:-1]] == ["slow0.jpg", "slow1.jpg", "slow2.jpg"]
    assert [line["label"] for line in lines[:-1]] == expected[:3] and lines[-1]["summary"]["errors"] == 0


def test_a_name_replaced_again_and_again_is_read_each_time(watch, jpegs, expected):
    folder, start = watch
    latest = folder / "latest.jpg"
    latest.write_bytes(jpegs[5])  # There before the start: skipped until it changes.
    watcher = start(5)
    for index in range(5):
        if index % 2:  # As camera tools do: a new file renamed over the old one ...
            (folder / ".latest.tmp").write_bytes(jpegs[index])
            os.replace(folder / ".latest.tmp", latest)
        else:  # ... or the same file written again in place.
            latest.write_bytes(jpegs[index])
        time.sleep(0.6)
        os.utime(latest)  # Touched, same content: not a new frame.
        time.sleep(0.4)
    lines = watcher.finish()
    assert [line["label"] for line in lines[:-1]] == expected[:5]
    assert {pathlib.Path(line["path"]).name for line in lines[:-1]} == {"latest.jpg"}


def test_files_that_vanish_are_survived(watch, jpegs, expected):
    folder, start = watch
    watcher = start(3)
    for index in range(3):
        (folder / f"gone{index}.jpg").write_bytes(jpegs[index][:500])  # Half written, then removed.
        (folder / f"gone{index}.jpg").unlink()
    (folder / "broken.jpg").write_bytes(jpegs[0][:800])  # Never finished: an error after a while.
    (folder / "kept.jpg").write_bytes(jpegs[3])
    time.sleep(0.5)
    (folder / "kept.jpg").unlink()
    (folder / "gone0.jpg").write_bytes(jpegs[4])  # A vanished name used again counts as new.
    lines = watcher.finish()
    by_name = {pathlib.Path(line["path"]).name: line for line in lines[:-1]}
    assert by_name["kept.jpg"]["label"] == expected[3] and by_name["gone0.jpg"]["label"] == expected[4]
    assert "not a whole image" in by_name["broken.jpg"]["error"] and len(lines) == 4
