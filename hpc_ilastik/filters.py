"""Separable Gaussian filters and closed-form eigenvalues on float32 (z, y, x) arrays (numba).

Every array here is 3-D `zyx` float32; a filter runs along the axes it is given (a 2-D image is
`z == 1` filtered along (1, 2); "per-slice 2-D" is the same call on a thicker stack). The border is
a mirror without repeating the edge sample (in[-1] = in[1], scipy's mode "mirror"). Kernel taps are
computed in double and applied as float32; sums run in float32 like fastfilters' SIMD code.
"""

from collections.abc import Iterable, Sequence

import numpy as np
from numba import njit

from hpc_ilastik.kernels import gaussian_kernel

_CHUNK = 2048  # floats of one line processed together when convolving along a non-contiguous axis


@njit(cache=True, error_model="numpy")
def _mirror_map(n: int, r: int) -> np.ndarray:
    """Source index for each position -r..n-1+r of a line of length n, mirrored without edge repeat."""
    idx = np.empty(n + 2 * r, np.int64)
    period = 2 * (n - 1)
    for p in range(n + 2 * r):
        if n == 1:
            idx[p] = 0
            continue
        i = abs(p - r) % period
        idx[p] = period - i if i >= n else i
    return idx


@njit(cache=True, error_model="numpy")
def _convolve_rows(src, half, antisym, out):
    """Convolve each row of the 2-D arrays along its contiguous axis; half = taps 0..r."""
    m, n = src.shape
    r = half.shape[0] - 1
    idx = _mirror_map(n, r)
    buf = np.empty(n + 2 * r, np.float64)
    acc = np.empty(n, np.float64)
    for row in range(m):
        s = src[row]
        for p in range(n + 2 * r):
            buf[p] = s[idx[p]]
        _accumulate(buf, r, n, half, antisym, acc)
        o = out[row]
        for i in range(n):
            o[i] = acc[i]


@njit(cache=True, error_model="numpy")
def _accumulate(buf, r, n, half, antisym, acc):
    """acc[i] = sum_k half[k]·(buf[r+i-k] ± buf[r+i+k]) for a mirrored line buf of length n + 2r."""
    h0 = np.float64(half[0])
    for i in range(n):
        acc[i] = h0 * buf[i + r]
    for k in range(1, r + 1):
        hk = np.float64(half[k])
        lo = buf[r - k:r - k + n]
        hi = buf[r + k:r + k + n]
        if antisym:
            for i in range(n):
                acc[i] += hk * (lo[i] - hi[i])
        else:
            for i in range(n):
                acc[i] += hk * (lo[i] + hi[i])


@njit(cache=True, error_model="numpy")
def _convolve_lines(src, half, antisym, out):
    """Convolve (outer, n, inner) arrays along axis 1, a contiguous chunk of `inner` at a time."""
    outer, n, inner = src.shape
    r = half.shape[0] - 1
    idx = _mirror_map(n, r)
    acc = np.empty(_CHUNK, np.float64)
    for b in range(outer):
        for c0 in range(0, inner, _CHUNK):
            w = min(_CHUNK, inner - c0)
            for i in range(n):
                s = src[b, i, c0:c0 + w]
                h0 = np.float64(half[0])
                for t in range(w):
                    acc[t] = h0 * s[t]
                for k in range(1, r + 1):
                    hk = np.float64(half[k])
                    lo = src[b, idx[i + r - k], c0:c0 + w]
                    hi = src[b, idx[i + r + k], c0:c0 + w]
                    if antisym:
                        for t in range(w):
                            acc[t] += hk * (np.float64(lo[t]) - np.float64(hi[t]))
                    else:
                        for t in range(w):
                            acc[t] += hk * (np.float64(lo[t]) + np.float64(hi[t]))
                o = out[b, i, c0:c0 + w]
                for t in range(w):
                    o[t] = acc[t]


def convolve_axis(img: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """True convolution of a float32 zyx array with a symmetric or antisymmetric odd-length kernel."""
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
    half = np.ascontiguousarray(taps[r:], dtype=np.float32)
    src = np.ascontiguousarray(img, dtype=np.float32)
    out = np.empty_like(src)
    z, y, x = src.shape
    if axis == 2:
        _convolve_rows(src.reshape(z * y, x), half, antisym, out.reshape(z * y, x))
    elif axis == 1:
        _convolve_lines(src, half, antisym, out)
    elif axis == 0:
        _convolve_lines(src.reshape(1, z, y * x), half, antisym, out.reshape(1, z, y * x))
    else:
        raise ValueError(f"axis must be 0, 1 or 2, not {axis}")
    return out


def convolve_separable(img: np.ndarray, kernels: Sequence[np.ndarray | None]) -> np.ndarray:
    """Apply one 1-D kernel per axis of a zyx array (None = leave that axis alone), x first."""
    out = np.ascontiguousarray(img, dtype=np.float32)
    for axis in reversed(range(len(kernels))):
        if kernels[axis] is not None:
            out = convolve_axis(out, kernels[axis], axis)
    return out


def derivative_bank(
    img: np.ndarray, sigma: float, window: float, axes: Sequence[int], orders: Iterable[tuple[int, ...]]
) -> dict[tuple[int, ...], np.ndarray]:
    """Gaussian derivatives of img for each orders tuple (derivative order per entry of axes).

    Partial results along the axes filtered first (the contiguous x first) are shared between
    tuples, e.g. the Hessian and the gradient reuse one x-smoothed and one x-differentiated image.
    """
    wanted = set(orders)
    kernels = {o: gaussian_kernel(sigma, o, window) for t in wanted for o in t}
    level: dict[tuple[int, ...], np.ndarray] = {(): np.ascontiguousarray(img, dtype=np.float32)}
    for pos in reversed(range(len(axes))):
        level = {
            key: convolve_axis(level[key[1:]], kernels[key[0]], axes[pos]) for key in {t[pos:] for t in wanted}
        }
    return {t: level[t] for t in wanted}


def _unit(n: int, i: int, order: int = 1) -> tuple[int, ...]:
    return tuple(order if a == i else 0 for a in range(n))


def gaussian_smoothing(img: np.ndarray, sigma: float, window: float, axes: Sequence[int]) -> np.ndarray:
    """Gaussian smoothing along the given axes."""
    zero = (0,) * len(axes)
    return derivative_bank(img, sigma, window, axes, [zero])[zero]


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


def gradient(img: np.ndarray, sigma: float, window: float, axes: Sequence[int]) -> list[np.ndarray]:
    """Gaussian gradient components along the given axes."""
    orders = gradient_orders(len(axes))
    bank = derivative_bank(img, sigma, window, axes, orders)
    return [bank[o] for o in orders]


def hessian(img: np.ndarray, sigma: float, window: float, axes: Sequence[int]) -> list[np.ndarray]:
    """Upper-triangle Hessian-of-Gaussian entries (row-major) along the given axes."""
    orders = hessian_orders(len(axes))
    bank = derivative_bank(img, sigma, window, axes, orders)
    return [bank[o] for o in orders]


@njit(cache=True, error_model="numpy")
def _eigenvalues_2x2(a, b, c, out):
    half = np.float32(0.5)
    for i in range(a.shape[0]):
        mean = (a[i] + c[i]) * half
        d = (a[i] - c[i]) * half
        s = np.sqrt(d * d + b[i] * b[i])
        out[0, i] = mean + s
        out[1, i] = mean - s


@njit(cache=True, error_model="numpy")
def _atan2_upper(y, x):
    """atan2(y, x) for y >= 0 in float32 (in [0, pi]); branch-free so the caller's loop vectorises."""
    f = np.float32
    ax = abs(x)
    big = max(ax, y)
    t = min(ax, y) / (big if big > f(0) else f(1))  # in [0, 1]
    # atan(t) = pi/6 + atan((sqrt3·t - 1)/(sqrt3 + t)) brings t > tan(pi/12) into |u| <= tan(pi/12)
    reduce = t > f(0.2679491924311227)
    sqrt3 = f(1.7320508075688772)
    u = (sqrt3 * t - f(1)) / (sqrt3 + t) if reduce else t
    u2 = u * u
    poly = f(1 / 11) - u2 * f(1 / 13)
    poly = f(1 / 9) - u2 * poly
    poly = f(1 / 7) - u2 * poly
    poly = f(1 / 5) - u2 * poly
    poly = f(1 / 3) - u2 * poly
    a = u - u * u2 * poly + (f(np.pi / 6) if reduce else f(0))
    a = f(np.pi / 2) - a if y > ax else a
    return f(np.pi) - a if x < f(0) else a


@njit(cache=True, error_model="numpy")
def _cos_sin(x):
    """cos and sin of x in [0, pi/3] by their Taylor series (error < 1e-8), float32."""
    f = np.float32
    x2 = x * x
    c = f(1 / 40320) - x2 * f(1 / 3628800)
    c = f(1 / 720) - x2 * c
    c = f(1 / 24) - x2 * c
    c = f(1 / 2) - x2 * c
    c = f(1) - x2 * c
    s = f(1 / 362880) - x2 * f(1 / 39916800)
    s = f(1 / 5040) - x2 * s
    s = f(1 / 120) - x2 * s
    s = f(1 / 6) - x2 * s
    s = x - x * x2 * s
    return c, s


@njit(cache=True, error_model="numpy")
def _eigenvalues_3x3(a00, a01, a02, a11, a12, a22, out):
    zero = np.float32(0.0)
    one = np.float32(1.0)
    half = np.float32(0.5)
    two = np.float32(2.0)
    three = np.float32(3.0)
    sqrt3 = np.float32(np.sqrt(3.0))
    for i in range(a00.shape[0]):
        m = max(abs(a00[i]), abs(a01[i]), abs(a02[i]), abs(a11[i]), abs(a12[i]), abs(a22[i]))
        d = m if m > zero else one  # a zero matrix stays zero; NaN entries propagate
        b00 = a00[i] / d
        b01 = a01[i] / d
        b02 = a02[i] / d
        b11 = a11[i] / d
        b12 = a12[i] / d
        b22 = a22[i] / d
        # characteristic polynomial  l³ - c2·l² + c1·l - c0
        c0 = b00 * b11 * b22 + two * b01 * b02 * b12 - b00 * b12 * b12 - b11 * b02 * b02 - b22 * b01 * b01
        c1 = b00 * b11 - b01 * b01 + b00 * b22 - b02 * b02 + b11 * b22 - b12 * b12
        c2 = b00 + b11 + b22
        # depressed cubic x³ + p·x + q with l = x + c2/3, solved with the trigonometric formula
        shift = c2 / three
        p3 = min((c1 - c2 * shift) / three, zero)
        mq2 = half * (c0 + shift * (two * shift * shift - c1))
        disc = min(mq2 * mq2 + p3 * p3 * p3, zero)
        mag = np.sqrt(-p3)
        cs, sn = _cos_sin(_atan2_upper(np.sqrt(-disc), mq2) / three)
        r0 = (shift + two * mag * cs) * d
        r1 = (shift - mag * (cs + sqrt3 * sn)) * d
        r2 = (shift - mag * (cs - sqrt3 * sn)) * d
        hi = max(r0, r1)
        lo = min(r0, r1)
        out[0, i] = max(hi, r2)
        out[1, i] = max(lo, min(hi, r2))
        out[2, i] = min(lo, r2)


def eigenvalues(upper: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalues of symmetric 1x1, 2x2 or 3x3 matrix fields given by their upper triangle
    (row-major: a00 / a00, a01, a11 / a00, a01, a02, a11, a12, a22), float32 closed form.

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
