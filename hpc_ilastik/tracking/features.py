"""The per-object inputs of ilastik's tracking workflows: which object features a tracking run computes per
frame, ilastik's "Cell Division Features" of each object (from the next frame), and the object-count and
division classifiers' probabilities.

Sources (ilastik): `ilastik/applets/tracking/conservation/config.py` (`allFeaturesObjectCount`, the selected
sets), `ilastik/applets/trackingFeatureExtraction/config.py` (division feature names, template_size 50,
size_filter 4, squared_distance_default 9999, n_best_successors 3, scales 1), `trackingFeatures.py`
(`FeatureManager.computeFeatures_at` and the feature classes), `opTrackingFeatureExtraction.py`
(`OpDivisionFeatures`, `_filterFeaturesByDim`, `ComputedFeatureNamesAll/NoDivisions`),
`ilastik/workflows/tracking/{conservation,structured}/*Workflow.py` (the count classifier sees the vigra features,
the division classifier the vigra and division features), `ilastik/applets/objectClassification/
opObjectClassification.py` (`OpObjectPredict.execute`, `make_feature_array`) and
`ilastik/plugins_default/vigra_objfeats*.py` (plugins return only the names vigra computes, as float32).

Feature tables are plugin → feature → (n_objects + 1, k) arrays, row 0 the background, row k object k;
coordinates x, y(, z); label images (z, y, x) with z = 1 for 2-D frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.objects.classification import classify_objects
from hpc_ilastik.objects.features import DEFAULT_PLUGIN, HULL_2D, HULL_3D, SKELETON_2D, FeatureSet
from hpc_ilastik.objects.standard import PLUGIN as STANDARD_PLUGIN

Table = Mapping[str, Mapping[str, np.ndarray]]

DIVISION_PLUGIN = "Cell Division Features"
# computeFeatures_at skips every name containing "SquaredDistances" but SquaredDistances_<i>, so the selected
# "ChildrenRatio_SquaredDistances" is never computed (and never reaches a classifier).
DIVISION_FEATURES = ("ParentChildrenRatio_Count", "ParentChildrenRatio_Mean", "ChildrenRatio_Count",
                     "ChildrenRatio_Mean", "ParentChildrenAngle_RegionCenter", "SquaredDistances_0",
                     "SquaredDistances_1", "SquaredDistances_2")
TEMPLATE_SIZE = 50
SIZE_FILTER = 4
SQUARED_DISTANCE_DEFAULT = 9999.0
N_BEST = 3

# allFeaturesObjectCount, as far as it is computed: no "in neighborhood" feature (none has a margin, so
# ilastik's compute_local never runs and they are absent from every cached tracking table), and no convex-hull
# "Area" (vigra's convex hull features have no such name; the plugin's `cleanup` drops it).
_STANDARD = ("Coord<Maximum>", "Coord<Minimum>", "Count", "Kurtosis", "Maximum", "Mean", "Minimum", "RegionAxes",
             "RegionCenter", "RegionRadii", "Skewness", "Sum", "Variance")
_HULL = ("Convexity", "DefectCount", "DefectDisplacementMean", "DefectVolumeMean", "DefectVolumeVariance",
         "HullCenter", "InputCenter", "InputVolume")
_SKELETON = ("Average Length", "Branch Count", "Diameter", "Euclidean Diameter", "Hole Count", "Skeleton Center",
             "Terminal 1", "Terminal 2", "Total Length")


def tracking_feature_set(ndim: int) -> FeatureSet:
    """The object features ilastik's tracking workflows compute per frame (`allFeaturesObjectCount` filtered by
    `_filterFeaturesByDim`: 2-D plugins on 2-D data, the 3-D hull on 3-D data), as ilastik really gets them.

    Everything either classifier selects (`selectedFeaturesObjectCount`, `selectedFeaturesDiv`) and every
    feature of ilastik's tracking exports is in it; the division classifier's "Count", "Mean", "Variance" and
    the RegionCenter and Count the division features need are Standard Object Features. The "in neighborhood"
    features of `allFeaturesObjectCount` are left out because ilastik never computes them (no margin is set),
    the hull's "Area" because vigra has no such feature."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    wanted: dict[str, dict[str, dict]] = {STANDARD_PLUGIN: {name: {} for name in _STANDARD}}
    if ndim == 2:
        wanted[HULL_2D] = {name: {} for name in _HULL}
        wanted[SKELETON_2D] = {name: {} for name in _SKELETON}
    else:
        wanted[HULL_3D] = {name: {} for name in _HULL}
    return wanted


def has_successor_features(t: int, n_frames: int) -> bool:
    """Whether ilastik computes frame t's division features from frame t + 1: only for t + 2 < n_frames.

    `OpDivisionFeatures.execute` reads the next frame only when `roi.stop + 1 < n_frames`, and its cache asks for
    one frame at a time (roi [t, t + 1)), so the last two frames get the defaults (every fixture shows it)."""
    return t + 2 < n_frames


def division_features(current: Table, following: Table | None, next_labels: np.ndarray | None,
                      ndim: int) -> dict[str, np.ndarray]:
    """ilastik's "Cell Division Features" of every object of frame t: name → (n + 1, k) float64, row 0 the
    background (ratios and angle 0, distances 9999).

    `current` and `following` are the feature tables of frames t and t + 1 (their Standard Object Features
    Count, Mean and RegionCenter are used, as float32 as ilastik keeps them); `next_labels` is frame t + 1's
    label image. Without a following frame (None, see `has_successor_features`) every object gets the defaults.
    Per object (`computeFeatures_at`): the objects of frame t + 1 with a pixel in the window [c - 25, c + 25)
    around its rounded RegionCenter c (clipped to the image) and a Count of at least 4, sorted by the distance of
    their RegionCenters (ties by label); "SquaredDistances_i" is the i-th smallest distance (not squared, as
    ilastik has it), the ratios and the angle use the nearest two (three for the angle) of them."""
    own = current[STANDARD_PLUGIN]
    centers = np.asarray(own["RegionCenter"], dtype=np.float32)
    counts = np.asarray(own["Count"], dtype=np.float32).reshape(len(centers), -1)
    means = np.asarray(own["Mean"], dtype=np.float32).reshape(len(centers), -1)
    if centers.ndim != 2 or centers.shape[1] != ndim:
        raise ValueError(f"RegionCenter must be ({len(centers)}, {ndim}), got {centers.shape}")
    rows = len(centers)
    result = {name: np.zeros((rows, means.shape[1] if name.endswith("_Mean") else 1)) for name in DIVISION_FEATURES}
    for i in range(N_BEST):
        result[f"SquaredDistances_{i}"][:] = SQUARED_DISTANCE_DEFAULT
    if following is None or next_labels is None or rows < 2:
        return result
    theirs = following[STANDARD_PLUGIN]
    next_centers = np.asarray(theirs["RegionCenter"], dtype=np.float32)
    next_counts = np.asarray(theirs["Count"], dtype=np.float32).reshape(len(next_centers), -1)[:, 0]
    next_means = np.asarray(theirs["Mean"], dtype=np.float32).reshape(len(next_centers), -1)
    labels = np.asarray(next_labels)
    labels = labels[np.newaxis] if labels.ndim == 2 else labels
    if labels.ndim != 3 or (ndim == 2 and labels.shape[0] != 1):
        raise ValueError(f"next_labels must be a (z, y, x) label image of a {ndim}-D frame, got {labels.shape}")
    if labels.size and int(labels.max()) >= len(next_centers):
        raise ValueError(f"next_labels holds label {int(labels.max())} but the next frame's table has only "
                         f"{len(next_centers) - 1} objects")
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(1, rows):
            candidates = _window_labels(labels, centers[k])
            candidates = candidates[(candidates != 0) & (next_counts[candidates] >= SIZE_FILTER)]
            offsets = next_centers[candidates].astype(np.float64) - centers[k].astype(np.float64)
            distances = np.sqrt(_dot(offsets, offsets))
            order = np.argsort(distances, kind="stable")[:N_BEST]
            best = candidates[order]
            for i, distance in enumerate(distances[order]):
                result[f"SquaredDistances_{i}"][k] = np.float32(distance)
            if len(best) < 2:
                continue
            one, two = best[0], best[1]
            result["ParentChildrenRatio_Count"][k] = _nan_to_zero(counts[k] / (next_counts[one] + next_counts[two]))
            result["ParentChildrenRatio_Mean"][k] = _nan_to_zero(means[k] / (next_means[one] + next_means[two]))
            result["ChildrenRatio_Count"][k] = _children_ratio(next_counts[[one]], next_counts[[two]])
            result["ChildrenRatio_Mean"][k] = _children_ratio(next_means[one], next_means[two])
            result["ParentChildrenAngle_RegionCenter"][k] = _largest_angle(next_centers[best] - centers[k])
    return result


def _window_labels(labels: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The labels in the window [round(c) - 25, round(c) + 25) per axis around a centre (x, y[, z]); Python 3's
    round (half to even), as ilastik ≥ 1.3.3 runs it."""
    half = TEMPLATE_SIZE // 2
    window = [slice(None)] * 3
    for axis, coordinate in enumerate(np.rint(center).astype(np.int64)):
        size = labels.shape[2 - axis]
        window[2 - axis] = slice(max(int(coordinate) - half, 0), min(int(coordinate) + half, size))
    return np.unique(labels[tuple(window)]).astype(np.int64)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products summed left to right in float64, as ilastik's `dotproduct` sums them."""
    total = np.zeros(a.shape[:-1])
    for axis in range(a.shape[-1]):
        total = total + a[..., axis] * b[..., axis]
    return total


def _nan_to_zero(ratio: np.ndarray) -> np.ndarray:
    """A float32 ratio with NaN → 0, ilastik's default value (±inf stays)."""
    return np.where(np.isnan(ratio), np.float32(0), ratio)


def _children_ratio(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """ChildrenRatio: first / second in float32, NaN → 0, values above 1 inverted."""
    ratio = _nan_to_zero(first / second)
    return np.where(ratio > 1, np.float32(1) / ratio, ratio)


def _largest_angle(vectors: np.ndarray) -> float:
    """ParentChildrenAngle: the largest angle (degrees) between two of the vectors from the parent's centre to
    its best successors' (float32 differences, then float64 as ilastik multiplies them by the scales); a pair
    with a zero vector, or whose cosine leaves [-1, 1] by rounding (math.acos fails), counts 0, as in ilastik."""
    vectors = vectors.astype(np.float64)
    lengths = np.sqrt(_dot(vectors, vectors))
    largest = 0.0
    for i, j in combinations(range(len(vectors)), 2):
        norm = lengths[i] * lengths[j]
        if norm == 0:
            continue
        cosine = float(_dot(vectors[i], vectors[j])) / norm
        if abs(cosine) <= 1:
            largest = max(largest, math.acos(cosine) * 180 / math.pi)
    return largest


def computed_selection(selected: FeatureSet, table: Table) -> FeatureSet:
    """The selected features a classifier really gets: those in the table (ilastik's `make_feature_array` walks
    the computed features and keeps the selected ones, so a selected feature that was not computed, e.g. "Area"
    or any "2D ..." feature on 3-D data, is left out silently); ilastik's default features never."""
    return {plugin: {name: parameters for name, parameters in names.items() if name in table[plugin]}
            for plugin, names in selected.items() if plugin in table and plugin != DEFAULT_PLUGIN}


def object_probabilities(table: Table, selected: FeatureSet, forest: ForestEnsemble | None,
                         n_classes: int) -> np.ndarray:
    """The count or division classifier's probabilities of a frame's objects as ilastik's `OpObjectPredict`
    gives them: (n + 1, n_classes) float32, row 0 zeros; all zeros without a classifier. `table` holds the
    frame's features (with the "Cell Division Features" for the division classifier), `selected` the project's
    SelectedFeatures of that classifier."""
    rows = max((len(values) for features in table.values() for values in features.values()), default=1)
    restricted = computed_selection(selected, table)
    if forest is not None and rows > 1 and not any(restricted.values()):
        raise UserError("none of the features the tracking classifier selects is computed by the tracking workflow: "
                        f"it selects {', '.join(f'{p}/{n}' for p, names in selected.items() for n in names)}")
    _, probabilities = classify_objects(table, restricted, forest, rows - 1, n_classes)
    return probabilities
