"""Folders of labelled photos through the board's own preprocessing, and the split `build --photos` uses.

A photos folder holds one sub-folder per class, named by its label with "/" written "-" and matched
without regard to case (`T-shirt-top/`, `ankle boot/`). Each photo is decoded and preprocessed by
the board's own package (fashion_board), with the arguments classify.py gives it, so the frames here
are the bytes the board would feed the model.
"""

import dataclasses
import importlib.resources
import pathlib
import typing

import numpy as np

from edge_fashion.pipeline import data
from fashion_board import capture, common, preprocess, sources

PROGRESS_EVERY = 250  # Photos between two progress lines.
# The stock photo set shipped inside the package (laid out as a photos folder; see its README).
STOCK_PHOTOS = pathlib.Path(str(importlib.resources.files("edge_fashion") / "stock_photos"))


class PhotosError(ValueError):
    """A photos folder that cannot be used at all."""


@dataclasses.dataclass(frozen=True)
class Photos:
    frames: np.ndarray  # (N, 28, 28) uint8, what the model sees; zeros where `failures` says why not.
    labels: np.ndarray  # (N,) uint8
    paths: tuple[pathlib.Path, ...]
    failures: tuple[str, ...]  # "" for a photo that became a frame, else why not ("no garment found: ...").

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def framed(self) -> np.ndarray:
        """(N,) bool: the photos that became frames."""
        return np.array([not failure for failure in self.failures], dtype=bool)

    def subset(self, indices: np.ndarray) -> "Photos":
        return Photos(self.frames[indices], self.labels[indices], tuple(self.paths[index] for index in indices),
                      tuple(self.failures[index] for index in indices))


def no_photos() -> Photos:
    return Photos(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), (), ())


def folder_name(label: str) -> str:
    """The folder a class's photos live in: 'T-shirt/top' -> 'T-shirt-top'. The board's own rule
    (--save-frames and the live page's captures write these folders), never a copy of it."""
    return capture.folder_name(label)


FOLDER_LABELS = {folder_name(label).casefold(): index for index, label in enumerate(data.LABELS)}


def class_folders(folder: pathlib.Path, warn: typing.Callable[[str], None]) -> list[tuple[int, pathlib.Path]]:
    """(label, sub-folder) for each sub-folder named by a label; others are named in a message."""
    if not folder.is_dir():
        raise PhotosError(f"{folder}: no such folder (--photos wants a folder with one sub-folder per class)")
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and path.name.casefold() in FOLDER_LABELS:
            found.append((FOLDER_LABELS[path.name.casefold()], path))
        elif path.is_dir():
            warn(f"{path}: not a class name, skipped (the folders are named {', '.join(folder_names())})")
        elif path.suffix.lower() in common.IMAGE_SUFFIXES:
            warn(f"{path}: not in a class folder, skipped")
    return found


def folder_names() -> list[str]:
    return [folder_name(label) for label in data.LABELS]


def listed_photos(folders: typing.Sequence[pathlib.Path], warn) -> list[tuple[pathlib.Path, int]]:
    """(path, label) of every image file in the class folders of `folders`, in a stable order."""
    listed = []
    for folder in folders:
        in_folder = []
        for label, path in class_folders(pathlib.Path(folder), warn):
            files = sources.image_files(path)
            if not files:
                warn(f"{path}: no photos in this class folder")
            in_folder += [(file, label) for file in files]
        if not in_folder:
            raise PhotosError(f"{folder}: no photos in class folders ({', '.join(folder_names())})")
        listed += in_folder
    return listed


def board_frame(image) -> preprocess.Frame:
    """The board's frame of a decoded photo, as classify.py makes it (no --roi): its pixels, the
    segmentation's doubt and the objects seen. Every photo the host trains or measures on goes here."""
    return preprocess.make_frame(image, None)


def frame_of(path: pathlib.Path, progress) -> tuple[np.ndarray | None, str]:
    """(frame, "") as classify.py makes it of the file (decoded with the JPEG draft, no --roi);
    (None, why) for a file that does not decode, (zeros, why) for one with no frame in it."""
    try:
        image = preprocess.decode(path, True)
    except Exception as error:  # Pillow raises many types on a malformed file: this photo only.
        progress(f"{path}: cannot read it ({common.one_line(error)}), skipped")
        return None, common.one_line(error)
    try:
        return board_frame(image).pixels, ""
    except Exception as error:  # Such as "no garment found": the board answers it with an error.
        progress(f"{path}: {common.one_line(error)}")
        return np.zeros((28, 28), np.uint8), common.one_line(error)


def read_photos(folders: typing.Sequence[pathlib.Path], progress: typing.Callable[[str], None],
                quiet: bool = False) -> Photos:
    """Every photo of `folders`; an unreadable one is named and left out, one without a garment is
    named and kept as a failure (the board would answer it with an error). `quiet`: one line at the
    end, no line per photo."""
    preprocess.configure_pillow()  # Refuses decompression bombs, as on the board.
    listed = listed_photos(folders, progress)
    frames, labels, paths, failures = [], [], [], []
    for number, (path, label) in enumerate(listed, start=1):
        if number % PROGRESS_EVERY == 0 and not quiet:
            progress(f"  {number:,} of {len(listed):,} photos preprocessed")
        frame, failure = frame_of(path, (lambda message: None) if quiet else progress)
        if frame is not None:
            frames.append(frame)
            labels.append(label)
            paths.append(path)
            failures.append(failure)
    photos = Photos(np.stack(frames) if frames else np.zeros((0, 28, 28), np.uint8),
                    np.array(labels, dtype=np.uint8), tuple(paths), tuple(failures))
    progress(describe(photos, folders))
    return photos


def read_stock(progress: typing.Callable[[str], None]) -> Photos:
    """The stock photo set, through the board's preprocessing."""
    if not STOCK_PHOTOS.is_dir():
        raise PhotosError(f"{STOCK_PHOTOS}: the stock photos are missing; reinstall edge-fashion, or "
                          "build with --preset fashion-mnist (Fashion-MNIST alone)")
    return read_photos((STOCK_PHOTOS,), progress, quiet=True)


def describe(photos: Photos, folders: typing.Sequence[pathlib.Path]) -> str:
    counts = np.bincount(photos.labels, minlength=len(data.LABELS))
    missing = [data.LABELS[index] for index in np.flatnonzero(counts == 0)]
    where = "the stock set" if tuple(folders) == (STOCK_PHOTOS,) else ", ".join(map(str, folders))
    text = (f"  {len(photos):,} photos in {np.count_nonzero(counts)} classes from {where}; "
            f"{int(photos.framed.sum()):,} became frames")
    return text + (f"; no photos of {', '.join(missing)}" if missing else "")


@dataclasses.dataclass(frozen=True)
class PhotoSplit:
    """A build's photos: the user's --photos split into a part to train on and one to report on, and
    the stock set, which trains whole."""
    train: Photos
    held_out: Photos
    folders: tuple[pathlib.Path, ...] = ()
    stock: Photos = dataclasses.field(default_factory=no_photos)

    @property
    def train_frames(self) -> np.ndarray:
        """(N, 28, 28) uint8: the frames that train, the stock set's then the user's (photos in which
        no garment was found left out)."""
        return np.concatenate([self.stock.frames[self.stock.framed], self.train.frames[self.train.framed]])

    @property
    def train_labels(self) -> np.ndarray:
        return np.concatenate([self.stock.labels[self.stock.framed], self.train.labels[self.train.framed]])


def split(photos: Photos, held_out_share: float, seed: int,
          folders: typing.Sequence[pathlib.Path] = ()) -> PhotoSplit:
    """The training part and the held-out part, stratified by class and seeded. A class with two or
    more photos keeps at least one on each side; a lone photo trains."""
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(photos.labels):
        members = rng.permutation(np.flatnonzero(photos.labels == label))
        count = round(held_out_share * len(members))
        if held_out_share > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(photos)), held)
    return PhotoSplit(photos.subset(train), photos.subset(held), tuple(folders))
