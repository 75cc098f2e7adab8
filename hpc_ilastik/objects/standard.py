"""ilastik's "Standard Object Features" plugin: vigra's region features of one object, and their "in
neighborhood" variants over the object's surroundings.

Single-channel data gets vigra's single-band set (with Histogram and Quantiles), several channels the
multi-band set (with Covariance and PrincipalAxes). Coordinates are x, y(, z). `Coord<Maximum>` is the
exclusive bound, as ilastik ≥ 1.3.3post3 reports it. The neighbourhood of an object is every pixel of the
object's bounding box grown by the margin whose distance to the object (pixel pitch max(margin) //
margin per axis) is below max(margin), the object excluded (ilastik-workflows-spec.md §A.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from hpc_ilastik.errors import UserError
from hpc_ilastik.objects.accumulators import RegionStatistics, region_statistics

PLUGIN = "Standard Object Features"
_COMMON = ("Count", "Sum", "Mean", "Variance", "Skewness", "Kurtosis", "Minimum", "Maximum", "RegionCenter",
           "RegionRadii", "RegionAxes", "Coord<Minimum>", "Coord<Maximum>")
SINGLE_BAND = _COMMON + ("Histogram", "Quantiles")
MULTI_BAND = _COMMON + ("Covariance", "PrincipalAxes", "Principal<Variance>")
NEIGHBORHOOD = " in neighborhood"
LOCAL = ("Mean", "Variance", "Skewness", "Kurtosis", "Histogram", "Covariance", "Minimum", "Maximum", "Sum")


def available(n_channels: int) -> tuple[str, ...]:
    """The features the plugin offers for data with this many channels."""
    own = SINGLE_BAND if n_channels == 1 else MULTI_BAND
    return own + tuple(name + NEIGHBORHOOD for name in LOCAL if name in own)


def check_names(names: Sequence[str], n_channels: int) -> None:
    """UserError for a selected feature this plugin cannot compute on such data."""
    offered = available(n_channels)
    unknown = [name for name in names if name not in offered]
    if unknown:
        kind = "one channel" if n_channels == 1 else f"{n_channels} channels"
        raise UserError(f"the project selects the object feature(s) {', '.join(unknown)} of '{PLUGIN}', which "
                        f"hpc-ilastik does not compute for data with {kind} (it computes: {', '.join(offered)})")


def feature_value(stats: RegionStatistics, name: str) -> np.ndarray:
    """One feature of a region as vigra returns it, flattened row-major (float64)."""
    if name == "Count":
        return np.array([stats.count])
    if name == "Sum":
        return stats.sums
    if name == "Mean":
        return stats.mean
    if name == "Variance":
        return stats.variance()
    if name == "Skewness":
        return stats.skewness()
    if name == "Kurtosis":
        return stats.kurtosis()
    if name == "Minimum":
        return stats.minimum
    if name == "Maximum":
        return stats.maximum
    if name == "Histogram":
        return stats.histogram
    if name == "Quantiles":
        return stats.quantiles()
    if name == "RegionCenter":
        return stats.coord_sum / stats.count
    if name == "RegionRadii":
        return np.sqrt(stats.coord_eigensystem()[0] / stats.count)
    if name == "RegionAxes":
        return stats.coord_eigensystem()[1].ravel()
    if name == "Coord<Minimum>":
        return stats.coord_min
    if name == "Coord<Maximum>":
        return stats.coord_max + 1.0
    if name == "Covariance":
        return stats.covariance().ravel()
    if name == "PrincipalAxes":
        return stats.data_eigensystem()[1].ravel()
    if name == "Principal<Variance>":
        return stats.data_eigensystem()[0] / stats.count
    raise ValueError(f"unknown feature {name!r}")


def region_features(values: np.ndarray, coords: np.ndarray, names: Sequence[str],
                    histogram_range: tuple[float, float] | None) -> dict[str, np.ndarray]:
    """The named features of one region: `values` (n, C) float32 in raster order, `coords` (n, D) x first."""
    wants_histogram = any(name in ("Histogram", "Quantiles") for name in names)
    stats = region_statistics(values, coords, histogram_range if wants_histogram else None)
    return {name: feature_value(stats, name) for name in names}


def neighborhood_extent(low: Sequence[int], high: Sequence[int], margin: Sequence[int],
                        shape: Sequence[int]) -> tuple[slice, ...]:
    """ilastik's crop for neighbourhood features, per axis: [low − margin, high + 1 + margin) clipped to the
    image, `high` being the exclusive bounding-box end (so one pixel more than needed on the high side)."""
    return tuple(slice(max(lo - m, 0), min(hi + 1 + m, n)) for lo, hi, m, n in zip(low, high, margin, shape))


def neighborhood_masks(object_mask: np.ndarray, margin: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(object and neighbourhood, neighbourhood only) in the object's crop (`margin` per axis of the mask):
    pixels whose distance to the object, with pixel pitch max(margin) // margin per axis (0 for a margin
    of 0: that axis does not count), is below max(margin)."""
    largest = max(margin)
    pitch = [largest // m if m else 0 for m in margin]
    distance = ndimage.distance_transform_edt(~object_mask, sampling=pitch).astype(np.float32)
    passed = distance < np.float32(largest)
    return passed, passed & ~object_mask


def local_names(names: Sequence[str]) -> list[str]:
    """The base features of the selected "in neighborhood" features."""
    return [name[: -len(NEIGHBORHOOD)] for name in names if name.endswith(NEIGHBORHOOD)]
