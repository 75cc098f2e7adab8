"""vigra's `symmetricEigensystem`: Householder tridiagonalisation and the implicit QL algorithm (JAMA's
`tred2`/`tql2`), then eigenvalues sorted in descending order with their eigenvectors (as columns).

The eigenvectors' signs are this algorithm's, which is what ilastik's RegionAxes and PrincipalAxes hold;
numpy's `eigh` may flip them (ilastik-workflows-spec.md §0.2, vigra `include/vigra/eigensystem.hxx`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _tridiagonalize(a: np.ndarray, d: np.ndarray, e: np.ndarray) -> None:
    """Householder reduction of the symmetric `a` (overwritten by the transformation) to a tridiagonal
    matrix with diagonal `d` and sub-diagonal `e` (e[0] unused)."""
    n = a.shape[0]
    for j in range(n):
        d[j] = a[n - 1, j]
    for i in range(n - 1, 0, -1):
        scale = 0.0
        h = 0.0
        for k in range(i):
            scale = scale + abs(d[k])
        if scale == 0.0:
            e[i] = d[i - 1]
            for j in range(i):
                d[j] = a[i - 1, j]
                a[i, j] = 0.0
                a[j, i] = 0.0
        else:
            for k in range(i):
                d[k] /= scale
                h += d[k] * d[k]
            f = d[i - 1]
            g = math.sqrt(h)
            if f > 0:
                g = -g
            e[i] = scale * g
            h -= f * g
            d[i - 1] = f - g
            for j in range(i):
                e[j] = 0.0
            for j in range(i):
                f = d[j]
                a[j, i] = f
                g = e[j] + a[j, j] * f
                for k in range(j + 1, i):
                    g += a[k, j] * d[k]
                    e[k] += a[k, j] * f
                e[j] = g
            f = 0.0
            for j in range(i):
                e[j] /= h
                f += e[j] * d[j]
            hh = f / (h + h)
            for j in range(i):
                e[j] -= hh * d[j]
            for j in range(i):
                f = d[j]
                g = e[j]
                for k in range(j, i):
                    a[k, j] -= (f * e[k] + g * d[k])
                d[j] = a[i - 1, j]
                a[i, j] = 0.0
        d[i] = h
    for i in range(n - 1):
        a[n - 1, i] = a[i, i]
        a[i, i] = 1.0
        h = d[i + 1]
        if h != 0.0:
            for k in range(i + 1):
                d[k] = a[k, i + 1] / h
            for j in range(i + 1):
                g = 0.0
                for k in range(i + 1):
                    g += a[k, i + 1] * a[k, j]
                for k in range(i + 1):
                    a[k, j] -= g * d[k]
        for k in range(i + 1):
            a[k, i + 1] = 0.0
    for j in range(n):
        d[j] = a[n - 1, j]
        a[n - 1, j] = 0.0
    a[n - 1, n - 1] = 1.0
    e[0] = 0.0


@njit(cache=True, nogil=True)
def _tridiagonal_eigensystem(d: np.ndarray, e: np.ndarray, z: np.ndarray) -> bool:
    """Implicit QL iterations on the tridiagonal (d, e), accumulating into `z`; eigenvalues end in `d`,
    sorted descending with the columns of `z`. False when an eigenvalue needs more than 50 iterations."""
    n = z.shape[0]
    for i in range(1, n):
        e[i - 1] = e[i]
    e[n - 1] = 0.0
    f = 0.0
    tst1 = 0.0
    eps = 2.0 ** -52
    for l in range(n):
        tst1 = max(tst1, abs(d[l]) + abs(e[l]))
        m = l
        while m < n:
            if abs(e[m]) <= eps * tst1:
                break
            m += 1
        if m > l:
            iteration = 0
            while True:
                iteration += 1
                if iteration > 50:
                    return False
                g = d[l]
                p = (d[l + 1] - g) / (2.0 * e[l])
                r = math.hypot(p, 1.0)
                if p < 0:
                    r = -r
                d[l] = e[l] / (p + r)
                d[l + 1] = e[l] * (p + r)
                dl1 = d[l + 1]
                h = g - d[l]
                for i in range(l + 2, n):
                    d[i] -= h
                f = f + h
                p = d[m]
                c = 1.0
                c2 = c
                c3 = c
                el1 = e[l + 1]
                s = 0.0
                s2 = 0.0
                for i in range(m - 1, l - 1, -1):
                    c3 = c2
                    c2 = c
                    s2 = s
                    g = c * e[i]
                    h = c * p
                    r = math.hypot(p, e[i])
                    e[i + 1] = s * r
                    s = e[i] / r
                    c = p / r
                    p = c * d[i] - s * g
                    d[i + 1] = h + s * (c * g + s * d[i])
                    for k in range(n):
                        h = z[k, i + 1]
                        z[k, i + 1] = s * z[k, i] + c * h
                        z[k, i] = c * z[k, i] - s * h
                p = -s * s2 * c3 * el1 * e[l] / dl1
                e[l] = s * p
                d[l] = c * p
                if not abs(e[l]) > eps * tst1:
                    break
        d[l] = d[l] + f
        e[l] = 0.0
    for i in range(n - 1):
        k = i
        p = d[i]
        for j in range(i + 1, n):
            if p < d[j]:
                k = j
                p = d[j]
        if k != i:
            d[k], d[i] = d[i], d[k]
            for j in range(n):
                z[j, i], z[j, k] = z[j, k], z[j, i]
    return True


@njit(cache=True, nogil=True)
def symmetric_eigensystem(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues descending, eigenvectors as columns) of a symmetric float64 matrix, as vigra computes
    them; NaN everywhere when the iteration does not converge."""
    n = matrix.shape[0]
    vectors = matrix.copy()
    d = np.zeros(n)
    e = np.zeros(n)
    _tridiagonalize(vectors, d, e)
    if not _tridiagonal_eigensystem(d, e, vectors):
        d[:] = np.nan
        vectors[:, :] = np.nan
    return d, vectors
