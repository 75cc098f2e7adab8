"""1-D Gaussian (derivative) kernels following fastfilters' radius and normalisation rules."""

import math

import numpy as np

PRESMOOTH_WINDOW = 3.5
FEATURE_WINDOW = 2.0


def kernel_radius(sigma: float, window: float) -> int:
    """Half-width of the sampled kernel: floor(window·sigma + 0.5), and 0 for sigma < 1e-6."""
    if sigma < 1e-6:
        return 0
    return int(math.floor(window * sigma + 0.5))


def gaussian_kernel(sigma: float, order: int, window: float) -> np.ndarray:
    """Taps for offsets -r..r (float64) of the Gaussian (order 0) or its 1st/2nd derivative.

    Used as a true convolution, out[i] = sum_x k[x]·in[i-x]: order 0 sums to 1, order 1 maps a
    unit ramp to 1, order 2 (mean removed first) maps x²/2 to 1. A radius-0 derivative kernel has
    no valid normalisation; like fastfilters it is NaN (ilastik's GUI never selects such scales).
    """
    if order not in (0, 1, 2):
        raise ValueError(f"derivative order must be 0, 1 or 2, not {order}")
    r = kernel_radius(sigma, window)
    if r == 0:
        return np.ones(1) if order == 0 else np.full(1, np.nan)
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    if order == 0:
        return g / g.sum()
    if order == 1:
        k = -x * g
        return k / np.sum(k * -x)
    k = ((x / sigma) ** 2 - 1.0) * g
    k -= k.mean()
    return k / np.sum(k * x * x / 2.0)
