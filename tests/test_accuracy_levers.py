"""The accuracy levers on real images: augmentation, repeatability, both int8 quantizers, the per-layer report."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from edge_fashion.converters import quantizers, tflite
from edge_fashion import config as config_module
from edge_fashion.pipeline import data, evaluate, train


@pytest.fixture(scope="module")
def dataset(data_dir):
    return data.load_fashion_mnist(data_dir)


@pytest.fixture(scope="module")
def tiny_model(tiny_build):
    return keras.saving.load_model(tiny_build / "model.keras")


def seed(number: int) -> tf.Tensor:
    return tf.constant([number, 0], dtype=tf.int64)


def test_shift_moves_each_image_by_at_most_the_given_pixels(dataset):
    images = dataset.train_images[:64].astype(np.float32)
    shifted = train.shift(tf.constant(images), 2, seed(1)).numpy()
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2)])
    offsets = [(row, column) for row in range(5) for column in range(5)]
    for original, moved in zip(padded, shifted):
        assert any(np.array_equal(original[row:row + 28, column:column + 28], moved) for row, column in offsets)
    assert not np.array_equal(shifted, images)


def test_flip_mirrors_some_images_and_keeps_the_others(dataset):
    images = dataset.train_images[:64].astype(np.float32)
    flipped = train.flip(tf.constant(images), seed(2)).numpy()
    mirrored = [np.array_equal(after, before[:, ::-1]) for before, after in zip(images, flipped)]
    kept = [np.array_equal(after, before) for before, after in zip(images, flipped)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 54


def test_mixup_blends_images_and_targets_with_the_same_weight(dataset):
    images = tf.constant(dataset.train_images[:32].astype(np.float32))
    targets = tf.constant(train.one_hot(dataset.train_labels[:32]))
    mixed_images, mixed_targets = (value.numpy() for value in train.mixup(images, targets, 0.2, seed(3)))
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1, atol=1e-6)
    assert mixed_images.min() >= 0 and mixed_images.max() <= 255


def test_same_seed_same_model_with_every_lever_on(dataset):
    config = config_module.make_config("fast", epochs=1, train_limit=1000, seed=3, shift_pixels=1, flip=True,
                                       mixup=0.2, label_smoothing=0.1, ema_momentum=0.9, schedule="one-cycle",
                                       input_dropout=0.1, dropout=0.1, batch_norm=True)
    split = train.make_split(config, dataset)
    first, second = (train.train(config, split).model.get_weights() for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_unknown_schedule_and_quantizer_are_refused(tiny_model, dataset):
    with pytest.raises(ValueError, match="schedule"):
        train.make_schedule(config_module.make_config(schedule="step"), 10)
    with pytest.raises(ValueError, match="quantizer"):
        quantizers.to_int8("other", tiny_model, dataset.train_images[:10])


def weight_scale_counts(model_content: bytes) -> list[int]:
    """How many scales each int8 Dense weight matrix has."""
    from ai_edge_litert import interpreter as litert

    details = litert.Interpreter(model_content=model_content).get_tensor_details()
    return sorted(len(detail["quantization_parameters"]["scales"]) for detail in details
                  if detail["name"].endswith("MatMul") and len(detail["shape"]) == 2)


def test_per_channel_gives_each_output_unit_its_own_weight_scale(tiny_model, dataset):
    calibration = dataset.train_images[:100]
    assert weight_scale_counts(tflite.to_int8(tiny_model, calibration, per_channel=True)) == [10, 150, 300]
    assert weight_scale_counts(tflite.to_int8(tiny_model, calibration, per_channel=False)) == [1, 1, 1]


def test_ai_edge_quantizer_gives_an_all_integer_model_like_the_converter(tiny_model, dataset):
    pytest.importorskip("ai_edge_quantizer")
    from edge_fashion.converters import ai_edge

    images = dataset.test_images[:500]
    np.testing.assert_allclose(ai_edge.fold_rescaling(tiny_model).predict(images.astype(np.float32), verbose=0),
                               tiny_model.predict(images.astype(np.float32), verbose=0), atol=1e-5)
    calibration = dataset.train_images[:300]
    content = quantizers.to_int8("ai-edge", tiny_model, calibration, "int8")
    tflite.check_all_integer(content, "int8")
    assert tflite.io_specs(content)[0] | {"shape": None} == {"shape": None, "dtype": "int8", "scale": 1.0, "zero_point": -128}
    ai_edge_raw, _ = evaluate.run_tflite_raw(content, images)
    converter_raw, _ = evaluate.run_tflite_raw(tflite.to_int8(tiny_model, calibration, "uint8"), images)
    # Same calibration images and rounding: nearly the same integers, shifted by the zero points (-128
    # against 0); identical for a 30-epoch model here, a few steps apart for this 2-epoch one.
    difference = np.abs(ai_edge_raw.astype(np.int64) + 128 - converter_raw)
    assert difference.mean() < 0.5 and np.mean(ai_edge_raw.argmax(axis=1) == converter_raw.argmax(axis=1)) >= 0.99
    with pytest.raises(ValueError, match="io-dtype int8"):
        quantizers.to_int8("ai-edge", tiny_model, calibration, "uint8")


def test_build_report_has_the_per_layer_int8_error(tiny_build):
    layers = json.loads((tiny_build / "report.json").read_text())["quantization_layers"]["layers"]
    dense = [layer for layer in layers if layer["op"] == "FULLY_CONNECTED"]
    assert len(dense) == 3 and all(0 < layer["rmse_per_scale"] < 1 for layer in dense)
    assert "int8 error per layer" in (tiny_build / "report.md").read_text()
