"""A decoded image to the model's 28x28 frame: light garment on black, trimmed and centred, as in the data set.

The host runs this very module (the host package loads it from the device files) so that the board and the
host make identical frames.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from PIL import Image

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
DARK_BORDER = 32  # A border whose median is at most this is a dark background, as in the data set.
# A colour photo's cut is doubted when the background's residue (90th percentile on the border)
# exceeds this share of the garment's contrast (99.5th percentile): a busy or garment-like background.
DOUBTFUL_NOISE = 0.4
GARMENT_WHITE = 0.9  # Share of a colour photo's garment pixels below the level that becomes white.
# The background plane's coefficients are rounded to this step, so that LAPACK's last-bit noise, which
# differs between numpy builds, never reaches the frame (host and board must make the same bytes).
PLANE_STEP = 2.0 ** -16


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


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an (H, W) array, flattened."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def has_light_background(gray: np.ndarray, background: np.ndarray | None = None) -> bool:
    """True for a photo's light background: a light border, and the garment darker than it.

    The data set's images have a dark border. Of the pixels that differ clearly from the fitted
    background, more differ by being darker: faint shading (vignetting) is ignored by the margin.
    """
    border = border_pixels(gray)
    if float(np.median(border)) <= DARK_BORDER:
        return False
    if background is None:
        background = fit_background(gray.astype(np.float32))
    difference = gray.astype(np.float32) - background
    margin = max(24.0, 3 * float(np.median(np.abs(border_pixels(difference)))))
    # Sums in float64 are exact here, so no summation order can tip a near tie one way on one machine only.
    darker = np.clip(-difference - margin, 0, None).sum(dtype=np.float64)
    return float(darker) > float(np.clip(difference - margin, 0, None).sum(dtype=np.float64))


def fit_background(values: np.ndarray) -> np.ndarray:
    """A plane a + b*x + c*y fitted to the border of each channel, robust to a garment touching it.

    (H, W) or (H, W, C) float32 in, the same shape out; one least-squares solve for all channels.
    """
    height, width = values.shape[:2]
    flat = values.reshape(height, width, -1)  # (H, W, C)
    if min(height, width) < 8:
        return np.broadcast_to(np.median(border_pixels(flat), axis=0), flat.shape).reshape(values.shape).astype(np.float32)
    columns = np.arange(width, dtype=np.float32)[np.newaxis, :]  # (1, W), broadcast below.
    rows = np.arange(height, dtype=np.float32)[:, np.newaxis]  # (H, 1)
    border_columns = border_pixels(np.broadcast_to(columns, (height, width)))
    border_rows = border_pixels(np.broadcast_to(rows, (height, width)))
    design = np.stack([np.ones(2 * (height + width)), border_columns, border_rows], axis=1)
    border = border_pixels(flat)  # (2 * (H + W), C)
    keep = np.ones(len(border), dtype=bool)
    for _ in range(3):  # Refit without the border pixels the garment covers.
        coefficients = np.linalg.lstsq(design[keep], border[keep], rcond=None)[0]  # (3, C)
        coefficients = np.round(coefficients / PLANE_STEP) * PLANE_STEP
        residual = np.abs(border - design @ coefficients).max(axis=1)
        keep = residual <= max(8.0, 2.5 * float(np.median(residual)))
    plane = coefficients[0] + coefficients[1] * columns[..., np.newaxis] + coefficients[2] * rows[..., np.newaxis]
    return plane.reshape(values.shape).astype(np.float32)


def garment_signal(gray: np.ndarray) -> np.ndarray:
    """How much each pixel differs from the background, 0 (background) to 255: (H, W) float."""
    background = fit_background(gray)
    if has_light_background(gray, background):
        # A photo: pixel = light * reflectance, so dividing by the background evens out the lighting.
        signal = 255 * (1 - gray / np.maximum(background, 1))
    else:
        signal = gray - background
    noise = min(128.0, nearest_rank(np.abs(border_pixels(signal)), 0.9) + 4)
    return np.clip((signal - noise) * 255 / (255 - noise), 0, 255)


def nearest_rank(values: np.ndarray, share: float) -> float:
    """The value below which `share` of `values` lie: an element itself, never an interpolation, whose
    last bits differ between numpy versions."""
    rank = int(share * (values.size - 1))
    return float(np.partition(values, rank)[rank])


def garment_box(signal: np.ndarray) -> tuple:
    """(top, bottom, left, right) around the garment, ignoring specks; ValueError when blank."""
    peak = float(signal.max()) if signal.size else 0.0
    if peak < 24:
        raise ValueError("no garment found: the frame is blank or uniform")
    mask = signal > 0.2 * peak
    rows = np.flatnonzero(mask.sum(axis=1) >= max(1, 0.02 * mask.shape[1]))
    columns = np.flatnonzero(mask.sum(axis=0) >= max(1, 0.02 * mask.shape[0]))
    if not rows.size or not columns.size:
        raise ValueError("no garment found: only specks differ from the background")
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def centre_on_canvas(garment: np.ndarray) -> np.ndarray:
    """Resize so the longest side is 28, keep the aspect ratio, centre on black: (28, 28) uint8."""
    height, width = garment.shape
    factor = SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = Image.fromarray(garment.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    pixels = np.clip(np.asarray(resized), 0, None)
    peak = float(pixels.max())
    # The factor is made explicitly: numpy 1 and 2 give `255 / float32` different precisions.
    pixels = pixels * np.float32(255 / peak) if peak > 0 else pixels
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    canvas[top: top + size[1], left: left + size[0]] = np.round(pixels).astype(np.uint8)
    return canvas


def shrink_axis(values: np.ndarray, size: int) -> np.ndarray:
    """Area averages along the last axis of integer `values` (..., L) over `size` equal spans (L >= size),
    times L: exact integers, (..., size) int64.

    A span's sum is S(end) - S(start), S the running sum, linear within a pixel. Scaled by `size`,
    every boundary i * L / size is `whole` pixels plus `part` / size of the next, a whole number.
    """
    length = values.shape[-1]
    running = np.zeros((*values.shape[:-1], length + 1), dtype=np.int64)
    np.cumsum(values, axis=-1, out=running[..., 1:])
    boundaries = np.arange(size + 1, dtype=np.int64) * length  # Times `size`.
    whole, part = boundaries // size, boundaries % size
    scaled = size * running[..., whole] + values[..., np.minimum(whole, length - 1)] * part
    return np.diff(scaled, axis=-1)


def block_sums(gray: np.ndarray, block: int) -> np.ndarray:
    """Sums of block x block squares, (H // block, W // block); the few rows and columns left over
    are dropped, half on each side. Cheap, and it leaves shrink_axis a small image."""
    rows, columns = gray.shape[0] // block, gray.shape[1] // block
    top, left = (gray.shape[0] % block) // 2, (gray.shape[1] % block) // 2
    kept = gray[top: top + rows * block, left: left + columns * block]
    dtype = np.uint16 if 255 * block * block <= np.iinfo(np.uint16).max else np.int64
    row_sums = kept[0::block].astype(dtype)  # Strided adds: several times faster than reshape and sum.
    for offset in range(1, block):
        row_sums += kept[offset::block]
    sums = row_sums[:, 0::block].copy()
    for offset in range(1, block):
        sums += row_sums[:, offset::block]
    return sums


def shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """(H, W) uint8 to at most side x side by area averaging (a box filter), aspect kept.

    Integer arithmetic throughout, so every machine and library version gives the same bytes (Pillow's
    resize rounds differently from one release to the next).
    """
    height, width = gray.shape
    factor = side / max(height, width)
    new_height, new_width = max(1, round(height * factor)), max(1, round(width * factor))
    block = max(1, min(height // new_height, width // new_width))
    values = block_sums(gray, block) if block > 1 else gray.astype(np.int64)
    columns = shrink_axis(values, new_width)  # (H, w), times W, in blocks.
    both = shrink_axis(columns.T, new_height).T  # (h, w), times W * H.
    divisor = block * block * values.shape[0] * values.shape[1]
    return ((2 * both + divisor) // (2 * divisor)).astype(np.uint8)  # Rounded half up, exactly.


def colour_distance(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel's colour is from the background fitted to each channel: (H, W) float32, 0-255.

    Unlike luminance this finds a dark garment on a dark or coloured background and a pink dress on a
    red rug; the magnitude is what Fashion-MNIST's negated product shots show: garment light, background 0.
    """
    difference = rgb - fit_background(rgb)
    # Element-wise only (no einsum or sum, whose order varies by build): the same bytes on every machine.
    squares = difference[..., 0] ** 2 + difference[..., 1] ** 2 + difference[..., 2] ** 2
    return np.sqrt(squares / 3)


def otsu_level(signal: np.ndarray) -> float:
    """Otsu's threshold of a (H, W) 0-255 signal: the level that best splits it into two classes
    (background and garment) by between-class variance. Integer histogram and element-wise float64
    arithmetic only, so every numpy version picks the same level."""
    counts = np.bincount(np.clip(signal, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    below = np.cumsum(counts)  # Exact: whole numbers far under 2**53.
    below_sum = np.cumsum(counts * np.arange(256, dtype=np.float64))
    above = below[-1] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (below_sum[-1] * below / below[-1] - below_sum) ** 2 / (below * above)
    return float(np.argmax(np.where(np.isfinite(between), between, 0.0)))


def garment_and_doubt(signal: np.ndarray) -> tuple[np.ndarray, bool]:
    """The garment cut out of a (H, W) signal, trimmed, and whether the cut is to be doubted.

    What lies under the border's residue (its 90th percentile) is cut away as background, or under
    Otsu's level where that is lower: when the garment covers much of the border or the background
    is busy, the border's residue is the garment's own contrast, and cutting there left a dim or
    empty frame (on the photos' choosing part the Otsu bound took 44.0% to 47.1%).
    Doubt: the background is busy (its residue is a large share of the garment's contrast), or the
    garment touches three or four sides of the frame (clipped, or the frame is all garment).
    """
    noise = nearest_rank(border_pixels(signal), 0.9)
    peak = nearest_rank(signal.ravel(), 0.995)
    cut = min(noise + 4, otsu_level(signal))
    cleaned = np.clip((signal - cut) * 255 / max(1.0, 255 - cut), 0, 255)
    top, bottom, left, right = garment_box(cleaned)
    height, width = signal.shape
    touched = (top == 0) + (left == 0) + (bottom == height) + (right == width)
    garment = cleaned[top:bottom, left:right]
    # A print or a seam can be far brighter than the cloth: scaling by the brightest pixel would leave
    # the garment dim. Scale so the garment's bright part (the top tenth of what is not background) is white.
    lit = garment[garment > 0]
    level = nearest_rank(lit, GARMENT_WHITE) if lit.size else 0.0
    garment = np.minimum(garment, level) if level > 0 else garment
    return garment, bool(noise > DOUBTFUL_NOISE * peak or touched >= 3)


def colour_to_dataset_form(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 photo to the model's (28, 28) uint8 frame and the segmentation's doubt."""
    if max(rgb.shape[:2]) > WORK_SIDE:
        rgb = np.stack([shrink(rgb[..., channel], WORK_SIDE) for channel in range(3)], axis=-1)
    distance = colour_distance(rgb.astype(np.float32))
    garment, doubt = garment_and_doubt(distance)
    return centre_on_canvas(garment), doubt


def to_dataset_form(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grayscale to the model's (28, 28) uint8: light garment, trimmed, centred on black."""
    if gray.shape == (SIDE, SIDE) and not has_light_background(gray):
        return gray  # Already in the data set's form: pass it through, bit for bit.
    small = shrink(gray, WORK_SIDE) if max(gray.shape) > WORK_SIDE else gray
    signal = garment_signal(small.astype(np.float32))
    top, bottom, left, right = garment_box(signal)
    return centre_on_canvas(signal[top:bottom, left:right])


def preprocess_with_doubt(image: Image.Image, roi: tuple | None) -> tuple[np.ndarray, bool]:
    """A decoded image to the model's (28, 28) uint8 input, and True when its segmentation is unsure.

    Colour photos are cut out by colour; grey images, images with transparency and 28x28 images
    (the data set's own form, passed through) keep the grey path, which is never in doubt.
    """
    image = reduce_large(image, roi_box(image, roi))
    if image.mode in ("RGB", "YCbCr", "CMYK") and max(image.size) > SIDE:
        return colour_to_dataset_form(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return to_dataset_form(to_grayscale(image)), False


def preprocess(image: Image.Image, roi: tuple | None) -> np.ndarray:
    """A decoded image to the model's (28, 28) uint8 input."""
    return preprocess_with_doubt(image, roi)[0]


def configure_pillow() -> None:
    """Refuse decompression bombs instead of warning and decoding gigabytes."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    Image.preinit()  # Imports the common format plugins now, so they count as startup.
