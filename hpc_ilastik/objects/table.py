"""ilastik's object table (`TableExporter.do_export`, `exportFile.flatten_ilastik_feature_table`): one row
per object of every frame, as a numpy structured array.

Columns: `object_id` (running over all frames), `timestep`, `labelimage_oid` (the object's id in its
frame), `User Label`, `Predicted Class`, `Probability of <class>` per class, then the features: ilastik's
default features (bounding box, centre, size) and every selected feature, under ilastik's display names,
a feature of k values as `<name>_0` … `<name>_{k-1}` (x, y, z for coordinates), a display name only once.
Unlike ilastik, whose feature columns come in a random order (it iterates Python sets), the order is
fixed: default features, then plugins and features sorted by name (ilastik-workflows-spec.md §A.8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hpc_ilastik.objects import standard
from hpc_ilastik.objects.features import DEFAULT_FEATURES, DEFAULT_PLUGIN, FeatureSet

_STANDARD_NAMES = {
    "Count": "Size in pixels", "Maximum": "Maximum intensity", "Minimum": "Minimum intensity",
    "Coord<Minimum>": "Bounding Box Minimum", "Coord<Maximum>": "Bounding Box Maximum", "Mean": "Mean Intensity",
    "Variance": "Variance of Intensity", "Skewness": "Skewness of Intensity", "Kurtosis": "Kurtosis of Intensity",
    "RegionCenter": "Center of the object", "RegionRadii": "Radii of the object",
    "RegionAxes": "Principal components of the object", "Quantiles": "Quantiles of Intensity",
    "Histogram": "Histogram of Intensity", "Covariance": "Covariance of Channel Intensity", "Sum": "Total Intensity",
}
_SHAPE_NAMES = {
    "InputVolume": "Object Area", "HullVolume": "Convex Hull Area", "Convexity": "Convexity",
    "DefectVolumeMean": "Mean Defect Area", "DefectVolumeVariance": "Variance of Defect Area",
    "DefectVolumeSkewness": "Skewness of Defect Area", "DefectVolumeKurtosis": "Kurtosis of Defect Area",
    "DefectCount": "Number of Defects", "DefectDisplacementMean": "Mean Defect Displacement",
    "InputCenter": "Object Center", "HullCenter": "Convex Hull Center", "DefectCenter": "Defect Center",
    "Branch Count": "Number of Branches", "Hole Count": "Number of Holes",
    "Skeleton Center": "Center of the Skeleton", "Total Length": "Length of the Skeleton",
    "Average Length": "Average Branch Length",
}


def display_name(plugin: str, feature: str) -> str:
    """ilastik's display name of a feature (its plugins' `fill_properties`)."""
    if plugin in (standard.PLUGIN, DEFAULT_PLUGIN):
        if feature.endswith(standard.NEIGHBORHOOD):
            base = feature[: -len(standard.NEIGHBORHOOD)]
            return _STANDARD_NAMES.get(base, base) + standard.NEIGHBORHOOD
        return _STANDARD_NAMES.get(feature, feature)
    return _SHAPE_NAMES.get(feature, feature)


def feature_columns(features: FeatureSet, selection: Sequence[str] | None) -> list[tuple[str, str, str]]:
    """(display name, plugin, feature) of the table's feature columns: the default features, then every
    computed feature whose display or own name is in `selection` (None: all computed), each display name
    once."""
    candidates = [(DEFAULT_PLUGIN, name) for name in DEFAULT_FEATURES]
    candidates += [(plugin, name) for plugin in sorted(features) for name in sorted(features[plugin])]
    chosen, seen = [], set()
    for plugin, name in candidates:
        long_name = display_name(plugin, name)
        if long_name in seen:
            continue
        if plugin == DEFAULT_PLUGIN or selection is None or long_name in selection or name in selection:
            seen.add(long_name)
            chosen.append((long_name, plugin, name))
    return chosen


def object_table(frames: Sequence[Mapping[str, Mapping[str, np.ndarray]]], classes: Sequence[np.ndarray],
                 probabilities: Sequence[np.ndarray], class_names: Sequence[str],
                 columns: Sequence[tuple[str, str, str]]) -> np.ndarray:
    """The table: `frames[t]` plugin → feature → (n_t + 1, k) values (row 0 = background), `classes[t]` and
    `probabilities[t]` per object id of frame t (row 0 = background)."""
    counts = [len(c) - 1 for c in classes]
    n = sum(counts)
    widths = []
    for long_name, plugin, name in columns:
        k = next((np.asarray(f[plugin][name]).reshape(len(f[plugin][name]), -1).shape[1]
                  for f, count in zip(frames, counts) if count and name in f.get(plugin, {})), 1)
        widths.append(k)
    label_width = max([len(c) for c in class_names] + [1])
    dtype = [("object_id", np.int64), ("timestep", np.int64), ("labelimage_oid", np.int64),
             ("User Label", f"U{label_width}"), ("Predicted Class", f"U{label_width}")]
    dtype += [(f"Probability of {c}", np.float32) for c in class_names]
    for (long_name, _, _), k in zip(columns, widths):
        dtype += [(long_name, np.float32)] if k == 1 else [(f"{long_name}_{i}", np.float32) for i in range(k)]
    table = np.zeros(n, dtype=dtype)
    table["object_id"] = np.arange(n)
    start = 0
    for t, count in enumerate(counts):
        rows = slice(start, start + count)
        table["timestep"][rows] = t
        table["labelimage_oid"][rows] = np.arange(1, count + 1)
        table["User Label"][rows] = "0"
        table["Predicted Class"][rows] = [class_names[c - 1] for c in classes[t][1:]]
        for i, name in enumerate(class_names):
            table[f"Probability of {name}"][rows] = probabilities[t][1:, i]
        for (long_name, plugin, name), k in zip(columns, widths):
            if not count or name not in frames[t].get(plugin, {}):
                continue
            values = np.asarray(frames[t][plugin][name], dtype=np.float32).reshape(count + 1, -1)[1:]
            if k == 1:
                table[long_name][rows] = values[:, 0]
            else:
                for i in range(k):
                    table[f"{long_name}_{i}"][rows] = values[:, i]
        start += count
    return table
