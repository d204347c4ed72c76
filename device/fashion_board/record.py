"""The one record of a classified frame, the same wherever the board reports one.

`classify.py --json` prints it, `/latest.json` and each `/events` message answer it, and a capture's
JSON line holds it with one more key, `capture` (device/README.md, "One record"). `validate` is that
schema in code: the tests run it on all four.
"""

from __future__ import annotations

import math
import re

# Each key and the JSON types its value may have; a float may come back from JSON as a whole number.
RESULT_KEYS = {"path": (str,), "frame": (int,), "label": (str,), "index": (int,), "score": (float, int),
               "top_k": (list,), "unsure": (bool,), "objects": (int,), "ms": (float, int),
               "model_sha256": (str,)}
ERROR_KEYS = {"path": (str,), "frame": (int,), "error": (str,), "model_sha256": (str,)}
CAPTURE_KEYS = {"label": (str,), "file": (str,)}
SHA256 = re.compile(r"[0-9a-f]{64}")
DIGITS = 6  # Scores are rounded to this many decimals; milliseconds to 3.


def is_unsure(score: float, doubtful_cut: bool, threshold: float) -> bool:
    """Unsure: the model's best score is below --threshold, or the preprocessing doubted its cut."""
    return score < threshold or doubtful_cut


def result_record(path: str, frame: int, predictions: list, unsure: bool, objects: int, ms: float,
                  model_sha256: str) -> dict:
    """The record of a classified frame; `predictions` are runtimes.Prediction, best first."""
    best = predictions[0]
    return {"path": path, "frame": frame, "label": best.label, "index": best.index,
            "score": round(best.score, DIGITS),
            "top_k": [[item.label, round(item.score, DIGITS)] for item in predictions],
            "unsure": unsure, "objects": objects, "ms": round(ms, 3), "model_sha256": model_sha256}


def error_record(path: str, frame: int, error: str, model_sha256: str) -> dict:
    """The record of a frame that could not be classified."""
    return {"path": path, "frame": frame, "error": error, "model_sha256": model_sha256}


def check_types(record: dict, keys: dict, what: str) -> None:
    if set(record) != set(keys):
        raise ValueError(f"{what} has keys {sorted(record)}, expected {sorted(keys)}")
    for key, types in keys.items():
        value = record[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise ValueError(f"{what}: {key} is {value!r}, expected {' or '.join(kind.__name__ for kind in types)}")


def check_result(record: dict) -> None:
    top_k = record["top_k"]
    pairs = [pair for pair in top_k if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
             and isinstance(pair[1], (float, int)) and not isinstance(pair[1], bool)]
    if not top_k or len(pairs) != len(top_k):
        raise ValueError(f"top_k must be one or more [label, score] pairs, not {top_k!r}")
    scores = [score for _, score in top_k]
    if not all(math.isfinite(score) and 0 <= score <= 1 for score in scores) or scores != sorted(scores, reverse=True):
        raise ValueError(f"top_k's scores must lie in 0-1, best first: {scores}")
    if top_k[0] != [record["label"], record["score"]]:
        raise ValueError(f"label and score {record['label']!r} {record['score']} are not top_k's first {top_k[0]}")
    if record["index"] < 0 or record["objects"] < 0 or not 0 <= record["ms"] < math.inf:
        raise ValueError("index, objects and ms must not be negative")


def validate(record: dict) -> None:
    """Raise ValueError unless `record` is a result record or an error record, optionally with the
    `capture` a capture's JSON line adds; every value of the right type and within its range."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    fields = {key: value for key, value in record.items() if key != "capture"}
    if "capture" in record:
        if not isinstance(record["capture"], dict):
            raise ValueError("capture must be an object")
        check_types(record["capture"], CAPTURE_KEYS, "capture")
    is_error = "error" in fields
    check_types(fields, ERROR_KEYS if is_error else RESULT_KEYS, "an error record" if is_error else "a record")
    if not record["path"] or record["frame"] < 1 or not SHA256.fullmatch(record["model_sha256"]):
        raise ValueError("path must not be empty, frame must be 1 or more, model_sha256 64 hex digits")
    if not is_error:
        check_result(fields)
