"""The build report: report.json for machines, report.md with pictures for people."""

import importlib.metadata
import pathlib
import platform

import matplotlib.figure
import numpy as np
from PIL import Image, ImageDraw

from edge_fashion import files, pictures
from edge_fashion.pipeline import evaluate, numpy_check, photo_report, quantization_report

PACKAGES = ("edge-fashion", "tensorflow", "keras", "ai-edge-litert", "numpy", "pillow", "click")
MISCLASSIFIED_ZOOM = 3  # The 28x28 test images are drawn this many times larger.
CAPTION_SIZE, HEADER_SIZE = 13, 15  # Pixels of the captions' and the header's text.
HEADER = 28  # Pixels of the sheet's header line.


def package_versions() -> dict:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def confusion_figure(matrix: np.ndarray, labels: list[str], title: str) -> matplotlib.figure.Figure:
    """Counts on a white-to-blue grid, rows the true class, columns the predicted one; a cell's blue
    is its share of the true class, so a row's mistakes stand out whatever its size."""
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = pictures.figure(8.5, 7.5)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, f"{count:,}", ha="center", va="center", fontsize=9,
                  color="white" if shares[row, column] > 0.5 else "black")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=40, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    return figure


def draw_misclassified(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                       names: list[str], count: int = 40, columns: int = 8) -> Image.Image:
    """A grid of wrongly classified test images, enlarged 3x, each captioned with its true class (green)
    and the answer (red); the tiles are as wide as the longest class name."""
    wrong = np.flatnonzero(labels != predictions)[:count]
    font = pictures.font(CAPTION_SIZE)
    side = 28 * MISCLASSIFIED_ZOOM
    width = max(side, *(round(font.getlength("→ " + name)) for name in names)) + 12
    height = side + 2 * CAPTION_SIZE + 14
    rows = max(1, -(-len(wrong) // columns))
    sheet = Image.new("RGB", (columns * width, HEADER + rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 6), "Misclassified test images (int8): the true class in green, the answer in red",
              fill="black", font=pictures.font(HEADER_SIZE))
    for slot, index in enumerate(wrong):
        left, top = (slot % columns) * width, HEADER + (slot // columns) * height
        frame = Image.fromarray(images[index]).resize((side, side), Image.Resampling.NEAREST)
        sheet.paste(frame, (left + (width - side) // 2, top + 2))
        draw.text((left + 6, top + side + 4), names[labels[index]], fill=(0, 128, 0), font=font)
        draw.text((left + 6, top + side + 6 + CAPTION_SIZE), "→ " + names[predictions[index]], fill=(200, 0, 0),
                  font=font)
    return sheet


def save_png(picture, path: pathlib.Path) -> None:
    """A matplotlib figure or a Pillow image as a PNG, written whole or not at all."""
    files.atomic_write_bytes(path, pictures.png_bytes(picture))


def markdown(report: dict, labels: list[str]) -> str:
    """report.md: the summary, per-class accuracy float against int8, and the pictures."""
    metrics, sizes = report["metrics"], report["sizes"]
    lines = [
        "# edge-fashion build report", "",
        f"Trained on {report['device']} in {report['timings']['train_seconds']:.0f} s "
        f"(best epoch {report['training']['best_epoch']} of {report['config']['epochs']}).", "",
        "| model | test accuracy | size |", "| --- | --- | --- |",
        f"| Keras | {100 * metrics['keras']['accuracy']:.2f}% | {sizes['model.keras']:,} bytes |",
        f"| float32 TFLite | {100 * metrics['float_tflite']['accuracy']:.2f}% | {sizes['model_float.tflite']:,} bytes |",
        f"| int8 TFLite | {100 * metrics['int8']['accuracy']:.2f}% | {sizes['model_int8.tflite']:,} bytes |", "",
        f"int8 against float: {evaluate.drop_phrase(metrics['drop_points'])}, top-1 agreement "
        f"{100 * metrics['int8_float_agreement']:.2f}%, mean absolute probability difference "
        f"{metrics['int8_float_mean_abs_difference']:.4f}.", "",
        "## Per class", "", "| class | float | int8 |", "| --- | --- | --- |",
    ]
    for index, name in enumerate(labels):
        lines.append(f"| {name} | {100 * metrics['float_tflite']['per_class_accuracy'][index]:.1f}% "
                     f"| {100 * metrics['int8']['per_class_accuracy'][index]:.1f}% |")
    lines += ["", "## Confusion matrix (int8)", "", "![confusion matrix](confusion_int8.png)", "",
              "## Misclassified test images (int8; true in green, predicted in red)", "",
              "![misclassified](misclassified_int8.png)", ""]
    if report.get("numpy_engine"):
        lines += ["## The board's numpy engine against the interpreter", "", numpy_engine_markdown(report["numpy_engine"]), ""]
    if report.get("photos"):
        lines += [photo_report.markdown(report["photos"])]
    if report.get("quantization_layers"):
        lines += ["## int8 error per layer", "", quantization_report.markdown(report["quantization_layers"])]
    return "\n".join(lines)


def numpy_engine_markdown(result: dict) -> str:
    """The engine's verdict and, when it ran, its figures as a table."""
    lines = [f"The numpy engine (`--runtime numpy`) {numpy_check.verdict(result)}.", ""]
    if not result.get("refused"):
        lines += ["| test images | top-1 differences | scores differing | largest difference (steps) | allowed | seconds |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {result['images']:,} | {result['top1_differences']} | {result['scores_differing']} of "
                  f"{result['scores']:,} | {result['max_step_difference']} | {result['step_tolerance']} | "
                  f"{result['seconds']:.1f} |"]
    return "\n".join(lines)


def write(stage: pathlib.Path, report: dict, labels: list[str], test_images: np.ndarray,
          test_labels: np.ndarray, int8_probabilities: np.ndarray) -> None:
    """report.json, report.md and its two pictures, into `stage`."""
    confusion = np.array(report["metrics"]["int8"]["confusion"])
    title = f"int8 model on the {confusion.sum():,} test images: {100 * np.trace(confusion) / confusion.sum():.2f}% right"
    save_png(confusion_figure(confusion, labels, title), stage / "confusion_int8.png")
    predictions = int8_probabilities.argmax(axis=1)
    save_png(draw_misclassified(test_images, test_labels, predictions, labels), stage / "misclassified_int8.png")
    files.atomic_write_text(stage / "report.md", markdown(report, labels))
    files.atomic_write_json(stage / "report.json", report)
