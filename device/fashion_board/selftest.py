"""The self-test: the manifest's cases, classified by this board's runtime, must give the build's answers."""

from __future__ import annotations

import base64
import json
import time

import numpy as np

from .common import SIDE
from .runtimes import Classifier, Runtime


def check_case(case: dict, scores: np.ndarray, tolerance: float, labels: list) -> tuple:
    """(failure message or "", largest probability difference) for one self-test case."""
    expected = np.asarray(case["probabilities"], dtype=np.float32)
    difference = float(np.abs(scores - expected).max())
    top1 = int(np.argmax(scores))
    if top1 != case["top1"]:
        return f"test image {case['test_index']}: top-1 {labels[top1]}, expected {labels[case['top1']]}", difference
    if difference > tolerance:
        return f"test image {case['test_index']}: probabilities differ by {difference:.4f} > {tolerance}", difference
    return "", difference


def check_tensors(classifier: Classifier, manifest: dict) -> list:
    """Failures where the model's input or output tensor differs from what the manifest says."""
    failures = []
    for key, details in (("input", classifier.input), ("output", classifier.output)):
        expected = manifest.get(key, {})
        actual = (np.dtype(details["dtype"]).name, *details["quantization"])
        wanted = (expected.get("dtype"), expected.get("scale"), expected.get("zero_point"))
        if actual[0] != wanted[0] or not np.isclose(actual[1], wanted[1]) or actual[2] != wanted[2]:
            failures.append(f"{key} tensor is {actual}, manifest says {wanted}")
    return failures


def self_test(classifier: Classifier, manifest: dict, runtime: Runtime, load_ms: float, as_json: bool) -> bool:
    """Run the manifest's self-test cases one by one and as one batch; print PASS or FAIL."""
    test = manifest.get("self_test") or {}
    cases, tolerance = test.get("cases") or [], float(test.get("tolerance", 0))
    failures = check_tensors(classifier, manifest) + ([] if cases else ["the manifest has no self-test cases"])
    images = [np.frombuffer(base64.b64decode(case["image_b64"]), np.uint8).reshape(SIDE, SIDE) for case in cases]
    started = time.perf_counter()
    single = [classifier.scores(image[None])[0] for image in images]
    inference_ms = 1000 * (time.perf_counter() - started) / max(1, len(cases))
    batched = classifier.scores(np.stack(images)) if cases else []
    largest = 0.0
    for case, one, many in zip(cases, single, batched):
        for scores, how in ((one, "alone"), (many, "in a batch")):
            failure, difference = check_case(case, scores, tolerance, classifier.labels)
            largest = max(largest, difference)
            failures += [f"{failure} ({how})"] if failure else []
    report = {"passed": not failures, "cases": len(cases), "failures": failures, "max_difference": round(largest, 6),
              "runtime": f"{runtime.name} {runtime.version}", "load_ms": round(load_ms, 2),
              "inference_ms": round(inference_ms, 3)}
    if as_json:
        print(json.dumps({"self_test": report}))
        return not failures
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{'FAIL' if failures else 'PASS'}: {len(cases)} cases, sha256 ok, largest difference {largest:.4f} "
          f"(tolerance {tolerance}); {report['runtime']}, model load {load_ms:.1f} ms, "
          f"{inference_ms:.3f} ms per image")
    return not failures
