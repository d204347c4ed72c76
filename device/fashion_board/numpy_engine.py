"""The int8 model run with numpy alone, for boards that have no TFLite interpreter (32-bit Arm with
Python 3.12+, ARMv6 boards): the runtime `numpy`, last in runtimes.RUNTIMES.

The weights and quantization parameters come from the .tflite bytes themselves (tflite_reader), and
each op computes what TFLite's builtin kernels compute (numpy_kernels, in fixed_point's arithmetic).
Interpreter offers the part of tflite's Interpreter API that runtimes.Classifier, the self-test
and the benchmarks use, so everything above it runs unchanged. A model with an op the engine
lacks is refused when it loads.
"""

from __future__ import annotations

import numpy as np

from . import numpy_kernels, tflite_reader


class Interpreter:
    """tflite_runtime.interpreter.Interpreter's calls, on numpy; `num_threads` is accepted and ignored."""

    def __init__(self, model_path=None, model_content: bytes | None = None, num_threads=None, **_options):
        if model_content is None:
            with open(model_path, "rb") as handle:
                model_content = handle.read()
        self.model = tflite_reader.read_model(bytes(model_content))
        self.kernels = [numpy_kernels.prepare(self.model, operator) for operator in self.model.operators]
        self.constants = {tensor.index: tensor.data for tensor in self.model.tensors if tensor.data is not None}
        self.input_shapes = {index: tuple(self.model.tensors[index].shape) for index in self.model.inputs}
        self.inputs: dict = {}
        self.values: dict = {}

    # What the model looks like.

    def batch_size(self) -> int:
        shapes = list(self.input_shapes.values())
        return shapes[0][0] if shapes and shapes[0] else 1

    def current_shape(self, index: int) -> tuple:
        """An input's shape as resized; a computed tensor's as last computed, else from its signature."""
        if index in self.input_shapes:
            return self.input_shapes[index]
        if index in self.values:
            return self.values[index].shape
        tensor = self.model.tensors[index]
        return tuple(self.batch_size() if side == -1 else side for side in tensor.shape_signature)

    def tensor_details(self, index: int) -> dict:
        tensor = self.model.tensors[index]
        scale, zero_point = numpy_kernels.per_tensor(tensor)
        return {"name": tensor.name, "index": index, "dtype": tensor.dtype,
                "shape": np.array(self.current_shape(index), np.int32),
                "shape_signature": np.array(tensor.shape_signature, np.int32),
                "quantization": (scale, zero_point),
                "quantization_parameters": {"scales": tensor.scales.copy(),
                                            "zero_points": tensor.zero_points.astype(np.int32),
                                            "quantized_dimension": tensor.quantized_dimension},
                "sparsity_parameters": {}}

    def get_input_details(self) -> list:
        return [self.tensor_details(index) for index in self.model.inputs]

    def get_output_details(self) -> list:
        return [self.tensor_details(index) for index in self.model.outputs]

    def get_tensor_details(self) -> list:
        return [self.tensor_details(tensor.index) for tensor in self.model.tensors]

    # Running it.

    def resize_tensor_input(self, input_index: int, tensor_size, strict: bool = False) -> None:
        """New sizes for the dimensions the model leaves free (-1 in its shape signature)."""
        if input_index not in self.input_shapes:
            raise ValueError(f"tensor {input_index} is not an input of the model")
        size = tuple(int(side) for side in tensor_size)
        signature = self.model.tensors[input_index].shape_signature
        if len(size) != len(signature) or any(fixed not in (-1, side) for fixed, side in zip(signature, size)):
            raise ValueError(f"cannot resize input {input_index} from signature {list(signature)} to {list(size)}")
        self.input_shapes[input_index] = size
        self.inputs.pop(input_index, None)
        self.values = {}

    def allocate_tensors(self) -> None:
        """Nothing to do: invoke() makes each tensor at the size its inputs give."""

    def set_tensor(self, tensor_index: int, value) -> None:
        if tensor_index not in self.input_shapes:
            raise ValueError(f"tensor {tensor_index} is not an input of the model")
        value = np.asarray(value)
        expected = self.model.tensors[tensor_index].dtype
        if value.dtype != expected:
            raise ValueError(f"Cannot set tensor: got value of type {value.dtype.name} but expected type "
                             f"{np.dtype(expected).name} for input {tensor_index}")
        if value.shape != self.input_shapes[tensor_index]:
            raise ValueError(f"Cannot set tensor: dimension mismatch, got {list(value.shape)} but expected "
                             f"{list(self.input_shapes[tensor_index])} for input {tensor_index}")
        self.inputs[tensor_index] = value.copy()

    def invoke(self) -> None:
        missing = [index for index in self.model.inputs if index not in self.inputs]
        if missing:
            raise RuntimeError(f"input tensor {missing[0]} was not set before invoke()")
        values = {**self.constants, **self.inputs}
        for kernel in self.kernels:
            kernel(values)
        self.values = values

    def get_tensor(self, tensor_index: int) -> np.ndarray:
        if tensor_index in self.values:
            return np.array(self.values[tensor_index])
        if tensor_index in self.inputs or tensor_index in self.constants:
            return np.array(self.inputs.get(tensor_index, self.constants.get(tensor_index)))
        raise ValueError(f"tensor {tensor_index} has no value yet: call invoke() first")
