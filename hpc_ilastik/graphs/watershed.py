"""ilastik's "DT Watershed" superpixels: vigra's seeded watershed, elf's distance-transform watershed and
ilastik's blockwise mode (ilastik-workflows-spec.md §C.1).

Sources: ilastik `ilastik/applets/wsdt/opWsdt.py` (`OpSumChannels`, `OpWsdt.execute`, `parallel_watershed`),
`ilastik/workflows/edgeTrainingWithMulticut/edgeTrainingWithMulticutWorkflow.py` (float32 input, axis orders
`zyxc`/`yxc`: a volume with z == 1 is a 2-D image), `ilastik/applets/dataSelection/opDataSelection.py`
(`_get_output_axis_order`); elf `elf/segmentation/watershed.py` at f4522a8 (tags ≤ 0.8.1:
`distance_transform_watershed`, `watershed`, `apply_size_filter`); vigra `include/vigra/multi_watersheds.hxx`
(`seededWatersheds`, `watershedsGraph`, `generateWatershedSeeds`), `include/vigra/priority_queue.hxx`
(`PriorityQueue` = `std::priority_queue` ordered by priority only), `include/vigra/multi_distance.hxx`
(`separableMultiDistance`), `vigranumpy/src/core/segmentation.cxx` (`pythonWatershedsNew`: region growing,
direct neighbourhood, complete grow); nifty `include/nifty/tools/blocking.hxx` (block grid in C order, halo
clipped to the image); fastfilters `src/library/fir_kernel.c` (default radius ceil(3σ)).

The distance transform is vigra's (`separableMultiDistSquared`/`distParabola`: float32 lines, intersections
in double, initial distance Σ(pitch·extent)²), so it matches vigra bit for bit also for real pixel pitches.

Region growing (`seededWatersheds`): every seed pixel with an unlabelled neighbour is pushed with its own
height, in scan order; the smallest priority is popped; its unlabelled neighbours (GridGraph order) get its
label at once and are pushed with max(height, popped priority). Ties are broken by libstdc++'s binary heap
(`__push_heap`, `__adjust_heap`), reproduced here, so the result equals vigra's pixel for pixel. Without any
seed, vigra seeds at the strict local minima (direct neighbourhood, scan-order ids).

elf hands vigra plain numpy arrays, which vigra scans with numpy's axis 0 fastest (see `seeds.py`): seed and
block-relabelling ids follow first occurrence in that order (Fortran order of a `zyx` array), not C order.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

from hpc_ilastik.graphs.seeds import from_scan, maxima_mask_scan, neighbour_offsets, to_scan
from hpc_ilastik.objects.labeling import label_components
from hpc_ilastik.pixel.filters import gaussian_smoothing

logger = logging.getLogger(__name__)

BLOCK_EDGE = {2: 512, 3: 128}  # parallel_watershed's default block shape per spatial dimension
BLOCK_HALO = 10


# ------------------------------------------------------------------------------------------------------------
# vigra's seeded region growing

# A heap element is one uint64: the node index in the low and the float32 bits of its priority in the high
# half, so that moving it is one copy; `prios` is the float32 view of the same buffer.
_PRIO = 1 if sys.byteorder == "little" else 0  # index of an element's priority within its two float32 halves
_LOW = np.uint64(0xFFFFFFFF)
_HIGH = np.uint64(32)


@njit(cache=True, nogil=True)
def _heap_push(keys: np.ndarray, prios: np.ndarray, hole: int, key: np.uint64, prio: np.float32) -> None:
    """libstdc++ __push_heap for a min-heap by priority: the element at `hole` rises past strictly greater
    parents."""
    while hole > 0:
        parent = (hole - 1) // 2
        if not prios[2 * parent + _PRIO] > prio:
            break
        keys[hole] = keys[parent]
        hole = parent
    keys[hole] = key


@njit(cache=True, nogil=True)
def _heap_pop(keys: np.ndarray, prios: np.ndarray, size: int) -> None:
    """libstdc++ pop_heap (`__adjust_heap`, then `__push_heap`) on a heap of `size` elements; the caller
    reads the top first and then has size - 1 elements."""
    length = size - 1
    if length < 1:
        return
    key, prio = keys[length], prios[2 * length + _PRIO]
    hole = 0
    child = 0
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if prios[2 * child + _PRIO] > prios[2 * child - 2 + _PRIO]:
            child -= 1
        keys[hole] = keys[child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        keys[hole] = keys[child - 1]
        hole = child - 1
    _heap_push(keys, prios, hole, key, prio)


@njit(cache=True, nogil=True)
def _region_growing(heights: np.ndarray, labels: np.ndarray, steps: np.ndarray) -> None:
    """vigra's seededWatersheds (complete grow) on scan-layout arrays; `labels` holds the seeds, grown in place."""
    nz, ny, nx = heights.shape
    h = heights.ravel()
    bits = h.view(np.uint32)
    lab = labels.ravel()
    n_steps = steps.shape[0]
    keys = np.empty(h.size + 1, np.uint64)  # every pixel is pushed at most once; untouched pages cost nothing
    prios = keys.view(np.float32)
    size = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                i = (z * ny + y) * nx + x
                if lab[i] == 0:
                    continue
                for k in range(n_steps):
                    zz, yy, xx = z + steps[k, 0], y + steps[k, 1], x + steps[k, 2]
                    if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx and lab[(zz * ny + yy) * nx + xx] == 0:
                        _heap_push(keys, prios, size, (np.uint64(bits[i]) << _HIGH) | np.uint64(i), h[i])
                        size += 1
                        break
    while size > 0:
        top = keys[0]
        node, cost = np.int64(top & _LOW), prios[_PRIO]
        _heap_pop(keys, prios, size)
        size -= 1
        label = lab[node]
        z, rest = divmod(node, ny * nx)
        y, x = divmod(rest, nx)
        for k in range(n_steps):
            zz, yy, xx = z + steps[k, 0], y + steps[k, 1], x + steps[k, 2]
            if not (0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx):
                continue
            j = (zz * ny + yy) * nx + xx
            if lab[j] != 0:
                continue
            lab[j] = label
            prio, prio_bits = h[j], np.uint64(bits[j])
            if prio < cost:  # a neighbour below the flood level joins at the level
                prio, prio_bits = cost, top >> _HIGH
            _heap_push(keys, prios, size, (prio_bits << _HIGH) | np.uint64(j), prio)
            size += 1


def _watershed_scan(heights: np.ndarray, labels: np.ndarray) -> int:
    """vigra watershedsNew(heights, seeds=labels, out=labels) on scan-layout arrays: grows `labels` in place and
    returns vigra's maxRegionLabel (the largest seed id)."""
    if heights.size >= 1 << 32:
        raise ValueError(f"the watershed takes at most 2**32 - 1 pixels at once, not {heights.size}; run it blockwise")
    if not labels.any():  # watershedsGraph: no seeds given -> SeedOptions().minima() on the same graph
        minima = maxima_mask_scan(-heights, indirect=False, plateaus=False)
        labels[...] = label_components(minima)[0]
    _region_growing(heights, labels, neighbour_offsets(indirect=False))
    return int(labels.max())


def seeded_watershed(heights: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, int]:
    """vigra.analysis.watershedsNew(heights, seeds=seeds) on plain 2-D/3-D arrays: (labels uint32, max seed id)."""
    heights = np.asarray(heights, dtype=np.float32)
    if seeds.shape != heights.shape:
        raise ValueError(f"seeds {seeds.shape} and heights {heights.shape} differ in shape")
    labels = to_scan(np.asarray(seeds, dtype=np.uint32))
    max_id = _watershed_scan(to_scan(heights), labels)
    return from_scan(labels, heights.shape), max_id


# ------------------------------------------------------------------------------------------------------------
# elf's distance_transform_watershed

def fastfilters_gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """fastfilters.gaussianSmoothing(img, sigma) with its default window (radius ceil(3σ)), float32, along every
    axis longer than 1 (fastfilters refuses singleton axes)."""
    window = math.ceil(3.0 * sigma) / sigma  # so that kernel_radius(σ, window) = floor(window·σ + 0.5) = ceil(3σ)
    shaped = img.reshape((1,) * (3 - img.ndim) + img.shape)
    axes = tuple(a for a in range(3) if shaped.shape[a] > 1)
    return gaussian_smoothing(shaped, float(sigma), window, axes).reshape(img.shape)


@njit(cache=True, nogil=True)
def _parabola_pass(lines: np.ndarray, sigma: float) -> None:
    """vigra's distParabola along the last axis of a 3-D float32 array of squared distances, in place: the lower
    envelope of the parabolas sigma²·(x − c)² + f(c), with vigra's float/double arithmetic."""
    n = lines.shape[2]
    sigma2 = sigma * sigma
    sigma22 = 2.0 * sigma2
    f = np.empty(n, np.float32)
    apex = np.empty(n, np.float32)
    left = np.empty(n, np.float64)
    centre = np.empty(n, np.float64)
    right = np.empty(n, np.float64)
    for a in range(lines.shape[0]):
        for b in range(lines.shape[1]):
            f[:] = lines[a, b, :]
            top = 0
            apex[0], left[0], centre[0], right[0] = f[0], 0.0, 0.0, n
            for current in range(1, n):
                while True:
                    diff = current - centre[top]
                    rise = np.float32(f[current] - apex[top])  # float − float, then double
                    intersection = current + (rise - sigma2 * diff * diff) / (sigma22 * diff)
                    if intersection < left[top]:  # the parabola on top has no influence any more
                        top -= 1
                        if top >= 0:
                            continue
                        intersection = 0.0
                    elif intersection < right[top]:
                        right[top] = intersection
                    break
                top += 1
                apex[top], left[top], centre[top], right[top] = f[current], intersection, current, n
            k = 0
            for current in range(n):
                while current >= right[k]:
                    k += 1
                lines[a, b, current] = np.float32(sigma2 * (current - centre[k]) ** 2 + apex[k])


def distance_to_boundary(boundary: np.ndarray, pixel_pitch: Sequence[float] | None) -> np.ndarray:
    """vigra.filters.distanceTransform(boundary, background=True, pixel_pitch) of a plain array (float32):
    separableMultiDistance, i.e. every non-boundary pixel starts at Σ(pitch·extent)² (rounded up for integer
    pitches), boundary pixels at 0, one parabola pass per axis (numpy axis 0 first), then the square root."""
    pitch = [1.0] * boundary.ndim if pixel_pitch is None else [float(p) for p in pixel_pitch]
    if len(pitch) != boundary.ndim:
        raise ValueError(f"pixel pitch {pitch} does not fit a {boundary.ndim}-D image")
    reach = sum((p * n) ** 2 for p, n in zip(pitch, boundary.shape))
    integral = all(int(p) == p for p in pitch)
    squared = np.where(boundary, np.float32(0), np.float32(math.ceil(reach) if integral else reach))
    for axis, p in enumerate(pitch):
        if boundary.shape[axis] > 1:
            lines = np.ascontiguousarray(np.moveaxis(squared, axis, -1))
            _parabola_pass(lines.reshape((1,) * (3 - lines.ndim) + lines.shape), p)
            np.moveaxis(squared, axis, -1)[...] = lines
    return np.sqrt(squared)


def distance_transform_watershed(
    pmap: np.ndarray, threshold: float, sigma_seeds: float, sigma_weights: float, min_size: int, alpha: float,
    pixel_pitch: Sequence[float] | None = None,
) -> tuple[np.ndarray, int]:
    """elf's distance_transform_watershed (≤ 0.8.1, vigra-based) on a 2-D/3-D boundary map: (labels uint32, max id).

    Seeds are the plateau maxima of the (smoothed) distance to `pmap > threshold`, the heights
    alpha·smooth(pmap) + (1 − alpha)·(1 − (dt − min)/max), segments smaller than `min_size` re-grown."""
    pmap = np.asarray(pmap, dtype=np.float32)
    if pmap.ndim not in (2, 3):
        raise ValueError(f"the watershed runs on 2-D or 3-D images, not {pmap.ndim}-D")
    dt = distance_to_boundary(pmap > np.float32(threshold), pixel_pitch)
    if sigma_seeds:
        dt = fastfilters_gaussian(dt, sigma_seeds)
    maxima = maxima_mask_scan(to_scan(dt), indirect=pmap.ndim == 2)  # localMaxima: 8 (2-D) / 6 (3-D)
    labels = label_components(maxima)[0]                             # labelMultiArrayWithBackground
    with np.errstate(divide="ignore", invalid="ignore"):
        dt = np.float32(1.0) - (dt - dt.min()) / dt.max()
    weights = fastfilters_gaussian(pmap, sigma_weights) if sigma_weights else pmap
    heights = to_scan(np.float32(alpha) * weights + np.float32(1.0 - alpha) * dt)
    max_id = _watershed_scan(heights, labels)
    if min_size > 0:  # apply_size_filter: small segments become 0 and are re-grown from the others
        sizes = np.bincount(labels.ravel())
        labels[(sizes < min_size)[labels]] = 0
        max_id = _watershed_scan(heights, labels)
    return from_scan(labels, pmap.shape), max_id


# ------------------------------------------------------------------------------------------------------------
# ilastik's blockwise mode and the applet's whole step

@dataclass(frozen=True)
class WatershedBlock:
    """One block of parallel_watershed's grid: its inner box, the box with halo (clipped to the image) that is
    computed, and the inner box within that."""
    index: int
    inner: tuple[slice, ...]
    outer: tuple[slice, ...]
    inner_local: tuple[slice, ...]


def watershed_blocks(shape: Sequence[int], block_shape: Sequence[int] | None = None,
                     halo: Sequence[int] | None = None) -> list[WatershedBlock]:
    """parallel_watershed's blocks (default 512² / 128³, halo 10) over a 2-D/3-D image, in C order of the grid."""
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim not in BLOCK_EDGE:
        raise ValueError(f"the watershed runs on 2-D or 3-D images, not {ndim}-D")
    block_shape = (BLOCK_EDGE[ndim],) * ndim if block_shape is None else tuple(block_shape)
    halo = (BLOCK_HALO,) * ndim if halo is None else tuple(halo)
    starts = [range(0, n, b) for n, b in zip(shape, block_shape)]
    blocks = []
    for index, begin in enumerate(np.ndindex(*(len(s) for s in starts))):
        lo = [s[k] for s, k in zip(starts, begin)]
        hi = [min(a + b, n) for a, b, n in zip(lo, block_shape, shape)]
        outer_lo = [max(a - h, 0) for a, h in zip(lo, halo)]
        outer_hi = [min(a + h, n) for a, h, n in zip(hi, halo, shape)]
        blocks.append(WatershedBlock(
            index,
            tuple(slice(a, b) for a, b in zip(lo, hi)),
            tuple(slice(a, b) for a, b in zip(outer_lo, outer_hi)),
            tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, outer_lo)),
        ))
    return blocks


def wsdt_block(pmap_outer: np.ndarray, block: WatershedBlock, threshold: float, min_size: int, sigma: float,
               alpha: float, pixel_pitch: Sequence[float] | None = None) -> np.ndarray:
    """One block of parallel_watershed: the watershed of block + halo, cut to the inner box and relabelled by
    vigra's labelMultiArray (direct neighbourhood, scan order), ids 1..n with n = the block's maximum (uint32)."""
    ws, _ = distance_transform_watershed(pmap_outer, threshold, sigma, sigma, min_size, alpha, pixel_pitch)
    inner = ws[block.inner_local]
    # labelMultiArray has no background: +1 keeps a (never expected) 0 region a region of its own
    relabelled = label_components(to_scan(inner + np.uint32(1)))[0]
    return from_scan(relabelled, inner.shape)


def block_offsets(block_maxima: Sequence[int]) -> tuple[np.ndarray, int]:
    """(offset per block, largest id): each block's ids are raised by the sum of the maxima of the blocks
    before it in grid order."""
    total = np.cumsum(np.asarray(block_maxima, dtype=np.int64))
    return np.concatenate([[0], total[:-1]]).astype(np.int64), int(total[-1]) if total.size else 0


def stitch_blocks(shape: Sequence[int], blocks: Sequence[WatershedBlock],
                  inner_labels: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """The image of all blocks' inner labels, each offset by block_offsets: (labels uint32, largest id)."""
    offsets, max_id = block_offsets([int(lab.max()) if lab.size else 0 for lab in inner_labels])
    labels = np.zeros(tuple(shape), np.uint32)
    for block, lab, offset in zip(blocks, inner_labels, offsets):
        labels[block.inner] = lab + np.uint32(offset)
    return labels, max_id


def blockwise_watershed(pmap: np.ndarray, threshold: float, min_size: int, sigma: float, alpha: float,
                        pixel_pitch: Sequence[float] | None = None, block_shape: Sequence[int] | None = None,
                        halo: Sequence[int] | None = None, n_threads: int = 1) -> tuple[np.ndarray, int]:
    """ilastik's parallel_watershed on a 2-D/3-D boundary map: (labels uint32, largest id)."""
    pmap = np.asarray(pmap, dtype=np.float32)
    blocks = watershed_blocks(pmap.shape, block_shape, halo)

    def run(block: WatershedBlock) -> np.ndarray:
        return wsdt_block(pmap[block.outer], block, threshold, min_size, sigma, alpha, pixel_pitch)

    with ThreadPoolExecutor(max_workers=max(1, n_threads)) as pool:
        inner_labels = list(pool.map(run, blocks))
    logger.debug("blockwise watershed: %d blocks of %s", len(blocks), pmap.shape)
    return stitch_blocks(pmap.shape, blocks, inner_labels)


def boundary_map(probabilities_zyxc: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """OpSumChannels: the selected channels (sorted) of a zyxc array as float32, summed when more than one (zyx)."""
    if not len(channels):
        raise ValueError("the watershed needs at least one selected channel")
    probs = np.asarray(probabilities_zyxc, dtype=np.float32)
    selected = sorted(int(c) for c in channels)
    if selected[0] < 0 or selected[-1] >= probs.shape[-1]:
        raise ValueError(f"channels {selected} do not exist in an image of {probs.shape[-1]} channels")
    if len(selected) == 1:
        return probs[..., selected[0]]
    return probs[..., selected].sum(axis=-1)


def wsdt_superpixels(probabilities_zyxc: np.ndarray, channels: Sequence[int], threshold: float, min_size: int,
                     sigma: float, alpha: float, pixel_pitch: Sequence[float] | None, blockwise: bool,
                     n_threads: int = 1) -> np.ndarray:
    """OpWsdt.Superpixels of one time point: zyx uint32 superpixels of the (already [0, 1]-normalised)
    probabilities; z == 1 is a 2-D image (ilastik's `yxc` axis order)."""
    pmap = boundary_map(probabilities_zyxc, channels)
    pitch = list(pixel_pitch) if pixel_pitch else None  # PixelPitch [] means isotropic
    image = pmap[0] if pmap.shape[0] == 1 else pmap
    if blockwise:
        labels, _ = blockwise_watershed(image, threshold, min_size, sigma, alpha, pitch, n_threads=n_threads)
    else:
        labels, _ = distance_transform_watershed(image, threshold, sigma, sigma, min_size, alpha, pitch)
    return labels.reshape(pmap.shape)
