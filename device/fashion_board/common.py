"""What every part of the board's code shares: the frame size, the model error, one-line messages,
quiet interpreter start-up."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

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


@contextlib.contextmanager
def hidden_stderr(hide: bool = True):
    """Keep what the block writes to file descriptor 2 off the terminal: an interpreter's start-up
    lines ("Created TensorFlow Lite XNNPACK delegate for CPU.", TensorFlow's absl and cudart lines)
    come from its C++ code, which no log level of Python's reaches. When the block raises, what it
    wrote is shown, since it then says why."""
    if not hide:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as hidden:
        os.dup2(hidden.fileno(), 2)
        try:
            yield
        except Exception:
            sys.stderr.flush()
            os.dup2(saved, 2)
            hidden.seek(0)
            sys.stderr.write(hidden.read().decode("utf-8", "replace")[-4000:])
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
