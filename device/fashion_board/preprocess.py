"""A decoded image to the model's 28x28 frame: light garment on black, trimmed, centred and turned one
way, as in the data set.

The host imports this very module (`from fashion_board import preprocess`) so that the board and the
host make identical frames, and turns every training image with `canonical_orientation`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from PIL import Image

from . import objects, resample, segment, yuv
from .common import SIDE

MAX_IMAGE_PIXELS = 50_000_000  # Larger images are refused as decompression bombs.
# The decoded image may take this much memory. With the interpreter, numpy and Pillow (about 50 MB)
# and the work after decoding, a run peaks under 150 MB: a 512 MB board keeps room for the rest.
# 48 MB holds a 12-megapixel RGB photo (Pillow keeps RGB as 4 bytes a pixel).
MAX_DECODE_BYTES = 48_000_000
# Pillow's bytes per pixel for each mode (others take 4); LA and RGBA count twice, for the
# premultiplied copy that reducing them makes.
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "LA": 8, "RGBA": 8}
# Full-size buffers a decoder holds besides Pillow's image (measured: WebP's animation decoder
# keeps its canvas and hands over a copy; libtiff may read a whole strip).
DECODER_COPIES = {"WEBP": 4, "TIFF": 2}
# Larger images (when no --roi needs full resolution) are box-averaged down to at most this many
# pixels right after decoding: the frame is made from WORK_SIDE pixels anyway.
REDUCE_PIXELS = 4_000_000
BLOCK_PIXELS = 1 << 18  # Float work on big arrays goes by blocks of rows of about this many pixels.
ORIENTATION_TAG = 0x0112  # EXIF orientation, 1-8; ImageOps.exif_transpose's table.
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
WORK_SIDE = 4 * SIDE  # Photos are analysed at this size: fast, and fine enough to crop well.
CENTRED_COLUMNS = segment.centred(SIDE)  # (28,) int64: doubled offsets of the frame's columns from its middle.


@dataclasses.dataclass(frozen=True)
class Frame:
    pixels: np.ndarray  # (28, 28) uint8: what the model sees.
    unsure: bool  # The cut is doubted: a busy background, or the garment touches three or four sides.
    objects: int  # How many objects the image holds; the frame shows the heaviest.


def decode(source, use_draft: bool) -> Image.Image:
    """Open and decode a path or a file object within MAX_DECODE_BYTES, upright per its EXIF
    orientation. use_draft (no --roi needs full resolution): JPEGs decode at reduced size and
    images over REDUCE_PIXELS are reduced at once."""
    try:
        image = Image.open(source)
    except Image.UnidentifiedImageError:
        raise ValueError("cannot identify the image format: empty, damaged or not an image") from None
    try:
        if use_draft and image.format == "JPEG":
            # Decodes at 1/2 to 1/8 scale: ~10x faster. Colour is kept: a garment that differs from its
            # background only in hue (a red pullover on a green bed) is lost in grey.
            image.draft("RGB", (WORK_SIDE, WORK_SIDE))
        check_decode_size(image)
        image.load()
        # Not ImageOps.exif_transpose: it copies every image, upright or not, doubling the peak.
        method = ORIENTATIONS.get(image.getexif().get(ORIENTATION_TAG))
        image = reduce_large(image) if use_draft else image
        return image if method is None else image.transpose(method)
    except BaseException:
        image.close()
        raise


def decode_bytes(image: Image.Image) -> int:
    """What decoding takes, from the header: pixels x bytes per pixel of the mode, x the decoder's copies."""
    return (image.width * image.height * BYTES_PER_PIXEL.get(image.mode, 4)
            * DECODER_COPIES.get(image.format, 1))


def check_decode_size(image: Image.Image) -> None:
    """ValueError, before decoding, for an image whose decoding would not fit MAX_DECODE_BYTES."""
    needed = decode_bytes(image)
    if needed > MAX_DECODE_BYTES:
        raise ValueError(f"{image.width}x{image.height} {image.format} ({image.mode}) needs {needed / 1e6:.0f} MB "
                         f"to decode, more than the {MAX_DECODE_BYTES / 1e6:.0f} MB allowed: scale it down first")


def reduce_large(image: Image.Image, box: tuple | None = None) -> Image.Image:
    """The image, or its region box (left, top, right, bottom), box-averaged by a whole factor when
    over REDUCE_PIXELS (nearest pixels for the modes Image.reduce lacks: 1, P, I;16), in one step
    with no full-size copy; a smaller one as it is (cropped), so its frame stays as it was."""
    box = box or (0, 0, image.width, image.height)
    width, height = box[2] - box[0], box[3] - box[1]
    factor = math.ceil(math.sqrt(width * height / REDUCE_PIXELS))
    if factor < 2:
        return image if box == (0, 0, image.width, image.height) else image.crop(box)
    while (width % factor) % 2:  # The columns left over are dropped alike on both sides: exact under mirroring.
        factor += 1
    box = (box[0] + (width % factor) // 2, box[1], box[2] - (width % factor) // 2, box[3])
    width = box[2] - box[0]
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):
        size = (max(1, width // factor), max(1, height // factor))
        return image.resize(size, Image.Resampling.NEAREST, box=box)
    return image.reduce(factor, box=box)


def roi_box(image: Image.Image, roi: tuple | None) -> tuple | None:
    """--roi x,y,w,h as a box (left, top, right, bottom); ValueError when it lies outside the image."""
    if roi is None:
        return None
    left, top, width, height = roi
    if left + width > image.width or top + height > image.height:
        raise ValueError(f"--roi {left},{top},{width},{height} lies outside the {image.width}x{image.height} image")
    return left, top, left + width, top + height


def by_blocks(convert, *arrays: np.ndarray) -> np.ndarray:
    """convert(rows of each array) -> uint8, applied to blocks of rows: (H, W) uint8. Its float
    temporaries stay the size of a block, not of the image."""
    height, width = arrays[0].shape
    rows = max(1, BLOCK_PIXELS // max(1, width))
    result = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, rows):
        result[top: top + rows] = convert(*(array[top: top + rows] for array in arrays))
    return result


def flatten_alpha(image: Image.Image) -> np.ndarray:
    """Grayscale with transparent parts set to the background that contrasts with the opaque ones."""
    gray, alpha = (np.asarray(band, dtype=np.uint8) for band in image.convert("LA").split())
    opaque = alpha > 127  # Opacity above one half.
    count = np.count_nonzero(opaque)
    background = 0.0 if count and int(gray[opaque].sum(dtype=np.int64)) > 127 * count else 255.0

    def blend(gray_rows, alpha_rows):
        opacity = alpha_rows.astype(np.float32) / 255
        return np.round(gray_rows.astype(np.float32) * opacity + background * (1 - opacity)).astype(np.uint8)
    return by_blocks(blend, gray, alpha)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to (H, W) uint8 luminance; 8-bit grayscale is returned as it is."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I"):  # 16-bit (I;16*) and 32-bit integer: treat as 16-bit samples.
        return by_blocks(lambda rows: np.clip(np.round(rows.astype(np.float64) / 257), 0, 255).astype(np.uint8),
                         np.asarray(image))
    if mode == "F":
        values = np.asarray(image)  # float32; its maximum is the same in float64.
        scale = 255 if values.size and np.nanmax(values) <= 1 else 1
        return by_blocks(lambda rows: np.clip(np.nan_to_num(rows.astype(np.float64) * scale), 0, 255).astype(np.uint8),
                         values)
    if mode == "P" and "transparency" in image.info or mode in ("PA", "RGBA", "LA", "La", "RGBa"):
        return flatten_alpha(image.convert("RGBA"))
    if mode == "CMYK":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def canonical_orientation(frames: np.ndarray) -> np.ndarray:
    """(N, 28, 28) or (28, 28) uint8 frames, each mirrored left to right when its mass lies left of
    the middle: a frame and its mirror image give the same bytes, so the model needs to know one way.

    The score is the moment of mass about the middle column, a whole number, so a mirror image has
    exactly the negated score. Fashion-MNIST's shoes point their toe left, their heel (the heavier
    end) right: 99.5% of its sneakers and all its ankle boots keep their way. A score of exactly 0 is
    settled by the bytes: the frame or its mirror image, whichever is first in lexicographic order.
    A single frame that keeps its way is returned as it is.
    """
    if frames.ndim == 2:
        score = int(np.add.reduce(frames, axis=0, dtype=np.int64) @ CENTRED_COLUMNS)
        return np.ascontiguousarray(frames[:, ::-1]) if score < 0 or score == 0 and mirror_is_first(frames) else frames
    batch = frames.reshape(-1, SIDE, SIDE)
    scores = batch.sum(axis=1, dtype=np.int64) @ CENTRED_COLUMNS  # (N,): exact, integer products.
    flip = scores < 0
    for index in np.flatnonzero(scores == 0):
        flip[index] = mirror_is_first(batch[index])
    return np.where(flip[:, np.newaxis, np.newaxis], batch[:, :, ::-1], batch).reshape(frames.shape)


def mirror_is_first(values: np.ndarray) -> bool:
    """True when the mirror image of (H, W) values comes first in lexicographic order (row by row)."""
    mirrored = values[:, ::-1]
    differ = values != mirrored
    first = int(differ.argmax())  # The first difference, or 0 when there is none.
    row, column = divmod(first, values.shape[1])
    return bool(differ[row, column]) and bool(mirrored[row, column] < values[row, column])


def centre_on_canvas(garment: np.ndarray) -> np.ndarray:
    """Resize so the longest side is 28, keep the aspect ratio, centre on black: (28, 28) uint8."""
    height, width = garment.shape
    factor = SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = Image.frombuffer("F", (width, height), np.ascontiguousarray(garment, dtype=np.float32), "raw", "F", 0, 1)
    resized = image.resize(size, Image.Resampling.LANCZOS)
    pixels = np.maximum(np.frombuffer(resized.tobytes(), dtype=np.float32).reshape(size[1], size[0]), 0)
    peak = float(pixels.max())
    if peak > 0:
        pixels *= np.float32(255 / peak)  # Made explicitly: numpy 1 and 2 give `255 / float32` different precisions.
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    canvas[top: top + size[1], left: left + size[0]] = np.rint(pixels, out=pixels)
    return canvas


def framed(garment: np.ndarray) -> np.ndarray:
    """A (h, w) cut-out garment to the model's (28, 28) uint8 frame, in its canonical orientation.

    Resizing is not exact under mirroring (Pillow's filter weights and rounding), so the cut-out is
    first put the way round that comes first in lexicographic order: a photo and its mirror image
    then resize the same bytes.
    """
    garment = garment[:, ::-1] if mirror_is_first(garment) else garment
    return canonical_orientation(centre_on_canvas(garment))


def cut_out(signal: np.ndarray) -> tuple[np.ndarray, tuple, int]:
    """The garment cut out of a (H, W) 0-255 signal, trimmed: (its pixels, its box in the signal, the
    number of objects seen). Of several objects the heaviest is kept."""
    peak = float(signal.max()) if signal.size else 0.0
    mask = segment.garment_mask(signal, peak)
    found = objects.find_objects(signal, peak)
    if found.alone:
        box = segment.garment_box(signal, mask)
    else:
        top, bottom, left, right = found.box
        inner = segment.garment_box(signal[top:bottom, left:right], mask[top:bottom, left:right])
        box = (top + inner[0], top + inner[1], left + inner[2], left + inner[3])
    return signal[box[0]:box[1], box[2]:box[3]], box, found.count


def colour_frame(rgb: np.ndarray) -> Frame:
    """(H, W, 3) uint8 photo to the model's frame, cut out by colour.

    Doubted when the background is busy or the garment touches three or four sides of the frame
    (clipped, or the frame is all garment).
    """
    if max(rgb.shape[:2]) > WORK_SIDE:
        rgb = resample.shrink(rgb, WORK_SIDE)
    cleaned, busy = segment.colour_cut(segment.colour_distance(rgb))
    garment, box, count = cut_out(cleaned)
    unsure = busy or segment.touches(box, cleaned.shape) >= 3
    return Frame(framed(segment.whiten(garment)), unsure, count)


def grey_frame(gray: np.ndarray) -> Frame:
    """(H, W) uint8 grayscale to the model's frame; 28x28 images with a dark border are already in the
    data set's form and are only turned."""
    if gray.shape == (SIDE, SIDE) and not segment.has_light_background(gray):
        return Frame(canonical_orientation(gray), False, 1)
    small = resample.shrink(gray, WORK_SIDE) if max(gray.shape) > WORK_SIDE else gray
    garment, _, count = cut_out(segment.garment_signal(small.astype(np.float32)))
    return Frame(framed(garment), False, count)


def to_dataset_form(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grayscale to the model's (28, 28) uint8: light garment, trimmed, centred on black."""
    return grey_frame(gray).pixels


def rgb_array(image: Image.Image) -> np.ndarray:
    """An RGB image's pixels, (H, W, 3) uint8, read only: from its bytes, without np.asarray's array
    interface (a dictionary and the same bytes)."""
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.height, image.width, 3)


def make_frame(image: Image.Image, roi: tuple | None) -> Frame:
    """A decoded image to the model's frame, with the segmentation's doubt and the objects seen.

    Colour photos are cut out by colour (a camera's YUV420 planes at work size, when the image
    carries them); grey images, images with transparency and 28x28 images keep the grey path,
    which is never in doubt.
    """
    planes = yuv.planes_of(image) if roi is None else None
    if planes is not None:
        return colour_frame(planes.rgb(WORK_SIDE))
    image = reduce_large(image, roi_box(image, roi))
    if image.mode in ("RGB", "YCbCr", "CMYK") and max(image.size) > SIDE:
        return colour_frame(rgb_array(image if image.mode == "RGB" else image.convert("RGB")))
    return grey_frame(to_grayscale(image))


def preprocess_with_doubt(image: Image.Image, roi: tuple | None) -> tuple[np.ndarray, bool]:
    """(pixels, unsure) of make_frame, for callers that predate the objects count."""
    frame = make_frame(image, roi)
    return frame.pixels, frame.unsure


def preprocess(image: Image.Image, roi: tuple | None) -> np.ndarray:
    """A decoded image to the model's (28, 28) uint8 input."""
    return make_frame(image, roi).pixels


def configure_pillow() -> None:
    """Refuse decompression bombs instead of warning and decoding gigabytes."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    Image.preinit()  # Imports the common format plugins now, so they count as startup.
