"""The seed's MLP, exactly."""

import keras

from edge_fashion import config, model


def test_shape_and_parameter_count():
    network = model.build_model(config.BuildConfig(dropout=0.2))
    assert model.count_trainable(network) == model.TRAINABLE_PARAMETERS == 282_160
    dense = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [300, 150, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    assert network.input_shape == (None, 28, 28) and network.output_shape == (None, 10)


def test_rescaling_inside_takes_raw_pixels():
    network = model.build_model(config.BuildConfig(dropout=0.0))
    rescale = network.get_layer("rescale")
    assert isinstance(rescale, keras.layers.Rescaling) and abs(rescale.scale - 1 / 255) < 1e-9
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in network.layers)
