"""The objects of an image and their features, at any size: found block by block and merged (small tables
go to rank 0), then measured one object at a time on a crop around it, both phases shared over threads
or MPI ranks. The result does not depend on the block shape or the number of ranks.

Used by the workflows that classify or track objects.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.inputs import Source, derived_source
from hpc_ilastik.objects import features, graph_cut, standard
from hpc_ilastik.objects.extraction import PREDICTIONS, Segmenter, object_mask
from hpc_ilastik.objects.segmentation import ObjectTable
from hpc_ilastik.objects.threshold import GRAPH_CUT, SIMPLE, ThresholdSettings
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import from_root, map_items
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.blockwise import memory_limit, thread_count
from hpc_ilastik.workflows.options import RunOptions

_CROP_BYTES = 24  # per crop pixel besides the raw values: segmentation values, labels, mask, distances


@dataclass(frozen=True)
class MeasuredFrame:
    """A frame's objects (object id k at row k - 1), each block's map local label → object id (blocks of the
    frame in grid order), and the objects' features: plugin → feature → (n + 1, k) values, row 0 the
    background (zeros), row k object k."""

    objects: ObjectTable
    block_maps: list[np.ndarray]
    features: dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class ObjectImage:
    """One image's raw data and segmentation input (same t, z, y, x), how its objects are found, and the
    block shape (tzyxc) it is processed in."""

    raw: Source
    segmentation: Source
    segmenter: Segmenter
    block_shape: tuple[int, ...]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.raw.shape_tzyxc[1:4])

    @cached_property
    def grid(self) -> list[blk.Block]:
        """The blocks (one time frame, one channel each) in their grid order."""
        shape = tuple(self.segmentation.shape_tzyxc)
        return blk.plan_blocks(shape[:4] + (1,), tuple(self.block_shape[:4]) + (1,))

    @cached_property
    def positions(self) -> dict[int, tuple[int, int]]:
        """Block number → (frame, position among the frame's blocks)."""
        seen: dict[int, int] = {}
        position = {}
        for block in self.grid:
            t = block.index[0]
            position[block.number] = (t, seen.get(t, 0))
            seen[t] = seen.get(t, 0) + 1
        return position

    def labelled(self, block: blk.Block) -> tuple[np.ndarray, np.ndarray | None]:
        """(values to label, core mask or None) of a block."""
        shape = tuple(self.segmentation.shape_tzyxc)
        read, crop = blk.read_region(block, self.segmenter.halo(self.frame_shape), shape)
        return self.segmenter.values(self.segmentation.read(read)[0], crop[1:4])

    def object_ids(self, block: blk.Block, frame: MeasuredFrame) -> np.ndarray:
        """A block's object ids (z, y, x), 0 for background."""
        values, _ = self.labelled(block)
        return frame.block_maps[self.positions[block.number][1]][self.segmenter.local_labels(values)]

    def export_grid(self, region: tuple[slice, ...]) -> list[blk.Block]:
        """The grid's blocks cut to an export region (`--cutout_subregion`, see `blocks.clip_blocks`); the objects
        stay those of the whole image, as in ilastik."""
        return blk.clip_blocks(self.grid, region)

    def export_ids(self, block: blk.Block, frame: MeasuredFrame) -> np.ndarray:
        """A block of `export_grid`'s object ids (z, y, x): those of the grid block it was cut from, cut alike."""
        whole = self.grid[block.number]
        return blk.crop_to(self.object_ids(whole, frame), whole, block)

    def object_mask(self, t: int, objects: ObjectTable, k: int, extent: tuple[slice, ...]) -> np.ndarray:
        """The pixels of object k (row) of frame t in a crop `extent` (z, y, x) that holds the whole object."""
        halo = self.segmenter.halo(self.frame_shape)
        shape = tuple(self.segmentation.shape_tzyxc)
        grown = tuple(slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(extent, halo, shape[1:4]))
        region = self.segmentation.read((slice(t, t + 1),) + grown + (slice(0, shape[4]),))[0]
        values, _ = self.segmenter.values(region, tuple(slice(s.start - g.start, s.stop - g.start)
                                                        for s, g in zip(extent, grown)))
        seed = np.unravel_index(int(objects.first[k]), shape[1:4])
        return object_mask(values, [int(s) - e.start for s, e in zip(seed, extent)], self.segmenter.kind,
                           objects.value[k])

    def object_crop(self, t: int, objects: ObjectTable, k: int, extent: tuple[slice, ...]) -> features.ObjectCrop:
        """Object k (row) of frame t in the crop `extent`: raw values (float32) and the object's own pixels
        (found in its bounding box only: the margin around it holds none)."""
        raw_shape = tuple(self.raw.shape_tzyxc)
        pixels = self.raw.read((slice(t, t + 1),) + extent + (slice(0, raw_shape[4]),))[0].astype(np.float32)
        box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(objects.low[k], objects.high[k]))
        mask = np.zeros(pixels.shape[:3], dtype=bool)
        mask[tuple(slice(b.start - e.start, b.stop - e.start) for b, e in zip(box, extent))] = \
            self.object_mask(t, objects, k, box)
        return features.ObjectCrop(pixels, mask, tuple(s.start for s in extent), self.frame_shape)


def measure_objects(image: ObjectImage, wanted: features.FeatureSet, comm, threads: int, quiet: bool,
                    memory_limit: int = 4 << 30) -> list[MeasuredFrame] | None:
    """Every frame's objects and their `wanted` features (plus ilastik's default features); rank 0 gets them,
    the other ranks None. An object whose crop would need more than `memory_limit` bytes is a UserError."""
    needs_range = image.raw.shape_tzyxc[4] == 1 and any(
        name in ("Histogram", "Quantiles") for name in wanted.get(standard.PLUGIN, ()))
    frames = from_root(comm, _find_objects(image, needs_range, comm, threads, quiet))
    items = [(t, k) for t, (objects, _) in enumerate(frames) for k in range(len(objects))]
    ranges = [_raw_range(objects) for objects, _ in frames]

    def measure(item: tuple[int, int]) -> dict:
        t, k = item
        objects = frames[t][0]
        extent = features.crop_extent(objects.low[k], objects.high[k], wanted, image.frame_shape)
        needed = math.prod(s.stop - s.start for s in extent) * (4 * image.raw.shape_tzyxc[4] + _CROP_BYTES)
        if needed > memory_limit:
            box = ", ".join(f"{a} {lo}:{hi}" for a, lo, hi in zip("zyx", objects.low[k], objects.high[k]))
            raise UserError(f"object {k + 1} of frame {t} ({box}, {int(objects.size[k])} pixels) needs about "
                            f"{_size(needed)} for its features, more than the {_size(memory_limit)} allowed per "
                            "object (LAZYFLOW_TOTAL_RAM_MB); is the segmentation one huge component?")
        return features.object_features(image.object_crop(t, objects, k, extent), wanted, ranges[t])

    progress = Progress(len(items), unit="objects", quiet=quiet, label=f"{image.raw.nickname}: object features")
    measured = map_items(items, measure, comm, threads=threads, progress=progress, unit="objects",
                         describe=lambda item: f"frame {item[0]}, object {item[1] + 1}")
    if measured is None:
        return None
    result, start = [], 0
    for objects, maps in frames:
        result.append(MeasuredFrame(objects, maps, _stacked(measured[start:start + len(objects)])))
        start += len(objects)
    return result


def _find_objects(image: ObjectImage, with_range: bool, comm, threads: int,
                  quiet: bool) -> list[tuple[ObjectTable, list[np.ndarray]]] | None:
    """Each block's local objects (every rank), merged into each frame's objects (rank 0); `with_range`:
    each object's range of raw values (first channel)."""
    frame_shape = image.frame_shape

    def find(block: blk.Block):
        values, core = image.labelled(block)
        raw_block = image.raw.read(block.slices[:4] + (slice(0, 1),))[0, ..., 0] if with_range else None
        return image.segmenter.block(values, core, block.index[1:4], [s.start for s in block.slices[1:4]],
                                     frame_shape, raw_block)

    grid = image.grid
    progress = Progress(len(grid), unit="blocks", quiet=quiet, label=f"{image.segmentation.nickname}: objects")
    found = map_items(grid, find, comm, threads=threads, progress=progress, unit="blocks",
                      voxels=lambda block: block.voxels)
    if found is None:
        return None
    n_frames = image.segmentation.shape_tzyxc[0]
    by_frame: dict[int, list] = {t: [] for t in range(n_frames)}
    for block, components in zip(grid, found):
        by_frame[block.index[0]].append(components)
    return [image.segmenter.merge(by_frame[t]) for t in range(n_frames)]


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _raw_range(objects: ObjectTable) -> tuple[float, float] | None:
    """vigra's global histogram range: the smallest and largest raw value over all objects of the frame."""
    measured = np.isfinite(objects.raw_min)
    if not measured.any():
        return None
    return float(objects.raw_min[measured].min()), float(objects.raw_max[measured].max())


def _stacked(per_object: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per-object feature dictionaries as plugin → feature → (n + 1, k), row 0 zeros (the background)."""
    stacked: dict[str, dict[str, np.ndarray]] = {}
    for plugin in per_object[0] if per_object else ():
        stacked[plugin] = {}
        for name in per_object[0][plugin]:
            rows = np.stack([np.asarray(o[plugin][name], dtype=np.float64) for o in per_object])
            stacked[plugin][name] = np.concatenate([np.zeros((1, rows.shape[1])), rows])
    return stacked


def segmented_image(raw: Source, segmentation: Source, kind: str, threshold: ThresholdSettings | None,
                    run: RunOptions, block_shape: tuple[int, ...]) -> ObjectImage:
    """An image and its segmentation input (prediction maps, binary or label image: `kind`) checked against each
    other, ready to measure in blocks of `block_shape`; graph-cut thresholding becomes a per-frame 0/1 input."""
    shape = tuple(raw.shape_tzyxc)
    seg_shape = tuple(segmentation.shape_tzyxc)
    if seg_shape[:4] != shape[:4]:
        raise UserError(f"{segmentation.nickname!r} has shape {seg_shape[:4]} (tzyx) but the raw data "
                        f"{raw.nickname!r} has {shape[:4]}: they must be the same size")
    segmenter = Segmenter(kind, threshold)
    segmenter.check_input(segmentation.dtype, seg_shape[4], shape[1:4])
    if kind == PREDICTIONS and threshold.method == GRAPH_CUT:
        segmentation, segmenter = _graph_cut(segmentation, threshold, run)
    return ObjectImage(raw, segmentation, segmenter, block_shape)


def _graph_cut(maps: Source, settings: ThresholdSettings, run: RunOptions,
               keep_frames: int | None = None) -> tuple[Source, Segmenter]:
    """Graph-cut thresholding is one optimisation over a whole frame: the cut of each frame, computed when first
    read, becomes a 0/1 input that the rest labels as a simple threshold at 0.5 (no smoothing, the project's size
    filter). The cuts of the frames last read are kept, as many as the worker's memory holds beside one cut's
    own (`keep_frames`, at least 2): a frame's blocks come one after another, and a long time series does not
    keep every frame's cut; a frame read again after its cut was dropped is cut again (the same cut)."""
    shape = tuple(maps.shape_tzyxc)
    needed = math.prod(shape[1:4]) * (graph_cut.BYTES_PER_PIXEL + 4 * shape[4])
    budget = memory_limit(1 if run.distributed else thread_count(run))
    if needed > budget:
        raise UserError(f"graph-cut thresholding solves one whole frame at a time: {maps.nickname!r} "
                        f"({' × '.join(map(str, shape[1:4]))} per frame) needs about {needed / 2**30:.1f} GiB, over "
                        f"the {budget / 2**30:.1f} GiB each worker may use (LAZYFLOW_TOTAL_RAM_MB): give it more "
                        "memory or use simple or hysteresis thresholding")
    if keep_frames is None:
        keep_frames = (budget - needed) // math.prod(shape[1:4])  # a cut is one byte per pixel
    frames: OrderedDict[int, np.ndarray] = OrderedDict()
    lock = threading.Lock()

    def cut(t: int) -> np.ndarray:
        with lock:
            if t in frames:
                frames.move_to_end(t)
                return frames[t]
            frame = maps.read((slice(t, t + 1),) + tuple(slice(0, n) for n in shape[1:]))[0]
            frames[t] = graph_cut.graph_cut_mask(frame, settings)
            while len(frames) > max(keep_frames, 2):
                frames.popitem(last=False)
            return frames[t]

    def read(roi: tuple[slice, ...]) -> np.ndarray:
        return np.stack([cut(t)[roi[1:4]].astype(np.float32)[..., np.newaxis]
                         for t in range(roi[0].start, roi[0].stop)])

    simple = replace(settings, method=SIMPLE, low=0.5, sigmas_zyx=(0.0, 0.0, 0.0), channel=0, core_channel=0)
    return derived_source(maps, shape[:4] + (1,), np.float32, read), Segmenter(PREDICTIONS, simple)
