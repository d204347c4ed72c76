"""device/classify.py as a board runs it: a subprocess in a venv holding only tflite-runtime 2.14,
numpy 1.24 and Pillow 9.4 (tests/device_venv.py), on a real tiny build's bundle and real test images."""

import ast
import io
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import types
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from edge_fashion.pipeline import data, evaluate
from fashion_board import quantization, record

CLASSIFY = REPO / "device" / "classify.py"
DEVICE_CODE = [CLASSIFY, *sorted((REPO / "device" / "fashion_board").glob("*.py"))]
ALLOWED_IMPORTS = {"numpy", "PIL", "tflite_runtime", "ai_edge_litert", "tensorflow", "picamera2", "cv2"}
ERROR_EXIT, MODEL_EXIT = 1, 2
CLASSIFIED, EITHER = "classified", "classified or an error"


def load_board():
    """The board package device/fashion_board, for its pure numpy functions, imported by name."""
    from fashion_board import preprocess, runtimes, stream

    return types.SimpleNamespace(preprocess=preprocess, runtimes=runtimes, stream=stream)


def run(python, script, *args, stdin=b"", env=None, timeout=120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(python), str(script), *map(str, args)], input=stdin, capture_output=True,
                            timeout=timeout, env=env, check=False)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in result.stderr, result.stderr
    return result


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def by_path(stdout: str) -> dict:
    return {record["path"]: record for record in records(stdout) if "path" in record}


def save_png(folder, images) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{index:05d}.png" for index in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path)
    return paths


def camera_frame(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A test image as a phone or Pi camera would see the garment: dark on a light, unevenly lit
    background, enlarged, off centre, noisy, warm light; (480, 640) RGB."""
    side = int(28 * rng.uniform(6, 12))
    garment = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC), np.float32)
    reflectance = np.full((480, 640), 0.9, np.float32)
    top, left = rng.integers(0, 480 - side + 1), rng.integers(0, 640 - side + 1)
    reflectance[top:top + side, left:left + side] -= 0.8 * garment / 255
    rows, columns = np.mgrid[0:480, 0:640] / 640.0
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 0.75 + 0.25 * (np.cos(angle) * columns + np.sin(angle) * rows)
    vignetting = 1 - 0.25 * ((rows - 0.375) ** 2 + (columns - 0.5) ** 2)
    gray = 210 * gradient * vignetting * reflectance + rng.normal(0, 5, reflectance.shape)
    return Image.fromarray(np.clip(gray[..., None] * np.array([1.0, 0.97, 0.9]), 0, 255).astype(np.uint8))


BORDER = 16  # Black around pictures of several garments.


def enlarged(image: np.ndarray, scale: float) -> np.ndarray:
    """A 28x28 test image scaled up (bicubic), trimmed to its lit columns."""
    side = round(28 * scale)
    big = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
    columns = np.flatnonzero(big.max(axis=0) > 16)
    return big[:, columns[0]: columns[-1] + 1]


def side_by_side(first: np.ndarray, second: np.ndarray, gap: int) -> np.ndarray:
    """Two enlarged images on black, `gap` px apart (0: touching), bottoms aligned, with a black border."""
    height = max(first.shape[0], second.shape[0])
    canvas = np.zeros((height + 2 * BORDER, first.shape[1] + gap + second.shape[1] + 2 * BORDER), np.uint8)
    for image, left in ((first, BORDER), (second, BORDER + first.shape[1] + gap)):
        top = BORDER + height - image.shape[0]
        region = canvas[top: top + image.shape[0], left: left + image.shape[1]]
        np.maximum(region, image, out=region)
    return canvas


@pytest.fixture(scope="session")
def classify():
    return load_board()


@pytest.fixture(scope="session")
def test_set(data_dir):
    dataset = data.load_fashion_mnist(data_dir, download=False)
    return dataset.test_images, dataset.test_labels


@pytest.fixture(scope="session")
def device(tiny_build):
    return tiny_build / "device"


@pytest.fixture
def bundle(device, tmp_path):
    """A copy of the bundle that a test may damage."""
    return shutil.copytree(device, tmp_path / "bundle")


def host_predictions(model_path, images) -> np.ndarray:
    """The host evaluator's classes for 28x28 images, turned as the board turns them."""
    from fashion_board import preprocess

    return evaluate.run_tflite(model_path.read_bytes(), preprocess.canonical_orientation(images)).argmax(axis=1)


# Pure parts, in this process.


@pytest.mark.parametrize("source", DEVICE_CODE, ids=lambda path: path.relative_to(REPO / "device").as_posix())
def test_imports_nothing_outside_stdlib_numpy_pillow_and_interpreters(source):
    tree = ast.parse(source.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("fashion_board" if node.level else node.module)  # Relative: the board package itself.
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            assert isinstance(node.args[0], ast.Constant), "import_module takes a literal name, to be checked here"
            names.add(node.args[0].value)
    allowed = sys.stdlib_module_names | ALLOWED_IMPORTS | {"fashion_board"}
    outside = {name for name in names if name.split(".")[0] not in allowed}
    assert not outside and "edge_fashion" not in source.read_text()


def test_the_board_package_as_the_host_imports_it_loads_nothing_of_the_host():
    """The host imports fashion_board by name; importing every one of its modules loads no edge_fashion,
    TensorFlow, Keras or click (the host's side), only what a board has."""
    modules = sorted(path.stem for path in (REPO / "device" / "fashion_board").glob("*.py") if path.stem != "__init__")
    script = (f"import sys, importlib; [importlib.import_module('fashion_board.' + name) for name in {modules!r}]; "
              "print(sys.modules['fashion_board'].__file__); "
              "print(sorted({name.split('.')[0] for name in sys.modules} & {'edge_fashion', 'tensorflow', 'keras', 'click'}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60,
                            cwd="/")
    location, host_modules = result.stdout.split("\n")[:2]
    assert pathlib.Path(location) == REPO / "device" / "fashion_board" / "__init__.py"
    assert host_modules == "[]", host_modules


def test_dataset_form_images_are_only_turned_to_their_canonical_orientation(classify, data_dir):
    images, _ = data.read_split(data_dir, "test_images", "test_labels")  # As the files hold them, not yet turned.
    turned = classify.preprocess.canonical_orientation(images)
    changed = [index for index, image in enumerate(images)
               if not np.array_equal(classify.preprocess.to_dataset_form(image), turned[index])]
    assert changed == []
    kept = np.all(turned == images, axis=(1, 2))
    assert np.all(kept | np.all(turned == images[:, :, ::-1], axis=(1, 2)))  # Each as it is or mirrored, bit for bit.
    assert 0.05 < 1 - kept.mean() < 0.5  # Some turn, most (all shoes but a few sandals) keep their way.


@pytest.mark.parametrize("dtype, scale, zero_point", [(np.uint8, 1 / 256, 0), (np.int8, 1 / 256, -128),
                                                      (np.int8, 1.0, -128), (np.int16, 0.001, 3)])
def test_quantize_inverts_dequantize_and_clips(classify, dtype, scale, zero_point):
    limits = np.iinfo(dtype)
    quantized = np.arange(limits.min, limits.max + 1, max(1, (int(limits.max) - limits.min) // 300)).astype(dtype)
    real = quantization.dequantize(quantized, scale, zero_point)
    assert np.array_equal(quantization.quantize(real, dtype, scale, zero_point), quantized)
    beyond = np.array([real.min() - 10, real.max() + 10], np.float32)
    assert quantization.quantize(beyond, dtype, scale, zero_point).tolist() == [limits.min, limits.max]
    assert quantization.dequantize(np.array([0.25], np.float32), 0.0, 0).tolist() == [0.25]


def test_top_predictions_and_latency_summary(classify):
    scores = np.array([0.1, 0.6, 0.3], np.float32)
    best = classify.runtimes.top_predictions(scores, ["a", "b", "c"], 2)
    assert [(item.label, item.index) for item in best] == [("b", 1), ("c", 2)]
    runtime = classify.runtimes.Runtime("tflite_runtime", "2.14.0", object)
    summary = classify.stream.latency_summary([1.0, 2.0, 3.0, 10.0], 1, 0.5, runtime)
    assert summary["count"] == 4 and summary["errors"] == 1 and summary["fps"] == 8.0
    assert summary["ms_mean"] == 4.0 and summary["ms_p50"] == 2.5
    assert classify.stream.latency_summary([], 2, 0.5, runtime)["ms_p95"] is None


# The script on the board's software.


def test_predictions_equal_the_host_evaluators_int8_predictions(device_python, device, test_set, tmp_path):
    images, _ = test_set
    paths = save_png(tmp_path / "test", images[:500])
    result = run(device_python, device / "classify.py", tmp_path / "test", "--json")
    assert result.returncode == 0, result.stderr
    found = by_path(result.stdout)
    predicted = np.array([found[str(path)]["index"] for path in paths])
    expected = host_predictions(device / "model_int8.tflite", images[:500])
    assert predicted.tolist() == expected.tolist()
    assert records(result.stdout)[-1]["summary"]["runtime"] == "tflite_runtime 2.14.0"


def test_mirrored_images_give_the_same_answers_and_pairs_of_shoes_their_class(device_python, device, test_set,
                                                                             tmp_path):
    """A shoe facing right is the shoe facing left (the same frame, so the same answer); a pair of
    shoes side by side, apart or touching, is classified by one of them and counted as two objects."""
    images, labels = test_set
    chosen = np.concatenate([np.flatnonzero(labels == label)[:20] for label in range(10)])
    plain = save_png(tmp_path / "plain", images[chosen])
    mirrored = save_png(tmp_path / "mirrored", images[chosen, :, ::-1])
    shoes = np.concatenate([np.flatnonzero(labels == label)[:40].reshape(20, 2) for label in (5, 7, 9)])
    pairs = {gap: save_png(tmp_path / f"pairs-{gap}", [side_by_side(enlarged(images[first], 4), enlarged(images[second], 4),
                                                                    gap) for first, second in shoes]) for gap in (8, 0)}
    result = run(device_python, device / "classify.py", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    found = by_path(result.stdout)
    answers = {name: np.array([found[str(path)]["index"] for path in paths])
               for name, paths in {"plain": plain, "mirrored": mirrored, **pairs}.items()}
    assert answers["mirrored"].tolist() == answers["plain"].tolist()
    assert answers["plain"].tolist() == host_predictions(device / "model_int8.tflite", images[chosen]).tolist()
    for gap in (8, 0):
        objects = [found[str(path)]["objects"] for path in pairs[gap]]
        right = float(np.mean(answers[gap] == labels[shoes[:, 0]]))
        print(f"pairs {gap} px apart: {right:.1%} right, two objects seen in {objects.count(2)} of {len(objects)}")
        assert objects.count(2) >= 0.9 * len(objects) and right >= 0.75


def test_camera_like_frames_are_mostly_right(device_python, device, test_set, tmp_path, record_property):
    images, labels = test_set
    count = 200
    rng = np.random.default_rng(20261125)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(count):
        camera_frame(images[index], rng).save(frames / f"{index:05d}.jpg", quality=85)
    result = run(device_python, device / "classify.py", frames, "--json")
    assert result.returncode == 0, result.stderr
    found = by_path(result.stdout)
    predicted = np.array([found[str(frames / f"{index:05d}.jpg")]["index"] for index in range(count)])
    camera_accuracy = float(np.mean(predicted == labels[:count]))
    clean_accuracy = float(np.mean(host_predictions(device / "model_int8.tflite", images[:count]) == labels[:count]))
    record_property("camera_like_accuracy", camera_accuracy)
    record_property("clean_accuracy", clean_accuracy)
    print(f"camera-like accuracy {camera_accuracy:.3f}, clean {clean_accuracy:.3f} on the same {count} images")
    assert camera_accuracy >= clean_accuracy - 0.15


def exif_rotated_jpeg(path, frame: Image.Image) -> None:
    """The frame stored turned on its side, with EXIF orientation 6 saying how to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    frame.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif)


def png_bomb(path, width: int, height: int, data_rows: int) -> None:
    """A grayscale PNG of width x height whose first data_rows rows are stored: tiny on disk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(data_rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def write_odd_inputs(folder, images) -> dict:
    """Odd and bad image files; for each, CLASSIFIED, EITHER, or words its error line must hold."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    photo = camera_frame(images[1], rng)
    photo.save(folder / "photo.jpg", quality=90)
    exif_rotated_jpeg(folder / "rotated.jpg", photo)
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    png = io.BytesIO()
    Image.fromarray(images[2]).save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "truncated.jpg").write_bytes((folder / "photo.jpg").read_bytes()[:3000])
    png_bomb(folder / "bomb_header.png", 30000, 30000, 1)  # 900 megapixels declared.
    png_bomb(folder / "bomb_zeros.png", 8000, 8000, 8000)  # 64 megapixels of real zeros in ~70 kB.
    Image.fromarray(images[3].astype(np.uint16) * 257).save(folder / "sixteen_bit.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    rgba = np.dstack([images[4]] * 3 + [np.where(images[4] > 0, 255, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    frames = [Image.fromarray(images[5]), Image.fromarray(images[6])]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.new("L", (1, 1), 200).save(folder / "one_pixel.png")
    Image.fromarray(rng.integers(0, 256, (1, 10000), dtype=np.uint8)).save(folder / "line.png")
    Image.new("RGB", (640, 480), (255, 255, 255)).save(folder / "white.jpg")
    return {
        "photo.jpg": CLASSIFIED, "rotated.jpg": CLASSIFIED, "cmyk.jpg": CLASSIFIED, "palette.png": CLASSIFIED,
        "rgba.png": CLASSIFIED, "sixteen_bit.png": CLASSIFIED, "animated.gif": CLASSIFIED,
        "zero.png": "cannot identify", "text.jpg": "cannot identify", "truncated.png": "truncated",
        "truncated.jpg": "truncated", "bomb_header.png": "decompression bomb", "bomb_zeros.png": "decompression bomb",
        "one_pixel.png": "no garment", "line.png": EITHER, "white.jpg": "no garment",
    }


def test_bad_inputs_fail_alone_and_odd_ones_are_converted(device_python, device, test_set, tmp_path):
    images, _ = test_set
    folder = tmp_path / "odd"
    expected = write_odd_inputs(folder, images)
    result = run(device_python, device / "classify.py", folder, "--json")
    found = {pathlib.PurePath(path).name: record for path, record in by_path(result.stdout).items()}
    assert set(found) == set(expected) and result.returncode == ERROR_EXIT
    for name, expectation in expected.items():
        if expectation == CLASSIFIED:
            assert "label" in found[name], (name, found[name])
        elif expectation != EITHER:
            assert expectation in found[name].get("error", ""), (name, found[name])
    host = host_predictions(device / "model_int8.tflite", images[[3, 5]])
    assert [found["sixteen_bit.png"]["index"], found["animated.gif"]["index"]] == host.tolist()
    assert found["rotated.jpg"]["index"] == found["photo.jpg"]["index"]
    summary = records(result.stdout)[-1]["summary"]
    assert summary["errors"] == sum("error" in record for record in found.values()) >= 8


def test_one_image_on_stdin_and_text_output(device_python, device, test_set):
    images, _ = test_set
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, "PNG")
    result = run(device_python, device / "classify.py", "-", "--top-k", "3", stdin=png.getvalue())
    assert result.returncode == 0, result.stderr
    line, summary = result.stdout.splitlines()
    path, classes, milliseconds = line.split("\t")
    expected = data.LABELS[host_predictions(device / "model_int8.tflite", images[:1])[0]]
    assert path == "-" and classes.startswith(expected + " ") and classes.count(",") == 2
    assert milliseconds.endswith(" ms") and summary.startswith("summary: 1 classified, 0 errors")


def test_json_schema_threshold_and_saved_inputs(device_python, device, test_set, tmp_path):
    images, _ = test_set
    paths = save_png(tmp_path / "in", images[:4])
    seen = tmp_path / "seen"
    result = run(device_python, device / "classify.py", *paths, "--json", "--top-k", "2", "--threshold", "1",
                 "--save-preprocessed", seen)
    lines = records(result.stdout)
    assert [set(line) for line in lines[:-1]] == [set(record.RESULT_KEYS)] * 4
    for line in lines[:-1]:
        record.validate(line)
    assert all(line["unsure"] and len(line["top_k"]) == 2 and line["objects"] == 1 for line in lines[:-1])  # Scores < 1.
    assert [line["frame"] for line in lines[:-1]] == [1, 2, 3, 4] and [line["path"] for line in lines[:-1]] == list(map(str, paths))
    assert set(lines[-1]["summary"]) == {"count", "errors", "ms_mean", "ms_p50", "ms_p95", "fps", "runtime"}
    saved = sorted(seen.iterdir())
    turned = load_board().preprocess.canonical_orientation(images[:4])
    assert [np.asarray(Image.open(path)).tolist() for path in saved] == turned.tolist()


def test_roi_crops_the_frame_first(device_python, device, test_set, tmp_path):
    images, _ = test_set
    canvas = np.zeros((100, 200), np.uint8)
    canvas[50:78, 150:178] = images[7]
    canvas[10:38, 10:38] = images[8]
    Image.fromarray(canvas).save(tmp_path / "two.png")
    seen = tmp_path / "seen"
    result = run(device_python, device / "classify.py", tmp_path / "two.png", "--roi", "150,50,28,28",
                 "--save-preprocessed", seen)
    assert result.returncode == 0, result.stderr
    turned = load_board().preprocess.canonical_orientation(images[7])
    assert np.array_equal(np.asarray(Image.open(next(seen.iterdir()))), turned)
    outside = run(device_python, device / "classify.py", tmp_path / "two.png", "--roi", "150,50,100,28")
    assert outside.returncode == ERROR_EXIT and "outside" in outside.stdout


@pytest.mark.parametrize("damage", ["missing", "truncated", "one byte changed"])
def test_damaged_model_is_a_one_line_error(device_python, bundle, damage):
    model = bundle / "model_int8.tflite"
    content = model.read_bytes()
    if damage == "missing":
        model.unlink()
    elif damage == "truncated":
        model.write_bytes(content[: len(content) // 3])
    else:
        model.write_bytes(content[:1000] + bytes([content[1000] ^ 1]) + content[1001:])
    for args in ([bundle / "README.md"], ["--self-test"]):
        result = run(device_python, bundle / "classify.py", *args)
        assert result.returncode == MODEL_EXIT and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("classify.py: error: ")
        assert ("No such file" if damage == "missing" else "sha256 does not match") in result.stderr


def test_model_without_manifest_is_probed_and_warned_about(device_python, bundle, test_set, tmp_path):
    images, _ = test_set
    (bundle / "manifest.json").unlink()
    paths = save_png(tmp_path / "in", images[:2])
    result = run(device_python, bundle / "classify.py", *paths)
    assert result.returncode == 0 and "sha256 is not checked" in result.stderr
    model = bundle / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:-5000])
    result = run(device_python, bundle / "classify.py", *paths)
    assert result.returncode == MODEL_EXIT and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("classify.py: error: ")


@pytest.mark.parametrize("runtime", ["tflite_runtime", "ai_edge_litert", "tensorflow"])
def test_self_test_passes_on_every_runtime(device_python, device, runtime):
    python = device_python if runtime == "tflite_runtime" else sys.executable
    result = run(python, device / "classify.py", "--self-test", "--json", "--runtime", runtime, timeout=300)
    report = records(result.stdout)[-1]["self_test"]
    assert result.returncode == 0 and report["passed"], report
    assert report["runtime"].startswith(runtime) and report["cases"] >= 5


def test_self_test_fails_when_the_board_disagrees(device_python, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    case = manifest["self_test"]["cases"][0]
    case["top1"] = (case["top1"] + 1) % 10
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run(device_python, bundle / "classify.py", "--self-test")
    assert result.returncode == ERROR_EXIT and result.stdout.splitlines()[-1].startswith("FAIL: ")


def int8_io_model(tiny_build, images) -> bytes:
    import keras

    from edge_fashion.converters import tflite

    return tflite.to_int8(keras.models.load_model(tiny_build / "model.keras"), images, io_dtype="int8")


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_float_and_int8_io_models(device_python, tiny_build, test_set, tmp_path, kind):
    images, _ = test_set
    model = tmp_path / f"model_{kind}.tflite"
    if kind == "float32":
        shutil.copy(tiny_build / "model_float.tflite", model)
    else:
        model.write_bytes(int8_io_model(tiny_build, images[:200]))
    paths = save_png(tmp_path / "in", images[:100])
    result = run(device_python, tiny_build / "device" / "classify.py", tmp_path / "in", "--json",
                 "--model", model, "--labels", tiny_build / "labels.txt")
    assert result.returncode == 0, result.stderr
    found = by_path(result.stdout)
    assert [found[str(path)]["index"] for path in paths] == host_predictions(model, images[:100]).tolist()


def test_model_with_a_fixed_batch_size_runs_one_image_at_a_time(device_python, device, test_set, tmp_path):
    import keras

    from edge_fashion.converters import tflite

    images, _ = test_set
    layers = [keras.Input((28, 28), batch_size=1), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
              keras.layers.Dense(10, activation="softmax")]
    model = tmp_path / "fixed.tflite"
    model.write_bytes(tflite.to_float(keras.Sequential(layers)))
    paths = save_png(tmp_path / "in", images[:5])
    result = run(device_python, device / "classify.py", *paths, "--json", "--model", model,
                 "--labels", device / "labels.txt")
    assert result.returncode == 0, result.stderr
    interpreter = evaluate.make_interpreter(model.read_bytes())
    interpreter.allocate_tensors()
    expected = []
    for image in images[:5]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None].astype(np.float32))
        interpreter.invoke()
        expected.append(int(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).argmax()))
    assert [record["index"] for record in records(result.stdout)[:-1]] == expected


def test_watch_classifies_new_files_once_complete(device_python, device, test_set, tmp_path):
    images, _ = test_set
    folder = tmp_path / "incoming"
    save_png(folder, images[:1])  # Already there: skipped.
    process = subprocess.Popen([str(device_python), str(device / "classify.py"), "--watch", str(folder),
                                "--count", "2", "--interval", "0.1", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr.readline().startswith("watching ")
        for index in (1, 2):
            Image.fromarray(images[index]).save(folder / f"new{index}.png")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert [pathlib.PurePath(record["path"]).name for record in records(stdout)[:-1]] == ["new1.png", "new2.png"]


def test_camera_without_picamera2_or_opencv_names_what_to_install(device_python, device, tmp_path):
    result = run(device_python, device / "classify.py", "--camera", "--count", "1")
    assert result.returncode == MODEL_EXIT
    assert "python3-picamera2" in result.stderr and "opencv" in result.stderr
    broken = tmp_path / "broken" / "picamera2"  # As Debian's Picamera2 fails under a pip-installed numpy 2.
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")\n')
    env = {**os.environ, "PYTHONPATH": str(broken.parent)}
    result = run(device_python, device / "classify.py", "--camera", env=env)
    assert result.returncode == MODEL_EXIT and "keep Debian's numpy" in result.stderr


PICAMERA2_STAND_IN = (REPO / "tests" / "picamera2_stand_in.py").read_text()  # YUV420 lores frames of frame.png.


def test_camera_loop_and_ctrl_c(device_python, device, test_set, tmp_path):
    images, _ = test_set
    stand_in = tmp_path / "camera" / "picamera2"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text(PICAMERA2_STAND_IN)
    camera_frame(images[1], np.random.default_rng(1)).save(stand_in / "frame.png")
    env = {**os.environ, "PYTHONPATH": str(stand_in.parent)}
    result = run(device_python, device / "classify.py", "--camera", "--count", "3", "--json", env=env)
    assert result.returncode == 0, result.stderr
    lines = records(result.stdout)
    assert [line["path"] for line in lines[:-1]] == ["camera:1", "camera:2", "camera:3"]
    assert lines[-1]["summary"]["count"] == 3
    process = subprocess.Popen([str(device_python), str(device / "classify.py"), "--camera", "--interval", "0.05"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert first.startswith("camera:1\t") and process.returncode == 0, stderr
    assert rest.splitlines()[-1].startswith("summary: ") and "Traceback" not in stderr
