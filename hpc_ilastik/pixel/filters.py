"""Separable Gaussian filters and closed-form eigenvalues on float32 (z, y, x) arrays (numba).

Every array here is 3-D `zyx` float32; a filter runs along the axes it is given (a 2-D image is
`z == 1` filtered along (1, 2); "per-slice 2-D" is the same call on a thicker stack). The border is
a mirror without repeating the edge sample (in[-1] = in[1], scipy's mode "mirror"). Kernel taps are
computed in double and stored as float32; each 1-D pass is fastfilters' arithmetic: float32 throughout,
the centre tap times the sample, then one fused multiply-add per tap pair (x[+k] ± x[-k]), k = 1..r.
"""

import functools
import math
from collections.abc import Iterable, Sequence

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from hpc_ilastik.pixel.kernels import gaussian_kernel

_CHUNK = 2048  # floats of a row or plane processed together by a pass along y or z
_MAX_OUTPUTS = 27  # a bank's distinct outputs at most: a kernel of order 0, 1 or 2 per axis

Region = tuple[tuple[int, int], ...]  # (start, stop) per axis of a zyx array


@njit(cache=True, nogil=True, error_model="numpy")
def _mirror_map(n: int, start: int, count: int) -> np.ndarray:
    """Source index of each position start..start+count-1 of a line of length n, mirrored without edge repeat."""
    idx = np.empty(count, np.int64)
    period = 2 * (n - 1)
    for p in range(count):
        if n == 1:
            idx[p] = 0
            continue
        i = abs(start + p) % period
        idx[p] = period - i if i >= n else i
    return idx


@intrinsic
def _fma(typingctx, a, b, c):
    """a·b + c rounded once (llvm.fma.f32, fastfilters' _mm256_fmadd_ps), spelled out: with contraction allowed,
    LLVM may fuse another product of a sum of products than fastfilters does."""
    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fma, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _add_tap_pair(out, h, lo, hi, antisym):
    """out += h·(lo ± hi), one fused multiply-add per value: fastfilters' step for a pair of taps."""
    if antisym:
        for i in range(out.shape[0]):
            out[i] = _fma(h, lo[i] - hi[i], out[i])
    else:
        for i in range(out.shape[0]):
            out[i] = _fma(h, lo[i] + hi[i], out[i])


@njit(cache=True, nogil=True, error_model="numpy")
def _x_pass(plane, rows, canon, first, r, n, half, antisym, out):
    """The x pass of one source plane: out[p·n:(p + 1)·n][i] = sum_k half[k]·(x[r+i-k] ± x[r+i+k]) for the line
    x = plane[rows[p], first:first + n + 2r] of every position p with canon[p] == p (see _x_rows)."""
    # the radii of the features' kernels and of the default scales' presmoothing go in as constants, so that
    # LLVM unrolls the taps and keeps each output's sum in a register (2.5-3.5x faster than a tap at a time)
    if r == 1:
        _x_rows(plane, rows, canon, first, 1, n, half, antisym, True, out)
    elif r == 2:
        _x_rows(plane, rows, canon, first, 2, n, half, antisym, True, out)
    elif r == 3:
        _x_rows(plane, rows, canon, first, 3, n, half, antisym, True, out)
    elif r == 4:
        _x_rows(plane, rows, canon, first, 4, n, half, antisym, True, out)
    elif r == 12:
        _x_rows(plane, rows, canon, first, 12, n, half, antisym, True, out)
    elif r == 17:
        _x_rows(plane, rows, canon, first, 17, n, half, antisym, True, out)
    else:
        _x_rows(plane, rows, canon, first, r, n, half, antisym, False, out)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _x_rows(plane, rows, canon, first, r, n, half, antisym, by_output, out):
    """fastfilters' arithmetic along x, float32: out = h0·x, then one fused multiply-add per tap pair
    (x[-k] ± x[+k]), k = 1..r; `by_output` (r a constant): output by output, its sum in a register, else a tap at a
    time over the row. All rows of the plane in one call (a call per row cost more than its filtering)."""
    h0 = half[0]
    for p in range(rows.shape[0]):
        if canon[p] != p:
            continue
        line = plane[rows[p], first:first + n + 2 * r]
        o = out[p * n:(p + 1) * n]
        if by_output and antisym:
            for i in range(n):
                total = h0 * line[i + r]
                for k in range(1, r + 1):
                    total = _fma(half[k], line[i + r - k] - line[i + r + k], total)
                o[i] = total
        elif by_output:
            for i in range(n):
                total = h0 * line[i + r]
                for k in range(1, r + 1):
                    total = _fma(half[k], line[i + r - k] + line[i + r + k], total)
                o[i] = total
        else:
            for i in range(n):
                o[i] = h0 * line[i + r]
            for k in range(1, r + 1):
                # slices: indexed by the output's position alone, the loop needs no check of the sign
                _add_tap_pair(o, half[k], line[r - k:r - k + n], line[r + k:r + k + n], antisym)


@njit(cache=True, nogil=True, error_model="numpy")
def _line_pass(src, offsets, half, antisym, out):
    """out[t] = half[0]·src[offsets[0] + t] + sum_k half[k]·(src[offsets[-k] + t] ± src[offsets[+k] + t]) for
    the k = 1..r of offsets (2r+1 starts into the flat src), a chunk at a time: fastfilters' arithmetic along
    an axis that is not contiguous, each line of the pass being a whole row (y) or plane (z)."""
    n = out.shape[0]
    r = half.shape[0] - 1
    h0 = half[0]
    for c0 in range(0, n, _CHUNK):
        c = min(_CHUNK, n - c0)
        o = out[c0:c0 + c]
        centre = src[offsets[r] + c0:offsets[r] + c0 + c]
        for t in range(c):
            o[t] = h0 * centre[t]
        for k in range(1, r + 1):
            _add_tap_pair(o, half[k], src[offsets[r - k] + c0:offsets[r - k] + c0 + c],
                          src[offsets[r + k] + c0:offsets[r + k] + c0 + c], antisym)


@njit(cache=True, nogil=True, error_model="numpy")
def _unmirrored(n, start, count):
    """(inside0, inside1): the positions inside0..inside1-1 of start..start+count-1 that lie in a line of
    length n, so need no mirror."""
    inside0 = min(max(-start, 0), count)
    return inside0, max(min(n - start, count), inside0)


@njit(cache=True, nogil=True, error_model="numpy")
def _canonical_positions(idx, inside0, inside1, lo):
    """For each position of a mirrored line, the position computed for its source sample: itself, or the
    unmirrored position of the same sample, which is then copied instead of filtered again."""
    canon = np.empty(idx.shape[0], np.int64)
    for p in range(idx.shape[0]):
        q = idx[p] - lo
        canon[p] = q if inside0 <= q < inside1 else p
    return canon


@njit(cache=True, nogil=True, error_model="numpy")
def _separable_bank(src, tables, antisym, keys, lo, out):
    """Separable filters of a (Z, Y, X) float32 array, several outputs sharing their partial passes, streamed
    one source plane at a time so that every partial result stays in cache.

    tables[a] (n_a, r_a + 1): half taps of axis a's kernels (axes z, y, x), antisym[a] their kinds; keys
    (n_out, 3): the kernel of each axis per output. Output k at (z, y, x) is source position lo + (z, y, x)
    filtered x first, then y, then z, as fastfilters' passes, mirrored at src's edges; out: a tuple of
    _MAX_OUTPUTS arrays, the first n_out of them (oz, oy, ox) (separate arrays: one large array for all would
    fragment the heap over blocks; a tuple of fixed length: one compiled kernel, cached, where a typed list
    would compile its own helpers in every process, 0.4 s).
    """
    Z, Y, X = src.shape
    n_out = keys.shape[0]
    oz, oy, ox = out[0].shape
    rz, ry, rx = tables[0].shape[1] - 1, tables[1].shape[1] - 1, tables[2].shape[1] - 1
    plane = oy * ox
    idx_z = _mirror_map(Z, lo[0] - rz, oz + 2 * rz)
    idx_y = _mirror_map(Y, lo[1] - ry, oy + 2 * ry)
    idx_x = _mirror_map(X, lo[2] - rx, ox + 2 * rx)
    x_inside0, x_inside1 = _unmirrored(X, lo[2] - rx, ox + 2 * rx)
    rows_mirrored = x_inside0 > 0 or x_inside1 < ox + 2 * rx
    y_inside0, y_inside1 = _unmirrored(Y, lo[1] - ry, oy + 2 * ry)
    y_canon = _canonical_positions(idx_y, y_inside0, y_inside1, lo[1] - ry)

    # the distinct partial results: x-filtered rows per x kernel, y-filtered planes per (y, x) kernel pair
    x_of = np.full(tables[2].shape[0], -1, np.int64)
    y_of = np.full((tables[1].shape[0], tables[2].shape[0]), -1, np.int64)
    x_kernels = np.empty(n_out, np.int64)
    y_pairs = np.empty((n_out, 2), np.int64)
    n_x = n_y = 0
    for k in range(n_out):
        ky, kx = keys[k, 1], keys[k, 2]
        if x_of[kx] < 0:
            x_of[kx] = n_x
            x_kernels[n_x] = kx
            n_x += 1
        if y_of[ky, kx] < 0:
            y_of[ky, kx] = n_y
            y_pairs[n_y, 0] = ky
            y_pairs[n_y, 1] = x_of[kx]
            n_y += 1

    # y-filtered planes of the last 2·rz + 1 source planes, by source plane (mirrored positions reuse them)
    n_ring = min(2 * rz + 1, Z)
    ring = np.empty((n_y, n_ring, plane), np.float32)
    x_rows = np.empty((n_x, (oy + 2 * ry) * ox), np.float32)
    mirrored = np.empty((oy + 2 * ry if rows_mirrored else 0, ox + 2 * rx), np.float32)
    positions = np.arange(oy + 2 * ry)
    y_offsets = np.arange(2 * ry + 1) * ox
    z_offsets = np.empty(2 * rz + 1, np.int64)
    z_first, z_last = Z, -1
    for p in range(oz + 2 * rz):
        z_first = min(z_first, idx_z[p])
        z_last = max(z_last, idx_z[p])
    ready = np.empty(oz, np.int64)  # the last source plane output plane i needs
    for i in range(oz):
        ready[i] = idx_z[i]
        for p in range(i, i + 2 * rz + 1):
            ready[i] = max(ready[i], idx_z[p])

    i = 0
    for zs in range(z_first, z_last + 1):
        if rows_mirrored:  # the rows the plane's outputs need, mirrored at x's ends, then filtered from there
            for p in range(oy + 2 * ry):
                if y_canon[p] == p:
                    row = src[zs, idx_y[p]]
                    for t in range(x_inside0):
                        mirrored[p, t] = row[idx_x[t]]
                    mirrored[p, x_inside0:x_inside1] = row[lo[2] - rx + x_inside0:lo[2] - rx + x_inside1]
                    for t in range(x_inside1, ox + 2 * rx):
                        mirrored[p, t] = row[idx_x[t]]
            plane_x, rows_x, first_x = mirrored, positions, 0
        else:
            plane_x, rows_x, first_x = src[zs], idx_y, lo[2] - rx
        for j in range(n_x):
            kx = x_kernels[j]
            _x_pass(plane_x, rows_x, y_canon, first_x, rx, ox, tables[2][kx], antisym[2][kx], x_rows[j])
        for p in range(oy + 2 * ry):
            if y_canon[p] != p:
                x_rows[:, p * ox:(p + 1) * ox] = x_rows[:, y_canon[p] * ox:(y_canon[p] + 1) * ox]
        slot = zs % n_ring
        for j in range(n_y):
            ky = y_pairs[j, 0]
            _line_pass(x_rows[y_pairs[j, 1]], y_offsets, tables[1][ky], antisym[1][ky], ring[j, slot])
        while i < oz and ready[i] == zs:
            for t in range(2 * rz + 1):
                z_offsets[t] = (idx_z[i + t] % n_ring) * plane
            for k in range(n_out):
                kz = keys[k, 0]
                _line_pass(ring[y_of[keys[k, 1], keys[k, 2]]].reshape(n_ring * plane), z_offsets, tables[0][kz],
                           antisym[0][kz], out[k][i].reshape(plane))
            i += 1


def full_region(shape: Sequence[int]) -> Region:
    """The whole of an array of this shape as a Region."""
    return tuple((0, int(n)) for n in shape)


def grow_region(region: Region, by: Sequence[int], shape: Sequence[int]) -> Region:
    """region widened by by[a] along each axis a, clipped to an array of `shape`."""
    return tuple((max(lo - b, 0), min(hi + b, int(n))) for (lo, hi), b, n in zip(region, by, shape))


def relative_region(region: Region, within: Region) -> Region:
    """region in the coordinates of the array that covers `within`."""
    return tuple((lo - w0, hi - w0) for (lo, hi), (w0, _) in zip(region, within))


def region_slices(region: Region) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in region)


_IDENTITY = (np.ones((1, 1), np.float32), np.zeros(1, np.bool_))  # the "kernel" of an axis left alone
_NO_OUTPUT = np.empty((0, 0, 0), np.float32)  # fills the bank's tuple of outputs


@functools.lru_cache(maxsize=64)
def _kernel_table(sigma: float, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Half taps (offsets 0..r, float32) of the order 0, 1 and 2 kernels, and which are antisymmetric."""
    kernels = [gaussian_kernel(sigma, order, window) for order in (0, 1, 2)]
    r = (kernels[0].size - 1) // 2
    return np.array([k[r:] for k in kernels], np.float32), np.array([False, True, False])


def derivative_bank(
    img: np.ndarray, sigma: float, window: float, axes: Sequence[int], orders: Iterable[tuple[int, ...]],
    region: Region | None = None,
) -> dict[tuple[int, ...], np.ndarray]:
    """Gaussian derivatives of a zyx img for each orders tuple (derivative order per entry of axes).

    One streamed pass over img computes them all: partial results along the axes filtered first (the
    contiguous x first) are shared between tuples, e.g. the Hessian and the gradient reuse one x-smoothed
    and one x-differentiated row, and stay in cache. `region` ((start, stop) per zyx axis) limits the
    outputs to that box of img; the kernels read img around it, mirrored at img's own edges.
    """
    region = region or full_region(img.shape)
    wanted = list(dict.fromkeys(orders))
    if not wanted:
        return {}
    axes = tuple(axes)
    if any(len(t) != len(axes) or not set(t) <= {0, 1, 2} for t in wanted):
        raise ValueError(f"derivative orders must be 0, 1 or 2 per axis of {axes}, got {wanted}")
    table = _kernel_table(float(sigma), float(window))
    tables = [table if a in axes else _IDENTITY for a in range(3)]
    keys = np.array([[t[axes.index(a)] if a in axes else 0 for a in range(3)] for t in wanted], np.int64)
    shape = tuple(hi - lo for lo, hi in region)
    out = [np.empty(shape, np.float32) for _ in wanted]
    _separable_bank(np.ascontiguousarray(img, dtype=np.float32), tuple(t[0] for t in tables),
                    tuple(t[1] for t in tables), keys, np.array([lo for lo, _ in region], np.int64),
                    tuple(out) + (_NO_OUTPUT,) * (_MAX_OUTPUTS - len(out)))
    return {t: out[k] for k, t in enumerate(wanted)}


def _unit(n: int, i: int) -> tuple[int, ...]:
    return tuple(1 if a == i else 0 for a in range(n))


def gaussian_smoothing(img: np.ndarray, sigma: float, window: float, axes: Sequence[int],
                       region: Region | None = None) -> np.ndarray:
    """Gaussian smoothing along the given axes (on `region` of img, see derivative_bank)."""
    zero = (0,) * len(axes)
    return derivative_bank(img, sigma, window, axes, [zero], region)[zero]


def gradient_orders(n_axes: int) -> list[tuple[int, ...]]:
    """Derivative-order tuples of the gradient components, in axes order."""
    return [_unit(n_axes, i) for i in range(n_axes)]


def hessian_orders(n_axes: int) -> list[tuple[int, ...]]:
    """Derivative-order tuples of the upper-triangle Hessian entries (row-major: 00, 01, .., 11, ..)."""
    return [
        tuple(a + b for a, b in zip(_unit(n_axes, i), _unit(n_axes, j)))
        for i in range(n_axes)
        for j in range(i, n_axes)
    ]


def gradient(img: np.ndarray, sigma: float, window: float, axes: Sequence[int],
             region: Region | None = None) -> list[np.ndarray]:
    """Gaussian gradient components along the given axes (on `region` of img, see derivative_bank)."""
    orders = gradient_orders(len(axes))
    bank = derivative_bank(img, sigma, window, axes, orders, region)
    return [bank[o] for o in orders]


def hessian(img: np.ndarray, sigma: float, window: float, axes: Sequence[int]) -> list[np.ndarray]:
    """Upper-triangle Hessian-of-Gaussian entries (row-major) along the given axes."""
    orders = hessian_orders(len(axes))
    bank = derivative_bank(img, sigma, window, axes, orders)
    return [bank[o] for o in orders]


# fastfilters' eigenvalue solvers, the ones ilastik runs on any AVX2 machine (linalg_avx.c, linalg_avx2.c),
# operation by operation in float32: fastfilters builds them without FMA and without contraction (C99 mode),
# so every product and sum below is rounded on its own, as numba does without fastmath. The 3x3 solver's
# atan2 and sincos are avx_mathfun.h's float approximations (sleef's atan2 polynomial, cephes' sincos).
_F = np.float32
_ZERO, _HALF, _ONE, _TWO, _MINUS2 = _F(0.0), _F(0.5), _F(1.0), _F(2.0), _F(-2.0)
_INV3 = _F(1.0 / 3.0)
_ROOT3 = np.sqrt(_F(3.0))
_PI, _PI_2 = _F(math.pi), _F(math.pi / 2)
_ATAN2_C = (_F(0.00282363896258175373077393), _F(-0.0159569028764963150024414), _F(0.0425049886107444763183594),
            _F(-0.0748900920152664184570312), _F(0.106347933411598205566406), _F(-0.142027363181114196777344),
            _F(0.199926957488059997558594), _F(-0.333331018686294555664062))
_FOUR_OVER_PI = _F(1.27323954473516)
_MINUS_DP = (_F(-0.78515625), _F(-2.4187564849853515625e-4), _F(-3.77489497744594108e-8))  # -pi/4 in three parts
_SINCOF = (_F(-1.9515295891e-4), _F(8.3321608736e-3), _F(-1.6666654611e-1))
_COSCOF = (_F(2.443315711809948e-5), _F(-1.388731625493765e-3), _F(4.166664568298827e-2))


@njit(inline="always")
def _max_ps(a, b):
    """_mm256_max_ps: a if a > b, else b (so b when either is NaN)."""
    return a if a > b else b


@njit(inline="always")
def _min_ps(a, b):
    """_mm256_min_ps: a if a < b, else b."""
    return a if a < b else b


@njit(cache=True, nogil=True, error_model="numpy")
def _eigenvalues_2x2(a, b, c, out):
    """fastfilters' _ev2d_avx: mean ± sqrt(((a - c)·0.5)² + b²) in float32, larger first."""
    for i in range(a.shape[0]):
        mean = (a[i] + c[i]) * _HALF
        d = (a[i] - c[i]) * _HALF
        root = np.sqrt(d * d + b[i] * b[i])
        e0 = mean + root
        e1 = mean - root
        out[0, i] = _max_ps(e0, e1)
        out[1, i] = _min_ps(e0, e1)


@njit(inline="always")
def _atan2_ps(y, x):
    """avx_mathfun.h's atan2_256_ps. Its zero tests look at the operands after the octant swap, so for x = 0
    and y > 0 it returns 0, not pi/2 (ilastik's eigenvalues carry that; kept for the same numbers)."""
    negative_x = np.signbit(x)
    negative_y = np.signbit(y)
    x0 = abs(x)
    y0 = abs(y)
    swap = y0 > x0
    xs = y0 if swap else x0
    ys = -x0 if swap else y0
    q = (_MINUS2 if negative_x else _ZERO) + (_ONE if swap else _ZERO)
    s = ys / xs
    t = s * s
    u = _ATAN2_C[0]
    for k in range(1, 8):
        u = t * u + _ATAN2_C[k]
    t = (t * s) * u + s
    t = q * _PI_2 + t
    if negative_x:
        t = -t
    if xs == _ZERO:
        t = _PI_2
    if ys == _ZERO:
        t = _PI if negative_x else _ZERO
    return -t if negative_y else t


@njit(inline="always")
def _sincos_ps(x):
    """avx_mathfun.h's sincos256_ps (cephes): (sin x, cos x) in float32."""
    negative = np.signbit(x)
    x = abs(x)
    # cvttps truncation; every integer kept int32 (numba widens int32 arithmetic to int64, whose conversion to
    # float AVX2 cannot vectorise: the loop then converts lane by lane, an eighth of the solver's time)
    j = np.int32(np.int32(np.int32(x * _FOUR_OVER_PI) + np.int32(1)) & np.int32(-2))
    y = _F(j)
    x = x + y * _MINUS_DP[0]
    x = x + y * _MINUS_DP[1]
    x = x + y * _MINUS_DP[2]
    sin_negative = negative != ((j & np.int32(4)) != np.int32(0))
    cos_negative = (np.int32(j - np.int32(2)) & np.int32(4)) == np.int32(0)
    sine_polynomial = (j & np.int32(2)) == np.int32(0)
    z = x * x
    c = ((_COSCOF[0] * z + _COSCOF[1]) * z + _COSCOF[2]) * z
    c = (c * z - z * _HALF) + _ONE
    s = ((_SINCOF[0] * z + _SINCOF[1]) * z + _SINCOF[2]) * z
    s = s * x + x
    # the selection as the original does it (masking and subtracting), signed zeros included
    from_s = s if sine_polynomial else _ZERO
    from_c = _ZERO if sine_polynomial else c
    sine = from_c + from_s
    cosine = (c - from_c) + (s - from_s)
    return (-sine if sin_negative else sine), (-cosine if cos_negative else cosine)


@njit(cache=True, nogil=True, error_model="numpy")
def _eigenvalues_3x3(a00, a01, a02, a11, a12, a22, out):
    """fastfilters' _ev3d_avx2: the trigonometric solution of the characteristic cubic (Eberly) on the matrix
    divided by its largest |entry|, in float32, largest eigenvalue first. Near-degenerate eigenvalues carry
    float32 noise of about sqrt(eps)·scale, as ilastik's do."""
    for i in range(a00.shape[0]):
        m = _max_ps(_max_ps(_max_ps(abs(a00[i]), abs(a01[i])), _max_ps(abs(a02[i]), abs(a11[i]))),
                    _max_ps(abs(a12[i]), abs(a22[i])))
        if m == _ZERO:
            m = _ONE
        b00 = a00[i] / m
        b01 = a01[i] / m
        b02 = a02[i] / m
        b11 = a11[i] / m
        b12 = a12[i] / m
        b22 = a22[i] / m
        c0 = (b00 * b11) * b22 + ((_TWO * b01) * b02) * b12 - (b00 * b12) * b12 - (b11 * b02) * b02 - (b22 * b01) * b01
        c1 = b00 * b11 - b01 * b01 + b00 * b22 - b02 * b02 + b11 * b22 - b12 * b12
        c2 = b00 + b11 + b22
        c2_3 = c2 * _INV3
        a_3 = _min_ps((c1 - c2 * c2_3) * _INV3, _ZERO)
        mb_2 = _HALF * (c0 + c2_3 * ((_TWO * c2_3) * c2_3 - c1))
        q = _min_ps(mb_2 * mb_2 + (a_3 * a_3) * a_3, _ZERO)
        magnitude = np.sqrt(-a_3)
        sn, cs = _sincos_ps(_atan2_ps(np.sqrt(-q), mb_2) * _INV3)
        r0 = c2_3 + (_TWO * magnitude) * cs
        r1 = c2_3 - magnitude * (cs + _ROOT3 * sn)
        r2 = c2_3 - magnitude * (cs - _ROOT3 * sn)
        low = _min_ps(r0, r1)
        high = _max_ps(r0, r1)
        upper = _max_ps(low, r2)
        out[0, i] = _max_ps(high, upper) * m
        out[1, i] = _min_ps(high, upper) * m
        out[2, i] = _min_ps(low, r2) * m


@njit(cache=True, nogil=True, error_model="numpy")
def _sum_terms(x, y, z, n, squared, root, out):
    """out = (x + y) + z over the first n of the flat arrays x, y, z (each squared first if `squared`), then its
    square root if `root`: float32, each operation rounded on its own, in one pass."""
    for i in range(out.shape[0]):
        total = x[i] * x[i] if squared else x[i]
        if n > 1:
            total = total + (y[i] * y[i] if squared else y[i])
        if n > 2:
            total = total + (z[i] * z[i] if squared else z[i])
        out[i] = np.sqrt(total) if root else total


def sum_x_first(terms: Sequence[np.ndarray], out: np.ndarray, squared: bool = False, root: bool = False) -> None:
    """out = (x + y) + z of 1-3 per-axis terms given in axes order (z, y, x), as fastfilters adds them: with
    `squared`, the sum of their squares (each square rounded on its own); with `root`, its square root. `out` is
    a C-contiguous float32 array of the terms' shape."""
    flat = [np.ascontiguousarray(t, dtype=np.float32).reshape(-1) for t in reversed(terms)]
    _sum_terms(flat[0], flat[min(1, len(flat) - 1)], flat[-1], len(flat), squared, root, out.reshape(-1))


def eigenvalues(upper: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalues of symmetric 1x1, 2x2 or 3x3 matrix fields given by their upper triangle
    (row-major: a00 / a00, a01, a11 / a00, a01, a02, a11, a12, a22): fastfilters' closed forms in its own
    float32 arithmetic.

    Returns an (n, ...) array, channel 0 = largest eigenvalue; `out` may be a float32 array
    of that shape (C-contiguous per channel) to write into.
    """
    shape = np.shape(upper[0])
    flat = [np.ascontiguousarray(np.ravel(u), dtype=np.float32) for u in upper]
    n = {1: 1, 3: 2, 6: 3}.get(len(upper))
    if n is None:
        raise ValueError("need the 1, 3 or 6 upper-triangle entries of a 1x1, 2x2 or 3x3 matrix")
    result = np.empty((n,) + shape, np.float32) if out is None else out
    target = result.reshape(n, -1)
    if n == 1:
        target[0] = flat[0]
    elif n == 2:
        _eigenvalues_2x2(*flat, target)
    else:
        _eigenvalues_3x3(*flat, target)
    return result
