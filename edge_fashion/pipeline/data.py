"""Fashion-MNIST from Zalando's four original IDX gz files: find, read, validate, split.

The images are handed out as the board sees them: each turned one way by the board's own
`canonical_orientation` (a frame and its mirror image are the same frame there), so that what trains,
calibrates and tests is what the board classifies.
"""

import dataclasses
import gzip
import os
import pathlib
import zlib

import numpy as np

from fashion_board import preprocess

LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "install Debian's package (sudo apt-get install dataset-fashion-mnist), or put the four files "
    "from https://github.com/zalandoresearch/fashion-mnist in a folder and pass --data-dir"
)


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # (60000, 28, 28) uint8, in the board's orientation.
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8, in the board's orientation.
    test_labels: np.ndarray  # (10000,) uint8
    source: pathlib.Path


def candidate_dirs(data_dir: pathlib.Path | None) -> list[pathlib.Path]:
    """The folders to search, in order: --data-dir, $EDGE_FASHION_DATA, Keras' cache, Debian's."""
    if data_dir is not None:
        return [pathlib.Path(data_dir)]
    if os.environ.get("EDGE_FASHION_DATA"):
        return [pathlib.Path(os.environ["EDGE_FASHION_DATA"])]
    return [pathlib.Path.home() / ".keras/datasets/fashion-mnist", SYSTEM_DIR]


def has_files(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() for name in FILES.values())


def find_data_dir(data_dir: pathlib.Path | None = None, download: bool = True) -> pathlib.Path:
    """Return the first folder holding all four files, downloading with Keras as a last resort."""
    candidates = candidate_dirs(data_dir)
    for folder in candidates:
        if has_files(folder):
            return folder
    explicit = data_dir is not None or bool(os.environ.get("EDGE_FASHION_DATA"))
    if explicit:
        missing = [name for name in FILES.values() if not (candidates[0] / name).is_file()]
        raise DataError(f"{candidates[0]}: missing {', '.join(missing)}; {HOW_TO_GET}")
    if download and keras_download():
        return candidates[0]
    searched = ", ".join(str(folder) for folder in candidates)
    raise DataError(f"Fashion-MNIST not found in {searched} and could not be downloaded; {HOW_TO_GET}")


def keras_download() -> bool:
    """Let Keras fetch the four files into ~/.keras/datasets/fashion-mnist; False if it cannot."""
    try:
        import keras

        keras.datasets.fashion_mnist.load_data()
    except Exception:  # Any failure (no network, proxy, disk) means: tell the user how to get them.
        return False
    return has_files(candidate_dirs(None)[0])


def read_gz(path: pathlib.Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None


def parse_idx(path: pathlib.Path, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    """Read one IDX file and check its magic number, dimensions and length."""
    raw = read_gz(path)
    header_size = 4 * (2 + len(shape_tail))
    if len(raw) < header_size:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    header = np.frombuffer(raw[:header_size], dtype=">u4")
    if header[0] != magic:
        raise DataError(f"{path}: wrong magic number 0x{int(header[0]):08x}, expected 0x{magic:08x}")
    count, dims = int(header[1]), tuple(int(value) for value in header[2:])
    if dims != shape_tail:
        raise DataError(f"{path}: items are {dims}, expected {shape_tail}")
    expected = count * int(np.prod(shape_tail, dtype=np.int64))
    if len(raw) - header_size != expected:
        raise DataError(f"{path}: header says {count} items ({expected} bytes) but holds "
                        f"{len(raw) - header_size} bytes: truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape((count, *shape_tail))


def read_split(folder: pathlib.Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = folder / FILES[images_name], folder / FILES[labels_name]
    images = parse_idx(images_path, IMAGE_MAGIC, (28, 28))
    labels = parse_idx(labels_path, LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
    if len(labels) and labels.max() >= len(LABELS):
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0-{len(LABELS) - 1}")
    return images, labels


def load_fashion_mnist(data_dir: pathlib.Path | None = None, download: bool = True) -> Dataset:
    """Find, read and validate the four files; the images in the board's orientation."""
    folder = find_data_dir(data_dir, download)
    train_images, train_labels = read_split(folder, "train_images", "train_labels")
    test_images, test_labels = read_split(folder, "test_images", "test_labels")
    return Dataset(preprocess.canonical_orientation(train_images), train_labels,
                   preprocess.canonical_orientation(test_images), test_labels, folder)


def stratified_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` indices with the classes in equal shares (as near as count allows), seeded."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [count // len(classes) + (rank < count % len(classes)) for rank in range(len(classes))]
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:share]
        for label, share in zip(classes, per_class)
    ]
    if sum(len(part) for part in chosen) < count:
        raise ValueError(f"cannot draw {count} stratified samples from {len(labels)} labels")
    return np.sort(np.concatenate(chosen))


def split_train_validation(labels: np.ndarray, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified, seeded train/validation split of the training images."""
    validation = stratified_indices(labels, validation_size, seed)
    train = np.setdiff1d(np.arange(len(labels)), validation)
    return train, validation
