"""The stock photo set the toolkit ships (edge_fashion/stock_photos/), made from the project's two
folders of labelled real photos; run once, its output is committed.

The photos (2,932 in two folders, each with a labels.csv: file, label, class, source_path) are split
once, stratified by class and by folder, seeded, into a choosing part (80%, in three folds) and a
reporting part (20%). The split is written to benchmarks/stock_photos_split.csv and read back on every
later run, so it never changes. The reporting part is never shipped and never trained on; only
benchmarks/real_photos.py reads it, for the final figures. The choosing part is shipped as downscaled
copies: decoded as the board decodes a photo, box-averaged by the board's own integer shrink to at most
SIDE pixels, JPEG quality QUALITY, under stock_photos/<class folder>/, with a labels.csv (file, label,
class, source_path as repository:path) and the CC0 licence text.

Usage (from the repository root):
    python benchmarks/make_stock_photos.py split       # once: benchmarks/stock_photos_split.csv
    python benchmarks/make_stock_photos.py copy        # edge_fashion/stock_photos/ from the split
    python benchmarks/make_stock_photos.py measure     # frames of the copies against the originals' frames
"""

import argparse
import csv
import io
import os
import pathlib
import shutil
import sys

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fashion_board import capture, preprocess, resample  # noqa: E402

# The two folders of labelled photos; each has a labels.csv and one sub-folder per class.
SOURCES = [pathlib.Path(folder) for folder in
           os.environ.get("EDGE_FASHION_PHOTO_SOURCES", "/work/shared/photos:/work/shared/photos-more").split(":")]
SPLIT = REPO / "benchmarks" / "stock_photos_split.csv"
STOCK = REPO / "edge_fashion" / "stock_photos"
LICENCE = pathlib.Path("/usr/share/common-licenses/CC0-1.0")
SMALL_DATASET = "alexeygrigorev/clothing-dataset-small"
SPLIT_SEED = 0
REPORTING_SHARE = 0.2
FOLDS = 3
# Longest side and JPEG quality of the shipped copies: under 15 MB for the whole choosing part, and the
# board's preprocessing makes frames close to the originals' (`measure`; docs/accuracy.md has the figures).
SIDE = 160
QUALITY = 85


def read_labels() -> list[dict]:
    """Every photo of SOURCES: {"source", "file", "label", "class", "source_path"}, in a stable order."""
    rows = []
    for folder in SOURCES:
        with open(folder / "labels.csv", newline="") as handle:
            rows += [{"source": folder.name, **row} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: (row["source"], row["file"]))


def make_split(rows: list[dict]) -> list[dict]:
    """Each row with its part ("choosing" | "reporting") and fold (0..FOLDS-1 for the choosing part),
    drawn per class and folder with SPLIT_SEED: 20% of each to report on, at least one where there are two."""
    generator = np.random.default_rng(SPLIT_SEED)
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault((int(row["label"]), row["source"]), []).append(index)
    parts = [None] * len(rows)
    for key in sorted(groups):
        members = generator.permutation(groups[key])
        count = round(REPORTING_SHARE * len(members))
        count = min(max(count, 1), len(members) - 1) if len(members) >= 2 else 0
        for rank, index in enumerate(members):
            parts[index] = ("reporting", "") if rank < count else ("choosing", str((rank - count) % FOLDS))
    return [{"source": row["source"], "file": row["file"], "label": row["label"], "part": part, "fold": fold}
            for row, (part, fold) in zip(rows, parts)]


def read_split() -> list[dict]:
    with open(SPLIT, newline="") as handle:
        return list(csv.DictReader(handle))


def command_split(arguments) -> None:
    if SPLIT.exists():
        sys.exit(f"{SPLIT} exists: the split is made once and never changed")
    rows = make_split(read_labels())
    with open(SPLIT, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["source", "file", "label", "part", "fold"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    reporting = sum(row["part"] == "reporting" for row in rows)
    print(f"{SPLIT}: {len(rows) - reporting} choosing, {reporting} reporting")


def downscaled(path: pathlib.Path) -> bytes:
    """The photo as the board decodes it (JPEG draft, EXIF orientation), its longest side shrunk to
    SIDE by the board's integer box average, as a JPEG."""
    with preprocess.decode(path, True) as image:
        rgb = np.asarray(image.convert("RGB"))
    if max(rgb.shape[:2]) > SIDE:
        rgb = resample.shrink(rgb, SIDE)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


def qualified(source_path: str) -> str:
    """repository:path; the first folder's labels.csv gives paths in clothing-dataset-small alone."""
    return source_path if ":" in source_path else f"{SMALL_DATASET}:{source_path}"


def source_folder(name: str) -> pathlib.Path:
    return next(folder for folder in SOURCES if folder.name == name)


def command_copy(arguments) -> None:
    labels = {(row["source"], row["file"]): row for row in read_labels()}
    chosen = [row for row in read_split() if row["part"] == "choosing"]
    if STOCK.exists():
        for folder in STOCK.iterdir():
            if folder.is_dir():
                shutil.rmtree(folder)
    listed, total = [], 0
    for row in chosen:
        source = labels[(row["source"], row["file"])]
        target = STOCK / capture.folder_name(source["class"]) / pathlib.Path(row["file"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        content = downscaled(source_folder(row["source"]) / row["file"])
        target.write_bytes(content)
        total += len(content)
        listed.append({"file": target.relative_to(STOCK).as_posix(), "label": source["label"],
                       "class": source["class"], "source_path": qualified(source["source_path"])})
    with open(STOCK / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "class", "source_path"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(listed, key=lambda row: row["file"]))
    shutil.copy(LICENCE, STOCK / "LICENSE")
    print(f"{STOCK}: {len(listed)} photos, {total / 1e6:.1f} MB")


def frame(source) -> np.ndarray:
    """The board's frame of a photo, (28, 28) int16; zeros where it finds no garment."""
    try:
        return preprocess.preprocess(preprocess.decode(source, True), None).astype(np.int16)
    except ValueError:
        return np.zeros((28, 28), np.int16)


def command_measure(arguments) -> None:
    """How far each shipped copy's frame is from its original's: mean absolute difference per pixel
    (0-255), per photo and over all; the same for the originals re-encoded at their own size (what
    JPEG alone does)."""
    chosen = [row for row in read_split() if row["part"] == "choosing"][::arguments.every]
    labels = {(row["source"], row["file"]): row for row in read_labels()}
    copies, reencoded = [], []
    for row in chosen:
        original = source_folder(row["source"]) / row["file"]
        copy = STOCK / capture.folder_name(labels[(row["source"], row["file"])]["class"]) / pathlib.Path(row["file"]).name
        before = frame(original)
        copies.append(np.abs(frame(copy) - before).mean())
        with Image.open(original) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=QUALITY)
        buffer.seek(0)
        reencoded.append(np.abs(frame(buffer) - before).mean())
    for name, values in (("copies", copies), ("originals re-encoded at their size", reencoded)):
        print(f"{name}: mean |difference| {np.mean(values):.2f} of 255 per pixel over {len(values)} photos; "
              f"median photo {np.median(values):.2f}, 90th percentile {np.percentile(values, 90):.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("split", help="split the photos once into benchmarks/stock_photos_split.csv")
    commands.add_parser("copy", help="write the choosing part's downscaled copies into edge_fashion/stock_photos/")
    measurer = commands.add_parser("measure", help="frames of the copies against those of the originals")
    measurer.add_argument("--every", type=int, default=1, help="measure every Nth choosing photo")
    arguments = parser.parse_args(argv)
    {"split": command_split, "copy": command_copy, "measure": command_measure}[arguments.command](arguments)


if __name__ == "__main__":
    main()
