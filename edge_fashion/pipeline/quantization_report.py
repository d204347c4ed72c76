"""Per-layer quantization error of the int8 model, from TensorFlow Lite's QuantizationDebugger.

For each quantized layer the debugger runs the float and the int8 path side by side on a few
images and compares the layer's output. `rmse_per_scale` is the root-mean-square error in units
of the layer's quantization step: 1/sqrt(12) = 0.29 is what rounding alone costs; well above it,
the layer's range or its weights lose more than rounding does.
"""

import csv
import io

import numpy as np
import tensorflow as tf

from edge_fashion import quiet

ROUNDING_ONLY = 1 / np.sqrt(12)  # RMS error of rounding to the nearest step, in steps.


def debugger_rows(keras_model, representative_images: np.ndarray, debug_images: np.ndarray) -> list[dict]:
    """The debugger's layer statistics as dicts (its CSV columns), one per quantized layer."""
    def feed(images):
        def generate():
            for image in images:
                yield [image[np.newaxis].astype(np.float32)]
        return generate

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = feed(representative_images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    text = io.StringIO()
    with quiet.hidden_output():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=feed(debug_images))
        debugger.run()
        debugger.layer_statistics_dump(text)
    return list(csv.DictReader(io.StringIO(text.getvalue())))


def layer_row(row: dict) -> dict:
    """One layer's figures as JSON-ready numbers."""
    scale = float(row["scale"])
    mean_squared_error = float(row["mean_squared_error"])
    return {
        "layer": row["tensor_name"],
        "op": row["op_name"],
        "elements": int(float(row["num_elements"])),
        "scale": scale,
        "zero_point": int(float(row["zero_point"])),
        "mean_error": float(row["mean_error"]),
        "max_abs_error": float(row["max_abs_error"]),
        "rmse": float(np.sqrt(mean_squared_error)),
        "rmse_per_scale": float(np.sqrt(mean_squared_error) / scale) if scale else None,
    }


def layer_errors(keras_model, representative_images: np.ndarray, debug_images: np.ndarray) -> dict:
    """Per-layer error report, JSON-ready: calibrated like the shipped model, measured on `debug_images`.

    `representative_images` and `debug_images` are (N, 28, 28) uint8; use training images for both
    (a few hundred debug images take a few seconds).
    """
    rows = [layer_row(row) for row in debugger_rows(keras_model, representative_images, debug_images)]
    return {"debug_images": len(debug_images), "rounding_only_rmse_per_scale": float(ROUNDING_ONLY), "layers": rows}


def short_name(tensor_name: str) -> str:
    """'fashion_mlp_1/dense_300_1/MatMul;...' -> 'dense_300_1'; other names unchanged."""
    parts = tensor_name.split(";")[0].split("/")
    return parts[1] if len(parts) > 2 else tensor_name


def markdown(report: dict) -> str:
    """The report as a Markdown table for report.md and docs."""
    lines = [
        f"Per-layer int8 error on {report['debug_images']} training images (QuantizationDebugger); "
        f"RMSE/scale {report['rounding_only_rmse_per_scale']:.2f} is rounding alone.",
        "",
        "| layer | op | scale | RMSE | RMSE/scale | max abs error |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["layers"]:
        ratio = "-" if row["rmse_per_scale"] is None else f"{row['rmse_per_scale']:.2f}"
        lines.append(f"| {short_name(row['layer'])} | {row['op']} | {row['scale']:.3g} | {row['rmse']:.3g} | "
                     f"{ratio} | {row['max_abs_error']:.3g} |")
    return "\n".join(lines) + "\n"
