"""The board's numpy engine against the interpreter, on every test image, during the build.

The engine is the board's own code (device/fashion_board/numpy_engine.py, imported as
the package fashion_board), never a copy. It must give the interpreter's top-1 on every image and every class
score within STEP_TOLERANCE output steps. A disagreement does not stop the build: the bundle is
still written for the interpreters, the report and the build summary say so, and the manifest
records it, so that classify.py refuses `--runtime numpy` on that model instead of answering wrongly.
"""

import time

import numpy as np

from fashion_board import numpy_engine, quantization

STEP_TOLERANCE = 1  # Output steps (1/256 of probability) a score may differ by.
BATCH_SIZE = 1000  # Images per engine call: (1000, 784) float64 rows are 6 MB.


def engine_raw(int8_content: bytes, images: np.ndarray) -> tuple:
    """Raw (N, classes) outputs of the numpy engine on (N, 28, 28) uint8 pixels, and its output details."""
    interpreter = numpy_engine.Interpreter(model_content=int8_content)
    input_detail, output_detail = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start:start + BATCH_SIZE]
        interpreter.resize_tensor_input(input_detail["index"], [len(batch), *input_detail["shape"][1:]])
        interpreter.allocate_tensors()
        scale, zero_point = input_detail["quantization"]
        interpreter.set_tensor(input_detail["index"],
                               quantization.quantize(batch.astype(np.float32), input_detail["dtype"], scale, zero_point))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"]).reshape(len(batch), -1))
    return np.concatenate(outputs), output_detail


def compare(engine_probabilities: np.ndarray, interpreter_probabilities: np.ndarray, step: float) -> dict:
    """Top-1 and per-score agreement of two (N, classes) dequantized outputs whose step is `step`."""
    steps = np.rint(np.abs(engine_probabilities.astype(np.float64) - interpreter_probabilities) / step).astype(np.int64)
    top1_differences = int(np.sum(engine_probabilities.argmax(axis=1) != interpreter_probabilities.argmax(axis=1)))
    largest = int(steps.max()) if steps.size else 0
    return {
        "images": len(steps), "top1_differences": top1_differences,
        "scores_differing": int(np.count_nonzero(steps)), "scores": int(steps.size),
        "max_step_difference": largest, "step_tolerance": STEP_TOLERANCE,
        "agrees": top1_differences == 0 and largest <= STEP_TOLERANCE,
    }


def check(int8_content: bytes, images: np.ndarray, interpreter_probabilities: np.ndarray) -> dict:
    """The engine on `images` against the interpreter's dequantized outputs on the same images."""
    started = time.perf_counter()
    try:
        raw, output_detail = engine_raw(int8_content, images)
    except ValueError as error:  # The engine refused the model (ModelError): an op it lacks.
        return {"images": len(images), "agrees": False, "refused": str(error),
                "seconds": time.perf_counter() - started}
    scale, zero_point = output_detail["quantization"]
    result = compare(quantization.dequantize(raw, scale, zero_point), interpreter_probabilities, scale or 1.0)
    return {**result, "refused": None, "seconds": time.perf_counter() - started}


def verdict(result: dict) -> str:
    """One line for the build summary and the report."""
    if result.get("refused"):
        return f"REFUSES this model ({result['refused']}); classify.py --runtime numpy will refuse it too"
    if not result["agrees"]:
        return (f"DISAGREES with the interpreter: top-1 differs on {result['top1_differences']:,} of "
                f"{result['images']:,} test images, scores by up to {result['max_step_difference']} steps "
                f"(allowed {result['step_tolerance']}); classify.py --runtime numpy will refuse this model")
    if result["scores_differing"] == 0:
        return f"agrees with the interpreter on {result['images']:,} test images: every score identical"
    return (f"agrees with the interpreter on {result['images']:,} test images: top-1 identical, "
            f"{result['scores_differing']:,} scores differ, by at most {result['max_step_difference']} output step")


def manifest_record(result: dict) -> dict:
    """What the board needs to know: whether the engine may run this model, and why not."""
    return {"agrees": bool(result["agrees"]), "verdict": verdict(result)}
