"""Capture on the board and back: `classify.py --save-frames` (watched files and camera frames, in the
board-like venv) and `edge-fashion pull` from a folder target and through a real OpenSSH server."""

import io
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from PIL import Image

import sshd
from conftest import REPO, run_cli
from edge_fashion.deploy import pull as pull_module
from edge_fashion.deploy import transport

PHOTOS = REPO / "tests" / "photos"
CLASSIFY = REPO / "device" / "classify.py"
PICAMERA2_STAND_IN = (REPO / "tests" / "picamera2_stand_in.py").read_text()  # YUV420 lores frames of frame.jpg.


def photo(folder: str, number: int = 0) -> pathlib.Path:
    return sorted((PHOTOS / folder).iterdir())[number]


def saved_files(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_save_frames_keeps_watched_files_as_they_came(tiny_build, device_python, tmp_path):
    incoming, kept = tmp_path / "incoming", tmp_path / "kept"
    incoming.mkdir()
    process = subprocess.Popen([str(device_python), str(CLASSIFY), "--model", str(tiny_build / "device" / "model_int8.tflite"),
                                "--watch", str(incoming), "--count", "2", "--interval", "0.1", "--json",
                                "--save-frames", str(kept)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr.readline().startswith("watching ")
        for folder in ("Coat", "Sneaker"):
            shutil.copy(photo(folder), incoming / photo(folder).name)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    answers = {pathlib.Path(record["path"]).name: record["label"] for record in map(json.loads, stdout.splitlines())
               if "label" in record}
    expected = {f"{label.replace('/', '-')}/{name}": (incoming / name).read_bytes() for name, label in answers.items()}
    assert len(expected) == 2 and saved_files(kept) == expected


def test_save_frames_keeps_camera_frames_as_jpeg(tiny_build, device_python, tmp_path):
    stand_in = tmp_path / "camera" / "picamera2"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text(PICAMERA2_STAND_IN)
    shutil.copy(photo("Trouser"), stand_in / "frame.jpg")
    kept = tmp_path / "kept"
    result = subprocess.run([str(device_python), str(CLASSIFY), "--model", str(tiny_build / "device" / "model_int8.tflite"),
                             "--camera", "--count", "2", "--json", "--save-frames", str(kept)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(stand_in.parent)})
    assert result.returncode == 0, result.stderr
    labels = [record["label"] for record in map(json.loads, result.stdout.splitlines()) if "label" in record]
    files = sorted(path for path in kept.rglob("*") if path.is_file())
    assert len(files) == 2 and [path.parent.name for path in files] == [label.replace("/", "-") for label in labels]
    assert all(path.suffix == ".jpg" and path.name.startswith("camera-") for path in files)
    frame = Image.open(io.BytesIO(files[0].read_bytes()))
    assert frame.format == "JPEG" and frame.size == (320, 240) and not list(kept.rglob(".*"))  # The lores stream.


def test_save_frames_needs_the_camera_or_a_watched_folder_outside_it(device_python, tmp_path):
    for args, expected in ((["photo.jpg"], "use it with --camera or --watch"),
                           (["--watch", str(tmp_path)], "must lie outside the --watch folder")):
        result = subprocess.run([str(device_python), str(CLASSIFY), *args, "--save-frames", str(tmp_path / "kept")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def board_frames(tmp_path) -> pathlib.Path:
    """A board's --save-frames folder: two frames under Coat/, one under T-shirt-top/, a partial one."""
    frames = tmp_path / "board" / "frames"
    for folder, label in (("Coat", "Coat"), ("Dress", "Coat"), ("Shirt", "T-shirt-top")):
        (frames / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo(folder), frames / label / photo(folder).name)
    (frames / "Coat" / ".camera-1.jpg.partial-99").write_bytes(b"half a frame")
    return frames


def check_pull(target: transport.Target, board_frames: pathlib.Path, local: pathlib.Path) -> None:
    expected = {name: data for name, data in saved_files(board_frames).items() if "partial" not in name}
    first = pull_module.pull(target, local)
    assert saved_files(local) == expected and len(first.pulled) == 3
    again = pull_module.pull(target, local)
    assert again.pulled == () and again.already_here == 3
    # The user moves a wrong frame to its right class, and a different file takes one frame's name:
    # neither is pulled over or again.
    coat = sorted(name for name in expected if name.startswith("Coat/"))
    (local / "Dress").mkdir()
    (local / coat[1]).rename(local / "Dress" / pathlib.PurePath(coat[1]).name)
    (local / coat[0]).write_bytes(b"my own file")
    third = pull_module.pull(target, local)
    renamed = pathlib.PurePath(coat[0])
    assert third.pulled == (f"Coat/{renamed.stem}-2{renamed.suffix}",)
    assert (local / coat[0]).read_bytes() == b"my own file"
    assert (local / third.pulled[0]).read_bytes() == expected[coat[0]]
    assert not (local / coat[1]).exists() and not list(local.rglob(".*"))


def test_pull_from_a_folder_target(board_frames, tmp_path):
    check_pull(transport.parse_target(str(board_frames)), board_frames, tmp_path / "mine")
    result = run_cli("pull", str(tmp_path / "nowhere"), str(tmp_path / "mine"), expect_exit=1)
    assert result.output.count("\n") == 1 and "no such folder" in result.output


def test_pull_over_ssh(board_frames, tmp_path, ssh_server):
    server = ssh_server
    target = transport.parse_target(f"{sshd.HOST_ALIAS}:{board_frames}", ssh_config=server.config)
    check_pull(target, board_frames, tmp_path / "mine")
    result = run_cli("pull", "--ssh-config", str(server.config), f"{sshd.HOST_ALIAS}:{board_frames}",
                     str(tmp_path / "fresh"))
    assert "3 frames pulled into" in result.output
    assert saved_files(tmp_path / "fresh") == {name: data for name, data in saved_files(board_frames).items()
                                               if "partial" not in name}
