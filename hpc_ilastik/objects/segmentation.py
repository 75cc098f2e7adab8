"""The objects of one time frame, found block by block with the same result as on the whole frame.

Each block is labelled on its own (`block_components`: connected components of equal non-zero values, or
`block_label_values`: the distinct values of a label image); small tables per local component (size,
first pixel in the frame's raster order, bounding box) and the labels on the block's faces go to one
place, where `merge_components` joins components across block faces (union-find), applies ilastik's
size filter and hysteresis selection, and numbers the surviving objects in the order of their first
pixel: vigra's numbering of the whole frame. Every block then maps its local labels to object ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from hpc_ilastik.objects.labeling import label_components


@dataclass
class LocalTable:
    """What is known of a block's local components (local id k at row k - 1)."""

    size: np.ndarray    # int64 (n,)
    first: np.ndarray   # int64 (n,): index of the component's first pixel in the frame's raster order
    low: np.ndarray     # int64 (n, 3): bounding box start (z, y, x) in the frame
    high: np.ndarray    # int64 (n, 3): bounding box stop, exclusive
    value: np.ndarray   # the segmentation value of each component (label-image variant: the label)
    raw_min: np.ndarray  # float64 (n,): the raw image's smallest and largest value (first channel) on the
    raw_max: np.ndarray  # component, NaN when not measured


_FIELDS = ("size", "first", "low", "high", "value", "raw_min", "raw_max")


@dataclass
class BlockComponents:
    """One block's connected components: their table, and its faces' labels and values for the merge."""

    grid_index: tuple[int, int, int]           # the block's (z, y, x) position in the grid
    table: LocalTable
    low_faces: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)   # per axis (labels, values)
    high_faces: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)
    core: BlockComponents | None = None        # hysteresis: the core mask's components
    overlaps: np.ndarray | None = None         # hysteresis: (final local id, core local id) pairs that touch


@dataclass(frozen=True)
class ObjectTable:
    """The objects of a frame, object id k at row k - 1 (fields as in LocalTable)."""

    size: np.ndarray
    first: np.ndarray
    low: np.ndarray
    high: np.ndarray
    value: np.ndarray   # segmentation value (label-image variant: the input's label of each object)
    raw_min: np.ndarray
    raw_max: np.ndarray

    def __len__(self) -> int:
        return len(self.size)


def _table(labels: np.ndarray, count: int, values: np.ndarray, origin: Sequence[int], frame_shape: Sequence[int],
           raw: np.ndarray | None) -> LocalTable:
    """The table of local labels 1..count of a block at `origin` in a frame of `frame_shape` (the raw values'
    range per component when `raw`, the block's first raw channel, is given)."""
    flat = labels.ravel()
    ids, first_local = np.unique(flat, return_index=True)
    first_local = first_local[ids != 0]
    coords = np.stack(np.unravel_index(first_local, labels.shape), axis=1) + np.asarray(origin)
    boxes = ndimage.find_objects(labels, max_label=count)
    low = np.array([[s.start for s in box] for box in boxes], dtype=np.int64).reshape(-1, 3) + np.asarray(origin)
    high = np.array([[s.stop for s in box] for box in boxes], dtype=np.int64).reshape(-1, 3) + np.asarray(origin)
    index = np.arange(1, count + 1)
    if raw is None or not count:
        raw_min = raw_max = np.full(count, np.nan)
    else:
        raw_min = np.asarray(ndimage.minimum(raw, labels, index), dtype=np.float64).reshape(count)
        raw_max = np.asarray(ndimage.maximum(raw, labels, index), dtype=np.float64).reshape(count)
    return LocalTable(size=np.bincount(flat, minlength=count + 1)[1:].astype(np.int64),
                      first=np.ravel_multi_index(tuple(coords.T), tuple(frame_shape)).astype(np.int64),
                      low=low, high=high, value=values.ravel()[first_local], raw_min=raw_min, raw_max=raw_max)


def _faces(labels: np.ndarray, values: np.ndarray) -> tuple[list, list]:
    low, high = [], []
    for axis in range(3):
        low.append((np.take(labels, 0, axis=axis), np.take(values, 0, axis=axis)))
        high.append((np.take(labels, -1, axis=axis), np.take(values, -1, axis=axis)))
    return low, high


def block_components(values: np.ndarray, grid_index: tuple[int, int, int], origin: Sequence[int],
                     frame_shape: Sequence[int], core_mask: np.ndarray | None = None,
                     raw: np.ndarray | None = None) -> BlockComponents:
    """The components of equal non-zero values of a (z, y, x) block (and, for hysteresis, of its core mask)."""
    labels, count = label_components(values)
    low, high = _faces(labels, values)
    block = BlockComponents(grid_index, _table(labels, count, values, origin, frame_shape, raw), low, high)
    if core_mask is not None:
        block.core = block_components(core_mask, grid_index, origin, frame_shape)
        core_labels, _ = label_components(core_mask)
        touching = (labels > 0) & (core_labels > 0)
        block.overlaps = np.unique(np.stack([labels[touching], core_labels[touching]], axis=1), axis=0)
    return block


def local_labels(values: np.ndarray) -> np.ndarray:
    """A block's local labels, as `block_components` numbered them."""
    return label_components(values)[0]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def _join(blocks: Sequence[BlockComponents]) -> tuple[np.ndarray, LocalTable, list[int]]:
    """(root of every local component, the concatenated tables, each block's offset into them)."""
    offsets = np.cumsum([0] + [len(b.table.size) for b in blocks]).tolist()
    union = _UnionFind(offsets[-1])
    position = {b.grid_index: i for i, b in enumerate(blocks)}
    for i, block in enumerate(blocks):
        for axis in range(3):
            neighbour_index = list(block.grid_index)
            neighbour_index[axis] += 1
            j = position.get(tuple(neighbour_index))
            if j is None:
                continue
            (mine, my_values), (theirs, their_values) = block.high_faces[axis], blocks[j].low_faces[axis]
            touching = (mine > 0) & (theirs > 0) & (my_values == their_values)
            for a, b in set(zip(mine[touching].tolist(), theirs[touching].tolist())):
                union.union(offsets[i] + a - 1, offsets[j] + b - 1)
    return union.roots(), _concatenated(blocks), offsets


def _concatenated(blocks: Sequence[BlockComponents]) -> LocalTable:
    return LocalTable(*(np.concatenate([getattr(b.table, name) for b in blocks]) for name in _FIELDS))


def _grouped(roots: np.ndarray, tables: LocalTable) -> tuple[np.ndarray, np.ndarray, LocalTable]:
    """(component of every local row, the component roots, the components' merged table)."""
    components, inverse = np.unique(roots, return_inverse=True)
    n = len(components)
    size = np.bincount(inverse, weights=tables.size, minlength=n).astype(np.int64)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, tables.first)
    low = np.full((n, 3), np.iinfo(np.int64).max)
    high = np.zeros((n, 3), dtype=np.int64)
    np.minimum.at(low, inverse, tables.low.reshape(-1, 3))
    np.maximum.at(high, inverse, tables.high.reshape(-1, 3))
    value = np.zeros(n, dtype=tables.value.dtype)
    value[inverse] = tables.value
    raw_min, raw_max = np.full(n, np.inf), np.full(n, -np.inf)
    np.fmin.at(raw_min, inverse, tables.raw_min)
    np.fmax.at(raw_max, inverse, tables.raw_max)
    unmeasured = ~np.isfinite(raw_min)
    raw_min[unmeasured], raw_max[unmeasured] = np.nan, np.nan
    return inverse, components, LocalTable(size, first, low, high, value, raw_min, raw_max)


def merge_components(blocks: Sequence[BlockComponents], min_size: int = 0, max_size: int | None = None,
                     ) -> tuple[ObjectTable, list[np.ndarray]]:
    """The frame's objects from its blocks' components, and per block the map local id → object id (0:
    filtered out). Components are kept iff min_size <= size <= max_size and, when the blocks carry core
    components (hysteresis), they touch a core component that passes the same size filter."""
    roots, tables, offsets = _join(blocks)
    inverse, _, merged = _grouped(roots, tables)
    keep = merged.size >= min_size
    if max_size is not None:
        keep &= merged.size <= max_size
    if blocks and blocks[0].core is not None:
        keep &= _touches_kept_core(blocks, inverse, offsets, len(merged.size), min_size, max_size)
    return _number(merged, keep, inverse, offsets)


def _touches_kept_core(blocks: Sequence[BlockComponents], inverse: np.ndarray, offsets: list[int], n: int,
                       min_size: int, max_size: int | None) -> np.ndarray:
    """Hysteresis: which final components touch a core component that survives the size filter."""
    core_roots, core_tables, core_offsets = _join([b.core for b in blocks])
    core_inverse, _, core = _grouped(core_roots, core_tables)
    core_keep = core.size >= min_size
    if max_size is not None:
        core_keep &= core.size <= max_size
    touches = np.zeros(n, dtype=bool)
    for i, block in enumerate(blocks):
        if len(block.overlaps):
            final = inverse[offsets[i] + block.overlaps[:, 0] - 1]
            cores = core_inverse[core_offsets[i] + block.overlaps[:, 1] - 1]
            touches[final[core_keep[cores]]] = True
    return touches


def _number(merged: LocalTable, keep: np.ndarray, inverse: np.ndarray,
            offsets: list[int]) -> tuple[ObjectTable, list[np.ndarray]]:
    """Object ids for the kept components in the order of their first pixel; per-block maps."""
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(merged.first[kept], kind="stable")]
    object_id = np.zeros(len(merged.size), dtype=np.uint32)
    object_id[kept] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    table = ObjectTable(*(getattr(merged, name)[kept] for name in _FIELDS))
    maps = [np.concatenate([[0], object_id[inverse[start:stop]]]).astype(np.uint32)
            for start, stop in zip(offsets[:-1], offsets[1:])]
    return table, maps


def label_value_ids(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(local ids, count) of a label image's block: its distinct non-zero values numbered 1.. in order of value."""
    values, local = np.unique(labels, return_inverse=True)
    local = local.reshape(labels.shape).astype(np.uint32)
    if len(values) and values[0] == 0:
        return local, len(values) - 1
    return local + 1, len(values)


def block_label_values(labels: np.ndarray, grid_index: tuple[int, int, int], origin: Sequence[int],
                       frame_shape: Sequence[int], raw: np.ndarray | None = None) -> BlockComponents:
    """A label image's block: every distinct non-zero value is (part of) one object, connected or not."""
    local, count = label_value_ids(labels)
    table = _table(local, count, labels, origin, frame_shape, raw)
    return BlockComponents(grid_index, table, [None] * 3, [None] * 3)


def merge_label_values(blocks: Sequence[BlockComponents]) -> tuple[ObjectTable, list[np.ndarray]]:
    """A label image's objects, relabelled consecutively in order of first appearance (vigra's
    relabelConsecutive), and per block the map local id → object id."""
    tables = _concatenated(blocks)
    offsets = np.cumsum([0] + [len(b.table.size) for b in blocks]).tolist()
    _, roots = np.unique(tables.value, return_inverse=True)
    inverse, _, merged = _grouped(roots, tables)
    return _number(merged, np.ones(len(merged.size), dtype=bool), inverse, offsets)
