"""Connected components and consecutive relabelling, with vigra's numbering.

vigra's `labelMultiArrayWithBackground` labels regions of *equal value* (two touching pixels of different
non-zero values belong to different regions) with the direct neighbourhood (4 in 2-D, 6 in 3-D); ids are
consecutive in the order of each region's first pixel in raster order (x fastest, so C order of a
(z, y, x) array). `relabelConsecutive` renumbers a label image in the order of first appearance, not of
value (ilastik-workflows-spec.md §0.1).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        following = parent[i]
        parent[i] = root
        i = following
    return root


@njit(cache=True, nogil=True)
def _label(values: np.ndarray, out: np.ndarray) -> int:
    """Two-pass union-find over a (z, y, x) array; the root of a set is its smallest provisional label,
    provisional labels are given in raster order, so final ids follow first occurrence."""
    nz, ny, nx = values.shape
    parent = np.empty(values.size // 2 + 2, dtype=np.int64)
    next_label = 1
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = values[z, y, x]
                if v == 0:
                    out[z, y, x] = 0
                    continue
                label = 0
                for dz, dy, dx in ((0, 0, -1), (0, -1, 0), (-1, 0, 0)):
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if zz < 0 or yy < 0 or xx < 0 or values[zz, yy, xx] != v:
                        continue
                    other = _find(parent, out[zz, yy, xx])
                    if label == 0:
                        label = other
                    elif other != label:
                        low, high = min(label, other), max(label, other)
                        parent[high] = low
                        label = low
                if label == 0:
                    if next_label >= parent.size:
                        grown = np.empty(parent.size * 2, dtype=np.int64)
                        grown[:parent.size] = parent
                        parent = grown
                    parent[next_label] = next_label
                    label = next_label
                    next_label += 1
                out[z, y, x] = label
    final = np.zeros(next_label, dtype=np.int64)
    count = 0
    for label in range(1, next_label):
        root = _find(parent, label)
        if root == label:
            count += 1
            final[label] = count
        else:
            final[label] = final[root]
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                out[z, y, x] = final[out[z, y, x]]
    return count


def label_components(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels uint32, count): vigra's connected components of equal non-zero values of a (z, y, x) or
    (y, x) array, direct neighbourhood, ids in order of first occurrence."""
    shaped = values.reshape((1,) * (3 - values.ndim) + values.shape)
    if shaped.dtype == np.bool_:
        shaped = shaped.view(np.uint8)
    out = np.empty(shaped.shape, dtype=np.uint32)
    count = _label(np.ascontiguousarray(shaped), out)
    return out.reshape(values.shape), int(count)


def first_occurrence_order(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, first raster index) of the non-zero values of a label image, in order of first occurrence."""
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    keep = values != 0
    values, first = values[keep], first[keep]
    order = np.argsort(first, kind="stable")
    return values[order], first[order]


def relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(relabelled uint32, old values): vigra's relabelConsecutive(start_label=1, keep_zeros=True); object k
    (1-based) had the value old_values[k - 1]."""
    old, _ = first_occurrence_order(labels)
    sorter = np.argsort(old)
    new_of_sorted = (sorter + 1).astype(np.uint32)
    out = np.zeros(labels.shape, dtype=np.uint32)
    nonzero = labels != 0
    out[nonzero] = new_of_sorted[np.searchsorted(old[sorter], labels[nonzero])]
    return out, old
