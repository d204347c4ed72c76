"""classify.py's options as a user meets them, in the board-like venv: --help, --version, and one
message naming the option for each invalid value, before anything runs."""

import json
import re
import socket
import subprocess

import pytest
from PIL import Image

from test_classify import run


@pytest.fixture(scope="module")
def device(tiny_build):
    return tiny_build / "device"


@pytest.fixture(scope="module")
def photo(tmp_path_factory, data_dir):
    from edge_fashion.pipeline import data

    path = tmp_path_factory.mktemp("photo") / "one.png"
    Image.fromarray(data.load_fashion_mnist(data_dir, download=False).test_images[0]).save(path)
    return path


def test_help_lists_dashed_names_only_and_says_what_makes_a_result_unsure(device_python, device):
    result = run(device_python, device / "classify.py", "--help")
    assert result.returncode == 0
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", result.stdout))
    assert not {option for option in options if "_" in option}, options
    assert {"--top-k", "--save-preprocessed", "--save-frames", "--camera-index", "--self-test", "--token-file",
            "--stale-after", "--version", "--threshold"} <= options
    help_text = " ".join(result.stdout.split())
    assert "A result is unsure" in help_text and "best score is below --threshold" in help_text
    assert "a busy background, or a garment touching three sides of the frame" in help_text


def test_underscored_spellings_are_still_accepted(device_python, device, photo):
    result = run(device_python, device / "classify.py", photo, "--top_k", "2", "--save_preprocessed", str(photo.parent / "seen"), "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout.splitlines()[0])["top_k"]) == 2


def test_version_prints_the_models_sha256_and_the_runtime(device_python, device, tmp_path):
    manifest = json.loads((device / "manifest.json").read_text())
    result = run(device_python, device / "classify.py", "--version")
    assert result.returncode == 0, result.stderr
    model_line, runtime_line = result.stdout.splitlines()
    assert model_line == f"model model_int8.tflite sha256 {manifest['model']['sha256']} (as manifest.json says)"
    assert runtime_line.startswith("runtime tflite_runtime 2.14.0 (Python 3.")
    numpy_version = run(device_python, device / "classify.py", "--version", "--runtime", "numpy").stdout
    assert "runtime numpy engine (numpy 1.24" in numpy_version
    damaged = tmp_path / "bundle"
    damaged.mkdir()
    for name in ("manifest.json", "labels.txt"):
        (damaged / name).write_bytes((device / name).read_bytes())
    (damaged / "model_int8.tflite").write_bytes((device / "model_int8.tflite").read_bytes()[:-10])
    result = run(device_python, device / "classify.py", "--version", "--model", damaged / "model_int8.tflite")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "sha256 does not match" in result.stderr


def invalid_values(photo, tmp_path, busy_port: int) -> list:
    """(option named, arguments): each an invalid value of one option, with what else it needs."""
    folder = photo.parent
    serving = ["--serve", "--replay", str(folder)]
    short_token = tmp_path / "short-token"
    short_token.write_text("short\n")
    return [
        ("--top-k", [photo, "--top-k", "0"]), ("--top-k", [photo, "--top-k", "two"]),
        ("--threads", [photo, "--threads", "0"]),
        ("--threshold", [photo, "--threshold", "1.5"]), ("--threshold", [photo, "--threshold", "-0.1"]),
        ("--threshold", [photo, "--threshold", "nan"]), ("--fps", ["--replay", folder, "--fps", "-1"]),
        ("--fps", ["--replay", folder, "--fps", "inf"]), ("--count", ["--replay", folder, "--count", "-1"]),
        ("--interval", ["--camera", "--interval", "-2"]), ("--camera-index", ["--camera", "--camera-index", "-1"]),
        ("--roi", [photo, "--roi", "1,2,3"]), ("--runtime", [photo, "--runtime", "bogus"]),
        ("--model", [photo, "--model", tmp_path / "none.tflite"]), ("--labels", [photo, "--labels", tmp_path / "none.txt"]),
        ("--watch", ["--watch", tmp_path / "missing"]), ("--replay", ["--replay", tmp_path / "missing"]),
        ("--replay", ["--replay", photo]), ("--save-preprocessed", [photo, "--save-preprocessed", photo]),
        ("--save-frames", ["--watch", folder, "--save-frames", photo]),
        ("--port", [*serving, "--port", "70000"]), ("--stale-after", [*serving, "--stale-after", "0"]),
        ("--captures", [*serving, "--captures", photo]), ("--token", [*serving, "--token", "short"]),
        ("--token-file", [*serving, "--token-file", tmp_path / "no-token"]),
        ("--token-file", [*serving, "--token-file", short_token]),
        ("--host", [*serving, "--host", "203.0.113.7", "--port", "0"]),
        ("--port", [*serving, "--port", str(busy_port)]),
    ]


def test_every_invalid_value_gets_its_own_message_naming_its_option(device_python, device, photo, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = invalid_values(photo, tmp_path, busy.getsockname()[1])
        messages = []
        for option, arguments in cases:
            result = run(device_python, device / "classify.py", *arguments, timeout=60)
            last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
            assert result.returncode == 2 and result.stdout == "", (option, arguments, result.stderr)
            assert last.startswith("classify.py: error: ") and option in last, (option, last)
            messages.append(last)
    assert len(set(messages)) == len(messages), messages  # Each its own words.


def test_a_missing_folder_is_called_missing(device_python, device, tmp_path):
    for option in ("--watch", "--replay"):
        result = run(device_python, device / "classify.py", option, tmp_path / "nowhere", timeout=60)
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1] == f"classify.py: error: {option} {tmp_path / 'nowhere'}: the folder is missing"
    result = subprocess.run([str(device_python), str(device / "classify.py"), "--replay", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no image files in this folder" in result.stderr  # There, but empty.
