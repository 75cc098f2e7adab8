"""The C library's elementary functions, value by value. numpy's own `exp`, `log` (float64) and `power` (float32)
are, on CPUs with AVX-512, vectorised approximations that differ in the last place from the C library, which
is what numpy calls on other CPUs and what ilastik's, hytra's and ilastikrag's numbers were computed with."""

import ctypes
import ctypes.util
import math

import numpy as np
from numba import njit


def exp(x: np.ndarray) -> np.ndarray:
    """float64 e**x by the C library's exp, for x up to 709 (beyond, e**x overflows and math.exp raises)."""
    return _each(math.exp, x)


def log(x: np.ndarray) -> np.ndarray:
    """float64 ln x by the C library's log, for x > 0 or NaN (math.log raises for the rest)."""
    return _each(math.log, x)


def _each(function, x: np.ndarray) -> np.ndarray:
    values = np.asarray(x, dtype=np.float64)
    return np.asarray(np.frompyfunc(function, 1, 1)(values), dtype=np.float64).reshape(values.shape)


def _c_powf():
    """The C library's powf; None where no C library with one can be loaded."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c"))
        powf = library.powf
    except (OSError, TypeError, AttributeError):
        return None
    powf.restype, powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    return powf


_C_POWF = _c_powf()


@njit(nogil=True)  # not cached: it calls the C library at an address of this process (compiled in ~0.3 s)
def _powf_each(x, exponent, out):
    for i in range(x.shape[0]):
        out[i] = _C_POWF(x[i], exponent)


def powf(x: np.ndarray, exponent: float) -> np.ndarray:
    """float32 x ** exponent by the C library's powf (numpy's power where there is none to load)."""
    if _C_POWF is None:
        return np.power(np.asarray(x, dtype=np.float32), np.float32(exponent))
    out = np.empty(np.shape(x), np.float32)
    _powf_each(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), np.float32(exponent), out.reshape(-1))
    return out
