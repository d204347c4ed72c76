"""The seed's MLP: 28x28 raw pixels -> Rescaling(1/255) -> 784 -> 300 -> 150 -> 10."""

import math

import keras
import numpy as np

from edge_fashion import config as config_module
from edge_fashion.pipeline import data

HIDDEN_UNITS = (300, 150)
# 784*300+300 + 300*150+150 + 150*10+10: the Dense layers; Rescaling and Dropout have no weights.
TRAINABLE_PARAMETERS = 282_160
STATISTICS_BATCH = 4096  # Images a step when batch norm's statistics are measured: bounds the memory only.


def build_model(config: config_module.BuildConfig) -> keras.Model:
    """The MLP with Rescaling inside, so the int8 model takes raw uint8 pixels (scale 1, zero point 0).

    With `config.batch_norm` each hidden Dense is followed by BatchNormalization (before its ReLU);
    `fold_batch_norm` turns such a model back into the plain MLP after training.
    """
    inputs = keras.Input(shape=(28, 28), name="pixels")
    hidden = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    if config.input_dropout > 0:
        hidden = keras.layers.Dropout(config.input_dropout, name="dropout_input")(hidden)
    for units in HIDDEN_UNITS:
        if config.batch_norm:
            hidden = keras.layers.Dense(units, name=f"dense_{units}")(hidden)
            hidden = keras.layers.BatchNormalization(name=f"batch_norm_{units}")(hidden)
            hidden = keras.layers.ReLU(name=f"relu_{units}")(hidden)
        else:
            hidden = keras.layers.Dense(units, activation="relu", name=f"dense_{units}")(hidden)
        if config.dropout > 0:
            hidden = keras.layers.Dropout(config.dropout, name=f"dropout_{units}")(hidden)
    outputs = keras.layers.Dense(len(data.LABELS), activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name="fashion_mlp")


def fold_batch_norm(trained: keras.Model, images: np.ndarray) -> keras.Model:
    """The plain MLP computing what `trained` (built with batch_norm) computes, with exact statistics.

    BatchNormalization after Dense is y = gamma * (x W + b - mean) / sqrt(var + eps) + beta, which is
    again a Dense layer: W' = W * s and b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps).
    The mean and variance are those of `images` ((N, 28, 28) uint8, the training images), not the
    layer's running averages, which a short build leaves far from the truth.
    """
    plain = build_model(config_module.BuildConfig(dropout=0.0, input_dropout=0.0, batch_norm=False))
    for units in HIDDEN_UNITS:
        dense = trained.get_layer(f"dense_{units}")
        mean, variance = output_statistics(keras.Model(trained.input, dense.output), images)
        norm = trained.get_layer(f"batch_norm_{units}")
        gamma, beta = norm.get_weights()[:2]
        norm.set_weights([gamma, beta, mean, variance])  # Later layers see the exact statistics too.
        scale = gamma / np.sqrt(variance + norm.epsilon)
        kernel, bias = dense.get_weights()
        plain.get_layer(f"dense_{units}").set_weights([kernel * scale, (bias - mean) * scale + beta])
    plain.get_layer("probabilities").set_weights(trained.get_layer("probabilities").get_weights())
    return plain


def output_statistics(network: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance), each (units,) float32, of `network`'s outputs over (N, 28, 28) uint8 images.

    Summed in float64 a batch at a time, so the memory is one batch's outputs, not all N images as
    float32 pixels and outputs at once (700 MB more at the peak of a default build).
    """
    total = squares = 0.0
    for start in range(0, len(images), STATISTICS_BATCH):
        pixels = images[start:start + STATISTICS_BATCH].astype(np.float32)
        outputs = np.asarray(network(pixels, training=False), dtype=np.float64)  # (batch, units)
        total, squares = total + outputs.sum(axis=0), squares + np.square(outputs).sum(axis=0)
    mean = total / len(images)
    return mean.astype(np.float32), np.maximum(squares / len(images) - np.square(mean), 0).astype(np.float32)


def count_trainable(model: keras.Model) -> int:
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)
