"""The region adjacency graph of a superpixel image as ilastikrag builds it, whole-image or from blocks.

Facts from ilastikrag (`ilastikrag/rag.py` `Rag.__init__`, `_init_dense_edge_tables`; `ilastikrag/util.py`
`edge_mask_for_axis`, `edge_ids_for_axis`, `unique_edge_labels`, `extract_edge_values_for_axis`):
* nodes are the superpixel ids (0 is an ordinary id); edges are the unique pairs (sp1 < sp2) of ids that
  touch along an axis, sorted by (sp1, sp2);
* an *edge pixel* is one pair of neighbouring voxels along one axis with different ids; it sits at the
  coordinate of its lower ("left-hand") voxel, and its value in a channel is (a + b) / 2 in float32;
* the edge pixels of each axis (z, y, x order) are kept in raster order of that coordinate, and the edge
  features accumulate them in that order, axis after axis.

Every edge pixel therefore carries its key, the raster index of its lower voxel in the whole image. A block
owns the voxels [start, stop) and is read with one more voxel on each high face where the image goes on
(`edge_window`): it sees exactly the pairs whose lower voxel it owns, so every pair is seen by one block
whatever the layout, and `merge_edge_pixels` (a sort by key) rebuilds the whole-image arrays bit for bit.

Superpixel features need each superpixel's voxels in raster order; blocks give their bounding boxes and the
value range of each channel (`block_superpixel_boxes`, mergeable by min/max), and the features are then
computed per superpixel on its box (`edge_features.superpixel_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class EdgePixels:
    """Edge pixels axis by axis (z, y, x or y, x): the pair of ids (n, 2) uint32 with the smaller id first,
    the key (n,) int64 = raster index of the lower voxel in the image, and the values (n, C) float32."""

    image_shape: tuple[int, ...]
    pairs: tuple[np.ndarray, ...]
    keys: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class RegionAdjacencyGraph:
    """The sorted edges (E, 2) uint32 and the edge pixels of every axis in raster order, with the index
    of each edge pixel's edge (`pixel_edge`, per axis (n,) int64)."""

    edges: np.ndarray
    pixels: EdgePixels
    pixel_edge: tuple[np.ndarray, ...]

    def coordinates(self, axis: int) -> np.ndarray:
        """The (n, ndim) int64 coordinates (z, y, x order) of the edge pixels along `axis`."""
        return np.stack(np.unravel_index(self.pixels.keys[axis], self.pixels.image_shape), axis=1).astype(np.int64)

    def segments(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(order, bounds): `order[bounds[e]:bounds[e + 1]]` are edge e's pixels along `axis`, in raster order."""
        order = np.argsort(self.pixel_edge[axis], kind="stable")
        bounds = np.searchsorted(self.pixel_edge[axis][order], np.arange(len(self.edges) + 1))
        return order, bounds


def edge_window(start: Sequence[int], stop: Sequence[int], image_shape: Sequence[int]) -> tuple[slice, ...]:
    """What to read for the block that owns [start, stop): one voxel more on each high face inside the image."""
    return tuple(slice(a, min(b + 1, n)) for a, b, n in zip(start, stop, image_shape))


def block_edge_pixels(labels: np.ndarray, values: np.ndarray | None, start: Sequence[int], stop: Sequence[int],
                      image_shape: Sequence[int]) -> EdgePixels:
    """The edge pixels whose lower voxel lies in [start, stop), from `labels` (and `values`, channels last)
    read over `edge_window(start, stop, image_shape)`."""
    image_shape = tuple(int(n) for n in image_shape)
    window = edge_window(start, stop, image_shape)
    if labels.shape != tuple(s.stop - s.start for s in window):
        raise ValueError(f"labels {labels.shape} do not cover the edge window {window}")
    if values is None:
        values = np.zeros(labels.shape + (0,), dtype=np.float32)
    if values.shape[:-1] != labels.shape or values.dtype != np.float32:
        raise ValueError(f"values {values.shape} {values.dtype} must be float32 of shape {labels.shape} + (C,)")
    owned = [b - a for a, b in zip(start, stop)]
    pairs, keys, means = [], [], []
    for axis in range(labels.ndim):
        lower = tuple(slice(0, min(n, labels.shape[axis] - 1) if k == axis else n) for k, n in enumerate(owned))
        upper = tuple(slice(s.start + 1, s.stop + 1) if k == axis else s for k, s in enumerate(lower))
        low_ids, high_ids = labels[lower], labels[upper]
        mask = low_ids != high_ids
        a, b = low_ids[mask].astype(np.uint32), high_ids[mask].astype(np.uint32)
        pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        coords = tuple(c + offset for c, offset in zip(np.nonzero(mask), start))
        keys.append(np.ravel_multi_index(coords, image_shape).astype(np.int64))
        means.append((values[lower][mask] + values[upper][mask]) / np.float32(2))
    return EdgePixels(image_shape, tuple(pairs), tuple(keys), tuple(means))


def merge_edge_pixels(parts: Sequence[EdgePixels]) -> RegionAdjacencyGraph:
    """The graph from the edge pixels of all blocks (any layout that owns every voxel once)."""
    image_shape = parts[0].image_shape
    pairs, keys, values = [], [], []
    for axis in range(len(image_shape)):
        axis_keys = np.concatenate([p.keys[axis] for p in parts])
        order = np.argsort(axis_keys, kind="stable")
        axis_keys = axis_keys[order]
        if np.any(axis_keys[1:] == axis_keys[:-1]):
            raise ValueError("an edge pixel was given by two blocks: the blocks overlap")
        keys.append(axis_keys)
        pairs.append(np.concatenate([p.pairs[axis] for p in parts])[order])
        values.append(np.concatenate([p.values[axis] for p in parts])[order])
    codes = [(p[:, 0].astype(np.uint64) << np.uint64(32)) | p[:, 1].astype(np.uint64) for p in pairs]
    unique = np.unique(np.concatenate(codes))
    edges = np.stack([unique >> np.uint64(32), unique & np.uint64(0xFFFFFFFF)], axis=1).astype(np.uint32)
    pixel_edge = tuple(np.searchsorted(unique, c).astype(np.int64) for c in codes)
    return RegionAdjacencyGraph(edges, EdgePixels(image_shape, tuple(pairs), tuple(keys), tuple(values)), pixel_edge)


def region_adjacency_graph(labels: np.ndarray, values: np.ndarray | None = None) -> RegionAdjacencyGraph:
    """The graph of a whole (z, y, x) or (y, x) label image, with edge values of `values` (channels last)."""
    whole = block_edge_pixels(labels, values, (0,) * labels.ndim, labels.shape, labels.shape)
    return merge_edge_pixels([whole])


@dataclass(frozen=True)
class SuperpixelBoxes:
    """Bounding boxes (ids (S,) uint32 sorted; lower, upper (S, ndim) int64, upper exclusive) and the value
    range of each channel (C,) float32 over the voxels seen."""

    ids: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    value_min: np.ndarray
    value_max: np.ndarray

    def box(self, index: int) -> tuple[slice, ...]:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lower[index], self.upper[index]))


@njit(cache=True, nogil=True)
def _boxes(inverse: np.ndarray, shape: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
    """Coordinate min and max+1 per region index over a raster of `shape`."""
    ndim = shape.shape[0]
    coords = np.zeros(ndim, dtype=np.int64)
    for p in range(inverse.shape[0]):
        r = inverse[p]
        for d in range(ndim):
            lower[r, d] = min(lower[r, d], coords[d])
            upper[r, d] = max(upper[r, d], coords[d] + 1)
        d = ndim - 1
        coords[d] += 1
        while d > 0 and coords[d] == shape[d]:
            coords[d] = 0
            d -= 1
            coords[d] += 1


def block_superpixel_boxes(labels: np.ndarray, values: np.ndarray | None, start: Sequence[int]) -> SuperpixelBoxes:
    """Boxes and value ranges of one block (image coordinates); overlapping blocks are harmless."""
    ids, inverse = np.unique(labels, return_inverse=True)
    lower = np.full((len(ids), labels.ndim), np.iinfo(np.int64).max, dtype=np.int64)
    upper = np.full((len(ids), labels.ndim), np.iinfo(np.int64).min, dtype=np.int64)
    _boxes(inverse.ravel().astype(np.int64), np.array(labels.shape, dtype=np.int64), lower, upper)
    offset = np.asarray(start, dtype=np.int64)
    n_channels = 0 if values is None else values.shape[-1]
    flat = None if values is None else values.reshape(-1, n_channels)
    vmin = flat.min(axis=0) if n_channels else np.zeros(0, np.float32)
    vmax = flat.max(axis=0) if n_channels else np.zeros(0, np.float32)
    return SuperpixelBoxes(ids.astype(np.uint32), lower + offset, upper + offset, vmin, vmax)


def merge_superpixel_boxes(parts: Sequence[SuperpixelBoxes]) -> SuperpixelBoxes:
    """The boxes of the union of the blocks."""
    ids = np.concatenate([p.ids for p in parts])
    unique, inverse = np.unique(ids, return_inverse=True)
    ndim = parts[0].lower.shape[1]
    lower = np.full((len(unique), ndim), np.iinfo(np.int64).max, dtype=np.int64)
    upper = np.full((len(unique), ndim), np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(lower, inverse, np.concatenate([p.lower for p in parts]))
    np.maximum.at(upper, inverse, np.concatenate([p.upper for p in parts]))
    vmin = np.min([p.value_min for p in parts], axis=0)
    vmax = np.max([p.value_max for p in parts], axis=0)
    return SuperpixelBoxes(unique, lower, upper, vmin, vmax)
