"""ilastik's "CSV-Table" tracking export: `<filename>.csv`.

Source: ilastik `ilastik/plugins_default/tracking_csv_export.py`. One row per node of the graph (every traxel,
with or without a track), sorted by (frame, label id), written by `np.savetxt(..., delimiter=",", header=...,
comments="")` from a float64 table: columns `frame, labelimageId, trackId, lineageId, parentTrackId,
mergerLabelId` (no track/lineage −1, no parent 0, not split from a merger 0), then the features: categories in
the order the feature dict has them (those of the first node's frame), feature names sorted within a category,
"Histogram" left out, and the features of "Standard Object Features" that "Default features" also has left out
when both are there. A column is `<display name>_<k>` (spaces → "_") for 2-D features, `<display name>` for
1-D ones; its format is "%d" (truncating) if the name contains "Number_of", "Center_of" or "Bounding_Box" or
equals "Size_in_pixels", else "%f". A label beyond a feature's rows (e.g. a merger's new id in features that were
not recomputed) reads 9999 for "SquaredDistances" features, else 0.
"""

from __future__ import annotations

import io

import numpy as np

from hpc_ilastik.objects.table import display_name
from hpc_ilastik.tracking.plugins.base import (
    DEFAULT_CATEGORY,
    STANDARD_CATEGORY,
    PluginFile,
    TrackingExport,
    feature_values,
)

HEADERS = ["frame", "labelimageId", "trackId", "lineageId", "parentTrackId", "mergerLabelId"]
EXCLUDED = ("Histogram",)


def _integer_column(name: str) -> bool:
    return any(part in name for part in ("Number_of", "Center_of", "Bounding_Box")) or name == "Size_in_pixels"


def feature_columns(features: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, str, int | None]]:
    """(category, feature, column or None for a 1-D feature) of the table's feature columns, in order."""
    blocked: set[str] = set()
    if DEFAULT_CATEGORY in features and STANDARD_CATEGORY in features:
        blocked = set(features[DEFAULT_CATEGORY])
    columns: list[tuple[str, str, int | None]] = []
    for category, values in features.items():
        for name in sorted(values):
            if name in EXCLUDED or (category == STANDARD_CATEGORY and name in blocked):
                continue
            array = np.asarray(values[name])
            if array.ndim > 2:
                raise ValueError(f"feature {name} has {array.ndim} dimensions, the CSV table takes at most 2")
            if array.ndim == 2:
                columns += [(category, name, k) for k in range(array.shape[1])]
            elif array.ndim == 1:
                columns.append((category, name, None))
    return columns


def column_name(category: str, name: str, column: int | None) -> str:
    """The CSV header of a feature column."""
    long_name = display_name(category, name).replace(" ", "_")
    return long_name if column is None else f"{long_name}_{column}"


def export_csv(data: TrackingExport, filename: str) -> list[PluginFile]:
    """ilastik's "CSV-Table" plugin: `<filename>.csv`."""
    tracks, lineage = data.tracks, data.lineage
    n = len(tracks.frame)
    columns = feature_columns(data.features(int(tracks.frame[0]))) if n else []
    headers = HEADERS + [column_name(*column) for column in columns]
    formats = ["%d"] * len(HEADERS) + ["%d" if _integer_column(h) else "%f" for h in headers[len(HEADERS):]]
    table = np.zeros((n, len(headers)))
    table[:, 0], table[:, 1] = tracks.frame, tracks.label
    table[:, 2], table[:, 3] = lineage.track_id, lineage.lineage_id
    table[:, 4], table[:, 5] = lineage.parent_track_id, tracks.merger_label
    for t in np.unique(tracks.frame).tolist():
        rows = np.flatnonzero(tracks.frame == t)
        features = data.features(t)
        for c, (category, name, column) in enumerate(columns, start=len(HEADERS)):
            values = feature_values(category, features[category][name])
            labels = tracks.label[rows]
            inside = labels < len(values)
            default = 9999.0 if "SquaredDistances" in name else 0.0
            table[rows, c] = default
            table[rows[inside], c] = values[labels[inside]] if column is None else values[labels[inside], column]
    table = table[np.lexsort((table[:, 1], table[:, 0]))]
    text = io.StringIO()
    np.savetxt(text, table, header=",".join(headers), delimiter=",", comments="", fmt=formats)
    return [PluginFile(filename + ".csv", text.getvalue())]
