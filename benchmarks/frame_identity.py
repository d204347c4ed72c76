"""Do the host and the board make the same 28x28 frames of real photos?

Usage:
    python benchmarks/frame_identity.py ../shared/photos
    python benchmarks/frame_identity.py tests/photos --device-python .cache/device-venv/bin/python

The host reads the folder with edge_fashion/pipeline/photos.py (the board's preprocessing, loaded from
device/); the board-like venv (tflite-runtime 2.14, numpy 1.24, Pillow 9.4: tests/device_venv.py)
runs device/fashion_board/preprocess.py itself on every photo, decoded as classify.py decodes it.
Prints how many frames are byte-identical, and names those that are not.
"""

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys

import numpy
import PIL

REPO = pathlib.Path(__file__).resolve().parent.parent
BOARD_SIDE = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
from fashion_board import preprocess
preprocess.configure_pillow()
digests = {}
for path in sys.argv[2:]:
    try:
        frame = preprocess.preprocess(preprocess.decode(path, True), None)
        digests[path] = hashlib.sha256(frame.tobytes()).hexdigest()
    except Exception as error:
        digests[path] = "error: " + str(error)
print(json.dumps(digests))
"""


def host_digests(folder: pathlib.Path) -> dict[str, str]:
    from edge_fashion.pipeline import photos

    read = photos.read_photos([folder], lambda line: None)
    return {str(path): (hashlib.sha256(frame.tobytes()).hexdigest() if not failure else "error: " + failure)
            for path, frame, failure in zip(read.paths, read.frames, read.failures)}


def board_digests(python: pathlib.Path, paths: list[str]) -> dict[str, str]:
    completed = subprocess.run([str(python), "-c", BOARD_SIDE, str(REPO / "device"), *paths],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=pathlib.Path, help="a photos folder, one sub-folder per class")
    parser.add_argument("--device-python", type=pathlib.Path, default=REPO / ".cache/device-venv/bin/python")
    arguments = parser.parse_args()
    host = host_digests(arguments.folder)
    board = board_digests(arguments.device_python, sorted(host))
    differ = [path for path in sorted(host) if host[path] != board.get(path)]
    errors = sum(digest.startswith("error") for digest in host.values())
    versions = subprocess.run([str(arguments.device_python), "-c",
                               "import numpy, PIL; print(numpy.__version__, PIL.__version__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    print("| photos | identical frames | differing | no frame (on both) | host numpy / Pillow | board numpy / Pillow |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {len(host)} | {len(host) - len(differ)} | {len(differ)} | {errors} | {numpy.__version__} / "
          f"{PIL.__version__} | {versions[0]} / {versions[1]} |")
    for path in differ:
        print(f"differs: {path}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
