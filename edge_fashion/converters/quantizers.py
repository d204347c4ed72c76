"""Pick the int8 quantizer by name: the TFLite converter's post-training quantization, or ai-edge-quantizer."""

import numpy as np

from edge_fashion.converters import tflite

QUANTIZERS = ("converter", "ai-edge")


def to_int8(quantizer: str, model, representative_images: np.ndarray, io_dtype: str = "uint8",
            per_channel: bool = True) -> bytes:
    """The all-integer model from `quantizer`; both calibrate on `representative_images` ((N, 28, 28) uint8)."""
    if quantizer == "converter":
        return tflite.to_int8(model, representative_images, io_dtype, per_channel)
    if quantizer == "ai-edge":
        try:
            from edge_fashion.converters import ai_edge
            import ai_edge_quantizer  # noqa: F401
        except ImportError:
            raise ValueError("--quantizer ai-edge needs ai-edge-quantizer: pip install ai-edge-quantizer") from None
        return ai_edge.to_int8(model, representative_images, io_dtype, per_channel)
    raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, not {quantizer!r}")
