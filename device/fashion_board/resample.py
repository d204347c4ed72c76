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


def tap_outputs(weights: np.ndarray) -> list:
    """For each tap (column of the (size, k) weights), the outputs it adds to: None for all of them,
    else their indices. A span touches its last pixel only when it reaches into it: at 10 pixels
    to 7, two spans in seven touch three pixels, so a third tap on all seven would be mostly zeros."""
    used = weights > 0
    return [None if used[:, tap].all() else used[:, tap].nonzero()[0] for tap in range(weights.shape[1])]


@functools.lru_cache(maxsize=64)
def row_taps(length: int, size: int, kind) -> list:
    """[(output rows or None for all, rows to gather, their weights of `kind` shaped to broadcast)] for
    shrink_rows, one per tap that adds anything."""
    taps, weights = span_weights(length, size)
    every = np.arange(size)
    return [(outputs, taps[every if outputs is None else outputs, tap],
             weights[every if outputs is None else outputs, tap].astype(kind)[:, np.newaxis])
            for tap, outputs in enumerate(tap_outputs(weights)) if outputs is None or len(outputs)]


@functools.lru_cache(maxsize=64)
def column_taps(width: int, size: int, channels: int, planes: int, kind, scale: int) -> list:
    """[(flat output positions in a row or None for all, flat pixel positions to gather, their weights
    times `scale`, of `kind`)] for column_sums, one per tap that adds anything. A row holds `planes`
    blocks of width x channels values side by side; its output holds each block's channels one after
    the other, each `size` values long (a plane of each channel per row, so that work on one channel
    runs along whole rows)."""
    taps, weights = span_weights(width, size)
    plane_starts = np.arange(planes)[:, np.newaxis, np.newaxis]
    offsets = np.arange(channels)[:, np.newaxis]

    def flat(columns: np.ndarray, length: int, interleaved: bool) -> np.ndarray:  # (planes, channels, columns)
        if interleaved:
            return ((plane_starts * length + columns) * channels + offsets).ravel()
        return (plane_starts * channels * length + offsets * length + columns).ravel()
    every = np.arange(size)
    result = []
    for tap, outputs in enumerate(tap_outputs(weights)):
        chosen = every if outputs is None else outputs
        if len(chosen):
            result.append((None if outputs is None else flat(outputs, size, False), flat(taps[chosen, tap], width, True),
                           np.tile(weights[chosen, tap] * scale, planes * channels).astype(kind)))
    return result


def shrink_rows(values: np.ndarray, size: int, largest: int) -> np.ndarray:
    """Area averages of (H, ...) whole-numbered values (at most `largest`) over `size` equal spans of
    rows, times H: exact, in the smallest unsigned type that holds them; k row gathers, products and
    adds, all in that type (mixed types would be converted element by element, several times slower)."""
    kind = sum_type(largest * values.shape[0])
    flat = values.reshape(values.shape[0], -1).astype(kind, copy=False)
    (_, rows, weights), *others = row_taps(values.shape[0], size, kind)  # The first tap adds to every span.
    total = flat[rows]
    total *= weights
    for outputs, rows, weights in others:
        part = flat[rows]
        part *= weights
        if outputs is None:
            total += part
        else:
            total[outputs] += part
    return total.reshape(size, *values.shape[1:])


def column_sums(values: np.ndarray, size: int, kind, scale: int = 1, planes: int = 1) -> np.ndarray:
    """shrink_rows along the columns of (H, W) or (H, W, C) values (a row `planes` blocks of W / planes
    columns side by side, each shrunk to `size`), times `scale`, in `kind`: (H, planes * C * size), each
    block's channels one after the other. The gathers index each row's flat pixels: several times
    faster than fancy indexing on a middle axis."""
    height, width = values.shape[0], values.shape[1] // planes
    channels = values.size // (height * width * planes)
    flat = values.reshape(height, -1).astype(kind, copy=False)
    (_, positions, weights), *others = column_taps(width, size, channels, planes, kind, scale)
    total = flat[:, positions]
    total *= weights
    for outputs, positions, weights in others:
        part = flat[:, positions]
        part *= weights
        if outputs is None:
            total += part
        else:
            total[:, outputs] += part
    return total


def interleaved(planar: np.ndarray, channels: int) -> np.ndarray:
    """(H, C * W) rows of channel planes as (H, W, C) values (a view); (H, W) as it is for one channel."""
    if channels == 1:
        return planar
    height = planar.shape[0]
    return planar.reshape(height, channels, -1).transpose(0, 2, 1)


def shrink_columns(values: np.ndarray, size: int, largest: int) -> np.ndarray:
    """shrink_rows along the columns of (H, W) or (H, W, C) values."""
    channels = values.size // (values.shape[0] * values.shape[1])
    return interleaved(column_sums(values, size, sum_type(largest * values.shape[1])), channels)


def block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Sums of block x block squares of (H, W, ...) uint8 values, (H // block, W // block, ...); the
    few rows and columns left over are dropped, half on each side. Cheap, and it leaves the spans
    a small image."""
    rows, columns = values.shape[0] // block, values.shape[1] // block
    top, left = (values.shape[0] % block) // 2, (values.shape[1] % block) // 2
    kept = values[top: top + rows * block, left: left + columns * block]
    dtype = np.uint16 if 255 * block * block <= np.iinfo(np.uint16).max else np.int64
    if block == 2:  # A camera frame's luma: converted once, then two strided adds.
        wide = kept.astype(dtype)
        row_sums = np.add(wide[0::2], wide[1::2])
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
    (height, width[, C]) uint8 averages, rounded half up (each channel's values whole along a row: a
    view); with `planes`, each of that many blocks of columns side by side (H, planes * W) to
    (height, planes * width)."""
    largest = 255 * block * block
    rows = shrink_rows(summed, height, largest)  # Averages, times H'.
    divisor = block * block * summed.shape[0] * (summed.shape[1] // planes)
    kind = sum_type(2 * largest * divisor // (block * block) + divisor)
    doubled = column_sums(rows, width, kind, 2, planes)  # Averages, times 2 * H' * W'.
    doubled += kind(divisor)
    doubled //= kind(2 * divisor)  # Rounded half up, exactly.
    # The gathers along rows leave their results column by column in memory: laid out row by row here.
    return interleaved(doubled.astype(np.uint8, order="C"), summed.shape[2] if summed.ndim == 3 else 1)


def shrink(values: np.ndarray, side: int) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 to at most side x side by area averaging, aspect kept."""
    return shrink_to(values, *target_size(values.shape[0], values.shape[1], side))
