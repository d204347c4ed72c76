"""Exact integer area averaging (a box filter): the same bytes on every machine and library version.

Pillow's resize rounds differently from one release to the next, and float sums depend on their
order; these shrink images with whole numbers only. They are also exact under mirroring: a mirror
image shrinks to the mirror image of the shrunk image, so the board's orientation step can make a
photo and its mirror image the same frame.
"""

from __future__ import annotations

import functools

import numpy as np


def target_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is `side`, aspect kept, each at least 1."""
    factor = side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


@functools.lru_cache(maxsize=64)
def span_weights(length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """How `size` equal spans cover `length` pixels (length >= size): the pixels each span touches
    and their shares of it, times `size`. (taps, weights), both (size, k) int64, k the most pixels
    a span touches.

    Span i covers [i * length / size, (i + 1) * length / size); scaled by `size` every boundary is a
    whole number, so each pixel's share of a span is a whole number too.
    """
    bounds = np.arange(size + 1, dtype=np.int64) * length  # Span boundaries, times `size`.
    first, last = bounds[:-1] // size, (bounds[1:] - 1) // size  # First and last pixel each span touches.
    count = int((last - first).max()) + 1
    pixels = first[:, np.newaxis] + np.arange(count)  # (size, k)
    low = np.maximum(pixels * size, bounds[:-1, np.newaxis])
    high = np.minimum((pixels + 1) * size, bounds[1:, np.newaxis])
    weights = np.maximum(high - low, 0)
    return np.minimum(pixels, length - 1), weights


@functools.lru_cache(maxsize=64)
def sum_type(largest: int):
    """The smallest unsigned integer type that holds `largest`."""
    return next(kind for kind in (np.uint16, np.uint32, np.uint64) if largest <= np.iinfo(kind).max)


@functools.lru_cache(maxsize=64)
def row_taps(length: int, size: int, kind) -> list:
    """[(rows to gather, their weights of `kind` shaped to broadcast)] for shrink_rows, one pair per tap."""
    taps, weights = span_weights(length, size)
    return [(taps[:, tap], weights[:, tap].astype(kind)[:, np.newaxis]) for tap in range(taps.shape[1])]


@functools.lru_cache(maxsize=64)
def column_taps(width: int, size: int, channels: int, planes: int, kind, scale: int) -> list:
    """[(flat pixel positions in a row, their weights times `scale`, of `kind`)] for column_sums, one
    pair per tap; a row holds `planes` blocks of width x channels values side by side."""
    taps, weights = span_weights(width, size)
    starts = np.arange(planes)[:, np.newaxis, np.newaxis] * width  # (planes, 1, 1)
    offsets = np.arange(channels)
    return [(((starts + taps[:, tap, np.newaxis]) * channels + offsets).ravel(),
             np.tile(np.repeat(weights[:, tap] * scale, channels), planes).astype(kind))
            for tap in range(taps.shape[1])]


def shrink_rows(values: np.ndarray, size: int, largest: int) -> np.ndarray:
    """Area averages of (H, ...) whole-numbered values (at most `largest`) over `size` equal spans of
    rows, times H: exact, in the smallest unsigned type that holds them; k row gathers, products and
    adds, all in that type (mixed types would be converted element by element, several times slower)."""
    kind = sum_type(largest * values.shape[0])
    flat = values.reshape(values.shape[0], -1).astype(kind, copy=False)
    (rows, weights), *others = row_taps(values.shape[0], size, kind)
    total = flat[rows]
    total *= weights
    for rows, weights in others:
        part = flat[rows]
        part *= weights
        total += part
    return total.reshape(size, *values.shape[1:])


def column_sums(values: np.ndarray, size: int, kind, scale: int = 1, planes: int = 1) -> np.ndarray:
    """shrink_rows along the columns of (H, W) or (H, W, C) values (a row `planes` blocks of W / planes
    columns side by side, each shrunk to `size`), times `scale`, in `kind`. The gathers index each
    row's flat pixels: several times faster than fancy indexing on a middle axis."""
    height, width = values.shape[0], values.shape[1] // planes
    channels = values.size // (height * width * planes)
    flat = values.reshape(height, -1).astype(kind, copy=False)
    (positions, weights), *others = column_taps(width, size, channels, planes, kind, scale)
    total = flat[:, positions]
    total *= weights
    for positions, weights in others:
        part = flat[:, positions]
        part *= weights
        total += part
    return total.reshape(height, size * planes, *values.shape[2:])


def shrink_columns(values: np.ndarray, size: int, largest: int) -> np.ndarray:
    """shrink_rows along the columns of (H, W) or (H, W, C) values."""
    return column_sums(values, size, sum_type(largest * values.shape[1]))


def block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Sums of block x block squares of (H, W, ...) uint8 values, (H // block, W // block, ...); the
    few rows and columns left over are dropped, half on each side. Cheap, and it leaves the spans
    a small image."""
    rows, columns = values.shape[0] // block, values.shape[1] // block
    top, left = (values.shape[0] % block) // 2, (values.shape[1] % block) // 2
    kept = values[top: top + rows * block, left: left + columns * block]
    dtype = np.uint16 if 255 * block * block <= np.iinfo(np.uint16).max else np.int64
    if block == 2:  # A camera frame's luma: two strided adds.
        row_sums = np.add(kept[0::2], kept[1::2], dtype=dtype)
        return np.add(row_sums[:, 0::2], row_sums[:, 1::2])
    row_sums = kept[0::block].astype(dtype)  # Strided adds: several times faster than reshape and sum.
    for offset in range(1, block):
        row_sums += kept[offset::block]
    sums = row_sums[:, 0::block].copy()
    for offset in range(1, block):
        sums += row_sums[:, offset::block]
    return sums


def whole_block(height: int, width: int, new_height: int, new_width: int) -> int:
    """The side of the squares block_sums may sum first: as large as the shrink allows, with an even
    number of columns left over, so that they are dropped alike on both sides (exact under mirroring)."""
    block = max(1, min(height // new_height, width // new_width))
    while block > 1 and (width % block) % 2:
        block -= 1
    return block


def shrink_to(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 to (height, width[, C]) uint8 by area averaging (H >= height,
    W >= width), rounded half up, in whole numbers throughout."""
    block = whole_block(values.shape[0], values.shape[1], height, width)
    return shrink_sums(block_sums(values, block) if block > 1 else values, block, height, width)


def shrink_sums(summed: np.ndarray, block: int, height: int, width: int, planes: int = 1) -> np.ndarray:
    """shrink_to's work after block_sums: (H, W) or (H, W, C) sums of block x block uint8 squares to
    (height, width[, C]) uint8 averages, rounded half up; with `planes`, each of that many blocks of
    columns side by side (H, planes * W) to (height, planes * width)."""
    largest = 255 * block * block
    rows = shrink_rows(summed, height, largest)  # Averages, times H'.
    divisor = block * block * summed.shape[0] * (summed.shape[1] // planes)
    kind = sum_type(2 * largest * divisor // (block * block) + divisor)
    doubled = column_sums(rows, width, kind, 2, planes)  # Averages, times 2 * H' * W'.
    doubled += kind(divisor)
    doubled //= kind(2 * divisor)  # Rounded half up, exactly.
    return doubled.astype(np.uint8)


def shrink(values: np.ndarray, side: int) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 to at most side x side by area averaging, aspect kept."""
    return shrink_to(values, *target_size(values.shape[0], values.shape[1], side))
