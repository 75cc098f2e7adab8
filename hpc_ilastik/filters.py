"""Separable Gaussian filters and closed-form eigenvalues on float32 (z, y, x) arrays (numba).

Every array here is 3-D `zyx` float32; a filter runs along the axes it is given (a 2-D image is
`z == 1` filtered along (1, 2); "per-slice 2-D" is the same call on a thicker stack). The border is
a mirror without repeating the edge sample (in[-1] = in[1], scipy's mode "mirror"). Kernel taps are
computed in double and stored as float32; each 1-D pass is fastfilters' arithmetic: float32 throughout,
the centre tap times the sample, then one fused multiply-add per tap pair (x[+k] ± x[-k]), k = 1..r.
"""

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numba import njit

from hpc_ilastik.kernels import gaussian_kernel

_CHUNK = 2048  # floats of one line processed together when convolving along a non-contiguous axis

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


@njit(cache=True, nogil=True, error_model="numpy")
def _convolve_rows(src, half, antisym, out, lo):
    """Convolve each row of the 2-D array src along its contiguous axis into out[:, :w], output position
    i being line position lo + i; half = taps 0..r."""
    n = src.shape[1]
    m, w = out.shape
    r = half.shape[0] - 1
    idx = _mirror_map(n, lo - r, w + 2 * r)
    inside0 = min(max(r - lo, 0), w + 2 * r)  # buf[inside0:inside1] = s[lo - r + inside0:...] needs no mirror
    inside1 = max(min(n - lo + r, w + 2 * r), inside0)
    mirrored = inside0 > 0 or inside1 < w + 2 * r
    buf = np.empty(w + 2 * r, np.float32)
    for row in range(m):
        s = src[row]
        if mirrored:
            for p in range(inside0):
                buf[p] = s[idx[p]]
            buf[inside0:inside1] = s[lo - r + inside0:lo - r + inside1]
            for p in range(inside1, w + 2 * r):
                buf[p] = s[idx[p]]
            _accumulate(buf, r, w, half, antisym, out[row])
        else:
            _accumulate(s[lo - r:lo + w + r], r, w, half, antisym, out[row])


@njit(cache=True, nogil=True, error_model="numpy")
def _accumulate(buf, r, n, half, antisym, out):
    """out[i] = sum_k half[k]·(buf[r+i-k] ± buf[r+i+k]) for a mirrored line buf of length n + 2r."""
    # the radii of the features' kernels and of the default scales' presmoothing go in as constants,
    # so that LLVM unrolls the loop over the taps (a third faster)
    if r == 1:
        _accumulate_taps(buf, 1, n, half, antisym, out)
    elif r == 2:
        _accumulate_taps(buf, 2, n, half, antisym, out)
    elif r == 3:
        _accumulate_taps(buf, 3, n, half, antisym, out)
    elif r == 4:
        _accumulate_taps(buf, 4, n, half, antisym, out)
    elif r == 12:
        _accumulate_taps(buf, 12, n, half, antisym, out)
    elif r == 17:
        _accumulate_taps(buf, 17, n, half, antisym, out)
    else:
        _accumulate_taps(buf, r, n, half, antisym, out)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _accumulate_taps(buf, r, n, half, antisym, out):
    """fastfilters' arithmetic: out = h0·x, then out += hk·(x[+k] ± x[-k]) for k = 1..r, float32 with FMA."""
    h0 = half[0]
    for i in range(n):
        out[i] = h0 * buf[i + r]
    for k in range(1, r + 1):
        hk = half[k]
        lo = buf[r - k:r - k + n]
        hi = buf[r + k:r + k + n]
        if antisym:
            for i in range(n):
                out[i] += hk * (lo[i] - hi[i])
        else:
            for i in range(n):
                out[i] += hk * (lo[i] + hi[i])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _convolve_lines(src, half, antisym, out, lo):
    """Convolve (outer, n, inner) arrays along axis 1 into out (outer, w, inner), output position i being
    line position lo + i; a contiguous chunk of `inner` at a time, with _accumulate_taps' arithmetic."""
    outer, n, inner = src.shape
    w = out.shape[1]
    r = half.shape[0] - 1
    idx = _mirror_map(n, lo - r, w + 2 * r)
    h0 = half[0]
    for b in range(outer):
        for c0 in range(0, inner, _CHUNK):
            c = min(_CHUNK, inner - c0)
            for i in range(w):
                s = src[b, idx[i + r], c0:c0 + c]
                o = out[b, i, c0:c0 + c]
                for t in range(c):
                    o[t] = h0 * s[t]
                for k in range(1, r + 1):
                    hk = half[k]
                    a = src[b, idx[i + r - k], c0:c0 + c]
                    z = src[b, idx[i + r + k], c0:c0 + c]
                    if antisym:
                        for t in range(c):
                            o[t] += hk * (a[t] - z[t])
                    else:
                        for t in range(c):
                            o[t] += hk * (a[t] + z[t])


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


def convolve_axis(img: np.ndarray, taps: np.ndarray, axis: int, span: tuple[int, int] | None = None) -> np.ndarray:
    """True convolution of a float32 zyx array with a symmetric or antisymmetric odd-length kernel.

    `span` = (start, stop) along `axis` limits the output to those positions (the input is read where
    the kernel reaches, mirrored at the array's own edges); default: the whole axis.
    """
    taps = np.asarray(taps, dtype=np.float64)
    r = (taps.size - 1) // 2
    if taps.size % 2 == 0:
        raise ValueError("kernel length must be odd")
    nan_tap = np.isnan(taps).any()
    if nan_tap or np.array_equal(taps, taps[::-1]):
        antisym = False
    elif np.array_equal(taps, -taps[::-1]):
        antisym = True
    else:
        raise ValueError("kernel must be symmetric or antisymmetric")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, not {axis}")
    half = np.ascontiguousarray(taps[r:], dtype=np.float32)
    src = np.ascontiguousarray(img, dtype=np.float32)
    lo, hi = span if span is not None else (0, src.shape[axis])
    shape = list(src.shape)
    shape[axis] = hi - lo
    out = np.empty(shape, np.float32)
    z, y, x = src.shape
    if axis == 2:
        _convolve_rows(src.reshape(z * y, x), half, antisym, out.reshape(z * y, hi - lo), lo)
    elif axis == 1:
        _convolve_lines(src, half, antisym, out, lo)
    else:
        _convolve_lines(src.reshape(1, z, y * x), half, antisym, out.reshape(1, hi - lo, y * x), lo)
    return out


def convolve_separable(img: np.ndarray, kernels: Sequence[np.ndarray | None]) -> np.ndarray:
    """Apply one 1-D kernel per axis of a zyx array (None = leave that axis alone), x first."""
    out = np.ascontiguousarray(img, dtype=np.float32)
    for axis in reversed(range(len(kernels))):
        if kernels[axis] is not None:
            out = convolve_axis(out, kernels[axis], axis)
    return out


def derivative_bank(
    img: np.ndarray, sigma: float, window: float, axes: Sequence[int], orders: Iterable[tuple[int, ...]],
    region: Region | None = None,
) -> dict[tuple[int, ...], np.ndarray]:
    """Gaussian derivatives of img for each orders tuple (derivative order per entry of axes).

    Partial results along the axes filtered first (the contiguous x first) are shared between
    tuples, e.g. the Hessian and the gradient reuse one x-smoothed and one x-differentiated image.
    `region` ((start, stop) per zyx axis) limits the outputs to that box of img: each pass computes only
    its own axis' part of the box, axes that are not filtered are cut to it first.
    """
    region = region or full_region(img.shape)
    wanted = set(orders)
    kernels = {o: gaussian_kernel(sigma, o, window) for t in wanted for o in t}
    cut = tuple(slice(*region[a]) if a not in axes else slice(None) for a in range(img.ndim))
    level: dict[tuple[int, ...], np.ndarray] = {(): np.ascontiguousarray(img[cut], dtype=np.float32)}
    for pos in reversed(range(len(axes))):
        level = {
            key: convolve_axis(level[key[1:]], kernels[key[0]], axes[pos], region[axes[pos]])
            for key in {t[pos:] for t in wanted}
        }
    return {t: level[t] for t in wanted}


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
    j = (np.int32(x * _FOUR_OVER_PI) + np.int32(1)) & np.int32(-2)  # cvttps: truncation
    y = _F(j)
    x = x + y * _MINUS_DP[0]
    x = x + y * _MINUS_DP[1]
    x = x + y * _MINUS_DP[2]
    sin_negative = negative != ((j & 4) != 0)
    cos_negative = ((j - np.int32(2)) & 4) == 0
    sine_polynomial = (j & 2) == 0
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
