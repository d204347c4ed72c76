"""The manifest's schema: what a bundle's manifest.json must hold, checked whole before the board
trusts any of it (docs/bundle.md describes each field). A manifest that is valid JSON but lacks a
field, or holds one of the wrong type, is refused with one line naming the field, never met later
as a KeyError halfway through a self-test.
"""

from __future__ import annotations

import base64
import binascii
import math

from .common import SIDE, ModelError


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_labels(labels) -> list:
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) and label.strip()
                                                             for label in labels):
        raise ValueError("labels is not a list of class names")
    if len(set(labels)) != len(labels):
        raise ValueError("labels names a class twice")
    return labels


def check_tensor(name: str, spec) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str) or not is_number(spec.get("scale")) \
            or not is_integer(spec.get("zero_point")):
        raise ValueError(f"{name} is not a tensor's dtype, scale and zero_point")


def check_case(number: int, case, classes: int) -> None:
    """One self-test case: a 28x28 image, the class and the probabilities the build got for it."""
    where = f"self_test case {number}"
    if not isinstance(case, dict):
        raise ValueError(f"{where} is not an object")
    if not is_integer(case.get("test_index")) or not is_integer(case.get("top1")) \
            or not 0 <= case["top1"] < classes:
        raise ValueError(f"{where} has no test_index, or no top1 among the {classes} classes")
    probabilities = case.get("probabilities")
    if not isinstance(probabilities, list) or len(probabilities) != classes \
            or not all(is_number(value) and 0 <= value <= 1 for value in probabilities):
        raise ValueError(f"{where} has no probabilities: {classes} numbers from 0 to 1")
    try:
        image = base64.b64decode(case.get("image_b64"), validate=True)
    except (TypeError, ValueError, binascii.Error):
        image = b""
    if len(image) != SIDE * SIDE:
        raise ValueError(f"{where} has no image_b64: {SIDE * SIDE} pixels in base64")


def check_self_test(test) -> None:
    if not isinstance(test, dict) or not is_number(test.get("tolerance")) or test["tolerance"] < 0 \
            or not isinstance(test.get("cases"), list):
        raise ValueError("self_test has no tolerance and list of cases")


def check(manifest: dict, where: str) -> None:
    """ModelError naming `where` and the field, unless every field the board reads is well formed."""
    try:
        sha256 = manifest["model"].get("sha256")
        if not isinstance(sha256, str) or len(sha256) != 64 or not all(digit in "0123456789abcdef" for digit in sha256):
            raise ValueError("model.sha256 is not a sha256 in hex")
        classes = len(check_labels(manifest.get("labels")))
        check_tensor("input", manifest.get("input"))
        check_tensor("output", manifest.get("output"))
        if "self_test" in manifest:
            check_self_test(manifest["self_test"])
            for number, case in enumerate(manifest["self_test"]["cases"]):
                check_case(number, case, classes)
    except ValueError as error:
        raise ModelError(f"{where}: {error}: rebuild the bundle or copy it again") from None
