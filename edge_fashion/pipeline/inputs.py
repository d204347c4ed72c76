"""The commands' inputs, checked before anything slow: the device files, the data, the output folder,
the models a finished build left.

A build reads the data, trains for minutes and only then bundles and writes; a missing input found
at the end costs the whole training, and even `evaluate` spends seconds loading TensorFlow. These
checks read headers and probe folders, never load TensorFlow, so a command with a missing input
fails within a second, with one line.
"""

import gzip
import pathlib
import tempfile
import zlib

from edge_fashion import config as config_module
from edge_fashion import device_files
from edge_fashion.pipeline import data, photos, runs

MODEL_NAMES = ("model.keras", "model_float.tflite", "model_int8.tflite")  # What a finished build holds.
TRAINED = "trained"  # OUT/trained/: what `train` wrote, which the next `convert` turns into a run.
MAGICS = {"train_images": data.IMAGE_MAGIC, "test_images": data.IMAGE_MAGIC,
          "train_labels": data.LABEL_MAGIC, "test_labels": data.LABEL_MAGIC}


def check(config: config_module.BuildConfig, bundle: bool = True) -> None:
    """Raise ValueError on the first missing input: device files (when a bundle will be written),
    the four data files, the stock photos (when they train), a writable output folder. What `build` needs."""
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


def check_train(config: config_module.BuildConfig) -> None:
    """What `train` needs: the data and a writable output folder (it writes no bundle)."""
    check(config, bundle=False)


def check_convert(config: config_module.BuildConfig) -> None:
    """What `convert` needs: a model to convert, and what a build needs."""
    check_model_to_convert(config.out_dir)
    check(config)


def check_evaluate(config: config_module.BuildConfig) -> None:
    """What `evaluate` needs: a finished build (with its report.json when photos join it), the data."""
    check_finished_build(config.out_dir, report=bool(config.photos))
    check_data(config.data_dir)


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


def check_model_to_convert(out_dir: pathlib.Path) -> None:
    """`convert`'s model is there: OUT/trained/model.keras, else the latest run's (or OUT's own)."""
    out_dir = pathlib.Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir} not found: run `edge-fashion build --out {out_dir}` first")
    if not any((folder / "model.keras").is_file() for folder in (out_dir / TRAINED, runs.models_folder(out_dir))):
        raise ValueError(f"{out_dir}: no model.keras to convert, in {TRAINED}/ or a run; run "
                         f"`edge-fashion train --out {out_dir}` or `edge-fashion build --out {out_dir}` first")


def check_finished_build(out_dir: pathlib.Path, report: bool = False) -> None:
    """`evaluate`'s models are there (and report.json, when its photo figures go into it): those of
    OUT's latest run, or of OUT itself when it is a run."""
    folder = runs.models_folder(out_dir)
    missing = [name for name in MODEL_NAMES + (("report.json",) if report else ()) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: missing {', '.join(missing)}; run `edge-fashion build --out {out_dir}` first")
