"""The numpy engine's kernels: each op of the int8 MLP computed as TFLite's builtin kernels compute it.

int32 accumulators, then requantization by a real multiplier such as input_scale * weight_scale /
output_scale, in TFLite's fixed point (fixed_point.py). prepare(model, operator) reads an operator's
constants once and returns the function that runs it on a dict of tensor values; an op it lacks is a ModelError.
"""

from __future__ import annotations

import numpy as np

from . import fixed_point, tflite_reader
from .common import ModelError

# BuiltinOperator numbers (schema.fbs) the engine runs, and names for the ones it refuses.
FULLY_CONNECTED, MUL, RESHAPE, SOFTMAX, STRIDED_SLICE, SHAPE, PACK, QUANTIZE = 9, 18, 22, 25, 45, 77, 83, 114
OP_NAMES = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
            6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
            21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD", 39: "TRANSPOSE",
            40: "MEAN", 41: "SUB", 45: "STRIDED_SLICE", 49: "SPLIT", 53: "CAST", 77: "SHAPE", 83: "PACK",
            98: "LEAKY_RELU", 114: "QUANTIZE", 117: "HARD_SWISH", 126: "BATCH_MATMUL", 150: "GELU"}


def op_name(code: int) -> str:
    return OP_NAMES.get(code, f"builtin op {code}")


def per_tensor(tensor: tflite_reader.Tensor) -> tuple:
    """(scale, zero_point) of a per-tensor quantized tensor; (0.0, 0) when it is not quantized."""
    if len(tensor.scales) == 0:
        return 0.0, 0
    return float(tensor.scales[0]), int(tensor.zero_points[0])


def quantized(tensor: tflite_reader.Tensor, op: str) -> tuple:
    if not np.issubdtype(tensor.dtype, np.integer) or len(tensor.scales) == 0:
        raise ModelError(f"the numpy engine runs {op} on int8 or uint8 tensors only, not "
                         f"{np.dtype(tensor.dtype).name} ({tensor.name})")
    return per_tensor(tensor)


def saturate(values: np.ndarray, low: int, high: int, dtype) -> np.ndarray:
    return np.clip(values, low, high).astype(dtype)


# Kernels: prepare_X(model, operator) -> run(values), values mapping tensor index -> array.

def fully_connected_multipliers(input_scale: float, filter_scales: np.ndarray, output_scale: float) -> tuple:
    """Per output unit (or one for the tensor): the requantization multiplier and shift.

    Per channel, TFLite multiplies the scales in double; per tensor (GetQuantizedConvolutionMultipler)
    it multiplies input and weight scale in float32 first, which can move the multiplier's last bits.
    """
    if len(filter_scales) == 1:
        products = [float(np.float32(input_scale) * np.float32(filter_scales[0]))]
    else:
        products = [float(input_scale) * float(scale) for scale in filter_scales]
    pairs = [fixed_point.quantize_multiplier(product / float(output_scale)) for product in products]
    return np.array([pair[0] for pair in pairs], np.int64), np.array([pair[1] for pair in pairs], np.int64)


def prepare_fully_connected(model, operator):
    """int32 sum of (input - input_zero_point) * (weight - weight_zero_point), plus bias; requantized per channel."""
    tensors = model.tensors
    source, weights, output = (tensors[index] for index in (*operator.inputs[:2], operator.outputs[0]))
    bias = tensors[operator.inputs[2]].data if len(operator.inputs) > 2 and operator.inputs[2] >= 0 else None
    options = operator.options
    activation = options.scalar(0, "b") if options else 0
    if options and options.scalar(1, "b"):
        raise ModelError("the numpy engine does not read FULLY_CONNECTED's shuffled weight format")
    keep_dims = bool(options.scalar(2, "B")) if options else False
    input_scale, input_zero_point = quantized(source, "FULLY_CONNECTED")
    output_scale, output_zero_point = quantized(output, "FULLY_CONNECTED")
    if weights.data is None or not np.issubdtype(weights.dtype, np.integer) or weights.data.ndim != 2 \
            or len(weights.scales) not in (1, weights.data.shape[0]):
        raise ModelError("the numpy engine runs FULLY_CONNECTED with constant integer weights, "
                         "quantized per tensor or per output unit, only")
    # Products of 8-bit integers summed over a few thousand inputs stay far below 2^53: float64
    # matrix products (BLAS) give the exact int32 sums, many times faster than numpy's integer matmul.
    matrix = (weights.data.astype(np.float64) - float(weights.zero_points[0])).T  # (depth, units)
    bias = np.zeros(matrix.shape[1], np.int64) if bias is None else bias.astype(np.int64)
    multipliers, shifts = fully_connected_multipliers(input_scale, weights.scales, output_scale)
    low, high = fixed_point.activation_range(activation, output.dtype, output_scale, output_zero_point)

    def run(values):
        data = values[source.index]
        rows = data.reshape(-1, matrix.shape[0]).astype(np.float64) - input_zero_point
        accumulators = (rows @ matrix).astype(np.int64) + bias
        scaled = fixed_point.multiply_by_quantized_multiplier_gemm(accumulators, multipliers, shifts)
        scaled += output_zero_point
        shape = (*data.shape[:-1], matrix.shape[1]) if keep_dims else scaled.shape
        values[output.index] = saturate(scaled, low, high, output.dtype).reshape(shape)
    return run


def byte_table(function, dtype) -> np.ndarray:
    """function(x) for each of the 256 values of a one-byte dtype, indexed by the value's bit pattern:
    an elementwise op on 8-bit integers becomes one lookup, exact by construction."""
    return function(np.arange(256, dtype=np.uint8).view(dtype))


def elementwise(source, output, function):
    """run(values) applying `function` to the source; by lookup when the source has one-byte values."""
    if np.dtype(source.dtype).itemsize != 1:
        def run(values):
            values[output.index] = function(values[source.index])
        return run
    table = byte_table(function, source.dtype)

    def run_by_table(values):
        values[output.index] = table[values[source.index].view(np.uint8)]
    return run_by_table


def prepare_mul(model, operator):
    """(a - zero_point_a) * (b - zero_point_b), broadcast, requantized by scale_a * scale_b / scale_out."""
    first, second, output = (model.tensors[index] for index in (*operator.inputs[:2], operator.outputs[0]))
    first_scale, first_zero_point = quantized(first, "MUL")
    second_scale, second_zero_point = quantized(second, "MUL")
    output_scale, output_zero_point = quantized(output, "MUL")
    multiplier, shift = fixed_point.quantize_multiplier(first_scale * second_scale / output_scale)
    activation = operator.options.scalar(0, "b") if operator.options else 0
    low, high = fixed_point.activation_range(activation, output.dtype, output_scale, output_zero_point)

    def multiply(first_values, second_values):
        product = (first_values.astype(np.int64) - first_zero_point) * \
                  (second_values.astype(np.int64) - second_zero_point)
        scaled = fixed_point.multiply_by_quantized_multiplier(product, multiplier, shift) + output_zero_point
        return saturate(scaled, low, high, output.dtype)

    if second.data is not None and second.data.size == 1:  # Times a constant (Keras' Rescaling).
        return elementwise(first, output, lambda data: multiply(data, second.data.reshape(())))

    def run(values):
        values[output.index] = multiply(values[first.index], values[second.index])
    return run


def prepare_quantize(model, operator):
    """Integer to integer (uint8 input to int8 and back): requantize by input_scale / output_scale."""
    source, output = model.tensors[operator.inputs[0]], model.tensors[operator.outputs[0]]
    input_scale, input_zero_point = quantized(source, "QUANTIZE")
    output_scale, output_zero_point = quantized(output, "QUANTIZE")
    multiplier, shift = fixed_point.quantize_multiplier(input_scale / output_scale)
    limits = np.iinfo(output.dtype)

    def requantize(data):
        offsets = data.astype(np.int64) - input_zero_point
        scaled = fixed_point.multiply_by_quantized_multiplier(offsets, multiplier, shift)
        return saturate(scaled + output_zero_point, limits.min, limits.max, output.dtype)
    return elementwise(source, output, requantize)


def softmax_table(input_scale: float, beta: float) -> np.ndarray:
    """PopulateSoftmaxLookupTable: table[255 - d] = expf(-input_scale * beta * d), in float32.

    The exponent's argument is a float32 product as in C; the exponential is taken in float64 and
    rounded to float32, which is what a correctly rounded expf gives.
    """
    arguments = np.float32(-np.float32(input_scale) * np.float32(beta)) * np.arange(256, dtype=np.float32)
    return np.exp(arguments.astype(np.float64)).astype(np.float32)[::-1]


def prepare_softmax(model, operator):
    """The builtin int8 softmax (optimized_ops::Softmax with its float lookup table): exp of each
    logit's distance to the row's largest, summed in float32, each quotient rounded to the output."""
    source, output = model.tensors[operator.inputs[0]], model.tensors[operator.outputs[0]]
    input_scale, _ = quantized(source, "SOFTMAX")
    if np.dtype(source.dtype).itemsize != 1:  # The table spans the 256 distances of one-byte logits.
        raise ModelError(f"the numpy engine runs SOFTMAX on int8 or uint8 logits only, not {np.dtype(source.dtype).name}")
    output_scale, output_zero_point = quantized(output, "SOFTMAX")
    beta = operator.options.scalar(0, "f", 0.0) if operator.options else 0.0
    table, limits = softmax_table(input_scale, beta), np.iinfo(output.dtype)

    def run(values):
        data = values[source.index]
        logits = data.reshape(-1, data.shape[-1]).astype(np.int64)
        exponentials = table[255 - (logits.max(axis=1, keepdims=True) - logits)]  # (rows, classes) float32
        total = np.zeros(len(logits), np.float32)
        for column in exponentials.T:  # One class after the other, as the C loop adds them.
            total += column
        inverse = np.float32(1.0) / (total * np.float32(output_scale))
        probabilities = np.rint(exponentials * inverse[:, None]).astype(np.int64) + output_zero_point
        values[output.index] = saturate(probabilities, limits.min, limits.max, output.dtype).reshape(data.shape)
    return run


def prepare_reshape(model, operator):
    """The shape from the second input (constant or computed) when there is one, else the options."""
    source, output = model.tensors[operator.inputs[0]], model.tensors[operator.outputs[0]]
    shape_index = operator.inputs[1] if len(operator.inputs) > 1 else -1
    fixed = tuple(operator.options.vector(0, "i")) if operator.options else tuple(output.shape)

    def run(values):
        shape = fixed if shape_index < 0 else tuple(int(side) for side in np.ravel(values[shape_index]))
        values[output.index] = values[source.index].reshape(shape)
    return run


def prepare_shape(model, operator):
    source, output = model.tensors[operator.inputs[0]], model.tensors[operator.outputs[0]]

    def run(values):
        values[output.index] = np.array(values[source.index].shape, output.dtype)
    return run


def prepare_pack(model, operator):
    sources, output = operator.inputs, model.tensors[operator.outputs[0]]
    axis = operator.options.scalar(1, "i") if operator.options else 0

    def run(values):
        values[output.index] = np.stack([values[index] for index in sources], axis=axis).astype(output.dtype)
    return run


def prepare_strided_slice(model, operator):
    """begin:end:strides per dimension with begin, end and shrink-axis masks (what Keras' Flatten asks)."""
    source, begin, end, strides = operator.inputs
    output = model.tensors[operator.outputs[0]]
    options = operator.options
    begin_mask, end_mask, shrink_mask = ((options.scalar(number, "i") if options else 0) for number in (0, 1, 4))
    if options and (options.scalar(2, "i") or options.scalar(3, "i") or options.scalar(5, "B")):
        raise ModelError("the numpy engine runs STRIDED_SLICE without ellipsis, new-axis or offset options")

    def run(values):
        index = []
        for axis, (start, stop, step) in enumerate(zip(values[begin], values[end], values[strides])):
            if shrink_mask >> axis & 1:
                index.append(int(start))
            else:
                index.append(slice(None if begin_mask >> axis & 1 else int(start),
                                   None if end_mask >> axis & 1 else int(stop), int(step)))
        values[output.index] = np.asarray(values[source][tuple(index)], output.dtype)
    return run


KERNELS = {FULLY_CONNECTED: prepare_fully_connected, MUL: prepare_mul, QUANTIZE: prepare_quantize,
           SOFTMAX: prepare_softmax, RESHAPE: prepare_reshape, SHAPE: prepare_shape, PACK: prepare_pack,
           STRIDED_SLICE: prepare_strided_slice}


def prepare(model, operator):
    """The function that runs `operator`; ModelError naming the op when the engine lacks it."""
    if operator.code not in KERNELS:
        raise ModelError(f"the numpy engine does not implement {op_name(operator.code)}, which this model uses; "
                         "run it with tflite-runtime or ai-edge-litert")
    return KERNELS[operator.code](model, operator)
