"""Camera augmentation (edge_fashion/pipeline/augment.py) on real Fashion-MNIST images."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from edge_fashion import config as config_module
from edge_fashion.pipeline import augment, data, train
from fashion_board import preprocess

SHOES = (5, 7, 9)


@pytest.fixture(scope="module")
def batch(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    chosen = data.stratified_indices(dataset.train_labels, 200, 3)
    return dataset.train_images[chosen].astype(np.float32), dataset.train_labels[chosen].astype(np.int64)


def seed(number: int) -> tf.Tensor:
    return tf.constant([number, 0], dtype=tf.int64)


def camera(images, labels, number=1, **overrides):
    config = config_module.make_config(**{"augment_camera": 1.0, **overrides})
    return augment.camera(tf.constant(images), tf.constant(labels), config, seed(number)).numpy()


def test_shape_dtype_range_and_full_brightness(batch):
    images, labels = batch
    changed = camera(images, labels)
    assert changed.shape == images.shape and changed.dtype == np.float32
    assert changed.min() >= 0 and changed.max() <= 255.001
    # The board stretches every frame to full brightness; so does the augmentation.
    assert np.allclose(changed.reshape(len(changed), -1).max(axis=1), 255, atol=0.01)
    assert not np.allclose(changed, images)


def test_same_seed_same_images_other_seed_other_images(batch):
    images, labels = batch
    assert np.array_equal(camera(images, labels, 5), camera(images, labels, 5))
    assert not np.array_equal(camera(images, labels, 5), camera(images, labels, 6))


def test_off_changes_nothing_and_the_share_is_respected(batch):
    images, labels = batch
    config = config_module.make_config(augment_camera=0.0)
    assert np.array_equal(augment.camera(tf.constant(images), tf.constant(labels), config, seed(1)), images)
    half = camera(images, labels, augment_camera=0.5)
    untouched = np.mean([np.array_equal(before, after) for before, after in zip(images, half)])
    assert 0.3 < untouched < 0.7


def mirrored_share(images, labels, classes, flip_classes) -> float:
    """Share of the images of `classes` that the geometry alone mirrored (no zoom, shift or turn)."""
    config = config_module.make_config(augment_camera=1.0, augment_zoom=1.0, augment_shift=0.0, augment_aspect=1.0,
                                       augment_rotation=0.0, augment_flip_classes=flip_classes)
    warped = augment.geometry(tf.constant(images), tf.constant(labels), config, seed(2)).numpy()
    members = np.isin(labels, classes)
    mirrored = [np.allclose(after, before[:, ::-1], atol=1e-3) and not np.allclose(after, before, atol=1e-3)
                for before, after in zip(images[members], warped[members])]
    return float(np.mean(mirrored))


def test_flips_only_the_allowed_classes(batch):
    images, labels = batch
    # None by default: training turns every image the board's one way after the augmentation.
    assert config_module.BuildConfig().augment_flip_classes == ()
    clothes = (0, 1, 2, 3, 4, 6, 8)
    assert mirrored_share(images, labels, SHOES, clothes) == 0
    assert 0.25 < mirrored_share(images, labels, clothes, clothes) < 0.75
    assert 0.25 < mirrored_share(images, labels, SHOES, tuple(range(10))) < 0.75


def test_training_batches_are_in_the_boards_orientation(batch):
    images, labels = batch
    split = train.Split(images.astype(np.uint8), labels.astype(np.uint8), images[:10].astype(np.uint8),
                        labels[:10].astype(np.uint8))
    config = dataclasses.replace(config_module.make_config(augment_camera=1.0, augment_flip_classes=tuple(range(10))),
                                 batch_size=200)
    pixels = next(iter(train.training_dataset(config, split)))[0].numpy()
    assert np.array_equal(pixels, np.round(pixels))  # Whole grey levels, as the board's frames.
    frames = pixels.astype(np.uint8)
    assert np.array_equal(preprocess.canonical_orientation(frames), frames)
    assert np.array_equal(preprocess.canonical_orientation(frames[:, :, ::-1]), frames)


def widths(images: np.ndarray) -> np.ndarray:
    """Columns that hold any of each image's garment."""
    return (images > 40).any(axis=1).sum(axis=1)


def test_aspect_widens_and_narrows_and_is_off_at_one(batch):
    images, labels = batch
    still = dict(augment_camera=1.0, augment_zoom=1.0, augment_shift=0.0, augment_rotation=0.0, augment_flip_classes=())
    off = config_module.make_config(**still, augment_aspect=1.0)
    assert np.allclose(augment.geometry(tf.constant(images), tf.constant(labels), off, seed(3)).numpy(), images, atol=1e-3)
    config = config_module.make_config(**still, augment_aspect=1.6)
    warped = augment.geometry(tf.constant(images), tf.constant(labels), config, seed(3)).numpy()
    narrow = widths(images) < 20  # Trousers, dresses, shoes seen from the side: room to widen.
    change = widths(warped)[narrow] - widths(images)[narrow]
    assert (change >= 3).mean() > 0.2 and (change <= -3).mean() > 0.2
    # Height is left alone: rows with garment are the same in number, give or take an edge pixel
    # (a faint row of thin straps may fade when narrowed).
    rows = lambda values: (values > 40).any(axis=2).sum(axis=1)  # noqa: E731
    assert (np.abs(rows(warped) - rows(images)) <= 1).mean() > 0.95


def test_photos_have_their_own_share_and_stand_ins_are_all_changed(batch):
    images, labels = batch
    kinds = np.where(np.arange(len(labels)) % 2 == 0, augment.PHOTO, augment.DATASET).astype(np.int32)
    config = config_module.make_config(augment_camera=0.0, augment_photos=1.0)
    changed = augment.camera(tf.constant(images), tf.constant(labels), config, seed(4), tf.constant(kinds)).numpy()
    same = np.array([np.array_equal(before, after) for before, after in zip(images, changed)])
    assert same[1::2].all() and not same[0::2].any()
    # Without photos in the batch, augment_photos alone changes nothing.
    alone = augment.camera(tf.constant(images), tf.constant(labels), config, seed(4)).numpy()
    assert np.array_equal(alone, images)
    # A data set image standing in for a photo of a class without photos is always made camera-like.
    none = config_module.make_config(augment_camera=0.0, augment_photos=0.0)
    stand_ins = np.full(len(labels), augment.STAND_IN, np.int32)
    changed = augment.camera(tf.constant(images), tf.constant(labels), none, seed(4), tf.constant(stand_ins)).numpy()
    assert not any(np.array_equal(before, after) for before, after in zip(images, changed))


def test_training_pipeline_uses_it_and_stays_repeatable(batch):
    images, labels = batch
    split = train.Split(images.astype(np.uint8), labels.astype(np.uint8), images[:10].astype(np.uint8),
                        labels[:10].astype(np.uint8))
    config = dataclasses.replace(config_module.make_config(augment_camera=1.0), batch_size=50)

    def first_batch():
        return next(iter(train.training_dataset(config, split)))[0].numpy()
    assert np.array_equal(first_batch(), first_batch())
    plain = dataclasses.replace(config, augment_camera=0.0)
    assert not np.array_equal(first_batch(), next(iter(train.training_dataset(plain, split)))[0].numpy())


def test_camera_augmentation_is_the_default_and_plain_turns_it_off(tmp_path, data_dir):
    from conftest import run_cli

    assert config_module.make_config().augment_camera > 0 and config_module.make_config().augment_aspect > 1
    plain = config_module.make_config("plain")
    assert plain.augment_camera == 0 and plain.augment_aspect == 1 and plain.augment_photos == 0
    out = tmp_path / "build"
    run_cli("train", "--preset", "plain", "--epochs", "1", "--train-limit", "500", "--data-dir", str(data_dir),
            "--out", str(out))
    assert (out / "trained" / "model.keras").is_file()  # What `train` leaves for `convert`.
    assert json.loads((out / "trained" / "train.json").read_text())["config"]["augment_camera"] == 0
