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
    """Taps for offsets -r..r (float64 holding float32 values) of the Gaussian (order 0) or its 1st/2nd derivative.

    Used as a true convolution, out[i] = sum_x k[x]·in[i-x]: order 0 sums to 1, order 1 maps a
    unit ramp to 1, order 2 (mean removed first) maps x²/2 to 1. The taps are fastfilters' to the last bit
    (`src/library/fir_kernel.c`): each sample computed in double and stored as float32, the second derivative's
    mean and the normalising sum taken in double over the float32 samples, the quotient stored as float32.
    A radius-0 derivative kernel has no valid normalisation; like fastfilters it is NaN (ilastik's GUI never
    selects such scales).
    """
    if order not in (0, 1, 2):
        raise ValueError(f"derivative order must be 0, 1 or 2, not {order}")
    r = kernel_radius(sigma, window)
    if r == 0:
        return np.ones(1) if order == 0 else np.full(1, np.nan)
    x = np.arange(r + 1, dtype=np.float64)  # offsets 0..r: fastfilters keeps one half
    norm = (1.0 if order == 0 else -1.0 / sigma ** 2) / (math.sqrt(2.0 * math.pi) * sigma)
    g = norm * np.exp(x * x * (-0.5 / sigma / sigma))
    half = (g if order == 0 else x * g if order == 1 else (1.0 - (x / sigma) * (x / sigma)) * g).astype(np.float32)
    if order == 2:
        dc = (float(half[0]) + 2.0 * half[1:].astype(np.float64).sum()) / (2.0 * r + 1.0)
        half = (half - dc).astype(np.float32)
    wide = half.astype(np.float64)
    if order == 0:
        total = wide[0] + 2.0 * wide[1:].sum()
    elif order == 1:
        total = -2.0 * np.sum(wide[1:] * x[1:])
    else:
        total = np.sum(wide[1:] * x[1:] ** 2)
    half = (wide / total).astype(np.float32).astype(np.float64)
    if order == 1:  # fastfilters negates the odd kernel for its correlation; as a convolution it is -x·g
        return np.concatenate([-half[:0:-1], half])
    return np.concatenate([half[:0:-1], half])
