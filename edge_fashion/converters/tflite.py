"""Keras model -> float32 TFLite, and -> full-integer int8 TFLite calibrated on representative data."""

import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert

from edge_fashion import quiet

IO_DTYPES = {"uint8": tf.uint8, "int8": tf.int8}
FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def convert_quietly(converter) -> bytes:
    with quiet.hidden_output():
        return converter.convert()


def to_float(model) -> bytes:
    """The model as float32 TFLite: takes raw pixels as float32, gives probabilities."""
    return convert_quietly(tf.lite.TFLiteConverter.from_keras_model(model))


def to_int8(model, representative_images: np.ndarray, io_dtype: str = "uint8", per_channel: bool = True) -> bytes:
    """Every op int8; input and output `io_dtype`; ranges calibrated on `representative_images`.

    `representative_images` is (N, 28, 28) uint8, drawn from the training split. `per_channel`
    gives each output unit of a Dense layer its own weight scale; False shares one per layer.
    """
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io dtype must be one of {', '.join(IO_DTYPES)}, not {io_dtype!r}")
    if len(representative_images) == 0:
        raise ValueError("int8 conversion needs at least one representative image")

    def representative_dataset():
        for image in representative_images:
            yield [image[np.newaxis].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = IO_DTYPES[io_dtype]
    converter.inference_output_type = IO_DTYPES[io_dtype]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel
    return convert_quietly(converter)


def float_tensors(model_content: bytes) -> list[str]:
    """Names of the float tensors other than the model's input and output."""
    interpreter = litert.Interpreter(model_content=model_content)
    boundary = {detail["index"] for detail in interpreter.get_input_details() + interpreter.get_output_details()}
    return [
        detail["name"] for detail in interpreter.get_tensor_details()
        if detail["index"] not in boundary and detail["dtype"] in FLOAT_DTYPES
    ]


def check_all_integer(model_content: bytes, io_dtype: str) -> None:
    """Refuse a model with a float tensor inside, or input/output of another type than `io_dtype`."""
    inside = float_tensors(model_content)
    if inside:
        shown = ", ".join(inside[:3]) + (f" and {len(inside) - 3} more" if len(inside) > 3 else "")
        raise ValueError(f"int8 model is not all-integer: float tensors {shown}")
    interpreter = litert.Interpreter(model_content=model_content)
    for detail in interpreter.get_input_details() + interpreter.get_output_details():
        if np.dtype(detail["dtype"]).name != io_dtype:
            raise ValueError(f"int8 model's {detail['name']} is {np.dtype(detail['dtype']).name}, expected {io_dtype}")


def tensor_spec(detail: dict) -> dict:
    """Shape, dtype and quantization of one interpreter tensor, as JSON-ready values."""
    scale, zero_point = detail["quantization"]
    return {
        "shape": [int(size) for size in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def io_specs(model_content: bytes) -> tuple[dict, dict]:
    """The input and output tensor specs of a single-input, single-output model."""
    interpreter = litert.Interpreter(model_content=model_content)
    return tensor_spec(interpreter.get_input_details()[0]), tensor_spec(interpreter.get_output_details()[0])
