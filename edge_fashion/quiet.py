"""Quiet runs: TensorFlow's and LiteRT's chatter (absl, oneDNN and cudart lines at start-up, the
converter's logs, retracing warnings) stays off the terminal on a normal run; `--verbose` shows it.

Some of those lines are written by C++ code straight to file descriptor 2 before any log level is
read, so hiding them means pointing the descriptors elsewhere for a while: `hidden_output`. Like
logging's own levels, the choice is the process's: a command makes it once, with `configure`.
"""

import contextlib
import logging
import os
import sys
import tempfile
import warnings

REPLAYED_CHARACTERS = 4000  # How much of a hidden log is shown when the work it hid fails.
SHOWN = {"verbose": False}  # Set by configure(): whether hidden_output shows what it would hide.


def configure(verbose: bool) -> None:
    """Before TensorFlow loads: its C++ log level (a user's own TF_CPP_MIN_LOG_LEVEL wins) and its
    Python logger's (retracing and deprecation warnings)."""
    SHOWN["verbose"] = verbose
    if verbose:
        logging.getLogger("tensorflow").setLevel(logging.NOTSET)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def hidden_output():
    """Hide what the block prints, Python's prints and C++ logs alike (file descriptors 1 and 2),
    unless configure() was told verbose.

    When the block raises, the end of the hidden log is printed, since it then explains what went wrong.
    """
    if SHOWN["verbose"]:
        yield
        return
    flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception:
            restore(saved)
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace")[-REPLAYED_CHARACTERS:])
            raise
        finally:
            restore(saved)
            os.close(saved[0])
            os.close(saved[1])


def flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def restore(saved: tuple[int, int]) -> None:
    flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
