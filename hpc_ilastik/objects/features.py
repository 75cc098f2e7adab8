"""The object features ilastik's plugins compute, one object at a time on a crop around it, and the feature
matrix an object classifier sees.

Plugins: "Standard Object Features" (vigra's region accumulators and their "in neighborhood" variants),
"2D Convex Hull Features", "3D Convex Hull Features", "2D Skeleton Features"; ilastik's "Default
features" (Coord<Minimum>, Coord<Maximum>, RegionCenter, Count) are always computed. An object's values
depend only on the pixels of its crop, visited in raster order as vigra visits the whole frame, so they
do not depend on how the frame was split into blocks. Coordinates are x, y(, z) in the frame.
The classifier's columns: plugins sorted by name, features sorted by name within a plugin, each
feature's values flattened, NaN and ±inf → 0, float32 (ilastik-workflows-spec.md §A.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.objects import convex_hull, skeleton, standard

DEFAULT_PLUGIN = "Default features"
DEFAULT_FEATURES = ("Coord<Minimum>", "Coord<Maximum>", "RegionCenter", "Count")
HULL_2D, HULL_3D, SKELETON_2D = "2D Convex Hull Features", "3D Convex Hull Features", "2D Skeleton Features"
_HULL_POINTS = ("InputCenter", "HullCenter", "DefectCenter")

FeatureSet = Mapping[str, Mapping[str, Mapping[str, object]]]  # plugin → feature → parameters (e.g. margin)


@dataclass(frozen=True)
class ObjectCrop:
    """One object in a crop of its frame: raw values (z, y, x, c) float32, the object's mask, the crop's
    start in the frame (z, y, x), and the frame's shape (z, y, x)."""

    raw: np.ndarray
    mask: np.ndarray
    origin: tuple[int, int, int]
    frame_shape: tuple[int, int, int]

    @property
    def ndim(self) -> int:
        """2 for a frame one slice thick (vigra then sees a 2-D image), else 3."""
        return 2 if self.frame_shape[0] == 1 else 3


def margin_zyx(features: FeatureSet, ndim: int) -> tuple[int, int, int]:
    """ilastik's max_margin over every feature's `margin` parameter (x, y[, z] order), as (z, y, x)."""
    margin = [0, 0, 0]
    for plugin in features.values():
        for parameters in plugin.values():
            given = parameters.get("margin") if isinstance(parameters, Mapping) else None
            if given is None:
                continue
            values = [int(v) for v in np.atleast_1d(given)]
            for axis, value in enumerate(values * 3 if len(values) == 1 else values[:3]):
                margin[axis] = max(margin[axis], value)
    if ndim == 2:
        margin[2] = 0
    return margin[2], margin[1], margin[0]


def crop_extent(low: Sequence[int], high: Sequence[int], features: FeatureSet,
                frame_shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The crop an object's features need: ilastik's neighbourhood box (bounding box grown by the margin, and
    one more pixel on the high side), at least one pixel around the box (so that the crop's edge is
    background or the frame's edge, as the skeleton and hull need), clipped to the frame."""
    ndim = 2 if frame_shape[0] == 1 else 3
    margin = [max(m, 1) for m in margin_zyx(features, ndim)]
    return tuple(slice(max(lo - m, 0), min(hi + 1 + m, n)) for lo, hi, m, n in zip(low, high, margin, frame_shape))


def check_features(features: FeatureSet, n_channels: int, ndim: int) -> None:
    """UserError for a plugin or feature hpc-ilastik cannot compute on such data."""
    known = {standard.PLUGIN, HULL_2D, HULL_3D, SKELETON_2D}
    for plugin, names in features.items():
        if plugin not in known:
            raise UserError(f"the project uses the object feature plugin '{plugin}', which hpc-ilastik does not have "
                            f"(it has: {', '.join(sorted(known))})")
        if plugin == standard.PLUGIN:
            standard.check_names(list(names), n_channels)
        elif (plugin == HULL_3D) != (ndim == 3):
            raise UserError(f"the project uses '{plugin}', which does not apply to {ndim}-D images")


def object_features(crop: ObjectCrop, features: FeatureSet,
                    histogram_range: tuple[float, float] | None) -> dict[str, dict[str, np.ndarray]]:
    """Every selected feature of one object, plus ilastik's default features: plugin → feature → values
    (float64, flattened). `histogram_range` is the frame's range of raw values over all objects."""
    result: dict[str, dict[str, np.ndarray]] = {}
    coords = np.stack(np.nonzero(crop.mask), axis=1) + np.asarray(crop.origin)
    coords_xyz = coords[:, ::-1][:, :crop.ndim]
    values = crop.raw[crop.mask]
    wanted = set(DEFAULT_FEATURES) | {n for n in features.get(standard.PLUGIN, ()) if not n.endswith(standard.NEIGHBORHOOD)}
    computed = standard.region_features(values, coords_xyz, sorted(wanted), histogram_range)
    result[DEFAULT_PLUGIN] = {name: computed[name] for name in DEFAULT_FEATURES}
    for plugin, names in features.items():
        if plugin == standard.PLUGIN:
            own = {name: computed[name] for name in names if name in computed}
            own.update(_neighborhood(crop, features, [n for n in names if n.endswith(standard.NEIGHBORHOOD)]))
        else:
            own = _shape_features(crop, plugin, names)
        result[plugin] = own
    return result


def _neighborhood(crop: ObjectCrop, features: FeatureSet, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The "<feature> in neighborhood" values of one object."""
    if not names:
        return {}
    margin = margin_zyx(features, crop.ndim)
    found = np.nonzero(crop.mask)
    low = [int(i.min()) for i in found]
    high = [int(i.max()) + 1 for i in found]
    box = standard.neighborhood_extent(low, high, margin, crop.mask.shape)
    if crop.ndim == 2:  # vigra sees the squeezed 2-D image
        _, context = standard.neighborhood_masks(crop.mask[box][0], margin[1:])
        context = context[np.newaxis]
    else:
        _, context = standard.neighborhood_masks(crop.mask[box], margin)
    region_values = crop.raw[box][context]
    base = standard.local_names(names)
    if not len(region_values):
        return {name + standard.NEIGHBORHOOD: np.full(_width(name, crop.raw.shape[-1]), np.nan) for name in base}
    histogram_range = (float(region_values[:, 0].min()), float(region_values[:, 0].max()))
    coords = np.stack(np.nonzero(context), axis=1)[:, ::-1]
    computed = standard.region_features(region_values, coords, base, histogram_range)
    return {name + standard.NEIGHBORHOOD: computed[name] for name in base}


def _width(base: str, n_channels: int) -> int:
    """How many values a neighbourhood feature has."""
    return {"Histogram": 64, "Covariance": n_channels * n_channels}.get(base, n_channels)


def _shape_features(crop: ObjectCrop, plugin: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Convex hull or skeleton features of the object alone (other objects in the crop are background)."""
    labels = crop.mask.astype(np.uint32)
    shift = np.asarray(crop.origin[::-1][:crop.ndim], dtype=np.float64)
    if plugin == HULL_3D:
        computed = convex_hull.convex_hull_features_3d(labels)
    elif plugin == HULL_2D:
        computed = convex_hull.convex_hull_features_2d(labels[0])
    else:  # points of an object without a skeleton stay vigra's zeros
        computed = skeleton.skeleton_features(labels[0], origin=tuple(shift))
    own = {}
    for name in names:
        if name not in computed:
            raise UserError(f"the object feature '{name}' of '{plugin}' is not one hpc-ilastik computes "
                            f"(it computes: {', '.join(sorted(computed))})")
        value = np.asarray(computed[name][1], dtype=np.float64).ravel()
        own[name] = value + shift if name in _HULL_POINTS and plugin != SKELETON_2D else value
    return own


def feature_matrix(table: Mapping[str, Mapping[str, np.ndarray]], selected: FeatureSet) -> np.ndarray:
    """ilastik's classifier input: the selected features' columns (plugins and features sorted by name),
    one row per object, NaN and ±inf → 0, float32. `table` holds (n_objects, k) arrays per feature."""
    columns = []
    for plugin in sorted(selected):
        if plugin == DEFAULT_PLUGIN:
            continue
        for name in sorted(selected[plugin]):
            columns.append(np.asarray(table[plugin][name], dtype=np.float32).reshape(len(table[plugin][name]), -1))
    if not columns:
        raise UserError("the project's object classifier uses no features")
    matrix = np.concatenate(columns, axis=1)
    matrix[~np.isfinite(matrix)] = 0
    return matrix
