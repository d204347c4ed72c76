"""A decoded image to the model's 28x28 frame: light garment on black, trimmed and centred, as in the data set.

The host runs this very module (the host package loads it from the device files) so that the board and the
host make identical frames.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps

from .common import SIDE

MAX_IMAGE_PIXELS = 50_000_000  # Larger images are refused as decompression bombs.
WORK_SIDE = 4 * SIDE  # Photos are analysed at this size: fast, and fine enough to crop well.
DARK_BORDER = 32  # A border whose median is at most this is a dark background, as in the data set.
# A colour photo's cut is doubted when the background's residue (90th percentile on the border)
# exceeds this share of the garment's contrast (99.5th percentile): a busy or garment-like background.
DOUBTFUL_NOISE = 0.4
GARMENT_WHITE = 90  # Percentile of a colour photo's garment pixels that becomes white; the rest scales.


def decode(source, use_draft: bool) -> Image.Image:
    """Open and decode a path or a file object, JPEGs at reduced size when allowed."""
    try:
        image = Image.open(source)
    except Image.UnidentifiedImageError:
        raise ValueError("cannot identify the image format: empty, damaged or not an image") from None
    with image:
        if use_draft and image.format == "JPEG":
            # Decodes at 1/2 to 1/8 scale: ~10x faster. Colour is kept: a garment that differs from its
            # background only in hue (a red pullover on a green bed) is lost in grey.
            image.draft("RGB", (WORK_SIDE, WORK_SIDE))
        image.load()
        return ImageOps.exif_transpose(image)


def crop_roi(image: Image.Image, roi: tuple | None) -> Image.Image:
    if roi is None:
        return image
    left, top, width, height = roi
    if left + width > image.width or top + height > image.height:
        raise ValueError(f"--roi {left},{top},{width},{height} lies outside the {image.width}x{image.height} image")
    return image.crop((left, top, left + width, top + height))


def flatten_alpha(image: Image.Image) -> np.ndarray:
    """Grayscale with transparent parts set to the background that contrasts with the opaque ones."""
    gray, alpha = image.convert("LA").split()
    gray_values = np.asarray(gray, dtype=np.float32)
    opacity = np.asarray(alpha, dtype=np.float32) / 255
    opaque = gray_values[opacity > 0.5]
    background = 0.0 if opaque.size and opaque.mean() > 127 else 255.0
    return np.round(gray_values * opacity + background * (1 - opacity)).astype(np.uint8)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to (H, W) uint8 luminance; 8-bit grayscale is returned as it is."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I"):  # 16-bit (I;16*) and 32-bit integer: treat as 16-bit samples.
        return np.clip(np.round(np.asarray(image, dtype=np.float64) / 257), 0, 255).astype(np.uint8)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = values * 255 if values.size and np.nanmax(values) <= 1 else values
        return np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8)
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
    return float(np.clip(-difference - margin, 0, None).sum()) > float(np.clip(difference - margin, 0, None).sum())


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
    noise = min(128.0, float(np.percentile(np.abs(border_pixels(signal)), 90)) + 4)
    return np.clip((signal - noise) * 255 / (255 - noise), 0, 255)


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
    pixels = pixels * (255 / pixels.max()) if pixels.max() > 0 else pixels
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    canvas[top: top + size[1], left: left + size[0]] = np.round(pixels).astype(np.uint8)
    return canvas


def colour_distance(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel's colour is from the background fitted to each channel: (H, W) float32, 0-255.

    Unlike luminance this finds a dark garment on a dark or coloured background and a pink dress on a
    red rug; the magnitude is what Fashion-MNIST's negated product shots show: garment light, background 0.
    """
    difference = rgb - fit_background(rgb)
    return np.sqrt(np.einsum("hwc,hwc->hw", difference, difference) / 3)


def garment_and_doubt(signal: np.ndarray) -> tuple[np.ndarray, bool]:
    """The garment cut out of a (H, W) signal, trimmed, and whether the cut is to be doubted.

    Doubt: the background is busy (its residue is a large share of the garment's contrast), or the
    garment touches three or four sides of the frame (clipped, or the frame is all garment).
    """
    noise = float(np.percentile(border_pixels(signal), 90))
    peak = float(np.percentile(signal, 99.5))
    cleaned = np.clip((signal - noise - 4) * 255 / max(1.0, 255 - noise - 4), 0, 255)
    top, bottom, left, right = garment_box(cleaned)
    height, width = signal.shape
    touched = (top == 0) + (left == 0) + (bottom == height) + (right == width)
    garment = cleaned[top:bottom, left:right]
    # A print or a seam can be far brighter than the cloth: scaling by the brightest pixel would leave
    # the garment dim. Scale so the garment's bright part (the top tenth of what is not background) is white.
    lit = garment[garment > 0]
    level = float(np.percentile(lit, GARMENT_WHITE)) if lit.size else 0.0
    garment = np.minimum(garment, level) if level > 0 else garment
    return garment, bool(noise > DOUBTFUL_NOISE * peak or touched >= 3)


def colour_to_dataset_form(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 photo to the model's (28, 28) uint8 frame and the segmentation's doubt."""
    image = Image.fromarray(rgb)
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    distance = colour_distance(np.asarray(image, dtype=np.float32))
    garment, doubt = garment_and_doubt(distance)
    return centre_on_canvas(garment), doubt


def to_dataset_form(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grayscale to the model's (28, 28) uint8: light garment, trimmed, centred on black."""
    if gray.shape == (SIDE, SIDE) and not has_light_background(gray):
        return gray  # Already in the data set's form: pass it through, bit for bit.
    image = Image.fromarray(gray)
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    signal = garment_signal(np.asarray(image, dtype=np.float32))
    top, bottom, left, right = garment_box(signal)
    return centre_on_canvas(signal[top:bottom, left:right])


def preprocess_with_doubt(image: Image.Image, roi: tuple | None) -> tuple[np.ndarray, bool]:
    """A decoded image to the model's (28, 28) uint8 input, and True when its segmentation is unsure.

    Colour photos are cut out by colour; grey images, images with transparency and 28x28 images
    (the data set's own form, passed through) keep the grey path, which is never in doubt.
    """
    image = crop_roi(image, roi)
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
