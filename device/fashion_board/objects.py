"""Several objects in one frame (a pair of shoes, two garments): which one the frame shows, how many were seen.

The garment's mask is split into its connected parts (8-connected runs of pixels, joined row by
row); parts whose boxes overlap are one object (a garment cut into pieces by a print or a fold
stays whole); specks are ignored. The heaviest object is kept. A wide object whose column profile
dips deep between two humps is two touching shoes, split at the valley. Masses are whole numbers
and no step depends on scanning order, so a mirror image keeps the mirror image of the same object.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import resample

# Parts are found among the pixels above this share of the brightest: lower than the garment's own
# mask (segment.GARMENT_LEVEL), so that a dark garment is not broken into its light patches.
PART_LEVEL = 0.05
SPECK_SHARE = 0.02  # Parts lighter than this share of the heaviest are specks: never objects.
OBJECT_SHARE = 0.2  # Objects with at least this share of the heaviest's mass are counted.
# Two touching shoes side by side: an object at least PAIR_ASPECT times as wide as high whose
# column profile falls, between 30% and 70% of its width, to at most PAIR_VALLEY of the lower of
# its two humps, with at least PAIR_SHARE of the mass on each side, and whose two sides' profiles
# correlate by at least PAIR_LIKENESS (the same shape twice). Chosen on pairs and single shoes made
# of Fashion-MNIST's validation images: 96.7% of the touching pairs split, 1.1% of single shoes
# (3.3% of sandals, whose straps dip as deep).
PAIR_ASPECT = 1.6
PAIR_VALLEY = 0.3
PAIR_SHARE = 0.2
PAIR_LIKENESS = 0.3
PROFILE_BINS = 8  # Each side's profile is compared at this many columns.


@dataclasses.dataclass(frozen=True)
class Objects:
    box: tuple  # (top, bottom, left, right) of the kept object in the mask.
    count: int  # Objects seen, the kept one included.
    alone: bool  # Nothing but specks beside the kept object, and no pair split: the frame is as before.


def runs(signal: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal runs of the pixels of a (H, W) signal above `level`, in row-major order, as flat
    positions in that mask padded with a blank column each side ((H, W + 2), which ends every run in
    its row): (each run's start and end in turn, ends exclusive; the padded mask)."""
    padded = np.zeros((signal.shape[0], signal.shape[1] + 2), dtype=bool)
    np.greater(signal, level, out=padded[:, 1:-1])
    flat = padded.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # Each one before the position where the mask changes.
    edges += 1
    return edges, padded


def runs_above(starts: np.ndarray, ends: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """For each run (flat positions in rows of `stride`), the runs of the row above that touch it,
    8-connected: a range of run indices [first, last), empty when first >= last (always in the first
    row). Runs are in row-major order, so a row's runs are sorted."""
    first = np.searchsorted(ends, starts - stride, side="left")  # First run above ending at or after start - 1.
    last = np.searchsorted(starts, ends - stride, side="right")  # Past the last starting at or before end.
    return first, last


def part_labels(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """One label per run, the same for runs joined through touching runs: the smallest run index of
    each part, (R,) int. A union-find over the runs in raster order, each run joined to the runs above
    it (most runs touch one), with path halving; every root is the smallest index of its part, so
    following parents until nothing changes resolves every label."""
    parent = list(range(len(first)))
    for run, (low, high) in enumerate(zip(first.tolist(), last.tolist())):
        if low >= high:
            continue
        root = low  # The root of the first run above.
        while parent[root] != root:
            parent[root] = root = parent[parent[root]]
        if high - low > 1:  # Most runs touch one run above: no range to make.
            for above in range(low + 1, high):
                while parent[above] != above:
                    parent[above] = above = parent[parent[above]]
                if above < root:
                    parent[root] = root = above
                elif above > root:
                    parent[above] = root
        parent[run] = root
    labels = np.array(parent)
    while True:  # A few steps: each halves every chain of parents.
        resolved = labels[labels]
        if np.array_equal(resolved, labels):
            return labels
        labels = resolved


def parts(signal: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The connected parts of the pixels of a (H, W) signal above `level` that are no specks: (masses
    (P,) int64, boxes (P, 4) int64 top, bottom, left, right), in raster order of their first pixel;
    and the mask and the rounded signal, both padded (H, W + 2)."""
    edges, padded = runs(signal, level)
    starts, ends, stride = edges[0::2], edges[1::2], padded.shape[1]
    rounded = np.zeros(padded.shape, dtype=np.int32)  # For the runs' masses and the pair split's profile.
    np.rint(signal, out=rounded[:, 1:-1], casting="unsafe")
    if not len(starts):
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64), padded, rounded
    labels = part_labels(*runs_above(starts, ends, stride))
    # Each run's sum of the rounded signal, in whole numbers (exact): reduceat over [start, end) of each run.
    run_masses = np.add.reduceat(rounded.ravel(), edges)[::2]
    masses = np.bincount(labels, weights=run_masses).astype(np.int64)  # Exact: whole numbers under 2**53.
    names = np.flatnonzero(masses >= max(1.0, SPECK_SHARE * float(masses.max())))
    rows = starts // stride
    boxes = np.empty((len(names), 4), dtype=np.int64)
    for number, name in enumerate(names.tolist()):  # Few: the parts that are no specks.
        own = labels == name
        row_starts = rows[own] * stride + 1  # Flat position of column 0 in each run's row.
        boxes[number] = rows[name], rows[own].max() + 1, (starts[own] - row_starts).min(), (ends[own] - row_starts).max()
    return masses[names], boxes, padded, rounded


def merged_objects(masses: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(masses, boxes) of the objects: the parts, merged while their boxes overlap. Merging until no
    two boxes overlap gives the same objects in whatever order the parts come."""
    while len(masses) > 1:
        top, bottom, left, right = (boxes[:, side] for side in range(4))
        overlapping = ((top[:, np.newaxis] < bottom) & (top < bottom[:, np.newaxis])
                       & (left[:, np.newaxis] < right) & (left < right[:, np.newaxis]))  # (N, N), True on the diagonal.
        labels = np.arange(len(masses))
        while True:  # Each object's smallest index among those it is joined to through overlaps.
            joined = np.where(overlapping, labels, len(labels)).min(axis=1)
            if np.array_equal(joined, labels):
                break
            labels = joined
        if len(np.unique(labels)) == len(labels):
            return masses, boxes
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order], prepend=-1))
        masses = np.add.reduceat(masses[order], bounds)
        boxes = np.stack([np.minimum.reduceat(boxes[order, 0], bounds), np.maximum.reduceat(boxes[order, 1], bounds),
                          np.minimum.reduceat(boxes[order, 2], bounds), np.maximum.reduceat(boxes[order, 3], bounds)],
                         axis=1)
    return masses, boxes


def heaviest(masses: np.ndarray, boxes: np.ndarray, shape: tuple) -> int:
    """The index of the heaviest object; of equal masses, the one nearest the centre."""
    if len(masses) == 1:
        return 0
    # Doubled offsets of each box's centre from the frame's, squared.
    distances = (boxes[:, 0] + boxes[:, 1] - shape[0]) ** 2 + (boxes[:, 2] + boxes[:, 3] - shape[1]) ** 2
    candidates = np.flatnonzero(masses == masses.max())
    return int(candidates[np.argmin(distances[candidates])])


def alike(one: np.ndarray, other: np.ndarray) -> bool:
    """True when two int64 profiles, each area-averaged to PROFILE_BINS columns, correlate by at least
    PAIR_LIKENESS. In whole numbers (Python's): exact, and the same for the two swapped and reversed."""
    bins = min(PROFILE_BINS, len(one), len(other))
    first, second = (resample.shrink_rows(profile, bins, int(profile.max())).tolist() for profile in (one, other))
    sum_first, sum_second = sum(first), sum(second)
    covariance = bins * sum(a * b for a, b in zip(first, second)) - sum_first * sum_second
    spreads = ((bins * sum(a * a for a in first) - sum_first ** 2)
               * (bins * sum(b * b for b in second) - sum_second ** 2))
    likeness = round(PAIR_LIKENESS * 100)  # covariance / sqrt(spreads) >= likeness / 100, squared.
    return covariance > 0 and 100 ** 2 * covariance ** 2 >= likeness ** 2 * spreads


def pair_split(rounded: np.ndarray, mask: np.ndarray, box: tuple) -> tuple | None:
    """The heavier shoe's box when the object in `box` is two touching shoes side by side, else None;
    `rounded` the (H, W) signal rounded to whole numbers, `mask` the object pixels."""
    top, bottom, left, right = box
    width, height = right - left, bottom - top
    if width < PAIR_ASPECT * height or width < 8:
        return None
    profile = (rounded[top:bottom, left:right] * mask[top:bottom, left:right]).sum(axis=0, dtype=np.int64)
    smooth = np.convolve(profile, np.ones(3, dtype=np.int64), mode="same")  # Whole numbers, symmetric.
    low, high = int(0.3 * width), width - int(0.3 * width)
    middle = smooth[low:high]
    lowest = np.flatnonzero(middle == middle.min()) + low
    valley = int(lowest[np.argmin(np.abs(2 * lowest - (width - 1)))])  # Of equal minima, the most central.
    humps = int(smooth[:valley].max()), int(smooth[valley + 1:].max())
    sides = profile[:valley], profile[valley + 1:]
    masses = int(sides[0].sum()), int(sides[1].sum())
    if smooth[valley] > PAIR_VALLEY * min(humps) or min(masses) < PAIR_SHARE * sum(masses) or not alike(*sides):
        return None
    if masses[0] >= masses[1]:
        return top, bottom, left, left + valley
    return top, bottom, left + valley + 1, right


def find_objects(signal: np.ndarray, peak: float | None = None) -> Objects:
    """The objects in a (H, W) 0-255 signal: the box of the one to keep, and how many there are.
    `peak`: the signal's maximum, when the caller has it."""
    peak = float(signal.max()) if peak is None else peak
    masses, boxes, padded, rounded = parts(signal, PART_LEVEL * peak)
    masses, boxes = merged_objects(masses, boxes)
    kept = heaviest(masses, boxes, signal.shape)
    box = tuple(int(side) for side in boxes[kept])
    count = int(np.count_nonzero(masses >= OBJECT_SHARE * masses[kept]))
    shoe = pair_split(rounded[:, 1:-1], padded[:, 1:-1], box)
    if shoe is not None:
        return Objects(shoe, count + 1, alone=False)
    return Objects(box, count, alone=count == 1)
