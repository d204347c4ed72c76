"""Pure parts of `edge-fashion bench`: statistics, the floor, the targets, the Markdown table, the chart."""

import matplotlib.patches
import matplotlib.ticker
import numpy as np

from edge_fashion import config as config_module
from edge_fashion import pictures

MODEL_LAYERS = (784, 300, 150, 10)  # The MLP's widths: input, two hidden layers, output.
MEGABYTE = 1_000_000  # Sizes and memory are in MB of 10^6 bytes, as the targets are.
MODEL_FILES = {"int8": "model_int8.tflite", "float32": "model_float.tflite", "keras": "model.keras"}
RUNTIME_NAMES = {"tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert", "tensorflow": "TensorFlow"}
# Build settings that change the time a build takes; where to write and read do not.
RECIPE_IGNORED = ("out_dir", "data_dir", "device")


def multiply_adds_per_image(layers: tuple[int, ...] = MODEL_LAYERS) -> int:
    """Multiply-adds of one forward pass through dense layers: 784x300 + 300x150 + 150x10 = 281,700."""
    return sum(inputs * outputs for inputs, outputs in zip(layers, layers[1:]))


def summary_stats(values: list[float]) -> dict:
    """p50, p95, mean, min and max of timings (in their own unit), and how many there were."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timings to summarize")
    return {
        "count": int(values.size),
        "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
        "mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
    }


def is_default_recipe(build_config: dict) -> bool:
    """True when a build's config (report.json) trains what `edge-fashion build` trains by default."""
    defaults = config_module.to_json(config_module.BuildConfig())
    return all(build_config.get(key) == value for key, value in defaults.items() if key not in RECIPE_IGNORED)


def build_timings(report: dict) -> dict:
    """Seconds per epoch and per stage of the build that made the models, from its report.json."""
    timings, history = report.get("timings", {}), report.get("training", {}).get("history") or {}
    epoch_seconds = [float(value) for value in history.get("seconds", [])]
    # The first epoch also traces and compiles the graph, so it is shown apart from the steady state.
    steady = epoch_seconds[1:] or epoch_seconds
    return {
        "device": report.get("device", "unknown"),
        "epochs": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "first_epoch_seconds": epoch_seconds[0] if epoch_seconds else None,
        "steady_epoch_seconds": float(np.mean(steady)) if steady else None,
        **{key: timings.get(key) for key in ("train_seconds", "convert_seconds", "verify_seconds", "total_seconds")},
        "default_recipe": is_default_recipe(report.get("config", {})),
    }


def find(records: list[dict], **wanted) -> dict | None:
    """The first measured record whose fields equal `wanted`, or None."""
    for record in records:
        if record.get("status") == "ok" and all(record.get(key) == value for key, value in wanted.items()):
            return record
    return None


def target(name: str, measured: float | None, limit: float, unit: str, note: str = "") -> dict:
    """A target 'at most `limit`': met or not, and by how many percent of the limit."""
    result = {"name": name, "limit": limit, "unit": unit, "measured": measured, "met": None,
              "over_limit_percent": None, "note": note}
    if measured is not None:
        result["met"] = measured <= limit
        result["over_limit_percent"] = 100 * (measured - limit) / limit
    return result


def targets(result: dict) -> list[dict]:
    """The targets set for this machine, each measured against its limit."""
    sizes, interpreters, classify = result["sizes"], result["interpreters"], result["classify"]
    int8_size, float_size = sizes.get(MODEL_FILES["int8"]), sizes.get(MODEL_FILES["float32"])
    int8_litert = find(interpreters, model="int8", runtime="ai_edge_litert")
    float_litert = find(interpreters, model="float32", runtime="ai_edge_litert")
    latency_ratio = (int8_litert["latency_us"]["p50"] / float_litert["latency_us"]["p50"]
                     if int8_litert and float_litert else None)
    board = find(classify, model="int8", runtime="tflite_runtime")
    missing = "" if board else "classify.py under tflite-runtime was not measured (see classify rows)"
    build = result["build"]
    build_minutes = build["total_seconds"] / 60 if build["default_recipe"] and build["total_seconds"] else None
    return [
        target("int8 model file", int8_size / MEGABYTE if int8_size else None, 0.30, "MB"),
        target("int8 file / float32 file", int8_size / float_size if int8_size and float_size else None, 0.27, "x"),
        target("int8 / float32 single-image p50 latency, ai-edge-litert", latency_ratio, 0.5, "x",
               "" if latency_ratio else "ai-edge-litert was not measured"),
        target("classify.py cold start, tflite-runtime, int8", board["cold_start_seconds"] if board else None,
               1.0, "s", missing),
        target("classify.py peak RSS, tflite-runtime, int8", board["peak_rss_bytes"] / MEGABYTE if board else None,
               80, "MB", missing),
        target("640x480 JPEG frame decoded, preprocessed, classified (classify.py, tflite-runtime, p50)",
               board["frame_ms"]["p50"] if board else None, 5, "ms", missing),
        target("default build", build_minutes, 3, "min",
               "" if build_minutes else "this build is not the default recipe: time one with benchmarks/build_time.py"),
    ]


# Markdown.

def row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: list[str], rows: list[list]) -> list[str]:
    return [row(header), row(["---"] * len(header)), *(row(cells) for cells in rows)]


def runtime_label(record: dict) -> str:
    name = RUNTIME_NAMES.get(record["runtime"], record["runtime"])
    return f"{name} {record['runtime_version']}" if record.get("runtime_version") else name


def megabytes(value: float | None) -> str:
    return "" if value is None else f"{value / MEGABYTE:.3f}" if value < 10 * MEGABYTE else f"{value / MEGABYTE:.1f}"


def interpreter_rows(records: list[dict]) -> list[list]:
    rows = []
    for record in records:
        if record["status"] != "ok":
            rows.append([record["model"], runtime_label(record), megabytes(record.get("size_bytes")),
                         record["status"] + (f": {record['error']}" if record.get("error") else ""), "", "", "", "", ""])
            continue
        latency = record["latency_us"]
        rows.append([record["model"], runtime_label(record), megabytes(record["size_bytes"]),
                     f"{record['start_to_first_result_seconds']:.2f}", f"{latency['p50']:.1f}", f"{latency['p95']:.1f}",
                     f"{record['multiply_adds_per_second'] / 1e9:.2f}", f"{record['images_per_second']:,.0f}",
                     f"{record['peak_rss_bytes'] / MEGABYTE:.0f}"])
    return rows


def classify_rows(records: list[dict]) -> list[list]:
    rows = []
    for record in records:
        if record["status"] != "ok":
            rows.append([record["model"], runtime_label(record),
                         record["status"] + (f": {record['error']}" if record.get("error") else ""), "", "", "", ""])
            continue
        frame = record["frame_ms"]
        rows.append([record["model"], runtime_label(record), f"{record['cold_start_seconds']:.2f}",
                     f"{frame['p50']:.2f}", f"{frame['p95']:.2f}", f"{frame['min']:.2f}",
                     f"{record['peak_rss_bytes'] / MEGABYTE:.0f}"])
    return rows


def floor_lines(result: dict) -> list[str]:
    """The multiply-adds floor against the best measured single-image latency and batched throughput."""
    measured = [record for record in result["interpreters"] if record["status"] == "ok"]
    operations = result["floor"]["multiply_adds_per_image"]
    lines = [f"Floor: {operations:,} multiply-adds per image (784x300 + 300x150 + 150x10)."]
    if measured:
        fastest = min(measured, key=lambda record: record["latency_us"]["p50"])
        widest = max(measured, key=lambda record: record["images_per_second"])
        lines.append(
            f"The fastest single image ({fastest['model']}, {runtime_label(fastest)}) takes "
            f"{fastest['latency_us']['p50']:.1f} us at p50: {fastest['multiply_adds_per_second'] / 1e9:.2f} G "
            f"multiply-adds/s. Batches of {widest['batch_size']} ({widest['model']}, {runtime_label(widest)}) "
            f"reach {widest['images_per_second']:,.0f} images/s, {widest['batched_multiply_adds_per_second'] / 1e9:.2f} "
            f"G multiply-adds/s, {1e6 / widest['images_per_second']:.2f} us an image: the rest of a single "
            f"image's time is per-call overhead (setting the input, invoking, reading the output).")
    return lines


def build_lines(build: dict) -> list[str]:
    def seconds(value):
        return "" if value is None else f"{value:.1f}"
    recipe = "default recipe" if build["default_recipe"] else "not the default recipe"
    return table(
        ["trained on", "epochs", "first epoch s", "later epochs s (mean)", "train s", "convert s", "verify s",
         "whole build s"],
        [[f"{build['device']} ({recipe})", build["epochs"], seconds(build["first_epoch_seconds"]),
          seconds(build["steady_epoch_seconds"]), seconds(build["train_seconds"]), seconds(build["convert_seconds"]),
          seconds(build["verify_seconds"]), seconds(build["total_seconds"])]])


def verdict(item: dict) -> str:
    if item["met"] is None:
        return "not measured" + (f": {item['note']}" if item["note"] else "")
    percent = abs(item["over_limit_percent"])
    amount = f"{percent:.1f}%" if percent < 10 else f"{percent:.0f}%"
    return f"met ({amount} under)" if item["met"] else f"MISSED by {amount}"


def target_rows(items: list[dict]) -> list[list]:
    def value(number, unit):
        return "" if number is None else f"{number:.3g} {unit}"
    return [[item["name"], f"<= {item['limit']:g} {item['unit']}", value(item["measured"], item["unit"]), verdict(item)]
            for item in items]


def busy_note(result: dict) -> str:
    loads = (result["machine"]["load_average"], result["load_average_at_end"])
    if max(loads) <= result["machine"]["cores"]:
        return ""
    return " (more runnable processes than cores: other work shared the CPU, so figures are slower and noisier)"


def markdown(result: dict) -> str:
    machine, settings = result["machine"], result["settings"]
    lines = [
        f"# edge-fashion bench, {result['created_at']}", "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']:.0f} GB, {machine['system']}, "
        f"Python {machine['python']}; load average {machine['load_average']:.2f} at the start, "
        f"{result['load_average_at_end']:.2f} at the end{busy_note(result)}. "
        f"Build: `{result['build_dir']}`.", "",
        "## Inference: one process per model and runtime, default interpreter options", "",
        *table(["model", "runtime", "file MB", "start to first result s", "p50 us", "p95 us", "G MAC/s at p50",
                f"batch of {settings['batch_size']}, images/s", "peak RSS MB"],
               interpreter_rows(result["interpreters"])), "",
        f"Single-image latency: set input, invoke, read output; {settings['invokes']:,} timed invokes after "
        f"{settings['warmup']} untimed. Keras runs through `predict_on_batch`.", "",
        *floor_lines(result), "",
        "## classify.py, the device script", "",
        *table(["model", "runtime", f"cold start s (median of {settings['cold_starts']})",
                "640x480 JPEG frame p50 ms", "p95 ms", "min ms", "peak RSS MB"], classify_rows(result["classify"])), "",
        f"Each of {settings['cold_starts']} runs classifies a 28x28 PNG, then {settings['frames']} 640x480 JPEG "
        "frames, each classified as soon as it is decoded. Cold start: process start to the first result line. Frame: "
        "classify.py's own per-image ms (decode, preprocess, inference). Peak RSS: the largest of the runs.", "",
        "## Build (from report.json)", "", *build_lines(result["build"]), "",
        "## Targets", "", *table(["target", "limit", "measured", "verdict"], target_rows(result["targets"])), "",
    ]
    return "\n".join(lines)


# The bar chart.

CHART_WIDTH = 900  # Pixels: the chart is CHART_WIDTH / pictures.DPI inches wide.
BAR_INCHES = 0.3  # Height of one bar and its gap.
COLOURS = {"int8": "#2e7d32", "float32": "#1976d2", "keras": "#ef6c00"}
# A panel whose values span more than this factor gets a log axis, on which 11.8 us and 1,271 us
# both read; on a linear one the shorter bar would be a sliver.
LOG_SPAN = 10


def chart_panels(result: dict) -> list[tuple[str, str, list[tuple[str, str, float]]]]:
    """(title, which is better, [(bar label, model, value)]) for each panel: sizes, single-image
    latency, batched throughput."""
    measured = [record for record in result["interpreters"] if record["status"] == "ok"]
    sizes = [(name, model, result["sizes"][name] / MEGABYTE) for model, name in MODEL_FILES.items()
             if name in result["sizes"]]

    def bars(value):
        return [(f"{record['model']}, {RUNTIME_NAMES.get(record['runtime'], record['runtime'])}", record["model"],
                 value(record)) for record in measured]
    return [
        ("File size, MB", "smaller is better", sizes),
        ("Single-image latency p50, µs", "smaller is better", bars(lambda record: record["latency_us"]["p50"])),
        (f"Batches of {result['settings']['batch_size']}, images/s", "larger is better",
         bars(lambda record: record["images_per_second"])),
    ]


def figure_value(value: float) -> str:
    """0.299, 11.8, 140, 1,271: three figures, or the whole number."""
    return f"{value:.3g}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def draw_panel(axes, title: str, better: str, bars: list[tuple[str, str, float]]) -> None:
    """Horizontal bars, top to bottom in the table's order, each with its value written beside it."""
    if not bars:
        axes.set_title(f"{title} ({better})", loc="left", fontsize=11)
        axes.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
        return
    labels, models, values = zip(*bars)
    log = value_axis(axes, values)
    axes.set_title(f"{title}{', log scale' if log else ''} ({better})", loc="left", fontsize=11)
    drawn = axes.barh(range(len(bars)), values, color=[COLOURS[model] for model in models], height=0.7)
    axes.bar_label(drawn, [figure_value(value) for value in values], padding=4, fontsize=9)
    axes.set_yticks(range(len(bars)), labels)
    axes.invert_yaxis()
    axes.spines[["top", "right"]].set_visible(False)


def value_axis(axes, values: tuple[float, ...]) -> bool:
    """Set up the bars' axis: log (True) when the values span more than LOG_SPAN, else linear from 0;
    either way with room on the right for the largest bar's value."""
    log = min(values) > 0 and max(values) / min(values) > LOG_SPAN
    if log:
        axes.set_xscale("log")
        axes.set_xlim(min(values) / 2, max(values) * 2)
        axes.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 3)))
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        axes.set_xlim(0, max(values) * 1.15)
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.6g}"))
    return log


def chart_figure(result: dict):
    """One horizontal bar panel per measure, bars coloured by model (the legend), values beside them."""
    panels = chart_panels(result)
    heights = [max(len(bars), 1) + 1.5 for _, _, bars in panels]
    figure = pictures.figure(CHART_WIDTH / pictures.DPI, BAR_INCHES * sum(heights) + 1.2)
    machine = result["machine"]
    figure.suptitle(f"edge-fashion bench {result['created_at'][:10]}: {machine['cpu']}, {machine['cores']} cores, "
                    f"{machine['architecture']}", fontsize=10, color="#555555")
    for axes, panel in zip(figure.subplots(len(panels), 1, height_ratios=heights), panels):
        draw_panel(axes, *panel)
    handles = [matplotlib.patches.Patch(color=colour, label=model) for model, colour in COLOURS.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), title="model", frameon=False)
    return figure


def chart_png(result: dict) -> bytes:
    return pictures.png_bytes(chart_figure(result))
