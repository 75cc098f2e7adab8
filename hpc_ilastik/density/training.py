"""Training Cell Density Counting's regressors as ilastik's `OpTrainCounter` does
(ilastik-workflows-spec.md §B): the foreground dots smoothed with a Gaussian of σ are the targets near
the dots, background-brush pixels are samples too, and each of four regressors (scikit-learn forests of
10 trees, depth ≤ 50) learns from a quarter of the samples drawn with replacement. ilastik draws unseeded;
here every draw comes from one seed, so a run repeats.
"""

from __future__ import annotations

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.regression import RegressionForest, train_regression_forest
from hpc_ilastik.pixel.filters import gaussian_smoothing
from hpc_ilastik.pixel.kernels import FEATURE_WINDOW

FOREGROUND, BACKGROUND = 1, 2  # ilastik's two counting labels: dots and background brush strokes
DENSITY_FLOOR = 1e-4           # smoothed dot values above this are positive samples (`prepareDataRefactored`)
N_REGRESSORS, N_TREES, MAX_DEPTH = 4, 10, 50
# lazyflow's context for the dot smoothing: ceil(max(0.7, σ) · 3.5) pixels around a label block
SMOOTHING_WINDOW = 3.5


def smoothing_halo(sigma: float) -> int:
    """Pixels of label context a block needs for its smoothed dots (lazyflow's halo rule)."""
    return int(np.ceil(max(0.7, sigma) * SMOOTHING_WINDOW))


def dot_density(labels_yx: np.ndarray, sigma: float) -> np.ndarray:
    """The dots (label 1 → 1.0) smoothed with fastfilters' Gaussian of σ (window 2), float32; the array's
    edges are the image border (mirrored)."""
    dots = (np.asarray(labels_yx) == FOREGROUND).astype(np.float32)
    if sigma <= 0:
        return dots
    return gaussian_smoothing(dots[np.newaxis], float(sigma), FEATURE_WINDOW, (1, 2))[0]


def training_samples(labels_yx: np.ndarray, smoothed_yx: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One label block's samples as ilastik picks them: (flat pixel indices, targets float64, positives).

    Positives are the pixels whose smoothed dot value exceeds 1e-4, then come the background-brush pixels;
    each sample's target is the smoothed dot value at its pixel (a brush pixel next to a dot keeps it)."""
    smoothed = np.asarray(smoothed_yx, dtype=np.float64).ravel()
    positive = np.flatnonzero(smoothed > DENSITY_FLOOR)
    negative = np.flatnonzero(np.asarray(labels_yx).ravel() == BACKGROUND)
    indices = np.concatenate([positive, negative])
    return indices, smoothed[indices], len(positive)


def train_regressors(X: np.ndarray, y: np.ndarray, seed: int = 0) -> list[RegressionForest]:
    """ilastik's four regressors, each a 10-tree forest of depth ≤ 50 fitted to N//4 samples drawn with
    replacement (sorted, as ilastik sorts them)."""
    n = len(y)
    if n // N_REGRESSORS < 1:
        raise UserError(f"the project has {n} training pixel(s) from its labels: too few to train the counting "
                        "regressors (ilastik draws a quarter of them for each of its four); add dots and background "
                        "labels in ilastik")
    rng = np.random.RandomState(seed)
    forests = []
    for _ in range(N_REGRESSORS):
        drawn = np.sort(rng.randint(0, n, size=n // N_REGRESSORS))
        forests.append(train_regression_forest(X[drawn], y[drawn], N_TREES, MAX_DEPTH,
                                               seed=int(rng.randint(2**31 - 1))))
    return forests
