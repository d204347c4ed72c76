"""The build's inputs, checked before anything slow: the device files, the data, the output folder.

A build reads the data, trains for minutes and only then bundles and writes; a missing input found
at the end costs the whole training. These checks read headers and probe folders, never load
TensorFlow, so a build with a missing input fails within a second, with one line.
"""

import gzip
import pathlib
import tempfile
import zlib

from edge_fashion import config as config_module
from edge_fashion import device_files
from edge_fashion.pipeline import data, photos

MAGICS = {"train_images": data.IMAGE_MAGIC, "test_images": data.IMAGE_MAGIC,
          "train_labels": data.LABEL_MAGIC, "test_labels": data.LABEL_MAGIC}


def check(config: config_module.BuildConfig, bundle: bool = True) -> None:
    """Raise ValueError on the first missing input: device files (when a bundle will be written),
    the four data files, the stock photos (when they train), a writable output folder."""
    if bundle:
        device_files.bundle_files()
    check_data(config.data_dir)
    if config.stock_photos:
        check_stock_photos()
    check_out_dir(pathlib.Path(config.out_dir))


def check_stock_photos() -> None:
    """The stock set's class folders are where the package keeps them."""
    if not any(photos.STOCK_PHOTOS.glob("*/*.jpg")):
        raise ValueError(f"{photos.STOCK_PHOTOS}: the stock photos are missing; reinstall edge-fashion, or build "
                         "with --preset fashion-mnist (Fashion-MNIST alone)")


def check_data(data_dir: pathlib.Path | None) -> pathlib.Path:
    """The data folder, once each of its four files opens and starts with its IDX header."""
    folder = data.find_data_dir(data_dir)
    for name, file_name in data.FILES.items():
        check_idx_header(folder / file_name, MAGICS[name])
    return folder


def check_idx_header(path: pathlib.Path, magic: int) -> None:
    """Read the first 4 bytes of the gzip stream: readable, gzip, and the right kind of IDX file."""
    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(4)
    except (OSError, EOFError, zlib.error) as error:
        raise data.DataError(f"{path}: not a readable gzip file ({error})") from None
    if len(header) < 4 or int.from_bytes(header, "big") != magic:
        raise data.DataError(f"{path}: not an IDX file of the expected kind (magic 0x{magic:08x})")


def check_out_dir(out_dir: pathlib.Path) -> None:
    """The output folder exists and takes a file, or its nearest existing parent does (so it can be made)."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write the output folder {out_dir}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"cannot write the output folder {out_dir}: {existing}: {error.strerror}") from None
