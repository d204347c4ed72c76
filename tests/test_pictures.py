"""The pictures a person reads: the confusion matrix and the bench chart (matplotlib) keep every label
whole and inside the picture; the sheets of test images and photos (Pillow) fit their captions and
leave no blank column. Each was looked at once; these tests keep what was seen true."""

import io

import matplotlib.backends.backend_agg
import matplotlib.text
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from edge_fashion import pictures
from edge_fashion.bench import report as bench_report
from edge_fashion.pipeline import data, photo_report, photos, report

LABELS = list(data.LABELS)
PHOTOS = REPO / "tests" / "photos"


def texts(figure) -> list[str]:
    """Every visible, non-empty text of the figure."""
    return [text.get_text() for text in figure.findobj(matplotlib.text.Text) if text.get_visible() and text.get_text()]


def assert_nothing_clipped(figure) -> None:
    """Everything the figure draws (titles, labels, ticks in view, legend) lies inside it."""
    canvas = matplotlib.backends.backend_agg.FigureCanvasAgg(figure)
    canvas.draw()
    drawn, whole = figure.get_tightbbox(canvas.get_renderer()), figure.bbox_inches
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= whole.x1 and drawn.y1 <= whole.y1, (drawn, whole)


def png_size(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG"
        return image.size


def test_the_confusion_matrix_names_every_class_whole_and_clips_nothing():
    matrix = np.diag([900] * 10) + np.eye(10, k=1, dtype=int) * 42
    figure = report.confusion_figure(matrix, LABELS, "int8 model on the 10,420 test images")
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == LABELS
    assert [label.get_text() for label in axes.get_yticklabels()] == LABELS
    assert axes.get_title() == "int8 model on the 10,420 test images"
    drawn = texts(figure)
    assert drawn.count("900") == 10 and drawn.count("42") == 9 and "T-shirt/top" in drawn
    assert_nothing_clipped(figure)
    assert png_size(pictures.png_bytes(figure)) == (850, 750)


def bench_result(int8_litert_us: float = 11.8, int8_tflite_us: float = 1271.0) -> dict:
    """The part of bench.json the chart reads, with the spread of figures a slow runtime gives."""
    def record(model, runtime, latency, throughput):
        return {"model": model, "runtime": runtime, "status": "ok", "latency_us": {"p50": latency},
                "images_per_second": throughput}
    return {
        "created_at": "2026-12-01T23:00:00+00:00",
        "machine": {"cpu": "AMD EPYC", "cores": 2, "architecture": "x86_64"},
        "settings": {"batch_size": 256},
        "sizes": {"model_int8.tflite": 298_880, "model_float.tflite": 1_132_184, "model.keras": 1_154_362},
        "interpreters": [record("int8", "tflite_runtime", int8_tflite_us, 26_676),
                         record("int8", "ai_edge_litert", int8_litert_us, 50_935),
                         record("float32", "ai_edge_litert", 51.8, 42_881),
                         record("keras", "tensorflow", 978.0, 32_871),
                         {"model": "float32", "runtime": "tflite_runtime", "status": "not installed"}],
    }


def test_the_bench_chart_has_a_legend_and_a_log_axis_where_figures_span_orders_of_magnitude():
    figure = bench_report.chart_figure(bench_result())
    sizes, latency, throughput = figure.axes
    assert [sizes.get_xscale(), latency.get_xscale(), throughput.get_xscale()] == ["linear", "log", "linear"]
    assert "log scale" in latency.get_title(loc="left") and "log scale" not in throughput.get_title(loc="left")
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["int8", "float32", "keras"]
    assert [label.get_text() for label in latency.get_yticklabels()] == [
        "int8, tflite-runtime", "int8, ai-edge-litert", "float32, ai-edge-litert", "keras, TensorFlow"]
    drawn = texts(figure)
    assert "11.8" in drawn and "1,271" in drawn and "50,935" in drawn  # Each bar's value beside it.
    assert_nothing_clipped(figure)
    assert png_size(bench_report.chart_png(bench_result()))[0] == bench_report.CHART_WIDTH


def test_the_misclassified_sheet_fits_its_longest_caption(tiny_build):
    with Image.open(tiny_build / "misclassified_int8.png") as sheet:
        assert sheet.format == "PNG"
        tile_width = sheet.width // 8
    font = pictures.font(report.CAPTION_SIZE)
    assert tile_width >= font.getlength("→ T-shirt/top") + 6
    with Image.open(tiny_build / "confusion_int8.png") as confusion:
        assert confusion.size == (850, 750)


@pytest.fixture(scope="module")
def test_photos() -> photos.Photos:
    return photos.read_photos([PHOTOS], lambda line: None)


def test_the_contact_sheet_has_a_row_per_class_wrong_answers_first_and_no_blank_column(test_photos):
    # The first photo of each class answered wrongly (as the next class), the rest right.
    predictions = test_photos.labels.astype(np.int64)
    scores = np.full(len(predictions), 0.75)
    for index in range(len(data.LABELS)):
        members = np.flatnonzero(test_photos.labels == index)
        if len(members):
            predictions[members[-1]] = (index + 1) % len(data.LABELS)
    predictions[0] = photo_report.NO_FRAME
    rows = photo_report.sheet_rows(test_photos.labels, predictions)
    assert len(rows) == 9 and all(len(members) == 4 for members in rows)  # No photos of Bag.
    for members in rows:
        right = [predictions[member] == test_photos.labels[member] for member in members]
        assert right == sorted(right)  # Wrong ones first.
    sheet = photo_report.contact_sheet(test_photos, predictions, scores)
    assert sheet.height > photo_report.HEADER + 9 * photo_report.THUMBNAIL
    pixels = np.asarray(sheet.convert("L"))
    assert (pixels[photo_report.HEADER:, -40:] < 250).any(), "the last column is blank"
    assert photo_report.row_heading(4, test_photos.labels, predictions) == "Coat\n3 of 4 right"
    written = pictures.png_bytes(sheet)
    assert png_size(written) == sheet.size

