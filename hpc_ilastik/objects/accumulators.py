"""vigra's region accumulators (`extractRegionFeatures`) for the pixels of one region, with vigra's
arithmetic and order: everything in double, pixels in raster order; Count, Sum, the central moment of
order 2 and the scatter matrices updated incrementally in a first pass (vigra's Welford-like updates),
the central moments of order 3 and 4 and the 64-bin histogram in a second pass with the final mean.

Definitions (ilastik-workflows-spec.md §0.2, vigra `include/vigra/accumulator.hxx`): population
variance, skewness √n·M3/M2^1.5, excess kurtosis n·M4/M2² − 3; the histogram maps a value t to bin
floor(64·(t − lo)/(hi − lo)) over a given range (the maximum goes to the last bin); quantiles are
interpolated from that histogram; coordinates are in x, y(, z) order; eigen-systems are vigra's
(`eigen.symmetric_eigensystem`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from hpc_ilastik.objects.eigen import symmetric_eigensystem

HISTOGRAM_BINS = 64
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


@njit(cache=True, nogil=True)
def _update_scatter(scatter: np.ndarray, diff: np.ndarray, weight: float) -> None:
    """vigra's updateFlatScatterMatrix: the upper triangle column by column, w·d[i]·d[j]."""
    k = 0
    for j in range(diff.shape[0]):
        for i in range(j, diff.shape[0]):
            scatter[k] += weight * diff[i] * diff[j]
            k += 1


@njit(cache=True, nogil=True)
def first_pass(values, coords, sums, m2, vmin, vmax, data_scatter, coord_sum, coord_scatter, cmin, cmax):
    n_channels, n_dims = values.shape[1], coords.shape[1]
    diff = np.empty(n_channels)
    cdiff = np.empty(n_dims)
    n = 0.0
    for p in range(values.shape[0]):
        n += 1.0
        for c in range(n_channels):
            t = np.float64(values[p, c])
            sums[c] += t
            if n == 1.0 or t < vmin[c]:
                vmin[c] = t
            if n == 1.0 or t > vmax[c]:
                vmax[c] = t
        for d in range(n_dims):
            x = np.float64(coords[p, d])
            coord_sum[d] += x
            if n == 1.0 or x < cmin[d]:
                cmin[d] = x
            if n == 1.0 or x > cmax[d]:
                cmax[d] = x
        if n > 1.0:
            for c in range(n_channels):
                diff[c] = sums[c] / n - np.float64(values[p, c])
                m2[c] += n / (n - 1.0) * (diff[c] * diff[c])
            _update_scatter(data_scatter, diff, n * 1.0 / (n - 1.0))
            for d in range(n_dims):
                cdiff[d] = coord_sum[d] / n - np.float64(coords[p, d])
            _update_scatter(coord_scatter, cdiff, n * 1.0 / (n - 1.0))


@njit(cache=True, nogil=True)
def second_pass(values, sums, count, m3, m4, histogram, outliers, offset, scale):
    n_channels = values.shape[1]
    bins = histogram.shape[0]
    for p in range(values.shape[0]):
        for c in range(n_channels):
            centred = np.float64(values[p, c]) - sums[c] / count
            m3[c] += math.pow(centred, 3.0)
            m4[c] += math.pow(centred, 4.0)
        if bins:
            mapped = scale * (np.float64(values[p, 0]) - offset)
            index = int(mapped) - 1 if mapped == bins else int(mapped)  # truncation toward zero, as vigra's cast
            if index < 0:
                outliers[0] += 1.0
            elif index >= bins:
                outliers[1] += 1.0
            else:
                histogram[index] += 1.0


@dataclass(frozen=True)
class RegionStatistics:
    """vigra's accumulators of one region: data values (n, C) and coordinates (n, D, x first)."""

    count: float
    sums: np.ndarray          # (C,)
    m2: np.ndarray            # central moments of orders 2..4, (C,) each
    m3: np.ndarray
    m4: np.ndarray
    minimum: np.ndarray       # (C,)
    maximum: np.ndarray
    data_scatter: np.ndarray  # flat upper triangle, C(C+1)/2
    coord_sum: np.ndarray     # (D,)
    coord_scatter: np.ndarray
    coord_min: np.ndarray
    coord_max: np.ndarray
    histogram: np.ndarray     # (64,) over the given range (first channel); empty when no range was given
    outliers: np.ndarray      # values left and right of the range
    histogram_mapping: tuple[float, float]  # (offset, scale): bin = scale · (value − offset)

    @property
    def mean(self) -> np.ndarray:
        return self.sums / self.count

    def variance(self) -> np.ndarray:
        return self.m2 / self.count

    def skewness(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return math.sqrt(self.count) * self.m3 / np.power(self.m2, 1.5)

    def kurtosis(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.count * self.m4 / (self.m2 * self.m2) - 3.0

    def covariance(self) -> np.ndarray:
        """Data scatter / n as a full (C, C) matrix."""
        return _full(self.data_scatter, len(self.sums)) / self.count

    def data_eigensystem(self) -> tuple[np.ndarray, np.ndarray]:
        return symmetric_eigensystem(_full(self.data_scatter, len(self.sums)))

    def coord_eigensystem(self) -> tuple[np.ndarray, np.ndarray]:
        return symmetric_eigensystem(_full(self.coord_scatter, len(self.coord_sum)))

    def quantiles(self) -> np.ndarray:
        """vigra's StandardQuantiles from the histogram (first channel), the region's min and max at the ends."""
        offset, scale = self.histogram_mapping
        return standard_quantiles(self.histogram, self.outliers, float(self.minimum[0]), float(self.maximum[0]), self.count,
                          scale, offset)


def region_statistics(values: np.ndarray, coords: np.ndarray,
                      histogram_range: tuple[float, float] | None = None) -> RegionStatistics:
    """All accumulators of one region: `values` (n, C) float32 in raster order, `coords` (n, D) with x first;
    the histogram (first channel) over `histogram_range` when given."""
    n_channels, n_dims = values.shape[1], coords.shape[1]
    sums, m2, m3, m4 = (np.zeros(n_channels) for _ in range(4))
    vmin, vmax = np.zeros(n_channels), np.zeros(n_channels)
    data_scatter = np.zeros(n_channels * (n_channels + 1) // 2)
    coord_sum, cmin, cmax = np.zeros(n_dims), np.zeros(n_dims), np.zeros(n_dims)
    coord_scatter = np.zeros(n_dims * (n_dims + 1) // 2)
    values = np.ascontiguousarray(values, dtype=np.float32)
    coords = np.ascontiguousarray(coords, dtype=np.int64)
    first_pass(values, coords, sums, m2, vmin, vmax, data_scatter, coord_sum, coord_scatter, cmin, cmax)
    histogram = np.zeros(HISTOGRAM_BINS if histogram_range is not None else 0)
    outliers = np.zeros(2)
    offset, scale = histogram_mapping(*(histogram_range or (0.0, 1.0)))
    second_pass(values, sums, float(len(values)), m3, m4, histogram, outliers, offset, scale)
    return RegionStatistics(float(len(values)), sums, m2, m3, m4, vmin, vmax, data_scatter, coord_sum, coord_scatter,
                            cmin, cmax, histogram, outliers, (offset, scale))


def histogram_mapping(lo: float, hi: float) -> tuple[float, float]:
    """vigra's RangeHistogramBase::setMinMax: (offset, scale); an empty range is widened by 64 ulp of 1."""
    lo, hi = float(lo), float(hi)
    if hi == lo:
        hi += HISTOGRAM_BINS * float(np.finfo(np.float64).eps)
    return lo, HISTOGRAM_BINS / (hi - lo)


def _full(flat: np.ndarray, size: int) -> np.ndarray:
    """vigra's flatScatterMatrixToScatterMatrix."""
    matrix = np.empty((size, size))
    k = 0
    for j in range(size):
        for i in range(j, size):
            matrix[i, j] = matrix[j, i] = flat[k]
            k += 1
    return matrix


@njit(cache=True, nogil=True)
def standard_quantiles(histogram: np.ndarray, outliers: np.ndarray, minimum: float, maximum: float, count: float,
               scale: float, offset: float) -> np.ndarray:
    """vigra's RangeHistogramBase::computeStandardQuantiles."""
    size = len(histogram)
    keypoints, cumulative_hist = [scale * (minimum - offset)], [0.0]
    if outliers[0] > 0.0:
        keypoints.append(0.0)
        cumulative_hist.append(outliers[0])
    cumulative = outliers[0]
    for k in range(size):
        if histogram[k] > 0.0:
            if keypoints[-1] <= k:
                keypoints.append(float(k))
                cumulative_hist.append(cumulative)
            cumulative += histogram[k]
            keypoints.append(float(k + 1))
            cumulative_hist.append(cumulative)
    if outliers[1] > 0.0:
        if keypoints[-1] != size:
            keypoints.append(float(size))
            cumulative_hist.append(cumulative)
        keypoints.append(scale * (maximum - offset))
        cumulative_hist.append(count)
    else:
        keypoints[-1] = scale * (maximum - offset)
        cumulative_hist[-1] = count
    result = np.zeros(len(QUANTILES))
    result[0], result[-1] = minimum, maximum
    inverse_scale = 1.0 / scale
    quantile, end, point = 1, len(QUANTILES) - 1, 0
    wanted = count * QUANTILES[quantile]
    while quantile < end:
        if cumulative_hist[point] < wanted and cumulative_hist[point + 1] >= wanted:
            t = ((wanted - cumulative_hist[point]) / (cumulative_hist[point + 1] - cumulative_hist[point])
                 * (keypoints[point + 1] - keypoints[point]))
            result[quantile] = inverse_scale * (t + keypoints[point]) + offset
            quantile += 1
            wanted = count * QUANTILES[quantile]
        else:
            point += 1
    return result
