"""The C library's functions value by value, on any CPU: what numpy computes on CPUs without AVX-512, and what
ilastik's tools (hytra, ilastikrag) computed their reference numbers with."""

import ctypes
import ctypes.util
import math

import numpy as np

from hpc_ilastik import libm


def test_exp_and_log_are_the_c_librarys_value_by_value():
    x = np.random.default_rng(0).uniform(-30, 5, (40, 250))
    assert libm.exp(x).shape == x.shape and libm.exp(x).dtype == np.float64
    assert [float(v) for v in libm.exp(x).ravel()] == [math.exp(v) for v in x.ravel()]
    p = np.exp(x)
    assert [float(v) for v in libm.log(p).ravel()] == [math.log(v) for v in p.ravel()]
    assert np.isnan(libm.log(np.array([np.nan]))[0]) and libm.exp(np.array([-1e4]))[0] == 0.0
    assert libm.log(np.float64(2.0)) == math.log(2.0) and libm.exp(np.zeros((0, 3))).shape == (0, 3)


def test_powf_is_the_c_librarys_float32_power():
    powf = ctypes.CDLL(ctypes.util.find_library("m")).powf
    powf.restype, powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(0, 10 ** 6, 5000), rng.uniform(0, 1e4, 5000)]).astype(np.float32).reshape(2, -1)
    for exponent in (np.float32(1 / 3), np.float32(1 / 2)):  # ilastikrag's roots of 3-D and 2-D counts and sums
        ours = libm.powf(x, exponent)
        assert ours.dtype == np.float32 and ours.shape == x.shape
        assert np.array_equal(ours.ravel(), np.array([powf(float(v), float(exponent)) for v in x.ravel()], np.float32))
