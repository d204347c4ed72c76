"""Classify garments with the Fashion-MNIST int8 model beside this script, on a board or a PC.

Usage (paste one):
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

Output: one line per image, `path<TAB>label score<TAB>ms`, then a summary line. With `--json`, one
JSON object per line instead; this schema is stable:
    {"path": str, "label": str, "index": int, "score": float,
     "top_k": [[label, score], ...], "unsure": bool, "ms": float}
    {"path": str, "error": str}
    {"summary": {"count": int, "errors": int, "ms_mean": float|null, "ms_p50": float|null,
                 "ms_p95": float|null, "fps": float|null, "runtime": str}}
    {"self_test": {"passed": bool, "cases": int, "failures": [str, ...],
                   "max_difference": float, "runtime": str, "load_ms": float, "inference_ms": float}}
`unsure` is true when the best score is below --threshold, or when the preprocessing doubted where
the garment is in a colour photo (a busy background, or a garment touching three sides of the frame).
`ms` is the image's own decode, preprocessing and inference time. Each line is printed as soon as
its image is classified. Images that would need more than 48 MB to decode are refused with an
error line, before decoding (device/README.md, "Memory").
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
import pathlib
import signal
import sys

from fashion_board import capture, common, preprocess, runtimes, selftest, serve, stream
from fashion_board import sources as sources_module

HERE = pathlib.Path(__file__).resolve().parent


def parse_roi(text: str) -> tuple:
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or values[2] == 0 or values[3] == 0:
        raise argparse.ArgumentTypeError("expected x,y,w,h: four whole numbers, width and height above 0")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Example: python3 classify.py photo.jpg frames/ --top-k 3")
    parser.add_argument("inputs", nargs="*", help="image files, folders, or - for one image on stdin")
    parser.add_argument("--model", type=pathlib.Path, default=HERE / "model_int8.tflite")
    parser.add_argument("--labels", type=pathlib.Path, help="default: labels.txt beside the model")
    parser.add_argument("--runtime", choices=runtimes.RUNTIMES,
                        help="force one interpreter, or numpy: the engine that needs none (default: the first that imports)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=1,
                        help="ignored: each image is classified as soon as it is decoded (kept for older command lines)")
    parser.add_argument("--top_k", "--top-k", type=int, default=1, help="print the k best classes")
    parser.add_argument("--threshold", type=float, default=0.0, help="print 'unsure' below this confidence")
    parser.add_argument("--json", action="store_true", help="JSON lines (schema in the module docstring)")
    parser.add_argument("--roi", type=parse_roi, help="crop x,y,w,h of each frame first")
    parser.add_argument("--save_preprocessed", "--save-preprocessed", type=pathlib.Path, metavar="DIR",
                        help="write the 28x28 image the model saw for each input")
    parser.add_argument("--save_frames", "--save-frames", type=pathlib.Path, metavar="DIR",
                        help="keep each classified camera or watched frame in DIR/<predicted label>/")
    parser.add_argument("--camera", action="store_true", help="classify live camera frames")
    parser.add_argument("--camera_index", "--camera-index", type=int, default=0, help="OpenCV camera number")
    parser.add_argument("--watch", type=pathlib.Path, metavar="DIR", help="classify images as they appear in DIR")
    parser.add_argument("--replay", type=pathlib.Path, metavar="DIR", help="play DIR's images over and over as a camera")
    parser.add_argument("--fps", type=float, default=10.0, help="--replay's frames per second (0: as fast as it can)")
    parser.add_argument("--count", type=int, default=0, help="stop after N frames (camera, watch, replay; 0: never)")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between frames or folder scans")
    parser.add_argument("--self_test", "--self-test", action="store_true",
                        help="check that this runtime reproduces the manifest's results; PASS or FAIL")
    serving = parser.add_argument_group("serving (--serve, with --camera, --watch or --replay)")
    serving.add_argument("--serve", action="store_true", help="also serve a live page, /healthz and /metrics")
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on; others than loopback need a token")
    serving.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free one)")
    serving.add_argument("--token", help="the token clients must give (default: generated when not on loopback)")
    serving.add_argument("--token_file", "--token-file", type=pathlib.Path, metavar="FILE",
                         help="read the token from FILE (keeps it out of the process list)")
    serving.add_argument("--captures", type=pathlib.Path, default=pathlib.Path("captures"), metavar="DIR",
                         help="where labelled frames go, in DIR/<label>/ (default: captures)")
    serving.add_argument("--stale_after", "--stale-after", type=float, default=10.0, metavar="SECONDS",
                         help="/healthz answers 503 when no frame came for this long (default 10)")
    parser.add_argument("--verbose", action="store_true", help="runtime, startup and per-stage times on stderr, and the interpreter's own start-up lines")
    parser.add_argument("--probe_model", "--probe-model", type=pathlib.Path, help=argparse.SUPPRESS)
    return parser


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    live_sources = arguments.camera + (arguments.watch is not None) + (arguments.replay is not None)
    modes = bool(arguments.inputs) + live_sources + arguments.self_test
    if modes != 1 and arguments.probe_model is None:
        parser.error("give image files or folders, or one of --camera, --watch DIR, --replay DIR, --self-test")
    if arguments.serve and not live_sources:
        parser.error("--serve needs a frame source: --camera, --watch DIR or --replay DIR")
    if arguments.fps < 0 or arguments.stale_after <= 0 or not 0 <= arguments.port <= 65535:
        parser.error("--fps must not be negative, --stale-after must be above 0, --port 0 to 65535")
    if arguments.token is not None and arguments.token_file is not None:
        parser.error("give --token or --token-file, not both")
    if arguments.top_k < 1 or arguments.batch_size < 1 or arguments.threads < 1:
        parser.error("--top-k, --batch-size and --threads must be 1 or more")
    if arguments.count < 0 or arguments.interval < 0:
        parser.error("--count and --interval must not be negative")
    if arguments.save_frames is not None:
        check_frames_dir(parser, arguments)


def check_frames_dir(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    if not arguments.camera and arguments.watch is None:
        parser.error("--save-frames keeps camera or watched frames: use it with --camera or --watch DIR")
    if arguments.watch is not None:
        watched, kept = arguments.watch.resolve(), arguments.save_frames.resolve()
        if kept == watched or watched in kept.parents:
            parser.error("--save-frames DIR must lie outside the --watch folder (its frames would be classified again)")


def serve_sources(arguments, sources, classifier, options, runtime, manifest) -> dict:
    """--serve: the settings from the arguments, a token when needed, then the server and the loop."""
    token = arguments.token
    if arguments.token_file is not None:
        token = arguments.token_file.read_text(encoding="utf-8").strip()
    token, generated = serve.choose_token(arguments.host, token)
    settings = serve.Settings(arguments.host, arguments.port, token, arguments.captures,
                              arguments.stale_after, arguments.verbose)
    model_sha256 = manifest["model"]["sha256"] if manifest else hashlib.sha256(arguments.model.read_bytes()).hexdigest()
    signal.signal(signal.SIGTERM, stop)  # systemd stops the service with SIGTERM: end as Ctrl-C does.
    return serve.serve(sources, classifier, options, runtime, settings, model_sha256, generated)


def stop(signal_number, frame):
    raise KeyboardInterrupt


def main(argv: list | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    check_arguments(parser, arguments)
    preprocess.configure_pillow()
    try:
        if arguments.probe_model is not None:
            runtimes.probe(arguments.probe_model, arguments.runtime)
            return 0
        classifier, runtime, manifest, load_ms = runtimes.load_classifier(
            arguments.model, arguments.labels, arguments.runtime, arguments.threads, arguments.self_test,
            arguments.verbose, STARTED)
        if arguments.self_test:
            return 0 if selftest.self_test(classifier, manifest, runtime, load_ms, arguments.json) else 1
        if arguments.save_preprocessed is not None:
            arguments.save_preprocessed.mkdir(parents=True, exist_ok=True)
        options = stream.Options(arguments.top_k, arguments.threshold, arguments.roi, arguments.save_preprocessed,
                          arguments.json, arguments.verbose)
        options.frames_dir = arguments.save_frames
        if arguments.camera:
            options.original = capture.camera_original
            sources = sources_module.camera_sources(arguments.camera_index, arguments.count, arguments.interval)
        elif arguments.watch is not None:
            options.original = capture.file_original
            sources = sources_module.watched_sources(arguments.watch, arguments.count, arguments.interval)
        elif arguments.replay is not None:
            sources = sources_module.replay_sources(arguments.replay, arguments.fps, arguments.count)
        else:
            sources = sources_module.file_sources(arguments.inputs)
        if arguments.serve:
            summary = serve_sources(arguments, sources, classifier, options, runtime, manifest)
        else:
            summary = stream.classify_sources(sources, classifier, options, runtime)
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
