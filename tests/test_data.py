"""Reading and validating Zalando's IDX files, and the stratified split."""

import gzip
import pathlib
import shutil

import numpy as np
import pytest

from edge_fashion.pipeline import data


def write_idx(path: pathlib.Path, magic: int, array: np.ndarray, count: int | None = None) -> None:
    """An IDX gz file: magic, item count (default: the real one), dimensions, then the bytes."""
    header = [magic, len(array) if count is None else count, *array.shape[1:]]
    with gzip.open(path, "wb") as handle:
        handle.write(np.array(header, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes())


def make_folder(folder: pathlib.Path, images: int = 20, labels: int = 20) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        prefix = "t10k" if split == "test" else "train"
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", data.IMAGE_MAGIC, rng.integers(0, 256, (images, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", data.LABEL_MAGIC, np.arange(labels) % 10)
    return folder


def test_real_files_read_and_validate(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    assert dataset.train_images.shape == (60000, 28, 28) and dataset.train_images.dtype == np.uint8
    assert dataset.test_images.shape == (10000, 28, 28)
    assert np.bincount(dataset.train_labels).tolist() == [6000] * 10
    assert np.bincount(dataset.test_labels).tolist() == [1000] * 10
    assert dataset.source == data_dir


def test_small_good_folder_reads(tmp_path):
    dataset = data.load_fashion_mnist(make_folder(tmp_path / "ok"))
    assert dataset.train_images.shape == (20, 28, 28) and dataset.test_labels.tolist() == list(range(10)) * 2


def test_truncated_file_named_in_error(tmp_path):
    folder = make_folder(tmp_path / "cut")
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz: header says 20 items .* truncated"):
        data.load_fashion_mnist(folder)


def test_truncated_gzip_stream(tmp_path):
    folder = make_folder(tmp_path / "gz")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: not a readable gzip file"):
        data.load_fashion_mnist(folder)


def test_wrong_magic(tmp_path):
    folder = make_folder(tmp_path / "magic")
    write_idx(folder / "train-labels-idx1-ubyte.gz", data.IMAGE_MAGIC, np.zeros(20))
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz: wrong magic number 0x00000803"):
        data.load_fashion_mnist(folder)


def test_image_label_count_mismatch(tmp_path):
    folder = make_folder(tmp_path / "mismatch")
    write_idx(folder / "train-labels-idx1-ubyte.gz", data.LABEL_MAGIC, np.zeros(19))
    with pytest.raises(data.DataError, match="20 images but train-labels-idx1-ubyte.gz has 19 labels"):
        data.load_fashion_mnist(folder)


def test_label_out_of_range(tmp_path):
    folder = make_folder(tmp_path / "range")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", data.LABEL_MAGIC, np.full(20, 11))
    with pytest.raises(data.DataError, match="label 11 out of range 0-9"):
        data.load_fashion_mnist(folder)


def test_missing_directory_says_how_to_get_the_data(tmp_path):
    with pytest.raises(data.DataError, match="missing .*apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path / "nowhere")


def test_environment_variable_is_searched(tmp_path, monkeypatch, data_dir):
    shutil.copytree(data_dir, tmp_path / "copy")
    monkeypatch.setenv("EDGE_FASHION_DATA", str(tmp_path / "copy"))
    assert data.find_data_dir() == tmp_path / "copy"


def test_split_is_stratified_disjoint_and_seeded(data_dir):
    labels = data.load_fashion_mnist(data_dir).train_labels
    train, validation = data.split_train_validation(labels, 5000, seed=3)
    assert len(train) == 55000 and len(validation) == 5000
    assert not set(train) & set(validation)
    assert np.bincount(labels[validation]).tolist() == [500] * 10
    again, _ = data.split_train_validation(labels, 5000, seed=3)
    other, _ = data.split_train_validation(labels, 5000, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
