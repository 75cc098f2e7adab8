"""The groups of Object Classification projects (ilastik 1.2-1.4, every variant): thresholding settings,
the object features computed and selected, label names, stored object labels, the trained forests, the
blockwise settings, the object-table settings and the export settings (`Object Information Export`).

Layout: ilastik-spec.md §3.8, ilastik-workflows-spec.md §A. The table settings are a pickle: read with
`io.pickles`, never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble, read_classifier
from hpc_ilastik.io.pickles import read_pickle
from hpc_ilastik.objects.threshold import ThresholdSettings
from hpc_ilastik.project.common import Project, read_export_settings, read_list, read_text
from hpc_ilastik.project.names import OBJECT_CLASSIFICATION
from hpc_ilastik.project.pixel_classification import PixelClassifierStage, read_stage

WORKFLOWS = OBJECT_CLASSIFICATION
FROM_PREDICTIONS, FROM_BINARY, FROM_LABELS, FROM_PIXELS = WORKFLOWS
_EXPORT_GROUP = "Object Information Export"
_DEFAULT_BLOCK, _DEFAULT_HALO = (512, 512, 512), (64, 64, 64)

Features = dict[str, dict[str, dict[str, Any]]]  # plugin → feature → parameters


@dataclass(frozen=True)
class TableSettings:
    """The object-table export configured in the GUI (pickled `(settings, selected features)`)."""

    settings: dict[str, Any]
    selected_features: tuple[str, ...]


@dataclass(frozen=True)
class ObjectClassificationProject(Project):
    """An Object Classification project of any variant (`workflow_name` says which)."""

    threshold: ThresholdSettings | None            # the prediction-image and pixel variants
    computed_features: Features                    # ObjectExtraction/Features
    selected_features: Features                    # what the classifier uses
    label_names: list[str]
    classifier: ForestEnsemble | None
    object_labels: list[list[np.ndarray]]          # per lane, per time frame: class of each object (row = id)
    block_shape_zyx: tuple[int, int, int]          # Blockwise Object Classification
    halo_zyx: tuple[int, int, int]
    table: TableSettings | None
    pixel_stage: PixelClassifierStage | None       # the pixel-classification variant's first stage


def read_object_classification(f: h5py.File, common: Project) -> ObjectClassificationProject:
    """The object-classification groups of an open project."""
    group = f.get("ObjectClassification")
    if group is None:
        raise UserError(f"The project {common.path} has no ObjectClassification group; it is incomplete.")
    extraction = f.get("ObjectExtraction")
    common = replace(common, export_settings=read_export_settings(f.get(_EXPORT_GROUP)))
    forests = group.get("ClassifierForests")
    blockwise = f.get("Blockwise Object Classification")
    return ObjectClassificationProject(
        **{slot.name: getattr(common, slot.name) for slot in fields(common)},
        threshold=read_threshold(f.get("ThresholdTwoLevels")) if common.workflow_name in (FROM_PREDICTIONS, FROM_PIXELS)
        else None,
        computed_features=read_feature_dict(extraction.get("Features")) if extraction is not None else {},
        selected_features=read_feature_dict(group.get("SelectedFeatures")),
        label_names=[str(name) for name in read_list(group, "LabelNames") or []],
        classifier=read_classifier(forests) if forests is not None and any(k.startswith("Forest") for k in forests)
        else None,
        object_labels=read_object_labels(group.get("LabelInputs")),
        block_shape_zyx=_dict_zyx(blockwise, "BlockShape3dDict", _DEFAULT_BLOCK),
        halo_zyx=_dict_zyx(blockwise, "HaloPadding3dDict", _DEFAULT_HALO),
        table=_table_settings(group.get("ExportSettings"), common.path),
        pixel_stage=read_stage(f, "FeatureSelections", "PixelClassification", common)
        if common.workflow_name == FROM_PIXELS else None,
    )


def read_threshold(group: h5py.Group | None) -> ThresholdSettings:
    """`ThresholdTwoLevels` with ilastik's legacy rules (SingleThreshold, CoreChannel = Channel)."""
    defaults = ThresholdSettings()
    if group is None:
        return defaults

    def number(name: str, default: float) -> float:
        return float(np.ravel(group[name][()])[0]) if name in group else default

    method = int(number("CurOperator", defaults.method))
    low = number("LowThreshold", defaults.low)
    if method == 0 and "SingleThreshold" in group:
        low = number("SingleThreshold", low)
    channel = int(number("Channel", defaults.channel))
    sigmas = group.get("SmootherSigma")
    return ThresholdSettings(
        method=method, min_size=int(number("MinSize", defaults.min_size)),
        max_size=int(number("MaxSize", defaults.max_size)), low=low, high=number("HighThreshold", defaults.high),
        sigmas_zyx=tuple(float(np.ravel(sigmas[k][()])[0]) if sigmas is not None and k in sigmas else 1.0
                         for k in "zyx"),
        channel=channel, core_channel=int(number("CoreChannel", channel)))


def read_feature_dict(group: h5py.Group | None) -> Features:
    """A stored feature dictionary: plugin → feature → parameters (old projects nest it under "0")."""
    if group is None:
        return {}
    if list(group.keys()) == ["0"]:
        group = group["0"]
    result: Features = {}
    for plugin in group:
        names = group[plugin]
        if list(names.keys()) == ["0"]:
            names = names["0"]
        result[plugin] = {name: _parameters(names[name]) for name in names}
    return result


def _parameters(item: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    if not isinstance(item, h5py.Group):
        return {}
    values: dict[str, Any] = {}
    for key in item:
        value = item[key][()]
        values[key] = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    return values


def read_object_labels(group: h5py.Group | None) -> list[list[np.ndarray]]:
    """`LabelInputs`: per lane (0000, 0001, ...) per time frame (0, 1, ...) the class of each object."""
    if group is None:
        return []
    return [[np.asarray(group[lane][t][()], dtype=np.float64).ravel() for t in sorted(group[lane], key=int)]
            for lane in sorted(group)]


def _dict_zyx(group: h5py.Group | None, name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if group is None or name not in group:
        return default
    stored = group[name]
    return tuple(int(np.ravel(stored[k][()])[0]) if k in stored else d for k, d in zip("zyx", default))


def _table_settings(dataset: h5py.Dataset | None, path: str) -> TableSettings | None:
    """The pickled (settings, selected features) pair; None when the project stores (None, None)."""
    if dataset is None:
        return None
    raw = dataset[()]
    raw = raw.tobytes() if isinstance(raw, np.void) else raw if isinstance(raw, bytes) else read_text(dataset).encode()
    value = read_pickle(raw, f"the object-table settings in {path}")
    if not (isinstance(value, tuple) and len(value) == 2):
        raise UserError(f"The object-table settings in {path} are not a (settings, features) pair; the project is "
                        "damaged.")
    settings, selected = value
    if settings is None:
        return None
    if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
        raise UserError(f"The object-table settings in {path} are not a dictionary; the project is damaged.")
    return TableSettings(settings=settings, selected_features=tuple(str(s) for s in selected or ()))
