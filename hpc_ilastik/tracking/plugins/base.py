"""The input of the tracking export plugins (`TrackingExport`) and their output (`PluginFile`); the package
re-exports both (see its docstring for the plugins and the files they make)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hpc_ilastik.tracking.lineage import Lineage, TrackGraph

Features = dict[str, dict[str, np.ndarray]]
DEFAULT_CATEGORY, STANDARD_CATEGORY = "Default features", "Standard Object Features"
VIGRA_CATEGORIES = (DEFAULT_CATEGORY, STANDARD_CATEGORY)


@dataclass(frozen=True)
class TrackingExport:
    """What a tracking export plugin reads.

    `label_frame(t)`: frame t's label image, (y, x) or (z, y, x), ids = `tracks.label` (merger-relabelled when
    mergers were resolved). `features(t)`: plugin (category) → feature → (max id + 1, k) values per label id, the
    categories in ilastik's order (e.g. "Standard Object Features", "Cell Division Features"); features with
    coordinates in x, y(, z) order as ilastik's; the plugins read vigra's features ("Default features",
    "Standard Object Features") as float32, as ilastik holds them, every other feature as given (ilastik's
    division features are float64). `raw_frame(t)`: frame t's raw data (y, x, c) or (z, y, x, c),
    only for Contours-With-Head. `bdv_xml`: the BigDataViewer XML file (`--big_data_viewer_xml_file`), only
    for Fiji-MaMuT.
    """

    tracks: TrackGraph
    lineage: Lineage
    n_frames: int
    ndim: int
    label_frame: Callable[[int], np.ndarray]
    features: Callable[[int], Features]
    raw_frame: Callable[[int], np.ndarray] | None = None
    bdv_xml: str | None = None

    def frame_nodes(self) -> list[dict[int, int]]:
        """Per frame: label id → node index (the nodes ilastik's `hypothesesGraph.hasNode((t, id))` finds)."""
        nodes: list[dict[int, int]] = [{} for _ in range(self.n_frames)]
        for n, (t, label) in enumerate(zip(self.tracks.frame.tolist(), self.tracks.label.tolist())):
            nodes[t][label] = n
        return nodes


class PluginFile(NamedTuple):
    """One file a plugin makes: its path (`filename` with the plugin's suffix or folder) and its content."""

    path: str
    content: str | np.ndarray


def feature_values(category: str, values: np.ndarray) -> np.ndarray:
    """A feature's values as ilastik holds them: vigra's region features in float32, others as they come."""
    return np.asarray(values, dtype=np.float32 if category in VIGRA_CATEGORIES else None)
