"""Quantization arithmetic from a tensor's own scale and zero point, for any integer dtype.

real = scale * (q - zero_point), and q = clip(round(real / scale) + zero_point) to the dtype's range.
A float tensor (not an integer dtype), or a scale of 0 (TFLite's "not quantized"), passes through
unchanged. The board and the host (its checks of int8 against float) both use this one module.
"""

from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Real values to a tensor of `dtype`, clipped to that dtype's range."""
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    if scale:
        values = np.round(values / scale) + zero_point
    limits = np.iinfo(dtype)
    return np.clip(values, limits.min, limits.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A tensor of any dtype to real values, (same shape) float32."""
    if not np.issubdtype(values.dtype, np.integer) or not scale:
        return values.astype(np.float32)
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)
