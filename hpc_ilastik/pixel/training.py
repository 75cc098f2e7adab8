"""Training pixel classifiers: the labelled pixels' features, computed only around the labels, tile by tile
(the forests themselves are trained by `forest.training`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from hpc_ilastik.run import blocks as blk

LabelBlock = tuple[tuple[slice, ...], np.ndarray]  # (tzyxc slices in the image, uint8 tzyxc labels)

FEATURE_TILE = {2: (1, 512, 512), 3: (32, 128, 128)}  # (z, y, x) per feature computation, 2-D / 3-D images


def training_set(features_zyxF: np.ndarray, labels_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 (n, F), y uint32 (n,)) of the labelled pixels (label > 0), in C order."""
    if features_zyxF.shape[:-1] != labels_zyx.shape:
        raise ValueError(f"features {features_zyxF.shape} and labels {labels_zyx.shape} do not match")
    mask = labels_zyx > 0
    return features_zyxF[mask].astype(np.float32), labels_zyx[mask].astype(np.uint32)


def _tiles_with_labels(label_blocks: Sequence[LabelBlock], shape_tzyxc: tuple[int, ...]) -> dict[tuple, np.ndarray]:
    """The tiles of a FEATURE_TILE grid (one time point each) that hold labels → the tile's labels (t, z, y, x).

    Label blocks are pasted into the tiles they overlap, so nearby small blocks share one feature computation.
    """
    tile = (1,) + FEATURE_TILE[2 if shape_tzyxc[1] == 1 else 3]
    tiles: dict[tuple, np.ndarray] = {}
    for slices, labels in label_blocks:
        ranges = [range(s.start // n, (s.stop - 1) // n + 1) for s, n in zip(slices[:4], tile)]
        for index in itertools.product(*ranges):
            bounds = [slice(i * n, min((i + 1) * n, size)) for i, n, size in zip(index, tile, shape_tzyxc)]
            target = tiles.get(index, np.zeros([b.stop - b.start for b in bounds], dtype=np.uint8))
            if paste_labels(target, bounds, labels[..., 0], slices[:4]):
                tiles[index] = target
    return tiles


def paste_labels(target: np.ndarray, where: Sequence[slice], labels: np.ndarray, at: Sequence[slice]) -> bool:
    """Copy the non-zero `labels` (lying at `at` in the image) into `target` (lying at `where`) where the two
    overlap; whether there was any label to copy."""
    overlap = [slice(max(w.start, a.start), min(w.stop, a.stop)) for w, a in zip(where, at)]
    if any(o.start >= o.stop for o in overlap):
        return False
    piece = labels[tuple(slice(o.start - a.start, o.stop - a.start) for o, a in zip(overlap, at))]
    if not piece.any():
        return False
    view = target[tuple(slice(o.start - w.start, o.stop - w.start) for o, w in zip(overlap, where))]
    np.copyto(view, piece, where=piece > 0)
    return True


def labelled_features(read: Callable[[tuple[slice, ...]], np.ndarray], shape_tzyxc: tuple[int, ...],
                      label_blocks: Sequence[LabelBlock], features_of: Callable[[np.ndarray], np.ndarray],
                      halo_zyx: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of every labelled pixel: features computed tile by tile, on tile + halo, where there are labels.

    `read` gives a tzyxc region of the image, `features_of` maps a zyxc array to (z, y, x, F) features
    valid wherever the halo is available (the image border counts as available).
    """
    xs, ys = [], []
    tile_shape = (1,) + FEATURE_TILE[2 if shape_tzyxc[1] == 1 else 3] + (shape_tzyxc[4],)
    for index, labels in sorted(_tiles_with_labels(label_blocks, shape_tzyxc).items()):
        slices = tuple(slice(i * n, i * n + size) for i, n, size in zip(index, tile_shape, labels.shape))
        tile = blk.Block(0, index + (0,), slices + (slice(0, shape_tzyxc[4]),), slices + (slice(0, shape_tzyxc[4]),))
        read_slices, crop = blk.read_region(tile, halo_zyx, shape_tzyxc)
        features = features_of(read(read_slices)[0])[crop[1:4]]
        x, y = training_set(features, labels[0])
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.uint32)
    return np.concatenate(xs), np.concatenate(ys)
