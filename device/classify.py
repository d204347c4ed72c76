"""Classify garments with the Fashion-MNIST int8 model beside this script, on a board or a PC.

Examples (paste one):
    python3 classify.py photo.jpg frames/ --top-k 3
    python3 classify.py --camera --count 20 --interval 0.5
    python3 classify.py --watch incoming/ --json
    python3 classify.py --camera --save-frames frames/
    python3 classify.py --self-test
    python3 classify.py --serve --camera            # then open http://127.0.0.1:8080/
    python3 classify.py --serve --replay frames/ --fps 5 --host 0.0.0.0   # prints a URL with a token

Inputs are image files, folders (searched recursively by image extension), `-` for one image on
standard input, `--camera` (Picamera2, else OpenCV), `--watch DIR` (new or changed files in a folder, once complete)
or `--replay DIR` (a folder's images played over and over as a camera, `--fps N`). `--serve` adds a
web page with the live frame, the results and a button per class to save the frame (see README.md). Each
image becomes a 28x28 frame in the data set's form (light garment on black, longest side 28) before
the model sees it; `--save-preprocessed DIR` writes those frames. `--save-frames DIR` keeps each
classified camera or watched frame as it came (JPEG) in DIR/<predicted label, "/" as "-">/, for
moving the wrong ones to the right folder and training on them (`edge-fashion build --photos DIR`).

Output: one line per image, `path<TAB>label score<TAB>ms` (`unsure: ` before the classes when the
result is unsure), then a summary line. With `--json`, one JSON record per line instead: the record
that /latest.json, /events and the page's captures give too, its schema in README.md ("One record"),
then `{"summary": {...}}`. `objects` is how many objects the preprocessing saw (a pair of shoes is
two); the frame shows the heaviest. `ms` is the image's own decode, preprocessing and inference time.
Each line is printed as soon as its image is classified. Images that would need more than 48 MB to
decode are refused with an error line, before decoding (README.md, "Memory").
Exit status: 0 when every input was classified (or the self-test passed), 1 when any input
failed (or the self-test failed), 2 for a usage, model or runtime error.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # The startup time reported by --verbose counts from here.

import os

# Before numpy loads: the numpy engine's matrix products are small, and OpenBLAS's thread pool costs
# far more than it gives on a busy board (a batch of 32: 81 ms with its threads, 5 ms without).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import math
import pathlib
import platform
import signal
import sys
import textwrap

import numpy as np
from PIL import Image

from fashion_board import capture, common, preprocess, runtimes, selftest, serve, stream
from fashion_board import sources as sources_module

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = __doc__[__doc__.index("Examples"):__doc__.index("\n\n", __doc__.index("Examples"))]


def parse_roi(text: str) -> tuple:
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or values[2] == 0 or values[3] == 0:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h: four whole numbers, width and height above 0, got {text!r}")
    return values


def number(kind: type, low: float, high: float | None = None, above: bool = False):
    """An argparse type: a finite `kind` (int or float) from `low` (above it when `above`) to `high`.
    A bad value is refused by argparse with the option's name and what it expected."""
    wanted = "a whole number" if kind is int else "a number"
    if high is not None:
        wanted += f" from {low:g} to {high:g}"
    else:
        wanted += f" above {low:g}" if above else f", {low:g} or more"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (above and value == low) \
                or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


def add_option(group, name: str, **settings) -> None:
    """An option under its dashed name; the underscored spelling (--top_k) that older command lines
    used is still accepted, but --help lists only the dashed one."""
    group.add_argument(name, **settings)
    if "-" in name[2:]:
        hidden = {key: value for key, value in settings.items() if key not in ("help", "default", "metavar")}
        group.add_argument("--" + name[2:].replace("-", "_"), help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                           **hidden)


UNSURE = ("A result is unsure (the text line says 'unsure:', JSON says \"unsure\": true, the live page "
          "shows it) when its best score is below --threshold, or when the preprocessing doubted where "
          "the garment is in a colour photo: a busy background, or a garment touching three sides of the frame.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(usage="%(prog)s [options] [image files, folders or -]  (--help: every option)",
                                     description=__doc__.split("\n")[0],
                                     epilog=textwrap.fill(UNSURE, 90) + "\n\n" + EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="image files, folders (searched recursively), or - for one image on stdin")
    add_option(parser, "--model", type=pathlib.Path, default=HERE / "model_int8.tflite", metavar="FILE",
               help="the TFLite model (default: model_int8.tflite beside this script)")
    add_option(parser, "--labels", type=pathlib.Path, metavar="FILE", help="class names, one a line (default: labels.txt beside the model)")
    add_option(parser, "--runtime", choices=runtimes.RUNTIMES,
               help="force one interpreter, or numpy: the engine that needs none (default: the first that imports)")
    add_option(parser, "--threads", type=number(int, 1), default=1, metavar="N", help="interpreter threads (default 1)")
    add_option(parser, "--top-k", type=number(int, 1), metavar="K", help="print the K best classes (default 1; 3 with --serve)")
    add_option(parser, "--threshold", type=number(float, 0, 1), default=0.0, metavar="T",
               help="mark a result unsure when its best score is below T, 0 to 1 (default 0: only a doubtful cut is unsure)")
    add_option(parser, "--json", action="store_true", help="one JSON record per line (schema in device/README.md)")
    add_option(parser, "--roi", type=parse_roi, metavar="X,Y,W,H", help="crop this region of each frame first")
    add_option(parser, "--save-preprocessed", type=pathlib.Path, metavar="DIR",
               help="write the 28x28 image the model saw for each input")
    add_option(parser, "--save-frames", type=pathlib.Path, metavar="DIR",
               help="keep each classified camera or watched frame in DIR/<predicted label>/")
    add_option(parser, "--camera", action="store_true", help="classify live camera frames (Picamera2, else OpenCV)")
    add_option(parser, "--camera-index", type=number(int, 0), default=0, metavar="N", help="OpenCV camera number (default 0)")
    add_option(parser, "--watch", type=pathlib.Path, metavar="DIR", help="classify images as they appear in DIR")
    add_option(parser, "--replay", type=pathlib.Path, metavar="DIR", help="play DIR's images over and over as a camera")
    add_option(parser, "--fps", type=number(float, 0), default=10.0, metavar="N",
               help="--replay's frames per second (default 10; 0: as fast as it can)")
    add_option(parser, "--count", type=number(int, 0), default=0, metavar="N",
               help="stop after N frames (camera, watch, replay; default 0: never)")
    add_option(parser, "--interval", type=number(float, 0), default=0.0, metavar="SECONDS",
               help="seconds between camera frames or folder scans (default 0)")
    add_option(parser, "--self-test", action="store_true",
               help="check that this runtime reproduces the manifest's results; PASS or FAIL")
    add_option(parser, "--version", action="store_true", help="print the model's sha256 and the runtime, then exit")
    serving = parser.add_argument_group("serving (--serve, with --camera, --watch or --replay)")
    add_option(serving, "--serve", action="store_true", help="also serve a live page, /healthz and /metrics")
    add_option(serving, "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1); others than loopback need a token")
    add_option(serving, "--port", type=number(int, 0, 65535), default=8080, help="port to listen on (default 8080; 0: any free one)")
    add_option(serving, "--token", help="the token clients must give, 16 characters or more (default: generated when not on loopback)")
    add_option(serving, "--token-file", type=pathlib.Path, metavar="FILE",
               help="read the token from FILE (keeps it out of the process list)")
    add_option(serving, "--captures", type=pathlib.Path, default=pathlib.Path("captures"), metavar="DIR",
               help="where frames labelled on the page go, in DIR/<label>/ (default: captures)")
    add_option(serving, "--stale-after", type=number(float, 0, above=True), default=10.0, metavar="SECONDS",
               help="/healthz answers 503, and the page says the stream stalled, when no frame came for this long (default 10)")
    add_option(parser, "--verbose", action="store_true",
               help="runtime, startup and per-stage times on stderr, and the interpreter's own start-up lines")
    add_option(parser, "--probe-model", type=pathlib.Path, help=argparse.SUPPRESS)
    return parser


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """What argparse cannot check alone: one mode, options that need another, folders that must exist."""
    live_sources = arguments.camera + (arguments.watch is not None) + (arguments.replay is not None)
    modes = bool(arguments.inputs) + live_sources + arguments.self_test
    if modes != 1 and arguments.probe_model is None:
        parser.error("give image files or folders, or one of --camera, --watch DIR, --replay DIR, --self-test")
    if arguments.serve and not live_sources:
        parser.error("--serve needs a frame source: --camera, --watch DIR or --replay DIR")
    if arguments.token is not None and arguments.token_file is not None:
        parser.error("give --token or --token-file, not both")
    for option, folder in (("--watch", arguments.watch), ("--replay", arguments.replay)):
        if folder is not None and not folder.exists():
            parser.error(f"{option} {folder}: the folder is missing")
        check_folder(parser, option, folder)
    check_folder(parser, "--save-preprocessed", arguments.save_preprocessed)
    check_folder(parser, "--captures", arguments.captures if arguments.serve else None)
    if arguments.save_frames is not None:
        check_folder(parser, "--save-frames", arguments.save_frames)
        check_frames_dir(parser, arguments)


def check_folder(parser: argparse.ArgumentParser, option: str, folder: pathlib.Path | None) -> None:
    if folder is not None and folder.exists() and not folder.is_dir():
        parser.error(f"{option} {folder}: not a folder")


def check_frames_dir(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    if not arguments.camera and arguments.watch is None:
        parser.error("--save-frames keeps camera or watched frames: use it with --camera or --watch DIR")
    if arguments.watch is not None:
        watched, kept = arguments.watch.resolve(), arguments.save_frames.resolve()
        if kept == watched or watched in kept.parents:
            parser.error("--save-frames DIR must lie outside the --watch folder (its frames would be classified again)")


def print_version(arguments: argparse.Namespace) -> None:
    """The model's sha256 (checked against manifest.json when one describes it) and the runtime."""
    runtime = runtimes.find_runtime(arguments.runtime)
    manifest = runtimes.read_manifest(arguments.model)
    digest = hashlib.sha256(runtimes.read_model(arguments.model, manifest)).hexdigest()
    checked = "as manifest.json says" if manifest else "no manifest.json describes it"
    print(f"model {arguments.model.name} sha256 {digest} ({checked})")
    print(f"runtime {runtime.name} {runtime.version} (Python {platform.python_version()}, numpy {np.__version__}, "
          f"Pillow {Image.__version__})")


def read_token(arguments: argparse.Namespace) -> str | None:
    if arguments.token_file is None:
        return arguments.token
    try:
        token = arguments.token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--token-file {arguments.token_file}: cannot read it ({common.one_line(error)})") from None
    if len(token) < serve.MIN_TOKEN_LENGTH:
        raise ValueError(f"--token-file {arguments.token_file}: the token must be at least "
                         f"{serve.MIN_TOKEN_LENGTH} characters")
    return token


def serve_sources(arguments, sources, classifier, options, runtime) -> dict:
    """--serve: the settings from the arguments, a token when needed, then the server and the loop."""
    token, generated = serve.choose_token(arguments.host, read_token(arguments))
    settings = serve.Settings(arguments.host, arguments.port, token, arguments.captures,
                              arguments.stale_after, arguments.verbose)
    signal.signal(signal.SIGTERM, stop)  # systemd stops the service with SIGTERM: end as Ctrl-C does.
    return serve.serve(sources, classifier, options, runtime, settings, generated)


def stop(signal_number, frame):
    raise KeyboardInterrupt


def open_sources(arguments: argparse.Namespace) -> tuple:
    """(sources, how --save-frames gets a frame as it came) for the inputs or the live source asked for."""
    if arguments.camera:
        return (sources_module.camera_sources(arguments.camera_index, arguments.count, arguments.interval),
                capture.camera_original)
    if arguments.watch is not None:
        return (sources_module.watched_sources(arguments.watch, arguments.count, arguments.interval),
                capture.file_original)
    if arguments.replay is not None:
        return sources_module.replay_sources(arguments.replay, arguments.fps, arguments.count), None
    return sources_module.file_sources(arguments.inputs), None


def classify(arguments: argparse.Namespace, classifier, runtime, manifest) -> dict:
    """Classify the inputs or the live source, serving the page with --serve; the summary."""
    if arguments.save_preprocessed is not None:
        arguments.save_preprocessed.mkdir(parents=True, exist_ok=True)
    model_sha256 = (manifest["model"]["sha256"] if manifest else
                    hashlib.sha256(arguments.model.read_bytes()).hexdigest())
    top_k = arguments.top_k or (serve.TOP_SHOWN if arguments.serve else 1)
    sources, original = open_sources(arguments)
    options = stream.Options(top_k, arguments.threshold, arguments.roi, arguments.save_preprocessed,
                             arguments.json, arguments.verbose, arguments.save_frames, original, model_sha256)
    if arguments.serve:
        return serve_sources(arguments, sources, classifier, options, runtime)
    return stream.classify_sources(sources, classifier, options, runtime)


def main(argv: list | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if not arguments.version:
        check_arguments(parser, arguments)
    preprocess.configure_pillow()
    try:
        if arguments.version:
            print_version(arguments)
            return 0
        if arguments.probe_model is not None:
            runtimes.probe(arguments.probe_model, arguments.runtime)
            return 0
        if not arguments.model.is_file():
            raise common.ModelError(f"cannot read the model (--model {arguments.model}): "
                                    f"{'not a file' if arguments.model.exists() else 'No such file'}")
        classifier, runtime, manifest, load_ms = runtimes.load_classifier(
            arguments.model, arguments.labels, arguments.runtime, arguments.threads, arguments.self_test,
            arguments.verbose, STARTED)
        if arguments.self_test:
            return 0 if selftest.self_test(classifier, manifest, runtime, load_ms, arguments.json) else 1
        summary = classify(arguments, classifier, runtime, manifest)
    except BrokenPipeError:  # The reader went away (`| head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError, RuntimeError) as error:  # ModelError, files, interpreter: one line.
        common.log(f"classify.py: error: {common.one_line(error)}")
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
