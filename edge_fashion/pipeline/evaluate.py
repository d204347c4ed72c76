"""Verification: the Keras, float TFLite and int8 TFLite models over the test set, and the int8 gate."""

import dataclasses

import numpy as np
from ai_edge_litert import interpreter as litert
from fashion_board import quantization

# The builtin kernels without XNNPACK compute what tflite-runtime computes on a board (XNNPACK
# rounds int8 differently: up to 14 of 256 apart here), so the host checks what the device will run.
RESOLVER = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
XNNPACK = litert.OpResolverType.AUTO  # What ai-edge-litert runs on a board: the builtin kernels with XNNPACK.


class GateError(ValueError):
    """The int8 model lost more accuracy against float than allowed."""


@dataclasses.dataclass(frozen=True)
class Metrics:
    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # confusion[true][predicted], counts.

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# Pure numpy: scores in, numbers out.

def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts, rows the true class, columns the predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def metrics(labels: np.ndarray, probabilities: np.ndarray) -> Metrics:
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, probabilities.shape[1])
    per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    return Metrics(float(np.mean(predictions == labels)), [float(value) for value in per_class], matrix.tolist())


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Share of images on which two models' top-1 classes agree."""
    return float(np.mean(first.argmax(axis=1) == second.argmax(axis=1)))


def mean_abs_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.mean(np.abs(first.astype(np.float64) - second.astype(np.float64))))


def drop_phrase(points: float) -> str:
    """'0.12 points lost' or, when int8 beat float, '0.05 points gained'."""
    return f"{points:.2f} points lost" if points >= 0 else f"{-points:.2f} points gained"


def gate_passed(drop_points: float, max_drop: float) -> bool:
    return drop_points <= max_drop


def gate_message(float_accuracy: float, int8_accuracy: float, max_drop: float) -> str:
    drop = 100 * (float_accuracy - int8_accuracy)
    return (f"int8 accuracy {100 * int8_accuracy:.2f}% is {drop:.2f} points below float "
            f"{100 * float_accuracy:.2f}% (allowed: {max_drop:g})")


def check_gate(float_accuracy: float, int8_accuracy: float, max_drop: float) -> None:
    """Raise GateError when int8 is more than `max_drop` percentage points below float."""
    if not gate_passed(100 * (float_accuracy - int8_accuracy), max_drop):
        raise GateError(gate_message(float_accuracy, int8_accuracy, max_drop))


# Interpreter I/O.

def make_interpreter(model_content: bytes, threads: int | None = None, resolver=RESOLVER) -> litert.Interpreter:
    return litert.Interpreter(model_content=model_content, num_threads=threads,
                              experimental_op_resolver_type=resolver)


def run_tflite_raw(model_content: bytes, images: np.ndarray, batch_size: int = 256,
                   resolver=RESOLVER) -> tuple[np.ndarray, dict]:
    """Raw outputs (N, 10) in the model's own dtype, and the output tensor's details.

    `images` is (N, 28, 28) raw pixels, uint8; they are quantized with the input tensor's parameters.
    """
    interpreter = make_interpreter(model_content, resolver=resolver)
    input_detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [batch_size, 28, 28])
    interpreter.allocate_tensors()
    input_detail, output_detail = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = input_detail["quantization"]
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32)
        padded = np.zeros((batch_size, 28, 28), np.float32)
        padded[:len(batch)] = batch
        interpreter.set_tensor(input_detail["index"], quantization.quantize(padded, input_detail["dtype"], scale, zero_point))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[:len(batch)].copy())
    return np.concatenate(outputs), output_detail


def run_tflite(model_content: bytes, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 10) float32 probabilities of a float or quantized TFLite model."""
    raw, output_detail = run_tflite_raw(model_content, images, batch_size)
    return quantization.dequantize(raw, *output_detail["quantization"])


def run_keras(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images.astype(np.float32), batch_size=1024, verbose=0))


@dataclasses.dataclass(frozen=True)
class Verdict:
    keras: Metrics
    float_tflite: Metrics
    int8: Metrics
    int8_float_agreement: float  # Top-1 agreement of int8 with the float TFLite model.
    int8_float_mean_abs_difference: float  # Mean |p_int8 - p_float| over every class probability.
    int8_probabilities: np.ndarray  # (N, 10), for the report's pictures and the self-test.

    @property
    def drop_points(self) -> float:
        return 100 * (self.float_tflite.accuracy - self.int8.accuracy)

    def to_json(self) -> dict:
        return {
            "keras": self.keras.to_json(), "float_tflite": self.float_tflite.to_json(), "int8": self.int8.to_json(),
            "int8_float_agreement": self.int8_float_agreement,
            "int8_float_mean_abs_difference": self.int8_float_mean_abs_difference,
            "drop_points": self.drop_points,
        }


def verify(keras_model, float_content: bytes, int8_content: bytes,
           images: np.ndarray, labels: np.ndarray) -> Verdict:
    """Run all three models over the test images and compare them."""
    float_probabilities = run_tflite(float_content, images)
    int8_probabilities = run_tflite(int8_content, images)
    return Verdict(
        keras=metrics(labels, run_keras(keras_model, images)),
        float_tflite=metrics(labels, float_probabilities),
        int8=metrics(labels, int8_probabilities),
        int8_float_agreement=agreement(int8_probabilities, float_probabilities),
        int8_float_mean_abs_difference=mean_abs_difference(int8_probabilities, float_probabilities),
        int8_probabilities=int8_probabilities,
    )
