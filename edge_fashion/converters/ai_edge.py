"""Keras model -> full-integer int8 TFLite through ai-edge-quantizer, the converter's successor in LiteRT.

ai-edge-quantizer works on a float TFLite model. Its static int8 recipe leaves an elementwise
multiply in float, so the Rescaling(1/255) layer is folded into the first Dense layer's weights
first: the model then takes raw pixels and every op it quantizes is a FullyConnected.
Install it with `pip install ai-edge-quantizer` (0.10 installs beside TensorFlow 2.21 and ai-edge-litert 2.3).
"""

import math

import keras
import numpy as np

from edge_fashion import quiet
from edge_fashion.converters import tflite

GRANULARITY = {True: "CHANNELWISE", False: "TENSORWISE"}


class StaticFlatten(keras.layers.Layer):
    """Flatten to the constant shape (-1, features): one RESHAPE in TFLite.

    Keras' Flatten reads the batch size at run time (SHAPE, STRIDED_SLICE, PACK), and the quantizer
    leaves that SHAPE op a float copy of the input.
    """

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, math.prod(inputs.shape[1:])))


def fold_rescaling(model: keras.Model) -> keras.Model:
    """The same function without Rescaling or Dropout: the scale moves into the next Dense layer's weights.

    Works for a chain of layers (each layer takes the previous one's output), as the MLP is.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name=model.layers[0].name)
    hidden, scale = inputs, 1.0
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Rescaling):
            if float(np.max(np.abs(layer.offset))) != 0.0:
                raise ValueError(f"cannot fold {layer.name}: it has an offset")
            scale *= float(layer.scale)
            continue
        if isinstance(layer, keras.layers.Dropout):
            continue
        if isinstance(layer, keras.layers.Flatten):
            hidden = StaticFlatten(name=layer.name)(hidden)
            continue
        clone = layer.__class__.from_config(layer.get_config())
        hidden = clone(hidden)
        weights = layer.get_weights()
        if weights and scale != 1.0:
            if not isinstance(layer, keras.layers.Dense):
                raise ValueError(f"cannot fold the rescaling into {layer.name} ({layer.__class__.__name__})")
            weights[0], scale = weights[0] * scale, 1.0
        clone.set_weights(weights)
    return keras.Model(inputs, hidden, name=model.name)


def recipe(per_channel: bool) -> list[dict]:
    """Static int8: asymmetric per-tensor activations, symmetric weights per channel or per tensor."""
    return [{
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "activation_tensor_config": {"num_bits": 8, "symmetric": False, "granularity": "TENSORWISE",
                                         "dtype": "INT"},
            "weight_tensor_config": {"num_bits": 8, "symmetric": True, "granularity": GRANULARITY[per_channel],
                                     "dtype": "INT"},
            "compute_precision": "INTEGER",
            "explicit_dequantize": False,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }]


def to_int8(model: keras.Model, representative_images: np.ndarray, io_dtype: str = "int8",
            per_channel: bool = True) -> bytes:
    """Every op int8, calibrated on `representative_images` ((N, 28, 28) uint8 training images).

    The input and output are int8, the quantizer's only choice (raw pixels: scale 1, zero point
    -128); the device quantizes with the tensor's own parameters, so it needs no change.
    """
    if io_dtype != "int8":
        raise ValueError(f"the ai-edge quantizer gives int8 input and output, not {io_dtype}: use --io-dtype int8")
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.utils import tfl_interpreter_utils

    if len(representative_images) == 0:
        raise ValueError("int8 quantization needs at least one representative image")
    float_content = tflite.to_float(fold_rescaling(model))
    engine = quantizer.Quantizer(bytearray(float_content), recipe(per_channel))
    input_name = signature_input_name(float_content)
    # One batch of all the images: the calibrator averages each batch's min and max over the batches,
    # so image by image it would learn a typical image's range and clip the large activations.
    samples = [{input_name: representative_images.astype(np.float32)}]
    with quiet.hidden_output():
        calibration = engine.calibrate({tfl_interpreter_utils.DEFAULT_SIGNATURE_KEY: samples}, num_threads=1)
        result = engine.quantize(calibration, enable_progress_report=False)
    return bytes(result.quantized_model)


def signature_input_name(model_content: bytes) -> str:
    from ai_edge_litert import interpreter as litert

    runner = litert.Interpreter(model_content=model_content).get_signature_runner()
    return next(iter(runner.get_input_details()))
