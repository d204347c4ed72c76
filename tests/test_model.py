"""The seed's MLP, exactly."""

import keras
import numpy as np

from edge_fashion import config
from edge_fashion.pipeline import model


def test_shape_and_parameter_count():
    network = model.build_model(config.BuildConfig(dropout=0.2, batch_norm=False))
    assert model.count_trainable(network) == model.TRAINABLE_PARAMETERS == 282_160
    dense = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [300, 150, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    assert network.input_shape == (None, 28, 28) and network.output_shape == (None, 10)


def test_rescaling_inside_takes_raw_pixels():
    network = model.build_model(config.BuildConfig(dropout=0.0, batch_norm=False))
    rescale = network.get_layer("rescale")
    assert isinstance(rescale, keras.layers.Rescaling) and abs(rescale.scale - 1 / 255) < 1e-9
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in network.layers)


def test_batch_norm_folds_into_the_plain_mlp_with_the_same_outputs():
    trained = model.build_model(config.BuildConfig(batch_norm=True, input_dropout=0.1))
    rng = np.random.default_rng(0)
    for units in model.HIDDEN_UNITS:
        norm = trained.get_layer(f"batch_norm_{units}")
        gamma, beta, mean, variance = (weight.shape for weight in norm.get_weights())
        norm.set_weights([rng.uniform(0.5, 2, gamma), rng.normal(size=beta), rng.normal(size=mean),
                          rng.uniform(0.5, 2, variance)])
    images = rng.integers(0, 256, (500, 28, 28), dtype=np.uint8)
    plain = model.fold_batch_norm(trained, images)
    pixels = images[:64].astype(np.float32)
    assert [layer.name for layer in plain.layers] == ["pixels", "rescale", "flatten", "dense_300", "dense_150",
                                                      "probabilities"]
    assert model.count_trainable(plain) == model.TRAINABLE_PARAMETERS
    expected, folded = trained.predict(pixels, verbose=0), plain.predict(pixels, verbose=0)
    assert np.abs(expected - folded).max() < 1e-5
    assert (expected.argmax(axis=1) == folded.argmax(axis=1)).all()
    # The folded statistics are the images' own: before its ReLU, each first-layer unit has mean beta
    # and standard deviation gamma over the images.
    kernel, bias = plain.get_layer("dense_300").get_weights()
    first = (images.reshape(len(images), -1) / 255) @ kernel + bias
    gamma, beta = trained.get_layer("batch_norm_300").get_weights()[:2]
    assert np.allclose(first.mean(axis=0), beta, atol=1e-3) and np.allclose(first.std(axis=0), gamma, rtol=1e-2)
