"""Where the garment is: the background fitted to the border, each pixel's difference from it, the cut.

Every step gives the same bytes on every machine (integer sums, element-wise float arithmetic,
nearest-rank percentiles: no BLAS, LAPACK or summation order), and the same result, mirrored, for
a mirror image: columns are counted from the centre, so mirroring negates them exactly.
"""

from __future__ import annotations

import functools

import numpy as np

DARK_BORDER = 32  # A border whose median is at most this is a dark background, as in the data set.
# A colour photo's cut is doubted when the background's residue (90th percentile on the border)
# exceeds this share of the garment's contrast (99.5th percentile): a busy or garment-like background.
DOUBTFUL_NOISE = 0.4
GARMENT_WHITE = 0.9  # Share of a colour photo's garment pixels below the level that becomes white.
GARMENT_LEVEL = 0.2  # Pixels above this share of the brightest one are the garment's (its mask).
MIN_PEAK = 24  # A frame whose brightest difference is under this is blank.
LEVELS = np.arange(256, dtype=np.float64)


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an (H, W, ...) array, flattened to (2 * (H + W), ...)."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


@functools.lru_cache(maxsize=32)
def centred(length: int) -> np.ndarray:
    """Positions 0..length-1 as doubled offsets from the middle, whole numbers: (length,) int64 (read
    only: one array per length). Mirroring turns each into its exact negative."""
    positions = 2 * np.arange(length, dtype=np.int64) - (length - 1)
    positions.flags.writeable = False
    return positions


def solve_plane(sums: list, channels: int) -> list:
    """Least-squares a + b * column + c * row through the kept points, from their sums (whole numbers):
    [count, sum x, sum y, sum x x, sum x y, sum y y], then sum v, sum x v and sum y v of each of the
    `channels`. [a, b, c], each `channels` floats.

    The normal equations' sums are exact integers and Cramer's rule is a fixed formula in Python
    floats, so every machine gives the same bits, and negated columns give exactly the negated b.
    """
    count, sx, sy, sxx, sxy, syy = sums[:6]
    values = list(zip(sums[6: 6 + channels], sums[6 + channels: 6 + 2 * channels], sums[6 + 2 * channels:]))
    c11, c12, c13 = float(sxx * syy - sxy * sxy), float(sy * sxy - sx * syy), float(sx * sxy - sxx * sy)
    c22, c23, c33 = float(count * syy - sy * sy), float(sx * sy - count * sxy), float(count * sxx - sx * sx)
    determinant = float(count) * c11 + float(sx) * c12 + float(sy) * c13
    if determinant <= 0:  # The points lie on a line: a flat plane at their mean.
        return [[u / count for u, _, _ in values], [0.0] * channels, [0.0] * channels]
    return [[(c11 * u + c12 * v + c13 * w) / determinant for u, v, w in values],
            [(c12 * u + c22 * v + c23 * w) / determinant for u, v, w in values],
            [(c13 * u + c23 * v + c33 * w) / determinant for u, v, w in values]]


def median(values: np.ndarray) -> float:
    """np.median of a 1-D array, the same bits, from one partition."""
    middle = len(values) // 2
    ordered = values.copy()  # Partitioned in place.
    if len(values) % 2:
        ordered.partition(middle)
        return float(ordered[middle])
    ordered.partition([middle - 1, middle])
    below, above = ordered[middle - 1: middle + 1].tolist()
    return (below + above) / 2


@functools.lru_cache(maxsize=32)
def centred_float(length: int) -> np.ndarray:
    """centred(length) as float64 (exact): products with float64 coefficients then need no conversion."""
    positions = centred(length).astype(np.float64)
    positions.flags.writeable = False
    return positions


@functools.lru_cache(maxsize=16)
def border_design(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of each of the P = 2 * (H + W) border pixels: (6, P) float64 rows 1, x, y, x x, x y, y y (x, y its
    centred column and row: whole numbers, exact), and x and y, (P,) each (read only)."""
    columns = border_pixels(np.broadcast_to(centred(width)[np.newaxis, :], (height, width)))
    rows = border_pixels(np.broadcast_to(centred(height)[:, np.newaxis], (height, width)))
    moments = np.stack([np.ones_like(columns), columns, rows, columns * columns, columns * rows, rows * rows])
    design = moments.astype(np.float64), columns.astype(np.float64), rows.astype(np.float64)
    for array in design:
        array.flags.writeable = False
    return design


def plane_coefficients(values: np.ndarray) -> np.ndarray:
    """(3, C, 1) float64, a, b and c of the plane a + b*x + c*y fitted to the border of each channel of
    (H, W, C) whole-numbered values (H and W at least 8), robust to a garment touching it."""
    moments, columns, rows = border_design(*values.shape[:2])
    channels = values.size // (values.shape[0] * values.shape[1])
    # Every sum a fit takes, for each border pixel: the kept pixels' sums are one product with the mask.
    # As float64 those sums are one BLAS product, exact: whole numbers far under 2**53.
    table = np.empty((6 + 3 * channels, moments.shape[1]))  # (6 + 3C, P): moments, v, x v, y v.
    table[:6] = moments
    border = table[6: 6 + channels]  # (C, P)
    border[...] = border_pixels(values).T
    np.multiply(columns, border, out=table[6 + channels: 6 + 2 * channels])
    np.multiply(rows, border, out=table[6 + 2 * channels:])
    keep = None
    for fit in range(3):  # Refit without the border pixels the garment covers (the same pixels: the same fit).
        sums = table.sum(axis=1) if keep is None else table @ keep.astype(np.float64)
        coefficients = np.array(solve_plane(sums.astype(np.int64).tolist(), channels))[:, :, np.newaxis]
        if fit == 2:
            break
        a, b, c = coefficients  # Each (C, 1).
        residual = b * columns  # a + b x + c y, in that order, then its distance from the border.
        residual += a
        residual += c * rows
        np.subtract(border, residual, out=residual)
        worst = np.abs(residual, out=residual).max(axis=0)
        kept, keep = keep, worst <= max(8.0, 2.5 * median(worst))
        if keep.all() if kept is None else (kept == keep).all():
            break
    return coefficients


def background_rows(values: np.ndarray) -> np.ndarray:
    """A plane a + b*x + c*y fitted to the border of each channel, robust to a garment touching it:
    (H, C, W) float32 rows of channel planes for (H, W) or (H, W, C) whole-numbered values."""
    height, width = values.shape[:2]
    flat = values.reshape(height, width, -1)  # (H, W, C)
    if min(height, width) < 8:
        levels = np.median(border_pixels(flat), axis=0)  # (C,)
        return np.broadcast_to(levels[np.newaxis, :, np.newaxis], (height, flat.shape[2], width)).astype(np.float32)
    a, b, c = plane_coefficients(flat)
    across, down = a + b * centred_float(width), c * centred_float(height)  # (C, W), (C, H)
    # (a + b x) + c y, in that order, added in float64 and rounded once to float32.
    return np.add(across[np.newaxis], down.T[:, :, np.newaxis]).astype(np.float32)


def fit_background(values: np.ndarray) -> np.ndarray:
    """background_rows as one float32 array of the shape of `values`."""
    rows = background_rows(values)
    return rows[:, 0] if values.ndim == 2 else rows.transpose(0, 2, 1)


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


def garment_signal(gray: np.ndarray) -> np.ndarray:
    """How much each pixel of a (H, W) grey image differs from the background, 0 (background) to 255: float."""
    background = fit_background(gray)
    if has_light_background(gray, background):
        # A photo: pixel = light * reflectance, so dividing by the background evens out the lighting.
        signal = 255 * (1 - gray / np.maximum(background, 1))
    else:
        signal = gray - background
    noise = min(128.0, nearest_rank(np.abs(border_pixels(signal)), 0.9) + 4)
    return np.clip((signal - noise) * 255 / (255 - noise), 0, 255)


def colour_distance(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel's colour is from the background fitted to each channel: (H, W) float32, 0-255.

    Unlike luminance this finds a dark garment on a dark or coloured background and a pink dress on a
    red rug; the magnitude is what Fashion-MNIST's negated product shots show: garment light, background 0.
    (H, W, 3) uint8 or float32 in. The work runs on (H, 3, W) rows of channel planes, the layout shrunk
    photos and camera frames have: each channel's values whole along a row.
    """
    differences = np.ascontiguousarray(rgb.transpose(0, 2, 1), dtype=np.float32)  # (H, 3, W)
    differences -= background_rows(rgb)
    differences *= differences
    # Element-wise only (no einsum or sum, whose order varies by build): the same bytes on every machine.
    squares = differences[:, 0] + differences[:, 1]
    squares += differences[:, 2]
    squares /= 3
    return np.sqrt(squares, out=squares)


def nearest_rank(values: np.ndarray, share: float) -> float:
    """The value below which `share` of `values` lie: an element itself, never an interpolation, whose
    last bits differ between numpy versions."""
    rank = int(share * (values.size - 1))
    ordered = values.flatten()  # A copy, partitioned in place.
    ordered.partition(rank)
    return float(ordered[rank])


def otsu_level(signal: np.ndarray) -> float:
    """Otsu's threshold of a (H, W) 0-255 signal: the level that best splits it into two classes
    (background and garment) by between-class variance. Integer histogram and element-wise float64
    arithmetic only, so every numpy version picks the same level."""
    # As np.clip, without its checks' cost; whole levels as bincount takes them, with no conversion.
    levels = np.minimum(np.maximum(signal, 0), 255).astype(np.intp)
    return otsu_of_counts(np.bincount(levels.ravel(), minlength=256).astype(np.float64))


def otsu_of_counts(counts: np.ndarray) -> float:
    """otsu_level from the (256,) float64 histogram of the whole levels."""
    below = counts.cumsum()  # Exact: whole numbers far under 2**53.
    below_sum = (counts * LEVELS).cumsum()
    above = below[-1] - below
    spread = below_sum[-1] * below / below[-1] - below_sum
    spread *= spread
    # Levels with nothing below or above them split nothing: 0.
    between = np.divide(spread, below * above, out=np.zeros(256), where=(below > 0) & (above > 0))
    return float(between.argmax())


def ranked_by_levels(values: np.ndarray, levels: np.ndarray, counts: np.ndarray, share: float) -> float:
    """nearest_rank(values, share) of non-negative values, from their whole levels (values cut to 0-255,
    truncated) and the levels' histogram: only the values of the level that holds the rank are
    partitioned. Every value of a level lies below every value of the next."""
    rank = int(share * (values.size - 1))
    below = counts.cumsum()
    level = int(below.searchsorted(rank, side="right"))  # The first level with more than `rank` values below it.
    chosen = values[levels == level]
    rank -= int(below[level - 1]) if level else 0
    chosen.partition(rank)
    return float(chosen[rank])


def colour_cut(distance: np.ndarray) -> tuple[np.ndarray, bool]:
    """A colour photo's (H, W) distance with its background cut away, 0-255, and whether the cut is
    to be doubted for a busy background.

    What lies under the border's residue (its 90th percentile) is cut away as background, or under
    Otsu's level where that is lower: when the garment covers much of the border or the background
    is busy, the border's residue is the garment's own contrast, and cutting there left a dim or
    empty frame (on the photos' choosing part the Otsu bound took 44.0% to 47.1%).
    Doubt: the background's residue is a large share of the garment's contrast.
    """
    noise = nearest_rank(border_pixels(distance), 0.9)
    levels = np.minimum(distance, 255).astype(np.intp)  # A distance is never negative.
    counts = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    peak = ranked_by_levels(distance, levels, counts, 0.995)
    cut = min(noise + 4, otsu_of_counts(counts))
    cleaned = np.subtract(distance, cut)  # (distance - cut) * 255 / max(1, 255 - cut), in that order.
    cleaned *= 255
    cleaned /= max(1.0, 255 - cut)
    np.maximum(cleaned, 0, out=cleaned)  # Clipped to 0-255, as np.clip does, in place.
    np.minimum(cleaned, 255, out=cleaned)
    return cleaned, bool(noise > DOUBTFUL_NOISE * peak)


def garment_mask(signal: np.ndarray, peak: float | None = None) -> np.ndarray:
    """(H, W) bool: the pixels bright enough to be the garment's; ValueError when the frame is blank.
    `peak`: the signal's maximum, when the caller has it."""
    if peak is None:
        peak = float(signal.max()) if signal.size else 0.0
    if peak < MIN_PEAK:
        raise ValueError("no garment found: the frame is blank or uniform")
    return signal > GARMENT_LEVEL * peak


def garment_box(signal: np.ndarray, mask: np.ndarray | None = None) -> tuple:
    """(top, bottom, left, right) around the garment, ignoring specks; ValueError when blank."""
    mask = garment_mask(signal) if mask is None else mask
    rows = (pixel_counts(mask, 1) >= max(1, 0.02 * mask.shape[1])).nonzero()[0]
    columns = (pixel_counts(mask, 0) >= max(1, 0.02 * mask.shape[0])).nonzero()[0]
    if not rows.size or not columns.size:
        raise ValueError("no garment found: only specks differ from the background")
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def pixel_counts(mask: np.ndarray, axis: int) -> np.ndarray:
    """How many pixels of a (H, W) bool mask are set in each row (axis 1) or column (axis 0), summed as
    bytes when they fit one (summing bools into 64-bit numbers converts each one first)."""
    kind = np.uint8 if mask.shape[axis] < 256 else np.intp
    return np.add.reduce(mask.view(np.uint8) if kind is np.uint8 else mask, axis=axis, dtype=kind)


def whiten(garment: np.ndarray) -> np.ndarray:
    """A print or a seam can be far brighter than the cloth: scaling by the brightest pixel would leave
    the garment dim. Clip so the garment's bright part (the top tenth of what is not background) is white."""
    lit = garment[garment > 0]
    level = nearest_rank(lit, GARMENT_WHITE) if lit.size else 0.0
    return np.minimum(garment, level) if level > 0 else garment


def touches(box: tuple, shape: tuple) -> int:
    """How many sides of a (H, W) frame the box (top, bottom, left, right) touches."""
    top, bottom, left, right = box
    return int(top == 0) + int(left == 0) + int(bottom == shape[0]) + int(right == shape[1])
