"""The groups of tracking projects (ilastik 1.2-1.4): "Automatic Tracking Workflow (Conservation Tracking)" and
"Structured Learning Tracking Workflow", from binary or prediction images.

Read: the tracking `Parameters` (group `ConservationTracking` or `StructuredTracking`, a stored dictionary, see
`ilastik/applets/tracking/base/trackingSerializer.py`), the object-count classifier (`CountClassification`) and the
division classifier (`DivisionDetection`), both in the object-classification layout (`opObjectClassification`:
LabelNames, SelectedFeatures, ClassifierForests, LabelInputs), the thresholding of the prediction variants, the
user's track annotations (`TrackingAnnotations`, `annotationsSerializer.py`) and the export settings
(`Tracking Result Export`). The pickled slots (hypotheses graph, export settings, resolved mergers) are not read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble, read_classifier
from hpc_ilastik.objects.threshold import ThresholdSettings
from hpc_ilastik.project.common import Project, read_export_settings, read_list, read_text
from hpc_ilastik.project.names import TRACKING
from hpc_ilastik.project.object_classification import Features, read_feature_dict, read_object_labels, read_threshold

WORKFLOWS = TRACKING
CONSERVATION_BINARY, CONSERVATION_PREDICTION, STRUCTURED_BINARY, STRUCTURED_PREDICTION = WORKFLOWS
FROM_PREDICTIONS = (CONSERVATION_PREDICTION, STRUCTURED_PREDICTION)
_EXPORT_GROUP = "Tracking Result Export"

# `OpConservationTracking.track`'s defaults, for parameters a project does not store
DEFAULT_PARAMETERS: dict[str, Any] = {
    "size_range": (0, 100000), "scales": (1.0, 1.0, 1.0), "maxDist": 30.0, "maxObj": 2, "divThreshold": 0.5,
    "withTracklets": False, "detWeight": 10.0, "divWeight": 10.0, "transWeight": 10.0, "withDivisions": True,
    "withClassifierPrior": False, "withMergerResolution": True, "borderAwareWidth": 0.0, "appearanceCost": 500.0,
    "disappearanceCost": 500.0, "max_nearest_neighbors": 3, "solver": "Flow-based",
}


@dataclass(frozen=True)
class ObjectClassifier:
    """`CountClassification` or `DivisionDetection`: a forest over object features, or the labels to train one."""

    label_names: list[str]
    selected_features: Features
    forest: ForestEnsemble | None
    object_labels: list[list[np.ndarray]]  # per lane, per frame: the class of each object (row = object id)

    @property
    def trainable(self) -> bool:
        return any(np.count_nonzero(frame) for lane in self.object_labels for frame in lane)


@dataclass(frozen=True)
class TrackAnnotations:
    """The user's annotated tracks of the first lane: frame → object id → the track ids the object belongs to
    (−1: a false detection), and the annotated divisions: parent track → (child track, child track, frame
of the parent's last appearance)."""

    labels: dict[int, dict[int, frozenset[int]]]
    divisions: dict[int, tuple[int, int, int]]


@dataclass(frozen=True)
class TrackingProject(Project):
    """A tracking project of any of the four variants (`workflow_name` says which)."""

    structured: bool
    parameters: dict[str, Any]  # ilastik's names (maxObj, size_range, ...), stored values over the defaults
    threshold: ThresholdSettings | None  # the prediction-image variants
    count_classifier: ObjectClassifier | None
    division_classifier: ObjectClassifier | None
    annotations: TrackAnnotations | None

    @property
    def from_predictions(self) -> bool:
        return self.workflow_name in FROM_PREDICTIONS


def read_tracking(f: h5py.File, common: Project) -> TrackingProject:
    """The tracking groups of an open project."""
    structured = common.workflow_name in (STRUCTURED_BINARY, STRUCTURED_PREDICTION)
    name = "StructuredTracking" if structured else "ConservationTracking"
    group = f.get(name)
    if group is None:
        raise UserError(f"The project {common.path} has no {name} group: the tracking was never configured. Open it "
                        "in ilastik, run the tracking once and save the project.")
    common = replace(common, export_settings=read_export_settings(f.get(_EXPORT_GROUP)))
    return TrackingProject(
        **{slot.name: getattr(common, slot.name) for slot in fields(common)},
        structured=structured,
        parameters=_parameters(group.get("Parameters"), common.path),
        threshold=read_threshold(f.get("ThresholdTwoLevels")) if common.workflow_name in FROM_PREDICTIONS else None,
        count_classifier=_classifier(f.get("CountClassification")),
        division_classifier=_classifier(f.get("DivisionDetection")),
        annotations=_annotations(f.get("TrackingAnnotations")),
    )


def _parameters(group: h5py.Group | None, path: str) -> dict[str, Any]:
    """The stored `Parameters` dictionary over ilastik's defaults (numbers, booleans, tuples, strings)."""
    if group is None:
        raise UserError(f"The project {path} stores no tracking parameters: run the tracking once in ilastik and "
                        "save the project.")
    parameters = dict(DEFAULT_PARAMETERS)
    for key in group:
        item = group[key]
        if not isinstance(item, h5py.Dataset):
            continue
        value = item[()]
        if isinstance(value, (bytes, np.bytes_)) or item.dtype.kind in "OS":
            parameters[key] = read_text(item)
        elif np.ndim(value):
            parameters[key] = tuple(np.asarray(value).tolist())
        else:
            parameters[key] = np.asarray(value).item()
    return parameters


def _classifier(group: h5py.Group | None) -> ObjectClassifier | None:
    """An object classifier group; None when the project has none (e.g. no division detection)."""
    if group is None:
        return None
    forests = group.get("ClassifierForests")
    return ObjectClassifier(
        label_names=[str(name) for name in read_list(group, "LabelNames") or []],
        selected_features=read_feature_dict(group.get("SelectedFeatures")),
        forest=read_classifier(forests) if forests is not None and any(k.startswith("Forest") for k in forests)
        else None,
        object_labels=read_object_labels(group.get("LabelInputs")),
    )


def _annotations(group: h5py.Group | None) -> TrackAnnotations | None:
    """`TrackingAnnotations/Annotations/<lane>/[<crop>/]labels/<t>/<object>` and `.../divisions/<track>`."""
    lanes = group.get("Annotations") if group is not None else None
    if lanes is None or "0" not in lanes:
        return None
    lane = lanes["0"]
    crops = [lane] if "labels" in lane or "divisions" in lane else [lane[k] for k in sorted(lane)]
    labels: dict[int, dict[int, frozenset[int]]] = {}
    divisions: dict[int, tuple[int, int, int]] = {}
    for crop in crops:
        for t, objects in (crop["labels"].items() if "labels" in crop else ()):
            frame = labels.setdefault(int(t), {})
            for obj, tracks in objects.items():
                frame[int(obj)] = frame.get(int(obj), frozenset()) | frozenset(int(v) for v in np.ravel(tracks[()]))
        for stored in (crop["divisions"].values() if "divisions" in crop else ()):
            for parent, first, second, frame in np.asarray(stored[()], dtype=np.int64).reshape(-1, 4).tolist():
                divisions[parent] = (first, second, frame)
    if not labels and not divisions:
        return None
    return TrackAnnotations(labels, divisions)
