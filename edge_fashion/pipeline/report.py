"""The build report: report.json for machines, report.md with pictures for people."""

import importlib.metadata
import pathlib
import platform

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge_fashion import files
from edge_fashion.pipeline import evaluate, numpy_check, photo_report, quantization_report

PACKAGES = ("edge-fashion", "tensorflow", "keras", "ai-edge-litert", "numpy", "pillow", "click")
CELL = 44  # Pixels per confusion-matrix cell.
MARGIN = 110  # Room for the class names.


def package_versions() -> dict:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def draw_confusion(matrix: np.ndarray, labels: list[str], title: str) -> Image.Image:
    """Counts on a white-to-blue grid, rows the true class, columns the predicted one."""
    classes = len(labels)
    size = MARGIN + classes * CELL + 10
    image = Image.new("RGB", (size, size + 20), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    draw.text((10, 4), title, fill="black", font=font)
    row_totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for row in range(classes):
        draw.text((4, MARGIN + row * CELL + CELL // 2 - 6), labels[row][:15], fill="black", font=font)
        draw.text((MARGIN + row * CELL + 2, MARGIN - 14 - 12 * (row % 2)), labels[row][:8], fill="black", font=font)
        for column in range(classes):
            share = matrix[row, column] / row_totals[row, 0]
            shade = int(255 * (1 - share))
            box = (MARGIN + column * CELL, MARGIN + row * CELL, MARGIN + (column + 1) * CELL, MARGIN + (row + 1) * CELL)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            draw.text((box[0] + 6, box[1] + CELL // 2 - 6), str(matrix[row, column]),
                      fill="white" if share > 0.5 else "black", font=font)
    draw.text((MARGIN, size + 4), "rows: true class, columns: predicted", fill="black", font=font)
    return image


def draw_misclassified(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                       names: list[str], count: int = 40, columns: int = 8) -> Image.Image:
    """A grid of wrongly classified test images, each captioned 'true -> predicted', enlarged 3x."""
    wrong = np.flatnonzero(labels != predictions)[:count]
    tile_width, tile_height = 28 * 3 + 40, 28 * 3 + 30
    rows = max(1, -(-len(wrong) // columns))
    sheet = Image.new("RGB", (columns * tile_width, rows * tile_height), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for slot, index in enumerate(wrong):
        left, top = (slot % columns) * tile_width, (slot // columns) * tile_height
        sheet.paste(Image.fromarray(images[index]).resize((84, 84), Image.NEAREST), (left + 20, top + 2))
        draw.text((left + 2, top + 88), names[labels[index]][:11], fill="green", font=font)
        draw.text((left + 2, top + 100), "-> " + names[predictions[index]][:11], fill="red", font=font)
    return sheet


def save_png(image: Image.Image, path: pathlib.Path) -> None:
    temporary = path.with_name(f".tmp-{path.name}")
    image.save(temporary, format="PNG")
    temporary.replace(path)


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
    save_png(draw_confusion(confusion, labels, "int8 model, test set"), stage / "confusion_int8.png")
    predictions = int8_probabilities.argmax(axis=1)
    save_png(draw_misclassified(test_images, test_labels, predictions, labels), stage / "misclassified_int8.png")
    files.atomic_write_text(stage / "report.md", markdown(report, labels))
    files.atomic_write_json(stage / "report.json", report)
