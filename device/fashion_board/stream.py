"""Classifying a stream of sources, one output line per image as soon as it is known, then a summary."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np
from PIL import Image

from . import capture
from .common import log, one_line
from .preprocess import make_frame
from .runtimes import Classifier, Runtime, top_predictions


@dataclasses.dataclass
class Result:
    path: str
    predictions: list  # Prediction, best first; empty when error is set.
    ms: float = 0.0
    error: str = ""
    doubtful_cut: bool = False  # The preprocessing was unsure where the garment is.


@dataclasses.dataclass
class Options:
    top_k: int
    threshold: float
    roi: tuple | None
    save_dir: pathlib.Path | None
    as_json: bool
    verbose: bool
    frames_dir: pathlib.Path | None = None  # --save-frames: keep each classified frame there, by answer.
    original: object = None  # (name, load) -> (bytes, suffix) of the frame as it came (see capture).


def prepare(name: str, load, options: Options, number: int) -> tuple:
    """(pixels or None, error, milliseconds, doubtful cut) for one source; errors stay with their source."""
    started = time.perf_counter()
    try:
        image = load(options.roi is None)
        decoded = time.perf_counter()
        frame = make_frame(image, options.roi)
    except Exception as error:  # Pillow raises many types on malformed files: fail this file only.
        return None, one_line(error), 1000 * (time.perf_counter() - started), False
    pixels = frame.pixels
    finished = time.perf_counter()
    if options.verbose:
        log(f"{name}: decode {1000 * (decoded - started):.2f} ms, preprocess {1000 * (finished - decoded):.2f} ms")
    if options.save_dir is not None:
        stem = pathlib.Path(name).stem.replace(":", "_") or "stdin"
        Image.fromarray(pixels).save(options.save_dir / f"{number:05d}_{stem}.png")
    return pixels, "", 1000 * (finished - started), frame.unsure


def classify_batch(batch: list, classifier: Classifier, options: Options) -> list:
    """Results for [(name, pixels or None, error, ms, doubtful cut)], one interpreter call for all good images."""
    good = [entry for entry in batch if entry[1] is not None]
    share = 0.0
    if good:
        started = time.perf_counter()
        scores = classifier.scores(np.stack([entry[1] for entry in good]))
        share = 1000 * (time.perf_counter() - started) / len(good)
        if options.verbose:
            log(f"inference {share * len(good):.2f} ms for a batch of {len(good)}")
    rows = iter(scores if good else [])
    results = []
    for name, pixels, error, ms, doubtful_cut in batch:
        if pixels is None:
            results.append(Result(name, [], ms, error))
        else:
            predictions = top_predictions(next(rows), classifier.labels, options.top_k)
            results.append(Result(name, predictions, ms + share, doubtful_cut=doubtful_cut))
    return results


def format_result(result: Result, options: Options) -> str:
    if result.error:
        if options.as_json:
            return json.dumps({"path": result.path, "error": result.error})
        return f"{result.path}\terror: {result.error}"
    best = result.predictions[0]
    # Unsure: the model's confidence is below --threshold, or the preprocessing doubted its cut.
    unsure = best.score < options.threshold or result.doubtful_cut
    if options.as_json:
        return json.dumps({
            "path": result.path, "label": best.label, "index": best.index, "score": round(best.score, 6),
            "top_k": [[item.label, round(item.score, 6)] for item in result.predictions],
            "unsure": unsure, "ms": round(result.ms, 3),
        })
    classes = ", ".join(f"{item.label} {item.score:.2f}" for item in result.predictions)
    return f"{result.path}\t{'unsure: ' if unsure else ''}{classes}\t{result.ms:.2f} ms"


def latency_summary(milliseconds: list, errors: int, seconds: float, runtime: Runtime) -> dict:
    """Count, errors, mean/p50/p95 latency in ms and frames per second."""
    values = np.asarray(milliseconds, dtype=np.float64)
    has_values = values.size > 0

    def statistic(value: float):
        return round(float(value), 3) if has_values else None
    return {
        "count": int(values.size), "errors": errors,
        "ms_mean": statistic(values.mean() if has_values else 0),
        "ms_p50": statistic(np.percentile(values, 50) if has_values else 0),
        "ms_p95": statistic(np.percentile(values, 95) if has_values else 0),
        "fps": round(values.size / seconds, 1) if has_values and seconds > 0 else None,
        "runtime": f"{runtime.name} {runtime.version}",
    }


def format_summary(summary: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps({"summary": summary})
    text = f"summary: {summary['count']} classified, {summary['errors']} errors"
    if summary["count"]:
        text += (f"; latency mean {summary['ms_mean']:.2f} ms, p50 {summary['ms_p50']:.2f} ms, "
                 f"p95 {summary['ms_p95']:.2f} ms; {summary['fps']:.1f} frames/s")
    return text + f"; {summary['runtime']}"


def keep_frame(result: Result, load, number: int, options: Options) -> None:
    """--save-frames: the frame as it came, under the folder of its answer."""
    if options.frames_dir is None:
        return
    stem = capture.frame_stem(result.path, number)
    path = capture.save_frame(options.frames_dir, result.predictions[0].label, stem,
                              options.original(result.path, load))
    if options.verbose:
        log(f"{result.path}: kept as {path}")


def classify_sources(sources, classifier: Classifier, options: Options, runtime: Runtime) -> dict:
    """Classify every source, printing its line at once, then the summary; Ctrl-C ends early.

    Each image is classified as soon as it is decoded, not batched with later ones: a batch would
    hold finished results while the next images decode, and a run killed (out of memory, by a
    watchdog) would lose them. The price is one interpreter call per image: a folder of 28x28 PNGs
    runs at about half the rate batches of 32 gave; camera frames and photos, whose decoding
    dominates, lose little.
    """
    milliseconds, errors, number = [], 0, 0
    started = time.perf_counter()
    try:
        for name, load in sources:
            number += 1
            for result in classify_batch([(name, *prepare(name, load, options, number))], classifier, options):
                print(format_result(result, options), flush=True)
                if result.error:
                    errors += 1
                else:
                    milliseconds.append(result.ms)
                    keep_frame(result, load, number, options)
    except KeyboardInterrupt:
        log("interrupted")
    summary = latency_summary(milliseconds, errors, time.perf_counter() - started, runtime)
    print(format_summary(summary, options.as_json), flush=True)
    return summary
