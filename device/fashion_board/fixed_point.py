"""TFLite's fixed-point arithmetic (tensorflow/lite/kernels/internal/common.h, quantization_util.cc),
on numpy int64 arrays: a real multiplier M applied to int32 accumulators as M = multiplier *
2^(shift - 31), multiplier a 31-bit integer, with TFLite's roundings."""

from __future__ import annotations

import math

import numpy as np

from .common import ModelError

# Fused activation (ActivationFunctionType): NONE, RELU, RELU_N1_TO_1, RELU6, as (low, high) in reals.
ACTIVATIONS = {0: (None, None), 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}


def tflite_round(value: float) -> int:
    """std::round: halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def quantize_multiplier(real_multiplier: float) -> tuple:
    """QuantizeMultiplier: (31-bit multiplier, shift) with real = multiplier * 2^(shift - 31)."""
    if real_multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real_multiplier)
    fixed = tflite_round(fraction * (1 << 31))
    if fixed == 1 << 31:
        fixed, shift = fixed // 2, shift + 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def multiply_by_quantized_multiplier(values: np.ndarray, multipliers, shifts) -> np.ndarray:
    """MultiplyByQuantizedMultiplier on int64 arrays: SaturatingRoundingDoublingHighMul (nudge, then
    divide by 2^31 toward zero), then RoundingDivideByPOT (halves away from zero)."""
    multipliers, shifts = np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64)
    values = values.astype(np.int64) << np.maximum(shifts, 0)
    product = values * multipliers
    product = product + np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(product >= 0, product >> 31, -((-product) >> 31))
    exponent = np.maximum(-shifts, 0)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (high < 0)
    return (high >> exponent) + ((high & mask) > threshold)


def multiply_by_quantized_multiplier_gemm(values: np.ndarray, multipliers, shifts) -> np.ndarray:
    """The same product as the interpreters' matrix kernels (ruy) compute it: both roundings send halves
    up, not away from zero, so negative results on a half can land one step above the reference
    kernel's. The build's check compares against those interpreters, so FULLY_CONNECTED follows them."""
    multipliers, shifts = np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64)
    values = values.astype(np.int64) << np.maximum(shifts, 0)
    high = (values * multipliers + (1 << 30)) >> 31
    exponent = np.maximum(-shifts, 0)
    return (high + ((np.int64(1) << exponent) >> 1)) >> exponent


def activation_range(activation: int, dtype, scale: float, zero_point: int) -> tuple:
    """CalculateActivationRangeQuantized: the fused activation's bounds in the output's integers."""
    if activation not in ACTIVATIONS:
        raise ModelError(f"the numpy engine does not implement fused activation {activation}")
    limits = np.iinfo(dtype)
    low, high = ACTIVATIONS[activation]
    low_q = limits.min if low is None else max(limits.min, zero_point + tflite_round(low / scale))
    high_q = limits.max if high is None else min(limits.max, zero_point + tflite_round(high / scale))
    return low_q, high_q
