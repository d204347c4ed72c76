"""Classifying a stream of sources, one output line per image as soon as it is known, then a summary."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import numpy as np
from PIL import Image

from . import capture, record
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
    frame: int = 0  # The frame's number in this run, from 1: its id in every record.
    objects: int = 1  # Objects the preprocessing saw in the image; the frame shows the heaviest.


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
    model_sha256: str = ""  # The model's, in every record: which model gave the answer.


def prepare(name: str, load, options: Options, number: int) -> tuple:
    """(pixels or None, error, milliseconds, doubtful cut, objects) for one source; errors stay with their source."""
    started = time.perf_counter()
    try:
        image = load(options.roi is None)
        decoded = time.perf_counter()
        frame = make_frame(image, options.roi)
    except Exception as error:  # Pillow raises many types on malformed files: fail this file only.
        return None, one_line(error), 1000 * (time.perf_counter() - started), False, 0
    pixels = frame.pixels
    finished = time.perf_counter()
    if options.verbose:
        log(f"{name}: decode {1000 * (decoded - started):.2f} ms, preprocess {1000 * (finished - decoded):.2f} ms")
    if options.save_dir is not None:
        stem = pathlib.Path(name).stem.replace(":", "_") or "stdin"
        Image.fromarray(pixels).save(options.save_dir / f"{number:05d}_{stem}.png")
    return pixels, "", 1000 * (finished - started), frame.unsure, frame.objects


def classify_batch(batch: list, classifier: Classifier, options: Options, first: int = 1) -> list:
    """Results for [(name, pixels or None, error, ms, doubtful cut, objects)], one interpreter call for
    all good images; the frames are numbered from `first`."""
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
    for number, (name, pixels, error, ms, doubtful_cut, objects) in enumerate(batch, first):
        if pixels is None:
            results.append(Result(name, [], ms, error, frame=number))
        else:
            predictions = top_predictions(next(rows), classifier.labels, options.top_k)
            results.append(Result(name, predictions, ms + share, doubtful_cut=doubtful_cut, frame=number,
                                  objects=objects))
    return results


def result_record(result: Result, options: Options) -> dict:
    """The one record of a result (record.py): what --json prints and the live page shows."""
    if result.error:
        return record.error_record(result.path, result.frame, result.error, options.model_sha256)
    unsure = record.is_unsure(result.predictions[0].score, result.doubtful_cut, options.threshold)
    return record.result_record(result.path, result.frame, result.predictions, unsure, result.objects,
                                result.ms, options.model_sha256)


def format_result(result: Result, options: Options) -> str:
    line = result_record(result, options)
    if options.as_json:
        return json.dumps(line)
    classes = ", ".join(f"{item.label} {item.score:.2f}" for item in result.predictions)
    return f"{result.path}\t{'unsure: ' if line['unsure'] else ''}{classes}\t{result.ms:.2f} ms"


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


def write_line(text: str) -> None:
    """One output line, written whole at once: a Ctrl-C between a line and its newline (print writes
    them apart) would glue the summary to the last record."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def keeping(load, decoded: list):
    """The loader `load`, also keeping the image it decodes in `decoded`: the live page shows it."""
    def load_and_keep(use_draft: bool):
        decoded.append(load(use_draft))
        return decoded[-1]
    return load_and_keep


def classify_sources(sources, classifier: Classifier, options: Options, runtime: Runtime, publish=None) -> dict:
    """Classify every source, printing its line at once, then the summary; Ctrl-C ends early.
    With `publish` (--serve), each frame also goes to publish(record, loader, the image decoded or
    None, the 28x28 pixels or None).

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
            decoded = []
            entry = (name, *prepare(name, keeping(load, decoded) if publish else load, options, number))
            result = classify_batch([entry], classifier, options, number)[0]
            if publish is not None:
                publish(result_record(result, options), load, decoded[0] if decoded else None, entry[1])
            write_line(format_result(result, options))
            if result.error:
                errors += 1
            else:
                milliseconds.append(result.ms)
                keep_frame(result, load, number, options)
    except KeyboardInterrupt:
        log("interrupted")
    summary = latency_summary(milliseconds, errors, time.perf_counter() - started, runtime)
    write_line(format_summary(summary, options.as_json))
    return summary
