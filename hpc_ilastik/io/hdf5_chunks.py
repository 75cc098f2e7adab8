"""HDF5 chunks that follow the block grid, written whole: a block that covers every chunk it touches goes to
the file chunk by chunk with HDF5's direct chunk writes (no hyperslab scatter, no partial chunks read back
from the file). The chunk extents are ilastik's (about 512 KB), each moved to the nearest divisor of the
block's extent along its axis, so that every block of the grid covers whole chunks.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence

import h5py
import numpy as np


def block_aligned_chunks(chunks: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    """Per axis the divisor of the block's extent nearest (by ratio) to the chunk's extent."""
    return tuple(min(_divisors(b), key=lambda d: abs(math.log(d / c))) for c, b in zip(chunks, block))


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in small]


def write_whole_chunks(dataset: h5py.Dataset, slices: Sequence[slice], data: np.ndarray) -> bool:
    """Write `data` into `slices` of `dataset` by direct chunk writes if the slices cover every chunk they touch
    (edge chunks up to the dataset's end), `data` has the dataset's dtype and the dataset's only filter, if any,
    is gzip (deflated here as HDF5 would); False, with nothing written, otherwise."""
    chunks, shape = dataset.chunks, dataset.shape
    if chunks is None or data.dtype != dataset.dtype or dataset.compression not in (None, "gzip") or dataset.shuffle \
            or dataset.fletcher32 or dataset.scaleoffset is not None:  # bytes go in as they are: no conversion
        return False
    level = dataset.compression_opts if dataset.compression else None
    starts = [s.start for s in slices]
    for s, c, n in zip(slices, chunks, shape):
        if s.start % c or (s.stop % c and s.stop != n):
            return False
    # axes whose chunks are 1 wide go first (one contiguous copy): each chunk is then one contiguous piece
    order = sorted(range(data.ndim), key=lambda axis: chunks[axis] != 1)
    moved = np.ascontiguousarray(data.transpose(order))
    buffer = np.zeros(chunks, dtype=dataset.dtype)
    for corner in itertools.product(*(range(s.start, s.stop, c) for s, c in zip(slices, chunks))):
        local = [slice(p - s0, min(p + c, s.stop) - s0) for p, s0, c, s in zip(corner, starts, chunks, slices)]
        piece = moved[tuple(local[axis] for axis in order)]
        if piece.size == buffer.size:
            chunk = np.ascontiguousarray(piece).reshape(chunks)
        else:  # at the dataset's end: the rest of the chunk is the fill value, 0
            buffer[...] = 0
            buffer[tuple(slice(0, s.stop - s.start) for s in local)] = piece.reshape([s.stop - s.start for s in local])
            chunk = buffer
        store_chunk(dataset, corner, chunk if level is None else zlib.compress(chunk, level))
    return True


def store_chunk(dataset: h5py.Dataset, corner: tuple[int, ...], stored: np.ndarray | bytes) -> None:
    """One chunk's bytes, as its filters left them, into the file (HDF5's direct chunk write)."""
    dataset.id.write_direct_chunk(corner, stored)
