"""The board's frames of real photos as digests, for tests/test_frame_golden.py, and the helper that
regenerates them.

Usage (from the repository root; the host venv and the board-like venv must print the same):
    python tests/frame_golden.py --write                      # tests/frame_golden.json, after a frame change
    python tests/frame_golden.py ../shared/photos > digests.json   # any folders, printed

Each photo gives two records: the photo decoded and framed as classify.py does (decode with draft,
make_frame), and the same photo as a camera frame (Picamera2's 320x240 YUV420 lores array, made by
tests/picamera2_stand_in.py, read by yuv.Yuv420). A record is [sha256 of the 28x28 pixels, unsure,
objects], or the error the preprocessing raised. It imports only the board's package, numpy and
Pillow, so the board-like venv runs it too. The photo is brought to the camera's size by nearest
pixels in numpy before the stand-in sees it: Pillow's bilinear resize gives other bytes in Pillow 9
than in Pillow 13, and the camera frames would then differ between the venvs before any preprocessing.
"""

import hashlib
import json
import pathlib
import sys

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "device"), str(REPO / "tests")]

import numpy as np  # noqa: E402
import picamera2_stand_in  # noqa: E402  (tests/picamera2_stand_in.py)
from fashion_board import preprocess, yuv  # noqa: E402

GOLDEN = REPO / "tests" / "frame_golden.json"
FOLDERS = (REPO / "tests" / "photos", REPO / "tests" / "preprocess_photos")
CAMERA_SIZE = (320, 240)  # classify.py --camera's lores stream.


def record(make) -> list | str:
    """[sha256 of the frame's pixels, unsure, objects] of the frame make() returns, or its ValueError."""
    try:
        frame = make()
    except ValueError as error:
        return f"error: {error}"
    return [hashlib.sha256(frame.pixels.tobytes()).hexdigest(), frame.unsure, frame.objects]


def camera_size(photo: Image.Image) -> Image.Image:
    """The photo at CAMERA_SIZE by nearest pixels, the same bytes under every Pillow: RGB."""
    pixels = np.asarray(photo.convert("RGB"))
    width, height = CAMERA_SIZE
    rows = np.arange(height) * pixels.shape[0] // height
    columns = np.arange(width) * pixels.shape[1] // width
    return Image.fromarray(pixels[rows[:, np.newaxis], columns])


def photo_records(path: pathlib.Path) -> dict:
    """The photo's records: as a file ("photo") and as a camera frame ("camera")."""
    with Image.open(path) as photo:
        array = picamera2_stand_in.yuv420_array(camera_size(photo), *CAMERA_SIZE)
    return {"photo": record(lambda: preprocess.make_frame(preprocess.decode(path, True), None)),
            "camera": record(lambda: preprocess.make_frame(yuv.Yuv420.from_array(array, *CAMERA_SIZE).image(), None))}


def digests(folders) -> dict:
    """{path relative to the repository (or as given): records} for every JPEG under the folders."""
    preprocess.configure_pillow()
    paths = sorted(path for folder in folders for path in pathlib.Path(folder).rglob("*.jpg"))
    return {name_of(path): photo_records(path) for path in paths}


def name_of(path: pathlib.Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def main() -> None:
    arguments = sys.argv[1:]
    if arguments == ["--write"]:
        lines = [f" {json.dumps(name)}: {json.dumps(records, sort_keys=True)}" for name, records in digests(FOLDERS).items()]
        GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # A photo a line: a diff names the photos.
        return
    print(json.dumps(digests(arguments or FOLDERS), sort_keys=True))


if __name__ == "__main__":
    main()
