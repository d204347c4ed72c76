"""The stock photo set shipped with the toolkit (edge_fashion/stock_photos): what it holds, its
provenance and licence, its loading through the board's preprocessing, how its classes are balanced
in training, and a build with it against one without."""

import csv
import json

import numpy as np
import pytest

from conftest import REPO, run_cli
from edge_fashion import config
from edge_fashion.pipeline import augment, data, photos, train
from fashion_board import preprocess

STOCK = REPO / "edge_fashion" / "stock_photos"
SPLIT = REPO / "benchmarks" / "stock_photos_split.csv"
MAX_MEGABYTES = 15  # The set's size in the wheel at most.


def listed() -> list[dict]:
    with open(STOCK / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def stock() -> photos.Photos:
    return photos.read_stock(lambda line: None)


def test_labels_csv_lists_every_photo_with_its_class_and_source():
    rows, files = listed(), sorted(path for path in STOCK.glob("*/*.jpg"))
    assert sorted(row["file"] for row in rows) == [path.relative_to(STOCK).as_posix() for path in files]
    for row in rows:
        assert photos.folder_name(data.LABELS[int(row["label"])]) == row["file"].split("/")[0]
        assert row["class"] == data.LABELS[int(row["label"])]
        assert row["source_path"].startswith(("alexeygrigorev/clothing-dataset-small:train/",
                                              "alexeygrigorev/clothing-dataset:images/"))
    assert sum(path.stat().st_size for path in files) < MAX_MEGABYTES * 1e6


def test_the_licence_and_the_readme_say_where_the_photos_come_from():
    assert "CC0 1.0 Universal" in (STOCK / "LICENSE").read_text()
    readme = (STOCK / "README.md").read_text()
    assert "clothing-dataset-small" in readme and "CC0" in readme and f"{len(listed()):,}" in readme
    assert "../shared" not in readme and "/work/" not in readme


def test_the_reporting_part_is_never_shipped():
    with open(SPLIT, newline="") as handle:
        split = list(csv.DictReader(handle))
    shipped = {row["file"].split("/")[-1] for row in listed()}
    reporting = {row["file"].split("/")[-1] for row in split if row["part"] == "reporting"}
    choosing = {row["file"].split("/")[-1] for row in split if row["part"] == "choosing"}
    assert shipped == choosing and not shipped & reporting and len(reporting) > 0.19 * len(split)


def test_loading_gives_a_frame_for_nearly_every_photo_in_its_class(stock):
    rows = listed()
    assert len(stock) == len(rows) and stock.frames.shape == (len(rows), 28, 28) and stock.frames.dtype == np.uint8
    assert np.bincount(stock.labels, minlength=10).tolist() == np.bincount(
        [int(row["label"]) for row in rows], minlength=10).tolist()
    assert stock.framed.mean() > 0.99 and stock.frames[stock.framed].reshape(-1, 784).max(axis=1).min() == 255
    assert np.bincount(stock.labels, minlength=10)[data.LABELS.index("Bag")] == 0


def test_the_stock_frames_are_the_boards_own_frames_of_the_photos(stock):
    """One implementation: the frames that train are what classify.py's make_frame gives the files,
    objects step included (a pair of shoes framed by one of them)."""
    chosen = np.random.default_rng(3).choice(len(stock), 12, replace=False)
    for index in chosen:
        frame = preprocess.make_frame(preprocess.decode(stock.paths[index], True), None)
        assert np.array_equal(stock.frames[index], frame.pixels), stock.paths[index]


def test_in_training_every_class_gets_its_places_and_bag_gets_stand_ins(stock):
    """The stock set is three parts T-shirts and trousers; drawn as it falls the shoes would hardly
    be seen and Bag not at all."""
    split = train.Split(np.zeros((20000, 28, 28), np.uint8), np.repeat(np.arange(10, dtype=np.uint8), 2000),
                        np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8),
                        photo_images=stock.frames[stock.framed], photo_labels=stock.labels[stock.framed])
    default = config.BuildConfig()
    shares = train.class_shares(default, split)
    assert shares.min() >= default.photo_balance / 10 and np.isclose(shares.sum(), 1)
    indices, kinds = train.epoch_draws(config.make_config(batch_size=128), split, np.random.default_rng(1))
    places = (kinds != augment.DATASET).sum()
    drawn = np.concatenate([split.train_labels, split.photo_labels])[indices[kinds != augment.DATASET]]
    for label in range(10):
        assert abs(np.mean(drawn == label) - shares[label]) < 0.02, data.LABELS[label]
    bags = drawn == data.LABELS.index("Bag")
    assert (kinds[kinds != augment.DATASET][bags] == augment.STAND_IN).all() and bags.sum() > 0.04 * places


def test_a_build_trains_on_the_stock_photos_unless_its_preset_says_not(tmp_path, data_dir):
    short = ["--epochs", "1", "--train-limit", "1000", "--seed", "5", "--data-dir", str(data_dir)]
    result = run_cli("build", *short, "--out", str(tmp_path / "stock"))
    report = json.loads((tmp_path / "stock" / "report.json").read_text())
    training = report["photos"]["training"]
    assert training["stock"] == len(listed()) and training["photo_share"] == config.BuildConfig().photo_share
    assert report["calibration"]["photos"] == round(report["calibration"]["fashion_mnist"] / 3)  # 25% of 300.
    assert "held_out" not in report["photos"] and f"Trained with {len(listed()):,} stock photos" in (
        tmp_path / "stock" / "report.md").read_text()
    assert "images a second" in result.output
    run_cli("build", *short, "--preset", "fashion-mnist", "--out", str(tmp_path / "alone"))
    alone = json.loads((tmp_path / "alone" / "report.json").read_text())
    assert "photos" not in alone and alone["calibration"]["photos"] == 0
    # The same seed and images, so the photos are what differs.
    assert report["training"]["images"] == alone["training"]["images"]
