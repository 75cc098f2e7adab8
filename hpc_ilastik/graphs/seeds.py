"""vigra's local maxima (`localMaxima`, `localMaxima3D`) and the scan layout shared with the watershed.

Facts from vigra (ukoethe/vigra): `vigranumpy/src/core/segmentation.cxx` (`pythonLocalMaxima2D/3D`:
defaults marker 1.0, neighbourhood 8 in 2-D and 6 in 3-D, allowAtBorder and allowPlateaus False; the output
is a fresh zero array in which only maxima get the marker), `include/vigra/multi_localminmax.hxx`
(`localMinMax` on a `GridGraph`: `localMinMaxGraph` and `extendedLocalMinMaxGraph`) and
`include/vigra/numerictraits.hxx` (no threshold means `NumericTraits<float>::min()` = −FLT_MAX).

* Without plateaus a pixel is a maximum when v > −FLT_MAX and v > every neighbour inside the image.
* With plateaus the image is cut into connected regions of equal value (`labelGraph`, same neighbourhood);
  a region is a maximum unless one of its pixels fails v > −FLT_MAX or has a strictly greater neighbour.
* With allowAtBorder (the only mode used here) border pixels just have fewer neighbours.

Scan layout: vigranumpy hands a plain numpy array (no axistags, as elf passes them) to vigra with the
identity axis permutation, so vigra's first, fastest-scanned axis is numpy's axis 0 (for a `zyx` array, z).
The kernels here and in `watershed.py` work on `scan` arrays: the numpy array transposed and made
C-contiguous (3-D, a 2-D image gets a leading axis of 1), so that C order is vigra's scan order. vigra's
`GridGraph` visits neighbours by ascending linear offset (`MakeDirectArrayNeighborhood` /
`MakeIndirectArrayNeighborhood`, `include/vigra/multi_shape.hxx`), skipping those outside the image.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

FLOAT_LOWEST = np.float32(-np.finfo(np.float32).max)  # vigra's NumericTraits<float>::min()

_DIRECT = {2: 4, 3: 6}
_INDIRECT = {2: 8, 3: 26}
_DEFAULT_NEIGHBORHOOD = {2: 8, 3: 6}  # vigranumpy's localMaxima / localMaxima3D defaults


def to_scan(a: np.ndarray) -> np.ndarray:
    """The 3-D C-contiguous scan-layout copy of a 2-D or 3-D numpy array (vigra's scan order = C order)."""
    t = np.ascontiguousarray(a.T)
    return t.reshape((1,) * (3 - a.ndim) + t.shape)


def from_scan(s: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The numpy-layout (C-contiguous) array of shape `shape` for a scan-layout array."""
    return np.ascontiguousarray(s.reshape(tuple(reversed(shape))).T)


def neighbour_offsets(indirect: bool) -> np.ndarray:
    """(k, 3) scan-layout neighbour steps in vigra's GridGraph order (ascending linear offset)."""
    if indirect:
        steps = [s for s in itertools.product((-1, 0, 1), repeat=3) if s != (0, 0, 0)]
    else:
        steps = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
    return np.array(steps, dtype=np.int64)


def is_indirect(neighborhood: int | None, ndim: int) -> bool:
    """Whether a vigra neighbourhood size (4/8 in 2-D, 6/26 in 3-D; None = localMaxima's default) is indirect."""
    if ndim not in (2, 3):
        raise ValueError(f"only 2-D and 3-D images are supported, not {ndim}-D")
    neighborhood = _DEFAULT_NEIGHBORHOOD[ndim] if neighborhood is None else neighborhood
    if neighborhood not in (_DIRECT[ndim], _INDIRECT[ndim]):
        raise ValueError(f"a {ndim}-D neighbourhood must be {_DIRECT[ndim]} or {_INDIRECT[ndim]}, not {neighborhood}")
    return neighborhood == _INDIRECT[ndim]


@njit(cache=True, nogil=True)
def _inside(z: int, y: int, x: int, nz: int, ny: int, nx: int) -> bool:
    return 0 <= z < nz and 0 <= y < ny and 0 <= x < nx


@njit(cache=True, nogil=True)
def _maxima_kernel(values: np.ndarray, steps: np.ndarray, plateaus: bool, threshold: np.float32,
                  out: np.ndarray) -> None:
    """out[i] = 1 where pixel i of the scan-layout `values` is (part of) a local maximum, else 0."""
    nz, ny, nx = values.shape
    flat = values.ravel()
    mark = out.ravel()
    n_steps = steps.shape[0]
    pending = np.empty(0, np.int64)
    n_pending = 0
    if plateaus:
        pending = np.empty(flat.size, np.int64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                i = (z * ny + y) * nx + x
                v = flat[i]
                keep = v > threshold
                if keep:
                    for k in range(n_steps):
                        zz, yy, xx = z + steps[k, 0], y + steps[k, 1], x + steps[k, 2]
                        if not _inside(zz, yy, xx, nz, ny, nx):
                            continue
                        w = flat[(zz * ny + yy) * nx + xx]
                        if (plateaus and w > v) or (not plateaus and not v > w):
                            keep = False
                            break
                mark[i] = 1 if keep else 0
                if plateaus and not keep:
                    pending[n_pending] = i
                    n_pending += 1
    # a plateau containing one disqualified pixel is no maximum: spread through equal-valued neighbours
    while n_pending > 0:
        n_pending -= 1
        i = pending[n_pending]
        z, rest = divmod(i, ny * nx)
        y, x = divmod(rest, nx)
        v = flat[i]
        for k in range(n_steps):
            zz, yy, xx = z + steps[k, 0], y + steps[k, 1], x + steps[k, 2]
            if not _inside(zz, yy, xx, nz, ny, nx):
                continue
            j = (zz * ny + yy) * nx + xx
            if mark[j] == 1 and flat[j] == v:
                mark[j] = 0
                pending[n_pending] = j
                n_pending += 1


def maxima_mask_scan(scan: np.ndarray, indirect: bool, plateaus: bool = True) -> np.ndarray:
    """uint8 scan-layout mask of vigra's local maxima (allowAtBorder=True) of a float32 scan-layout array."""
    out = np.empty(scan.shape, np.uint8)
    _maxima_kernel(np.ascontiguousarray(scan, np.float32), neighbour_offsets(indirect), plateaus, FLOAT_LOWEST, out)
    return out


def local_maxima(image: np.ndarray, marker: float = 1.0, neighborhood: int | None = None,
                 allow_plateaus: bool = True) -> np.ndarray:
    """vigra.analysis.localMaxima (2-D) / localMaxima3D (3-D) with allowAtBorder=True: a float32 array, `marker`
    at the maxima (plateaus of equal value when allow_plateaus), 0 elsewhere; neighbourhood 4/8 or 6/26,
    default 8 (2-D) and 6 (3-D)."""
    image = np.asarray(image, dtype=np.float32)
    indirect = is_indirect(neighborhood, image.ndim)
    mask = from_scan(maxima_mask_scan(to_scan(image), indirect, allow_plateaus), image.shape)
    out = np.zeros(image.shape, np.float32)
    out[mask.astype(bool)] = np.float32(marker)
    return out
