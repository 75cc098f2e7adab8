"""What a user would write by hand: ilastik's feature bank in scipy.ndimage + numpy, one thread.

Same presmoothing rule and channel order as `hpc_ilastik.pixel.features` (the bench takes the order from a
`FeaturePlan`), Gaussian smoothing with `scipy.ndimage.gaussian_filter` (its sampled, normalised kernel
and radius int(truncate·sigma + 0.5) are fastfilters' too), derivatives with `scipy.ndimage.convolve1d`
and our derivative taps (scipy's own derivative kernels are normalised differently), eigenvalues with
`numpy.linalg.eigvalsh` as scikit-image's `hessian_matrix_eigvals` does. Border: scipy's mode "mirror".
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from hpc_ilastik.pixel.features import DOG_RATIO, FeaturePlan
from hpc_ilastik.pixel.kernels import FEATURE_WINDOW, PRESMOOTH_WINDOW, gaussian_kernel

EIGH_CHUNK = 1 << 20  # matrices per eigvalsh call (bounds the temporary (n, d, d) stack)


def smooth(img: np.ndarray, sigma: float, window: float, axes: tuple[int, ...]) -> np.ndarray:
    """scipy's Gaussian smoothing along `axes` with kernel radius int(window·sigma + 0.5)."""
    if not axes:
        return img.copy()
    return ndimage.gaussian_filter(img, sigma, mode="mirror", truncate=window, axes=axes)


def derivative(img: np.ndarray, sigma: float, orders: dict[int, int], axes: tuple[int, ...]) -> np.ndarray:
    """Gaussian derivative: order orders.get(a, 0) along each axis a of `axes`, with fastfilters' taps."""
    out = img
    for a in axes:
        out = ndimage.convolve1d(out, gaussian_kernel(sigma, orders.get(a, 0), FEATURE_WINDOW), axis=a,
                                 mode="mirror", output=np.float32)
    return out


def eigenvalues_desc(upper: list[np.ndarray], n: int) -> np.ndarray:
    """Eigenvalues (n, ...) of symmetric matrix fields given by their upper triangle, largest first."""
    shape = upper[0].shape
    flat = [u.ravel() for u in upper]
    out = np.empty((n, flat[0].size), np.float32)
    rows, cols = np.triu_indices(n)
    for start in range(0, flat[0].size, EIGH_CHUNK):
        stop = min(start + EIGH_CHUNK, flat[0].size)
        mats = np.empty((stop - start, n, n), np.float32)
        for k, (i, j) in enumerate(zip(rows, cols)):
            mats[:, i, j] = mats[:, j, i] = flat[k][start:stop]
        out[:, start:stop] = np.linalg.eigvalsh(mats)[:, ::-1].T
    return out.reshape((n,) + shape)


def _feature(pre: np.ndarray, feature_id: str, sigma: float, axes: tuple[int, ...]) -> np.ndarray:
    """One feature of a presmoothed (z, y, x) channel at sigma_f, as (n, z, y, x)."""
    if feature_id == "GaussianSmoothing":
        return smooth(pre, sigma, FEATURE_WINDOW, axes)[None]
    if feature_id == "DifferenceOfGaussians":
        return (smooth(pre, sigma, FEATURE_WINDOW, axes) - smooth(pre, DOG_RATIO * sigma, FEATURE_WINDOW, axes))[None]
    if feature_id == "LaplacianOfGaussian":
        return sum(derivative(pre, sigma, {a: 2}, axes) for a in axes)[None]
    if feature_id == "GaussianGradientMagnitude":
        return np.sqrt(sum(derivative(pre, sigma, {a: 1}, axes) ** 2 for a in axes))[None]
    pairs = [(a, b) for i, a in enumerate(axes) for b in axes[i:]]
    if feature_id == "HessianOfGaussianEigenvalues":
        upper = [derivative(pre, sigma, {a: 2} if a == b else {a: 1, b: 1}, axes) for a, b in pairs]
    else:  # StructureTensorEigenvalues: gradient at sigma/2, tensor smoothed at sigma (fastfilters' order)
        grad = {a: derivative(pre, sigma / 2, {a: 1}, axes) for a in axes}
        upper = [smooth(grad[a] * grad[b], sigma, FEATURE_WINDOW, axes) for a, b in pairs]
    return eigenvalues_desc(upper, len(axes))


def scipy_feature_groups(volume_zyxc: np.ndarray, plan: FeaturePlan) -> Iterator[tuple[int, np.ndarray]]:
    """The plan's features as (first channel, (n, z, y, x) float32) per (feature, scale, input channel),
    computed with scipy.ndimage and numpy; a generator, so that a caller can check each group and
    drop it (the whole stack of a large volume need not exist twice)."""
    for c in range(plan.n_input_channels):
        channel = volume_zyxc[..., c].astype(np.float32)
        for step in plan.steps:
            pre = smooth(channel, step.presmooth_sigma, PRESMOOTH_WINDOW, step.presmooth_axes)
            for out in (o for o in plan.outputs if o.column == step.column):
                yield out.first_channel + c * out.n_channels, _feature(pre, out.feature_id, step.feature_sigma,
                                                                        step.feature_axes)
