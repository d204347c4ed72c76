"""What every part of the board's code shares: the frame size, the model error, one-line messages."""

from __future__ import annotations

import sys

SIDE = 28  # The model's input is SIDE x SIDE grayscale.
# The files read as images (folders, --watch, --replay) and kept by --save-frames; `edge-fashion pull`
# and the host's photo folders use this list too.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                            ".pnm"})


class ModelError(ValueError):
    """The model, its manifest, its labels or the runtime cannot be used."""


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 200 else text[:197] + "..."


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
