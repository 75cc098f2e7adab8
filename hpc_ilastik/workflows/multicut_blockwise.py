"""Multicut at scale (--distributed): the superpixels, the region adjacency graph and the edge features are
computed block by block across the MPI ranks, only the small tables (edge pixels of the block faces, superpixel
boxes, per-superpixel statistics) travel to rank 0, which solves the multicut; every rank then writes its blocks
of the segmentation. The result is the one-process result, bit for bit (`graphs.rag` merges edge pixels by their
global raster keys; superpixel statistics are taken on each superpixel's whole box).

The superpixels live meanwhile in a scratch N5 container beside the output, removed at the end: ilastik's
blockwise watershed (512² / 128³ blocks, halo 10) is computed block by block, each block's ids offset at
read time by the maxima of the blocks before it; the whole-image watershed (projects with `BlockwiseWatershed`
off, ilastik's default for older projects) is computed by rank 0 alone, which then holds the whole image."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.graphs.edge_features import (
    assemble_features,
    edge_value_channels,
    merge_superpixel_tables,
    plan_features,
    superpixel_channels,
    superpixel_features,
)
from hpc_ilastik.graphs.rag import (
    block_edge_pixels,
    block_superpixel_boxes,
    edge_window,
    merge_edge_pixels,
    merge_superpixel_boxes,
)
from hpc_ilastik.graphs.watershed import block_offsets, boundary_map, watershed_blocks, wsdt_block
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.io.n5 import open_n5_dataset
from hpc_ilastik.io.output import open_writer
from hpc_ilastik.project.multicut import MulticutProject
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import RankGroup, from_root, map_items, on_root
from hpc_ilastik.workflows.batch import Batch
from hpc_ilastik.workflows.blockwise import block_shape_for

log = logging.getLogger(__name__)

Region = tuple[slice, ...]  # of the image: (z, y, x), or (y, x) for a 2-D image
Channels = list[tuple[str, np.ndarray]]


def region_tzyxc(region: Region, flat: bool, channels: int) -> tuple[slice, ...]:
    """The tzyxc slices (one time point, `channels` channels) of a region of a 2-D (`flat`) or 3-D image."""
    zyx = ((slice(0, 1),) + tuple(region)) if flat else tuple(region)
    return (slice(0, 1),) + zyx + (slice(0, channels),)


class ImageBlocks:
    """The inputs of one image read region by region: the voxel channels ilastik stacks, and the superpixels."""

    def __init__(self, raw: Source, probabilities: Source, channels: Sequence[int],
                 superpixels: Callable[[Region], np.ndarray], voxel_channels: Callable[..., Channels]) -> None:
        self.raw, self.probabilities, self.watershed_channels = raw, probabilities, tuple(channels)
        self.superpixels, self._voxel_channels = superpixels, voxel_channels
        shape = tuple(raw.shape_tzyxc)
        self.flat = shape[1] == 1  # a 2-D image: ilastikrag sees (y, x)
        self.shape = shape[2:4] if self.flat else shape[1:4]

    def channels(self, region: Region) -> Channels:
        """The named voxel channels of a region, in the image's own dimensionality."""
        raw = self.raw.read(region_tzyxc(region, self.flat, self.raw.shape_tzyxc[4]))[0].astype(np.float32,
                                                                                              copy=False)
        probs = self.probabilities.read(region_tzyxc(region, self.flat, self.probabilities.shape_tzyxc[4]))[0]
        probs = probs.astype(np.float32, copy=False)
        named = self._voxel_channels(raw, probs, boundary_map(probs, self.watershed_channels))
        return [(name, array[0] if self.flat else array) for name, array in named]


def superpixel_reader(project: MulticutProject, raw: Source, probabilities: Source, given: Source | None,
                      scratch: str, comm, threads: int, whole_image: Callable[[np.ndarray], np.ndarray]
                      ) -> Callable[[Region], np.ndarray]:
    """How to read the superpixels of a region: the given image, or the project's watershed computed into
    the scratch container (blockwise across the ranks, or whole on rank 0)."""
    shape = tuple(raw.shape_tzyxc)
    flat = shape[1] == 1
    image_shape = shape[2:4] if flat else shape[1:4]
    if given is not None:
        return lambda region: given.read(region_tzyxc(region, flat, 1))[0, ..., 0].reshape(
            [s.stop - s.start for s in region]).astype(np.uint32)
    ws = project.watershed
    blocks = watershed_blocks(image_shape) if ws.blockwise else []
    # one chunk per watershed block (the first is whole, or the whole image along an axis it spans)
    chunks = tuple(s.stop - s.start for s in blocks[0].inner) if blocks else tuple(min(n, 128) for n in image_shape)
    container = os.path.join(scratch, "superpixels.n5")
    writer = open_writer("n5", container, internal_path="superpixels", shape=image_shape, dtype=np.uint32,
                         axes="zyx"[-len(image_shape):], chunks=chunks, ranks=RankGroup(comm) if comm else None)

    def pmap(region: Region) -> np.ndarray:
        probs = probabilities.read(region_tzyxc(region, flat, probabilities.shape_tzyxc[4]))[0]
        boundary = boundary_map(probs.astype(np.float32, copy=False), ws.channels)
        return boundary[0] if flat else boundary

    if ws.blockwise:
        def one(block) -> int:
            labels = wsdt_block(pmap(block.outer), block, ws.threshold, ws.min_size, ws.sigma, ws.alpha,
                                list(ws.pixel_pitch) or None)
            writer.write(block.inner, labels)
            return int(labels.max(initial=0))

        maxima = map_items(blocks, one, comm, threads=threads, unit="watershed blocks")
        offsets = from_root(comm, None if maxima is None else block_offsets(maxima)[0])
    else:
        def whole() -> None:
            labels = whole_image(pmap(tuple(slice(0, n) for n in image_shape)))
            writer.write(tuple(slice(0, n) for n in image_shape), labels)

        on_root(comm, whole)
        offsets = None
    writer.close()
    dataset = open_n5_dataset(container, "superpixels")
    if offsets is None:
        return lambda region: np.asarray(dataset.read(tuple(region)), dtype=np.uint32)
    grid = np.asarray(offsets, dtype=np.uint32).reshape([-(-n // c) for n, c in zip(image_shape, chunks)])

    def offset_read(region: Region) -> np.ndarray:
        local = np.asarray(dataset.read(tuple(region)), dtype=np.uint32)
        index = np.ix_(*(np.arange(s.start, s.stop) // c for s, c in zip(region, chunks)))
        return np.where(local > 0, local + grid[index], local)

    return offset_read


def blockwise_features(image: ImageBlocks, feature_names: dict[str, list[str]], grid: Sequence[Region], comm,
                       threads: int) -> tuple[np.ndarray, np.ndarray, list[str], int] | None:
    """(edges, features, column names, largest superpixel id) of the whole image from its blocks; rank 0 only
    (None elsewhere)."""
    ndim = len(image.shape)
    names = [name for name, _ in image.channels(tuple(slice(0, 1) for _ in range(ndim)))]
    plans = plan_features(names, feature_names, ndim)
    edge_channels, sp_channels = edge_value_channels(plans), superpixel_channels(plans)

    def stack(channels: Channels, wanted: list[str]) -> np.ndarray | None:
        arrays = dict(channels)
        return np.stack([arrays[name] for name in wanted], axis=-1) if wanted else None

    def one(region: Region):
        window = edge_window([s.start for s in region], [s.stop for s in region], image.shape)
        labels, channels = image.superpixels(window), image.channels(window)
        pixels = block_edge_pixels(labels, stack(channels, edge_channels), [s.start for s in region],
                                   [s.stop for s in region], image.shape)
        own = tuple(slice(0, s.stop - s.start) for s in region)
        values = stack(channels, sp_channels)
        boxes = block_superpixel_boxes(labels[own], None if values is None else values[own],
                                       [s.start for s in region]) if sp_channels else None
        return pixels, boxes, int(labels[own].max(initial=0))

    parts = map_items(list(grid), one, comm, threads=threads, unit="graph blocks")
    boxes = from_root(comm, None if parts is None or not sp_channels else
                      merge_superpixel_boxes([b for _, b, _ in parts]))
    tables = {}
    if sp_channels:
        ranges = [(float(lo), float(hi)) for lo, hi in zip(boxes.value_min, boxes.value_max)]
        sp_names = [next(p.sp for p in plans if p.channel == name) for name in sp_channels]

        def superpixel(k: int):
            box = boxes.box(k)
            values = stack(image.channels(box), sp_channels)
            return superpixel_features(image.superpixels(box), values, sp_names, ranges, start=boxes.lower[k],
                                       ids=[boxes.ids[k]])

        per_box = map_items(list(range(len(boxes.ids))), superpixel, comm, threads=threads, unit="superpixels")
        if per_box is not None:
            tables = {name: merge_superpixel_tables([t[c] for t in per_box]) for c, name in enumerate(sp_channels)}
    if parts is None:
        return None
    graph = merge_edge_pixels([p for p, _, _ in parts])
    matrix, columns = assemble_features(graph, plans, tables)
    return graph.edges, matrix, columns, max(m for _, _, m in parts)


def image_grid(image: ImageBlocks, batch: Batch, region: tuple[slice, ...]
               ) -> tuple[tuple[int, ...], list[blk.Block], list[blk.Block]]:
    """(block shape, blocks of the whole image for the graph, blocks of the exported `region`), tzyxc with one
    channel."""
    shape = tuple(image.raw.shape_tzyxc)[:4] + (1,)
    block_shape = block_shape_for(batch.options.run, shape)
    return (block_shape, blk.plan_blocks(shape, block_shape),
            blk.plan_blocks(shape, block_shape, tuple(region[:4]) + (slice(0, 1),)))


def region_of(image: ImageBlocks, block: blk.Block) -> Region:
    """A block of the grid in the image's own dimensionality."""
    return block.slices[2:4] if image.flat else block.slices[1:4]


def scratch_folder(output_path: str, comm) -> str:
    """A new folder beside the output for the run's intermediate images (made by rank 0)."""
    folder = f"{output_path}.hpc-ilastik-scratch"

    def make() -> str:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.makedirs(folder)
        except OSError as exc:
            raise UserError(f"cannot make the scratch folder {folder}: {exc.strerror}") from None
        return folder

    return on_root(comm, make)


def remove_scratch(folder: str, comm) -> None:
    if comm is not None:
        comm.barrier()
    if comm is None or comm.Get_rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)
