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


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The horizontal runs of a (H, W) bool mask, in row-major order: (rows, starts, ends), ends exclusive."""
    stride = mask.shape[1] + 2
    padded = np.zeros((mask.shape[0], stride), dtype=np.int8)  # A blank column each side ends every run in its row.
    padded[:, 1:-1] = mask
    steps = np.diff(padded.ravel())  # 1 where a run starts, -1 after it ends (flat positions + 1).
    starts, ends = np.flatnonzero(steps == 1) + 1, np.flatnonzero(steps == -1) + 1
    rows = starts // stride
    return rows, starts - rows * stride - 1, ends - rows * stride - 1


def runs_above(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each run, the runs of the row above that touch it, 8-connected: a range of run indices
    [first, last), empty when first >= last. Runs are in row-major order, so a row's runs are sorted."""
    stride = width + 2  # Sort keys row * stride + column never reach into the next row.
    start_keys, end_keys = rows * stride + starts, rows * stride + ends
    above = (rows - 1) * stride
    first = np.searchsorted(end_keys, above + starts, side="left")  # First run above ending at or after start - 1.
    last = np.searchsorted(start_keys, above + ends, side="right")  # Past the last starting at or before end.
    return first, np.where(rows > 0, last, first)


def part_labels(first: np.ndarray, last: np.ndarray) -> list:
    """One label per run, the same for runs joined through touching runs: the smallest run index of
    each part. A union-find over the runs in raster order, each run joined to the runs above it;
    every parent is a smaller index, so one pass from the left resolves every label."""
    parent = list(range(len(first)))
    for run, (low, high) in enumerate(zip(first.tolist(), last.tolist())):
        if low >= high:
            continue
        smallest = run  # The smallest root found so far among the runs above.
        for above in range(low, high):
            while parent[above] != above:  # To its root, halving the path.
                parent[above] = parent[parent[above]]
                above = parent[above]
            if above < smallest:
                if smallest != run:
                    parent[smallest] = above
                smallest = above
            elif above != smallest:
                parent[above] = smallest
        parent[run] = smallest
    for index, up in enumerate(parent):
        parent[index] = parent[up]
    return parent


def parts(signal: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected parts of the mask that are no specks: (masses (P,) int64, boxes (P, 4) int64 top,
    bottom, left, right), in raster order of their first pixel."""
    rows, starts, ends = runs(mask)
    if not len(rows):
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64)
    labels = np.array(part_labels(*runs_above(rows, starts, ends, mask.shape[1])))
    # Each run's sum of the rounded signal, in whole numbers (exact): reduceat over [start, end) of each run.
    flat = np.zeros(signal.size + 1, dtype=np.int32)
    np.rint(signal.ravel(), out=flat[:-1], casting="unsafe")
    bounds = np.stack([rows * mask.shape[1] + starts, rows * mask.shape[1] + ends], axis=1).ravel()
    run_masses = np.add.reduceat(flat, bounds)[::2]
    masses = np.bincount(labels, weights=run_masses).astype(np.int64)  # Exact: whole numbers under 2**53.
    names = np.flatnonzero(masses >= max(1.0, SPECK_SHARE * float(masses.max())))
    boxes = np.empty((len(names), 4), dtype=np.int64)
    for number, name in enumerate(names.tolist()):  # Few: the parts that are no specks.
        own = labels == name
        boxes[number] = rows[name], rows[own].max() + 1, starts[own].min(), ends[own].max()
    return masses[names], boxes


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


def pair_split(signal: np.ndarray, mask: np.ndarray, box: tuple) -> tuple | None:
    """The heavier shoe's box when the object in `box` is two touching shoes side by side, else None."""
    top, bottom, left, right = box
    width, height = right - left, bottom - top
    if width < PAIR_ASPECT * height or width < 8:
        return None
    profile = (np.rint(signal[top:bottom, left:right]).astype(np.int64) * mask[top:bottom, left:right]).sum(axis=0)
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


def find_objects(signal: np.ndarray) -> Objects:
    """The objects in a (H, W) 0-255 signal: the box of the one to keep, and how many there are."""
    mask = signal > PART_LEVEL * float(signal.max())
    masses, boxes = merged_objects(*parts(signal, mask))
    kept = heaviest(masses, boxes, mask.shape)
    box = tuple(int(side) for side in boxes[kept])
    count = int(np.count_nonzero(masses >= OBJECT_SHARE * masses[kept]))
    shoe = pair_split(signal, mask, box)
    if shoe is not None:
        return Objects(shoe, count + 1, alone=False)
    return Objects(box, count, alone=count == 1)
