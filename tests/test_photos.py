"""Real photos (tests/photos: 36 phone photos, 4 per class): the host's frames are the board's,
`evaluate --photos` against a hand count by the board's own classify.py, a short `build --photos`,
and what a badly laid-out folder gets told."""

import collections
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, TINY_BUILD_ARGS, run_cli
from edge_fashion import config
from edge_fashion.pipeline import augment, data, photo_report, photos, train

PHOTOS = REPO / "tests" / "photos"
CLASSIFY = REPO / "device" / "classify.py"
PHOTO_COUNT = 36


def classify_json(device_python, *args) -> list[dict]:
    """The board's classify.py in the board-like venv: its JSON lines, the summary left out."""
    result = subprocess.run([str(device_python), str(CLASSIFY), "--json", *map(str, args)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return [record for record in map(json.loads, result.stdout.splitlines()) if "path" in record]


@pytest.fixture(scope="module")
def test_photos() -> photos.Photos:
    return photos.read_photos([PHOTOS], lambda line: None)


def test_the_test_photos_are_small_and_real(test_photos):
    assert sum(path.stat().st_size for path in PHOTOS.rglob("*")) < 2_000_000
    assert len(test_photos) == PHOTO_COUNT and test_photos.frames.shape == (PHOTO_COUNT, 28, 28)
    assert np.bincount(test_photos.labels, minlength=10).tolist() == [4, 4, 4, 4, 4, 4, 4, 4, 0, 4]
    assert test_photos.framed.all() and all(frame.max() > 0 for frame in test_photos.frames)


def test_host_frames_are_the_boards_byte_for_byte(test_photos, tiny_build, device_python, tmp_path):
    saved = tmp_path / "preprocessed"
    records = classify_json(device_python, "--model", tiny_build / "device" / "model_int8.tflite",
                            "--save-preprocessed", saved, PHOTOS)
    assert len(records) == PHOTO_COUNT and not [record for record in records if "error" in record]
    board_frames = {path.stem.split("_", 1)[1]: np.asarray(Image.open(path)) for path in saved.glob("*.png")}
    assert len(board_frames) == PHOTO_COUNT
    for path, frame in zip(test_photos.paths, test_photos.frames):
        assert board_frames[path.stem].tobytes() == frame.tobytes(), path


def hand_count(device_python, model: pathlib.Path, labels: pathlib.Path) -> collections.Counter:
    """Right answers per class, counted from classify.py's own lines, one class folder at a time."""
    right = collections.Counter()
    for folder in sorted(PHOTOS.iterdir()):
        if folder.is_dir():
            for record in classify_json(device_python, "--model", model, "--labels", labels, folder):
                right[folder.name] += record["label"].replace("/", "-") == folder.name
    return right


def test_evaluate_photos_agrees_with_a_hand_count(tiny_build, device_python, tmp_path, data_dir):
    out = shutil.copytree(tiny_build, tmp_path / "build")
    result = run_cli("evaluate", "--out", str(out), "--data-dir", str(data_dir), "--photos", str(PHOTOS))
    report = json.loads((out / "report.json").read_text())
    section = report["photos"]["evaluated"]
    for kind, model in (("int8", "model_int8.tflite"), ("float", "model_float.tflite")):
        right = hand_count(device_python, out / model, out / "labels.txt")
        figures = section[kind]
        assert figures["count"] == PHOTO_COUNT and figures["correct"] == sum(right.values())
        assert figures["accuracy"] == pytest.approx(sum(right.values()) / PHOTO_COUNT)
        for index, label in enumerate(data.LABELS):
            expected = right[photos.folder_name(label)]
            assert figures["per_class"][index]["correct"] == expected, (kind, label)
    assert section["int8"]["per_class"][8] == {"count": 0, "correct": 0, "accuracy": None}  # No photos of Bag.
    assert f"int8 {100 * section['int8']['accuracy']:.1f}% ({section['int8']['correct']} of 36)" in result.output
    sheet = Image.open(out / "photos_evaluated.png")
    assert sheet.size[0] > 600 and sheet.size[1] > 9 * photo_report.THUMBNAIL
    markdown = (out / "report.md").read_text()
    assert "## Real photos" in markdown and "![evaluated](photos_evaluated.png)" in markdown
    assert "| all | 36 |" in markdown


def test_build_with_photos_trains_on_them_and_reports_the_held_out_ones(tmp_path, data_dir):
    # A second folder in another case, with two classes: --photos is repeatable, names match in any case.
    second = tmp_path / "more"
    for name in ("Sneaker", "Dress"):
        shutil.copytree(PHOTOS / name, second / name.upper())
    out = tmp_path / "build"
    result = run_cli("build", *TINY_BUILD_ARGS, "--train-limit", "1000", "--data-dir", str(data_dir),
                     "--out", str(out), "--photos", str(PHOTOS), "--photos", str(second), "--photo-share", "0.5")
    report = json.loads((out / "report.json").read_text())
    training, held_out = report["photos"]["training"], report["photos"]["held_out"]
    assert training["train"] + training["held_out"] == PHOTO_COUNT + 8 and training["stock"] == 0
    assert training["photo_share"] == 0.5 and training["folders"] == [str(PHOTOS), str(second)]
    counts = [entry["count"] for entry in held_out["int8"]["per_class"]]
    assert held_out["photos"] == training["held_out"] == sum(counts) and counts[8] == 0
    assert all(count >= 1 for index, count in enumerate(counts) if index != 8)
    calibration = report["calibration"]
    assert calibration["photos"] >= 1 and calibration["fashion_mnist"] + calibration["photos"] == 300
    assert report["gate"]["passed"] and (out / "photos_held_out.png").is_file()
    # Bag has no photos: it still trains from Fashion-MNIST.
    assert report["metrics"]["int8"]["per_class_accuracy"][8] > 0.5
    assert "held-out photos" in result.output and "![held_out](photos_held_out.png)" in (out / "report.md").read_text()


def photo_split(photo_labels) -> train.Split:
    """A split of 1,000 data set images (100 a class) and photos of the given classes."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), 100)
    return train.Split(np.zeros((1000, 28, 28), np.uint8), labels, np.zeros((1, 28, 28), np.uint8),
                       np.zeros(1, np.uint8), photo_images=np.ones((len(photo_labels), 28, 28), np.uint8),
                       photo_labels=np.array(photo_labels, np.uint8))


def test_photos_fill_their_share_of_every_batch_and_a_class_without_photos_gets_stand_ins():
    # 90 T-shirt photos and 10 sneaker photos, none of the other classes.
    split = photo_split([0] * 90 + [7] * 10)
    config_value = config.make_config(batch_size=100, photo_share=0.3, photo_balance=0.5, epochs=2)
    indices, kinds = train.epoch_draws(config_value, split, np.random.default_rng(0))
    assert indices.shape == kinds.shape == (10, 100)
    photo_places = (kinds == augment.PHOTO) | (kinds == augment.STAND_IN)
    assert (photo_places.sum(axis=1) == 30).all()
    # Photos are drawn from the photos only, the other places from the data set, each image once an epoch.
    assert (indices[kinds == augment.PHOTO] >= 1000).all() and (indices[kinds != augment.PHOTO] < 1000).all()
    assert len(np.unique(indices[kinds == augment.DATASET])) == (kinds == augment.DATASET).sum() == 700
    # Half the places evenly over the ten classes, half as the photos fall: T-shirt 0.05 + 0.45,
    # Sneaker 0.05 + 0.05; the eight classes without photos 0.05 each, filled with their own data set images.
    shares = train.class_shares(config_value, split)
    assert np.allclose(shares, [0.5, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.05, 0.05]) and np.isclose(shares.sum(), 1)
    stand_ins = indices[kinds == augment.STAND_IN]
    assert 0.3 < len(stand_ins) / photo_places.sum() < 0.5
    assert not np.isin(split.train_labels[stand_ins], [0, 7]).any()
    drawn = np.concatenate([split.train_labels, split.photo_labels])[indices[kinds == augment.PHOTO]]
    assert 0.1 < np.mean(drawn == 7) / np.mean(drawn == 0) < 0.35  # 0.1 against 0.5 of the places.
    # Seeded: the same draws again; all of them for the build's epochs.
    again, _ = train.epoch_draws(config_value, split, np.random.default_rng(0))
    assert np.array_equal(indices, again) and train.all_draws(config_value, split)[0].shape == (20, 100)


def test_without_photos_every_place_is_the_data_sets():
    split = photo_split([])
    indices, kinds = train.epoch_draws(config.make_config(batch_size=100), split, np.random.default_rng(0))
    assert (kinds == augment.DATASET).all() and sorted(indices.ravel().tolist()) == list(range(1000))


def test_photos_cost_no_epochs_and_the_presets_say_whether_the_stock_set_trains():
    assert config.make_config(photos=(PHOTOS,)).epochs == config.make_config().epochs == 30
    assert config.make_config().stock_photos and config.make_config("fast").stock_photos
    assert not config.make_config("fashion-mnist").stock_photos and not config.make_config("plain").stock_photos


def test_the_split_is_stratified_seeded_and_keeps_a_lone_photo_for_training(test_photos):
    chosen = np.concatenate([np.flatnonzero(test_photos.labels == 0), np.flatnonzero(test_photos.labels == 1)[:1]])
    lone = test_photos.subset(chosen)  # Four T-shirts and one Trouser.
    parts = photos.split(lone, 0.2, 42)
    assert parts.held_out.labels.tolist() == [0] and sorted(parts.train.labels.tolist()) == [0, 0, 0, 1]
    first, again = photos.split(test_photos, 0.5, 7), photos.split(test_photos, 0.5, 7)
    assert first.held_out.paths == again.held_out.paths
    assert np.bincount(first.held_out.labels, minlength=10).tolist() == [2, 2, 2, 2, 2, 2, 2, 2, 0, 2]
    assert not set(first.train.paths) & set(first.held_out.paths)


def test_a_badly_laid_out_folder_gets_one_line_messages_and_the_rest_is_read(tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(PHOTOS / "T-shirt-top", folder / "t-shirt-TOP")  # Any case matches.
    shutil.copytree(PHOTOS / "Coat", folder / "Hat")  # Not a class.
    (folder / "Dress").mkdir()  # Empty.
    (folder / "Coat").mkdir()
    (folder / "Coat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    Image.new("RGB", (200, 150), "white").save(folder / "Coat" / "blank.jpg")  # No garment in it.
    shutil.copy(PHOTOS / "Coat" / sorted((PHOTOS / "Coat").iterdir())[0].name, folder / "stray.jpg")
    (folder / "notes.txt").write_text("not a photo, not a folder: ignored\n")
    messages = []
    read = photos.read_photos([folder], messages.append)
    assert len(read) == 5 and read.framed.tolist() == [False, True, True, True, True]
    assert read.failures[0].startswith("no garment found")
    problems = [message for message in messages if not message.startswith("  ")]
    assert all("\n" not in message for message in messages)
    expected = {"Hat: not a class name": 1, "Dress: no photos in this class folder": 1,
                "broken.jpg: cannot read it": 1, "blank.jpg: no garment found": 1, "stray.jpg: not in a class folder": 1}
    for fragment, count in expected.items():
        assert sum(fragment in message for message in problems) == count, (fragment, problems)
    assert len(problems) == len(expected)


def test_a_folder_without_class_folders_is_a_one_line_error(tmp_path, tiny_build, data_dir):
    (tmp_path / "empty" / "Hats").mkdir(parents=True)
    result = run_cli("evaluate", "--out", str(tiny_build), "--data-dir", str(data_dir),
                     "--photos", str(tmp_path / "empty"), expect_exit=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "no photos in class folders (T-shirt-top, Trouser" in errors[0]
