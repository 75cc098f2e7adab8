"""The groups of Pixel Classification and Autocontext projects (ilastik 1.2-1.4): each classifier
stage's feature selection, label names, trained forests and training labels (read on demand).

Layout: ilastik-spec.md §3.4.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble, read_classifier
from hpc_ilastik.io.axes import INTERNAL_AXES, parse_axistags, to_tzyxc
from hpc_ilastik.pixel.features import FeatureSelection
from hpc_ilastik.project.common import (
    Project,
    damage_is_user_error,
    first_role_axes,
    open_ilp,
    read_list,
    read_text,
    version_key,
)
from hpc_ilastik.project.names import AUTOCONTEXT, PIXEL_CLASSIFICATION

log = logging.getLogger(__name__)

# workflow name → (feature selection group, pixel classification group) per stage
_STAGE_GROUPS = {
    PIXEL_CLASSIFICATION: [("FeatureSelections", "PixelClassification")],
    AUTOCONTEXT: [("FeatureSelections", "PixelClassification"), ("FeatureSelections01", "PixelClassification01")],
}
_BLOCK_SLICE = re.compile(r"^\[(\d+:\d+(?:,\d+:\d+)*)\]$")


@dataclass(frozen=True)
class _LabelSource:
    """Where a stage's label blocks are and how to read their axis order."""

    project_path: str
    group: str  # e.g. "PixelClassification"
    version: tuple | None
    lane_axes: tuple[str | None, ...]  # each lane's first-role axes (the image the labels were drawn on)


@dataclass(frozen=True)
class PixelClassifierStage:
    """One pixel classifier: its features, classes and trained forests (None if never trained)."""

    features: FeatureSelection
    label_names: list[str]
    classifier: ForestEnsemble | None
    label_source: _LabelSource | None = field(default=None, repr=False)  # None: not read from a project

    def labels(self, lane_index: int) -> list[tuple[tuple[slice, ...], np.ndarray]]:
        """The lane's stored label blocks as (tzyxc slices, uint8 tzyxc array); 0 = unlabelled, k = class k."""
        source = self.label_source
        if source is None:
            return []
        if not 0 <= lane_index < len(source.lane_axes):
            raise IndexError(f"lane {lane_index} does not exist (the project has {len(source.lane_axes)})")
        with damage_is_user_error(source.project_path), open_ilp(source.project_path) as f:
            group = f.get(f"{source.group}/LabelSets/labels{lane_index:03d}")
            return [] if group is None else [_read_label_block(group[k], source, lane_index) for k in sorted(group)]


@dataclass(frozen=True)
class PixelClassificationProject(Project):
    """A Pixel Classification or Autocontext project: its classifier stages, stage 1 first."""

    stages: list[PixelClassifierStage]

    def class_counts(self) -> list[int]:
        """Each stage's number of probability channels: its label names (at least one)."""
        return [max(len(stage.label_names), 1) for stage in self.stages]


def read_pixel_classification(f: h5py.File, common: Project) -> PixelClassificationProject:
    """The classifier stages of an open Pixel Classification (one) or Autocontext (two) project."""
    stages = [read_stage(f, features_group, pixel_group, common)
              for features_group, pixel_group in _STAGE_GROUPS[common.workflow_name]]
    return PixelClassificationProject(**{slot.name: getattr(common, slot.name) for slot in fields(common)},
                                      stages=stages)


def read_stage(f: h5py.File, features_group: str, pixel_group: str, common: Project) -> PixelClassifierStage:
    """One pixel classifier stage: its feature selection and `pixel_group` (labels, forests)."""
    source = _LabelSource(project_path=common.path, group=pixel_group, version=version_key(common.ilastik_version),
                          lane_axes=tuple(first_role_axes(lane) for lane in common.lanes))
    if pixel_group not in f:
        raise UserError(f"The project {source.project_path} has no {pixel_group} group; it is incomplete.")
    pixel = f[pixel_group]
    features = read_features(f.get(features_group))
    label_names = read_list(pixel, "LabelNames")
    if not label_names and "LabelSets" in pixel:
        label_names = _default_label_names(pixel["LabelSets"])
    label_names = [str(name) for name in label_names or []]
    forests = pixel.get("ClassifierForests")
    classifier = read_classifier(forests) if forests is not None and len(forests) else None
    if classifier is not None and len(classifier.known_labels) > len(label_names):
        log.warning("the stored classifier of %s knows %d classes but there are %d label names; it will be retrained "
                    "(ilastik does the same)", pixel_group, len(classifier.known_labels), len(label_names))
        classifier = None
    return PixelClassifierStage(features=features, label_names=label_names, classifier=classifier,
                                label_source=source)


def read_features(group: h5py.Group | None) -> FeatureSelection:
    """A `FeatureSelections` group; an empty or absent one selects nothing."""
    if group is None or "FeatureIds" not in group:
        return FeatureSelection(feature_ids=(), scales=(), matrix=(), compute_in_2d=None)
    if "FeatureListFilename" in group and read_text(group["FeatureListFilename"]):
        raise UserError("The project reads its features from an external feature list file, which is not supported.")
    ids = tuple(str(v) for v in read_list(group, "FeatureIds") or [])
    scales = tuple(float(v) for v in read_list(group, "Scales") or [])
    matrix = np.asarray(group["SelectionMatrix"][()], dtype=bool).reshape(len(ids), len(scales))
    in_2d = read_list(group, "ComputeIn2d")
    return FeatureSelection(
        feature_ids=ids,
        scales=scales,
        matrix=tuple(tuple(bool(v) for v in row) for row in matrix),
        compute_in_2d=tuple(bool(v) for v in in_2d) if in_2d else None,
    )


def _default_label_names(label_sets: h5py.Group) -> list[str]:
    """Old projects without LabelNames: "Label 1" … "Label <highest stored label>", as ilastik names them."""
    highest = 0
    for lane in label_sets.values():
        for block in lane.values():
            if block.size:
                highest = max(highest, int(np.max(block[()])))
    return [f"Label {k}" for k in range(1, highest + 1)]


def _saved_label_axes(source: _LabelSource, lane_index: int, block: h5py.Dataset) -> str:
    """Axis order of a stored label block (ilastik's BackwardsCompatibleLabelSerialBlockSlot, spec §3.4).

    1.3.3post2 ≤ version ≤ 1.4.0b7 saved labels in the raw image's original axis order; other versions
    in the lane's internal (c-last) order, which newer files also record in the block's `axistags`.
    """
    original = source.lane_axes[lane_index] or ""
    version = source.version
    if version is not None and version_key("1.3.3post2") <= version <= version_key("1.4.0b7"):
        return original
    if "axistags" in block.attrs:
        return parse_axistags(block.attrs["axistags"])
    return original


def _read_label_block(block: h5py.Dataset, source: _LabelSource,
                      lane_index: int) -> tuple[tuple[slice, ...], np.ndarray]:
    return read_label_block(block, _saved_label_axes(source, lane_index, block), source.project_path)


def read_label_block(block: h5py.Dataset, axes: str, project_path: str,
                     dtype: np.dtype = np.uint8) -> tuple[tuple[slice, ...], np.ndarray]:
    """A stored label block (`blockSlice` attribute, data in `axes` order, c optional) as (tzyxc slices,
    tzyxc labels of `dtype`)."""
    text = block.attrs.get("blockSlice", b"")
    text = text.decode() if isinstance(text, bytes) else str(text)
    match = _BLOCK_SLICE.match(text.replace(" ", ""))
    data = np.asarray(block[()])
    if not match:
        raise UserError(f"The label block {block.name} in {project_path} has no valid blockSlice ({text!r}).")
    bounds = [tuple(int(v) for v in part.split(":")) for part in match.group(1).split(",")]
    if "c" not in axes and len(bounds) == len(axes) + 1:
        axes += "c"
    if (len(axes) != len(bounds) or data.shape != tuple(stop - start for start, stop in bounds)
            or set(axes) - set(INTERNAL_AXES)):
        raise UserError(f"The label block {block.name} in {project_path} does not match its blockSlice "
                        f"{text} and the image axes '{axes}'; the project is damaged.")
    by_axis = dict(zip(axes, bounds))
    slices = tuple(slice(*by_axis.get(key, (0, 1))) for key in INTERNAL_AXES)
    return slices, np.ascontiguousarray(to_tzyxc(data.astype(dtype, copy=False), axes))
