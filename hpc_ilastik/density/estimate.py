"""The density of a block of pixel features and the count, as ilastik's counting pipeline computes them
(ilastik-workflows-spec.md §B): each regressor's prediction clipped at 0 and cast to float32, the mean
over ilastik's four density channels, and the total summed over 128 × 128 tiles of ilastik's internal
image order (float32 sums per tile, added in float64).

ilastik's Cell Density Counting orders every 2-D image as `xyc` internally: tiles are taken along x
first, and each tile's pixels are summed in x-major order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from hpc_ilastik.forest.regression import RegressionForest

N_CHANNELS = 4  # ilastik's density channels (`OpTrainCounter.numRegressors`), averaged into the density
TILE = 128      # `OpVolumeOperator`'s block shape in x and y

Tile = tuple[int, int]  # (tile index along x, tile index along y)


def density(features: np.ndarray, regressors: Sequence[RegressionForest]) -> np.ndarray:
    """(n, F) features → (n,) float32 density: ilastik's four channels (one stored regressor fills all four)
    averaged with numpy's float32 mean."""
    predictions = [regressor.predict(features) for regressor in regressors]
    if len(predictions) == 1:
        predictions *= N_CHANNELS
    channels = np.empty((features.shape[0], len(predictions)), dtype=np.float32)
    for k, prediction in enumerate(predictions):
        channels[:, k] = np.where(prediction < 0, 0.0, prediction)
    return np.mean(channels, axis=1)


def tile_sums(density_yx: np.ndarray, origin_yx: tuple[int, int], image_yx: tuple[int, int]) -> dict[Tile, float]:
    """The float32 sum of every tile wholly inside this piece of the density (at `origin_yx` in an image of
    `image_yx`), each summed in ilastik's x-major order."""
    sums: dict[Tile, float] = {}
    (y0, x0), (h, w) = origin_yx, density_yx.shape
    for ty in range(-(-y0 // TILE), (y0 + h) // TILE + 1):
        for tx in range(-(-x0 // TILE), (x0 + w) // TILE + 1):
            top, left = ty * TILE, tx * TILE
            bottom, right = min(top + TILE, image_yx[0]), min(left + TILE, image_yx[1])
            if top >= image_yx[0] or left >= image_yx[1] or bottom > y0 + h or right > x0 + w:
                continue
            piece = density_yx[top - y0:bottom - y0, left - x0:right - x0]
            sums[(tx, ty)] = float(np.sum(np.ascontiguousarray(piece.T)[..., np.newaxis]))
    return sums


def all_tiles(image_yx: tuple[int, int]) -> list[Tile]:
    """Every tile of an image in ilastik's order (x outer, y inner)."""
    return list(itertools.product(range(-(-image_yx[1] // TILE)), range(-(-image_yx[0] // TILE))))


def total_count(sums: Mapping[Tile, float], image_yx: tuple[int, int]) -> float:
    """The count: the tiles' sums added (numpy's float64 sum) in ilastik's tile order."""
    return float(np.sum(np.array([sums[tile] for tile in all_tiles(image_yx)], dtype=np.float64)))
