"""The groups of an "Edge Training With Multicut" project (ilastik-workflows-spec.md §C): the watershed
parameters (`DT Watershed`), the edge features per voxel channel, the edge labels, the edge classifier and
the multicut settings (`Training and Multicut`).

Facts from ilastik's `applets/wsdt/wsdtSerializer.py` (version 0.2; `BlockwiseWatershed` is False when
absent), `applets/edgeTraining/edgeTrainingSerializer.py` and `applets/multicut/multicutSerializer.py`.
Projects of ilastik 1.2 store the watershed under older names (`Pmin`, `SigmaMinima`, ...); ilastik reads
none of them but `ChannelSelections` and runs with its defaults, and so do we (saying so once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble, read_classifier
from hpc_ilastik.graphs.multicut import DEFAULT_SOLVER
from hpc_ilastik.project.common import Project, damage_is_user_error, open_ilp, read_list, read_number, read_text
from hpc_ilastik.project.pixel_classification import read_label_block

log = logging.getLogger(__name__)

_OLD_WATERSHED_NAMES = ("Pmin", "MinMembraneSize", "MinSegmentSize", "SigmaMinima", "SigmaWeights", "GroupSeeds",
                        "PreserveMembranePmaps")


@dataclass(frozen=True)
class WatershedSettings:
    """ilastik's DT watershed parameters (opWsdt's slot defaults where the project stores none)."""

    channels: tuple[int, ...] = (0,)
    threshold: float = 0.5
    min_size: int = 100
    sigma: float = 3.0
    alpha: float = 0.9
    pixel_pitch: tuple[float, ...] = ()
    blockwise: bool = False


@dataclass(frozen=True)
class MulticutProject(Project):
    """An Edge Training With Multicut project."""

    watershed: WatershedSettings
    feature_names: dict[str, list[str]]        # voxel channel name → its edge feature names, in stored order
    train_forest: bool                         # False: edge probabilities are the normalised mean boundary
    classifier: ForestEnsemble | None
    classifier_features: list[str]             # the classifier's columns, "<channel> <feature>"
    beta: float = 0.5
    solver_name: str = DEFAULT_SOLVER
    probability_threshold: float = 0.5
    edge_labels: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)  # per lane

    def cached_superpixels(self, lane_index: int) -> np.ndarray | None:
        """The superpixels ilastik cached for a training lane (`DT Watershed/Superpixels`), tzyx uint32: the ones
        its edge labels name; None when the project has none for that lane."""
        with damage_is_user_error(self.path), open_ilp(self.path) as f:
            group = f.get(f"DT Watershed/Superpixels/superpixels{lane_index:03d}")
            if group is None or not len(group):
                return None
            ref = self.lanes[lane_index].roles.get("Probabilities") or self.lanes[lane_index].roles.get("Raw Data")
            axes = "".join(a for a in (ref.axes if ref is not None else "zyx") if a != "c") + "c"
            blocks = [read_label_block(group[name], axes, self.path, np.uint32) for name in sorted(group)]
        shape = tuple(max(slices[i].stop for slices, _ in blocks) for i in range(4))
        image = np.zeros(shape, dtype=np.uint32)
        for slices, values in blocks:
            image[slices[:4]] = values[..., 0]
        return image


def read_multicut(f: h5py.File, common: Project) -> MulticutProject:
    """The multicut groups of an open project."""
    training = f.get("Training and Multicut")
    if training is None:
        raise UserError(f"The project {common.path} has no 'Training and Multicut' group; it is incomplete.")
    output = training.get("Output")
    classifier = read_classifier(output) if output is not None and any(k.startswith("Forest") for k in output) \
        else None
    stored_train = read_number(training, "TrainRandomForest")
    return MulticutProject(
        **{slot.name: getattr(common, slot.name) for slot in fields(common)},
        watershed=_watershed(f.get("DT Watershed"), common.path),
        feature_names=_feature_names(training.get("FeatureNames")),
        train_forest=True if stored_train is None else bool(stored_train),
        classifier=classifier,
        classifier_features=[str(n) for n in read_list(output, "feature_names") or []] if output is not None else [],
        beta=_number(training, "Beta", 0.5),
        solver_name=read_text(training["SolverName"]) if "SolverName" in training else DEFAULT_SOLVER,
        probability_threshold=_number(training, "ProbabilityThreshold", 0.5),
        edge_labels=_edge_labels(training.get("EdgeLabelsDict")),
    )


def _number(group: h5py.Group, name: str, default: float) -> float:
    value = read_number(group, name)
    return default if value is None else value


def _watershed(group: h5py.Group | None, path: str) -> WatershedSettings:
    """The stored watershed parameters; the old (1.2) names are ignored as ilastik ignores them."""
    defaults = WatershedSettings()
    if group is None:
        return defaults
    channels = read_list(group, "ChannelSelections")
    pitch = read_list(group, "PixelPitch")
    settings = WatershedSettings(
        channels=tuple(int(c) for c in channels) if channels else defaults.channels,
        threshold=_number(group, "Threshold", defaults.threshold),
        min_size=int(_number(group, "MinSize", defaults.min_size)),
        sigma=_number(group, "Sigma", defaults.sigma),
        alpha=_number(group, "Alpha", defaults.alpha),
        pixel_pitch=tuple(float(p) for p in pitch) if pitch else (),
        blockwise=bool(_number(group, "BlockwiseWatershed", 0.0)),
    )
    old = [name for name in _OLD_WATERSHED_NAMES if name in group]
    if old and "Threshold" not in group:
        log.warning("%s stores its watershed settings under ilastik 1.2's names (%s), which ilastik no longer reads; "
                    "running with ilastik's defaults (threshold %g, minimum size %d, sigma %g, alpha %g), as ilastik "
                    "does", path, ", ".join(old), settings.threshold, settings.min_size, settings.sigma,
                    settings.alpha)
    return settings


def _feature_names(group: h5py.Group | None) -> dict[str, list[str]]:
    """`FeatureNames`: one dataset per voxel channel name, holding that channel's feature names."""
    if group is None:
        return {}
    return {name: [str(v) for v in read_list(group, name) or []] for name in group}


def _edge_labels(group: h5py.Group | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per lane (by the number in `EdgeLabels####`): the labelled superpixel pairs (n, 2) and their labels
    (1 = merge, 2 = split)."""
    if group is None:
        return []
    lanes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for name in group:
        pairs = np.asarray(group[name]["sp_ids"][()], dtype=np.int64).reshape(-1, 2)
        labels = np.asarray(group[name]["labels"][()], dtype=np.int64).ravel()
        lanes[int(name[len("EdgeLabels"):])] = (pairs, labels)
    empty = (np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64))
    return [lanes.get(i, empty) for i in range(max(lanes, default=-1) + 1)]
