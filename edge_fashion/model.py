"""The seed's MLP: 28x28 raw pixels -> Rescaling(1/255) -> 784 -> 300 -> 150 -> 10."""

import math

import keras

from edge_fashion import config as config_module
from edge_fashion import data

HIDDEN_UNITS = (300, 150)
# 784*300+300 + 300*150+150 + 150*10+10: the Dense layers; Rescaling and Dropout have no weights.
TRAINABLE_PARAMETERS = 282_160


def build_model(config: config_module.BuildConfig) -> keras.Model:
    """The MLP with Rescaling inside, so the int8 model takes raw uint8 pixels (scale 1, zero point 0)."""
    inputs = keras.Input(shape=(28, 28), name="pixels")
    hidden = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    for units in HIDDEN_UNITS:
        hidden = keras.layers.Dense(units, activation="relu", name=f"dense_{units}")(hidden)
        if config.dropout > 0:
            hidden = keras.layers.Dropout(config.dropout, name=f"dropout_{units}")(hidden)
    outputs = keras.layers.Dense(len(data.LABELS), activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name="fashion_mlp")


def count_trainable(model: keras.Model) -> int:
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)
