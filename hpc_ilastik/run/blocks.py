"""The block grid: `--distributed_block_roi` parsing, blocks over an image (or a cut-out), halo arithmetic.

Everything is in the internal axis order `tzyxc` and pure: no files, no MPI.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.errors import UserError

AXES = "tzyxc"
# ilastik's defaults for --distributed_block_roi; None = the whole axis.
DEFAULT_BLOCK_ROI: dict[str, int | None] = {"x": 256, "y": 256, "z": 256, "t": 1, "c": None}

BLOCK_ROI_SYNTAX = (
    "an integer n (blocks of n x n x n voxels) or a dict with keys from 'xyztc' and integer or None "
    "(= whole axis) values, e.g. '{\"x\": 256, \"y\": 256, \"z\": 64, \"t\": 1, \"c\": None}'; "
    "missing keys default to x=y=z=256, t=1, c=whole"
)


def parse_block_roi(text: str | None, shape_tzyxc: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """The block shape (tzyxc) for `--distributed_block_roi` text on an image of this shape, clamped to it."""
    roi = dict(DEFAULT_BLOCK_ROI)
    if text is not None and text.strip():
        roi.update(_literal_block_roi(text))
    block = tuple(shape if roi[axis] is None else min(roi[axis], shape)  # type: ignore[type-var]
                  for axis, shape in zip(AXES, shape_tzyxc))
    return block  # type: ignore[return-value]


def _literal_block_roi(text: str) -> dict[str, int | None]:
    """The axes a block-ROI literal overrides; UserError naming the accepted syntax otherwise."""
    def bad(why: str) -> UserError:
        return UserError(f"--distributed_block_roi {text!r}: {why}; expected {BLOCK_ROI_SYNTAX}")

    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise bad("not a Python literal") from None
    if _is_int(value):
        if value < 1:
            raise bad("the block size must be at least 1")
        return {"x": value, "y": value, "z": value}
    if not isinstance(value, dict):
        raise bad(f"a {type(value).__name__} is neither an integer nor a dict")
    for key, extent in value.items():
        if not isinstance(key, str) or len(key) != 1 or key not in AXES:
            raise bad(f"unknown axis {key!r}")
        if extent is not None and not (_is_int(extent) and extent >= 1):
            raise bad(f"axis {key!r} must be a positive integer or None, not {extent!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Block:
    """One block of the grid: `number` in the plan, `index` its grid position (= output chunk position),
    `slices` in image coordinates, `out_slices` in output coordinates (relative to the planned region)."""

    number: int
    index: tuple[int, int, int, int, int]
    slices: tuple[slice, slice, slice, slice, slice]
    out_slices: tuple[slice, slice, slice, slice, slice]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.slices)

    @property
    def voxels(self) -> int:
        """Number of voxels (t·z·y·x) in the block; channels are not counted (progress rates are per voxel)."""
        return math.prod(self.shape[:4])

    def __str__(self) -> str:
        extents = ", ".join(f"{axis} {s.start}:{s.stop}" for axis, s in zip(AXES, self.slices))
        return f"block {self.number} ({extents})"


def clip_blocks(grid: Sequence[Block], region: tuple[slice, ...]) -> list[Block]:
    """The blocks of `grid` cut to `region` (tzyx slices; the channel slice of each block is kept): each keeps
    its number and grid index, its `out_slices` become relative to the region; blocks outside it are left out."""
    clipped = []
    for block in grid:
        inside = [slice(max(s.start, r.start), min(s.stop, r.stop)) for s, r in zip(block.slices[:4], region[:4])]
        if all(s.start < s.stop for s in inside):
            out = [slice(s.start - r.start, s.stop - r.start) for s, r in zip(inside, region[:4])]
            clipped.append(Block(block.number, block.index, tuple(inside) + block.slices[4:],
                                 tuple(out) + block.out_slices[4:]))
    return clipped


def crop_to(values: np.ndarray, whole: Block, part: Block, first_axis: int = 1) -> np.ndarray:
    """Values computed for block `whole` (axes from tzyx axis `first_axis` on) cut to its part `part`."""
    return values[tuple(slice(p.start - w.start, p.stop - w.start)
                        for p, w in zip(part.slices[first_axis:4], whole.slices[first_axis:4]))]


def _bounds(region: tuple[slice, ...] | None, shape_tzyxc: tuple[int, ...]) -> tuple[slice, ...]:
    """A tzyxc region as concrete `start:stop` slices inside the image; UserError when it leaves it or is empty."""
    if region is None:
        return tuple(slice(0, n) for n in shape_tzyxc)
    if len(region) != len(shape_tzyxc):
        raise UserError(f"region {region} needs one slice per axis of {AXES}")
    out = []
    for axis, s, n in zip(AXES, region, shape_tzyxc):
        start = 0 if s.start is None else s.start
        stop = n if s.stop is None else s.stop
        if s.step not in (None, 1) or not 0 <= start < stop <= n:
            raise UserError(f"region {start}:{stop} on axis {axis} is not a non-empty range inside 0:{n}")
        out.append(slice(start, stop))
    return tuple(out)


def plan_blocks(shape_tzyxc: tuple[int, ...], block_shape: tuple[int, ...],
                region: tuple[slice, ...] | None = None) -> list[Block]:
    """Blocks of `block_shape` covering `region` (default: the whole image), on a grid anchored at the
    region's start; the last block along an axis is shorter when the extent is not a multiple. C order."""
    if any(b < 1 for b in block_shape) or len(block_shape) != len(AXES):
        raise ValueError(f"block shape {block_shape} must have {len(AXES)} positive extents")
    bounds = _bounds(region, shape_tzyxc)
    counts = [math.ceil((s.stop - s.start) / b) for s, b in zip(bounds, block_shape)]
    blocks = []
    for number, index in enumerate(itertools.product(*(range(n) for n in counts))):
        out = tuple(slice(i * b, min((i + 1) * b, s.stop - s.start)) for i, b, s in zip(index, block_shape, bounds))
        image = tuple(slice(o.start + s.start, o.stop + s.start) for o, s in zip(out, bounds))
        blocks.append(Block(number, index, image, out))  # type: ignore[arg-type]
    return blocks


def read_region(block: Block, halo_zyx: tuple[int, int, int],
              shape_tzyxc: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(read_slices, crop_slices): what to read from the input (block + halo clipped at the image border;
    all input channels), and where the block lies in an array computed on that read (its own channels)."""
    t, z, y, x, c = block.slices
    read = [t]
    crop = [slice(0, t.stop - t.start)]
    for s, h, n in zip((z, y, x), halo_zyx, shape_tzyxc[1:4]):
        start, stop = max(s.start - h, 0), min(s.stop + h, n)
        read.append(slice(start, stop))
        crop.append(slice(s.start - start, s.stop - start))
    read.append(slice(0, shape_tzyxc[4]))
    crop.append(c)
    return tuple(read), tuple(crop)
