"""`edge-fashion bench` on the tiny build: every figure present and sane. No test asserts a timing."""

import copy
import json

import pytest
from PIL import Image

from conftest import run_cli
from edge_fashion.bench import report as bench_report


@pytest.fixture(scope="module")
def quick_bench(tiny_build, device_python, tmp_path_factory):
    """A quick bench of the tiny build under every runtime: (bench.json as a dict, the CLI's output, out dir)."""
    out = tmp_path_factory.mktemp("bench")
    result = run_cli("bench", str(tiny_build), "--quick", "--invokes", "50", "--out", str(out),
                     "--device-python", str(device_python))
    return json.loads((out / "bench.json").read_text()), result.output, out


def test_sizes_equal_the_files(quick_bench, tiny_build):
    bench, _, _ = quick_bench
    for name, size in bench["sizes"].items():
        assert size == (tiny_build / name).stat().st_size
    for record in bench["interpreters"]:
        assert record["size_bytes"] == (tiny_build / record["file"]).stat().st_size


def test_every_model_and_runtime_is_measured(quick_bench):
    bench, _, _ = quick_bench
    measured = {(record["model"], record["runtime"]) for record in bench["interpreters"] if record["status"] == "ok"}
    assert measured == {(model, runtime) for model in ("int8", "float32")
                        for runtime in ("tflite_runtime", "ai_edge_litert", "tensorflow")} | {("keras", "tensorflow")}
    assert {(record["model"], record["runtime"]) for record in bench["classify"] if record["status"] == "ok"} == {
        (model, runtime) for model in ("int8", "float32") for runtime in ("tflite_runtime", "ai_edge_litert", "tensorflow")}


def test_interpreter_figures_are_sane(quick_bench):
    bench, _, _ = quick_bench
    operations = bench["floor"]["multiply_adds_per_image"]
    assert operations == 784 * 300 + 300 * 150 + 150 * 10 == 281_700
    for record in bench["interpreters"]:
        latency = record["latency_us"]
        assert latency["count"] == 50
        assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["max"]
        assert record["start_to_first_result_seconds"] > 0 and record["import_and_load_seconds"] > 0
        assert record["images_per_second"] > 0 and record["peak_rss_bytes"] > 10_000_000
        assert record["multiply_adds_per_second"] == pytest.approx(operations / (latency["p50"] / 1e6))
        # The bundle's self-test images were chosen with a clear margin: every runtime agrees with the build.
        assert record["images_as_built"] == bench["test_images"]


def test_classify_figures_are_sane(quick_bench):
    bench, _, _ = quick_bench
    for record in bench["classify"]:
        assert record["cold_start_seconds"] > 0 and record["peak_rss_bytes"] > 10_000_000
        frame = record["frame_ms"]
        assert frame["count"] == 10 and 0 < frame["p50"] <= frame["p95"]


def test_build_timings_come_from_the_report(quick_bench, tiny_build):
    bench, _, _ = quick_bench
    report = json.loads((tiny_build / "report.json").read_text())
    build = bench["build"]
    assert build["epoch_seconds"] == report["training"]["history"]["seconds"] and build["epochs"] == 2
    assert build["total_seconds"] == report["timings"]["total_seconds"] > build["train_seconds"] > 0
    assert build["default_recipe"] is False


def test_targets_are_all_judged(quick_bench):
    bench, _, _ = quick_bench
    by_name = {item["name"]: item for item in bench["targets"]}
    assert len(by_name) == 7
    for name, item in by_name.items():
        if name == "default build":
            assert item["met"] is None and "not the default recipe" in item["note"]
        else:
            assert item["measured"] > 0 and item["met"] == (item["measured"] <= item["limit"])


def test_outputs_are_written_and_the_table_printed(quick_bench):
    bench, output, out = quick_bench
    table = (out / "bench.md").read_text()
    assert table.strip() in output
    assert "| int8 | tflite-runtime 2.14.0 |" in table and "281,700 multiply-adds" in table
    with Image.open(out / "bench.png") as chart:
        assert chart.format == "PNG" and chart.width == bench_report.CHART_WIDTH


def test_a_missing_runtime_is_reported_not_an_error(quick_bench):
    bench, _, _ = quick_bench
    without = copy.deepcopy(bench)
    for record in without["interpreters"] + without["classify"]:
        if record["runtime"] == "tflite_runtime":
            kept = {key: record[key] for key in ("model", "runtime", "file", "size_bytes") if key in record}
            record.clear()
            record.update(kept, status="not installed")
    targets = {item["name"]: item for item in bench_report.targets(without)}
    assert targets["classify.py cold start, tflite-runtime, int8"]["met"] is None
    assert targets["int8 / float32 single-image p50 latency, ai-edge-litert"]["met"] is not None
    table = bench_report.markdown(without)
    assert "| int8 | tflite-runtime | 0." in table and "| not installed |" in table
    assert bench_report.chart_png(without).startswith(b"\x89PNG")


def test_summary_stats_and_targets():
    stats = bench_report.summary_stats([4.0, 1.0, 3.0, 2.0])
    assert stats == {"count": 4, "p50": 2.5, "p95": pytest.approx(3.85), "mean": 2.5, "min": 1.0, "max": 4.0}
    with pytest.raises(ValueError):
        bench_report.summary_stats([])
    assert bench_report.target("x", 6.0, 5.0, "ms")["over_limit_percent"] == pytest.approx(20.0)
    assert bench_report.target("x", 4.0, 5.0, "ms")["met"] is True
