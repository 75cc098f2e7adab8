"""Reading Pixel Classification and Autocontext projects (`.ilp`, HDF5) of ilastik 1.2-1.4, read-only.

Layout: ilastik-spec.md §3. The file is opened with `locking=False` (a shared project on a cluster
never blocks) and nothing stored in it is ever unpickled. Training labels are read on demand.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h5py
import numpy as np

from hpc_ilastik.axes import INTERNAL_AXES, parse_axistags, to_tzyxc
from hpc_ilastik.errors import UserError
from hpc_ilastik.features import FeatureSelection
from hpc_ilastik.forest import ForestEnsemble, read_classifier

log = logging.getLogger(__name__)

PIXEL_CLASSIFICATION = "Pixel Classification"
AUTOCONTEXT = "AutocontextTwoStage"
# workflow name → (feature selection group, pixel classification group) per stage
_STAGE_GROUPS = {
    PIXEL_CLASSIFICATION: [("FeatureSelections", "PixelClassification")],
    AUTOCONTEXT: [("FeatureSelections", "PixelClassification"), ("FeatureSelections01", "PixelClassification01")],
}
_EXPORT_GROUP = "Prediction Export"
_PRERELEASE = {"a": 0, "b": 1, "rc": 2}
_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)(?:[.-]?(a|b|rc)(\d*))?(?:[.-]?post(\d*))?(?:[.-]?dev(\d*))?(?:\+.*)?\s*$")
_BLOCK_SLICE = re.compile(r"^\[(\d+:\d+(?:,\d+:\d+)*)\]$")
_STACK_SEPARATOR = re.compile(r";|:(?![\\/])")  # a colon before a slash is a drive letter (C:\ or C:/)
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:/|//)")


@dataclass(frozen=True)
class DatasetRef:
    """One stored input (one role of one lane): where its pixels are and what they look like."""

    location: str  # "FileSystem" or "ProjectInternal"
    path: str  # resolved file path (HDF5 inner path kept: "dir/file.h5/inner"), stacks joined with os.pathsep;
    # for ProjectInternal the dataset's path inside the project ("/Input Data/local_data/<id>")
    axes: str  # the image's own axis keys, e.g. "yxc"
    shape: tuple[int, ...] | None  # in `axes` order; None when the project does not record it (ilastik < 1.3)
    nickname: str


@dataclass(frozen=True)
class Lane:
    """One training image: role name (e.g. "Raw Data", "Prediction Mask") → its dataset, None if empty."""

    roles: dict[str, DatasetRef | None]


@dataclass(frozen=True)
class ExportSettings:
    """The `Prediction Export` group; every field None when not stored."""

    region_start: tuple[int | None, ...] | None = None  # None entries: open end
    region_stop: tuple[int | None, ...] | None = None
    input_min: float | None = None
    input_max: float | None = None
    export_min: float | None = None
    export_max: float | None = None
    export_dtype: str | None = None
    output_axis_order: str | None = None
    output_filename_format: str | None = None
    output_internal_path: str | None = None
    output_format: str | None = None


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
        with _damage_is_user_error(source.project_path), _open(source.project_path) as f:
            group = f.get(f"{source.group}/LabelSets/labels{lane_index:03d}")
            return [] if group is None else [_read_label_block(group[k], source, lane_index) for k in sorted(group)]


@dataclass(frozen=True)
class Project:
    """A Pixel Classification or Autocontext project, as stored."""

    path: str
    ilastik_version: str
    workflow_name: str
    stages: list[PixelClassifierStage]  # stage 1 first
    lanes: list[Lane]
    export_settings: ExportSettings

    def class_counts(self) -> list[int]:
        """Each stage's number of probability channels: its label names (at least one)."""
        return [max(len(stage.label_names), 1) for stage in self.stages]


def open_project(path: str) -> Project:
    """Read an ilastik project; a missing, foreign, damaged or unsupported file raises UserError."""
    if not os.path.exists(path):
        raise UserError(f"The project file {path} does not exist.")
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an ilastik project (.ilp): it is not an HDF5 file.")
    path = os.path.abspath(path)
    with _damage_is_user_error(path), _open(path) as f:
        return _read_project(f, path)


@contextmanager
def _damage_is_user_error(path: str) -> Iterator[None]:
    """Turn what h5py and numpy raise on a damaged or incomplete file into a UserError."""
    try:
        yield
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise UserError(f"The project {path} is damaged or incomplete ({exc}).") from exc


def _open(path: str) -> h5py.File:
    """Open read-only without file locking; if this process already holds the file open with locking
    (HDF5 refuses mismatched locking flags on one file), open it the way that handle did."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        try:
            return h5py.File(path, "r")
        except OSError:
            raise UserError(f"The project {path} cannot be opened; it is damaged or incomplete ({exc}).") from exc


def _read_project(f: h5py.File, path: str) -> Project:
    if "ilastikVersion" not in f and "workflowName" not in f:
        raise UserError(f"{path} is not an ilastik project (.ilp): it has no ilastikVersion or workflowName.")
    version_text = _text(f["ilastikVersion"]) if "ilastikVersion" in f else "0.5"
    version = _version_key(version_text)
    if version is not None and version < _version_key("0.6"):
        raise UserError(f"The project {path} was saved by ilastik {version_text}; projects older than ilastik 1.0 "
                        "are not supported (open and save it with a recent ilastik).")
    if "workflowName" in f:
        workflow = _text(f["workflowName"])
    else:
        log.warning("%s does not name its workflow; assuming Pixel Classification, as ilastik does", path)
        workflow = PIXEL_CLASSIFICATION
    if workflow not in _STAGE_GROUPS:
        raise UserError(f"The project {path} uses the ilastik workflow '{workflow}', which is not supported yet; "
                        f"supported workflows: {PIXEL_CLASSIFICATION}, Autocontext ({AUTOCONTEXT}).")
    lanes = _read_lanes(f, os.path.dirname(path))
    lane_axes = tuple(_first_role_axes(lane) for lane in lanes)
    stages = []
    for features_group, pixel_group in _STAGE_GROUPS[workflow]:
        source = _LabelSource(project_path=path, group=pixel_group, version=version, lane_axes=lane_axes)
        stages.append(_read_stage(f, features_group, pixel_group, source))
    return Project(path=path, ilastik_version=version_text, workflow_name=workflow, stages=stages, lanes=lanes,
                   export_settings=_read_export_settings(f.get(_EXPORT_GROUP)))


# ---------------------------------------------------------------- small readers


def _text(dataset: h5py.Dataset) -> str:
    """A stored string (bytes, numpy bytes, str, or a number such as ilastik 0.5's version)."""
    value = dataset[()]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else b""
    if isinstance(value, np.void):
        value = value.tobytes()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _list(group: h5py.Group, name: str) -> list | None:
    """A stored list slot: None if absent, [] if saved empty (`isEmpty` attribute)."""
    if name not in group:
        return None
    dataset = group[name]
    if dataset.attrs.get("isEmpty", False):
        return []
    values = np.atleast_1d(dataset[()])
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values.tolist()]


def _number(group: h5py.Group, name: str) -> float | None:
    if name not in group:
        return None
    value = group[name][()]
    return None if isinstance(value, (bytes, str)) else float(np.ravel(value)[0])


def _version_key(text: str) -> tuple | None:
    """A sortable key of a PEP 440 version (what ilastik compares with parse_version); None if unparseable."""
    match = _VERSION.match(text)
    if not match:
        return None
    release, pre, pre_num, post, dev = match.groups()
    numbers = tuple(int(n) for n in release.split("."))
    numbers += (0,) * (3 - len(numbers))
    # a plain x.y.z.devN comes before x.y.z's prereleases
    pre_rank = _PRERELEASE[pre] if pre else (-1 if dev is not None and post is None else 3)
    return (numbers, pre_rank, int(pre_num or 0), -1 if post is None else int(post or 0),
            float("inf") if dev is None else int(dev or 0))


# ---------------------------------------------------------------- input data


def _read_lanes(f: h5py.File, project_dir: str) -> list[Lane]:
    infos = f.get("Input Data/infos")
    if infos is None:
        return []
    role_names = _list(f["Input Data"], "Role Names")
    lanes = []
    for lane_name in sorted(infos):
        lane = infos[lane_name]
        if role_names is None:  # legacy single-role layout: the lane group is the dataset info
            roles = {"Raw Data": _dataset_ref(f, lane, project_dir)}
        else:
            roles = {str(role): _dataset_ref(f, lane[role], project_dir) if role in lane else None
                     for role in role_names}
        lanes.append(Lane(roles=roles))
    return lanes


def _dataset_ref(f: h5py.File, info: h5py.Group, project_dir: str) -> DatasetRef | None:
    """One role's DatasetInfo group → DatasetRef (None for an empty role)."""
    if "location" not in info and "__class__" not in info:
        return None
    if "location" in info:
        location = _text(info["location"])
    else:
        location = "ProjectInternal" if _text(info["__class__"]) == "ProjectInternalDatasetInfo" else "FileSystem"
    internal = None
    if location == "ProjectInternal":
        internal = _internal_dataset(f, info)
        path = internal.name if internal is not None else _text(info["filePath"]) if "filePath" in info else ""
    else:
        path = _resolve_file_path(_text(info["filePath"]), project_dir)
    shape = tuple(int(v) for v in np.ravel(info["shape"][()])) if "shape" in info else None
    if shape is None and internal is not None:
        shape = tuple(internal.shape)
    if "axistags" in info:
        axes = parse_axistags(_text(info["axistags"]))
    elif "axisorder" in info:
        axes = _text(info["axisorder"])
    elif internal is not None and "axistags" in internal.attrs:
        axes = parse_axistags(internal.attrs["axistags"])
    else:
        axes = ""
    if "nickname" in info:
        nickname = _text(info["nickname"])
    else:
        nickname = os.path.splitext(os.path.basename(re.split(r"\.(?:h5|hdf5|hdf|n5|zarr)/", path)[0]))[0]
    return DatasetRef(location=location, path=path, axes=axes, shape=shape, nickname=nickname)


def _internal_dataset(f: h5py.File, info: h5py.Group) -> h5py.Dataset | None:
    """The project-internal copy of an image: `inner_path`, else `filePath`, else found by `datasetId`."""
    for key in ("inner_path", "filePath"):
        if key in info and isinstance(f.get(_text(info[key])), h5py.Dataset):
            return f[_text(info[key])]
    local = f.get("Input Data/local_data")
    if "datasetId" not in info or not isinstance(local, h5py.Group):
        return None
    dataset_id = _text(info["datasetId"])
    found = []
    local.visititems(lambda name, obj: found.append(obj) if name.endswith(dataset_id) else None)
    return next((obj for obj in found if isinstance(obj, h5py.Dataset)), None)


def _resolve_file_path(stored: str, project_dir: str) -> str:
    """filePath as stored (relative to the project, absolute, Windows separators, stacks) → usable path(s)."""
    if "://" in stored:
        return stored
    parts = []
    for part in _STACK_SEPARATOR.split(stored.replace("\\", "/")):
        if _WINDOWS_ABSOLUTE.match(part):
            parts.append(part)
        else:
            parts.append(os.path.normpath(os.path.join(project_dir, part)))
    return os.pathsep.join(parts)


def _first_role_axes(lane: Lane) -> str | None:
    first = next(iter(lane.roles.values()), None)
    return first.axes if first is not None else None


# ---------------------------------------------------------------- classifier stages


def _read_stage(f: h5py.File, features_group: str, pixel_group: str, source: _LabelSource) -> PixelClassifierStage:
    if pixel_group not in f:
        raise UserError(f"The project {source.project_path} has no {pixel_group} group; it is incomplete.")
    pixel = f[pixel_group]
    features = _read_features(f.get(features_group))
    label_names = _list(pixel, "LabelNames")
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


def _read_features(group: h5py.Group | None) -> FeatureSelection:
    """A `FeatureSelections` group; an empty or absent one selects nothing."""
    if group is None or "FeatureIds" not in group:
        return FeatureSelection(feature_ids=(), scales=(), matrix=(), compute_in_2d=None)
    if "FeatureListFilename" in group and _text(group["FeatureListFilename"]):
        raise UserError("The project reads its features from an external feature list file, which is not supported.")
    ids = tuple(str(v) for v in _list(group, "FeatureIds") or [])
    scales = tuple(float(v) for v in _list(group, "Scales") or [])
    matrix = np.asarray(group["SelectionMatrix"][()], dtype=bool).reshape(len(ids), len(scales))
    in_2d = _list(group, "ComputeIn2d")
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


def _read_export_settings(group: h5py.Group | None) -> ExportSettings:
    if group is None:
        return ExportSettings()

    def text(name: str) -> str | None:
        return _text(group[name]) if name in group else None

    def region(name: str) -> tuple[int | None, ...] | None:
        values = _list(group, name)
        return None if values is None else tuple(None if int(v) == -1 else int(v) for v in values)

    return ExportSettings(
        region_start=region("RegionStart"), region_stop=region("RegionStop"),
        input_min=_number(group, "InputMin"), input_max=_number(group, "InputMax"),
        export_min=_number(group, "ExportMin"), export_max=_number(group, "ExportMax"),
        export_dtype=text("ExportDtype"), output_axis_order=text("OutputAxisOrder"),
        output_filename_format=text("OutputFilenameFormat"), output_internal_path=text("OutputInternalPath"),
        output_format=text("OutputFormat"),
    )


# ---------------------------------------------------------------- label blocks


def _saved_label_axes(source: _LabelSource, lane_index: int, block: h5py.Dataset) -> str:
    """Axis order of a stored label block (ilastik's BackwardsCompatibleLabelSerialBlockSlot, spec §3.4).

    1.3.3post2 ≤ version ≤ 1.4.0b7 saved labels in the raw image's original axis order; other versions
    in the lane's internal (c-last) order, which newer files also record in the block's `axistags`.
    """
    original = source.lane_axes[lane_index] or ""
    version = source.version
    if version is not None and _version_key("1.3.3post2") <= version <= _version_key("1.4.0b7"):
        return original
    if "axistags" in block.attrs:
        return parse_axistags(block.attrs["axistags"])
    return original


def _read_label_block(block: h5py.Dataset, source: _LabelSource,
                      lane_index: int) -> tuple[tuple[slice, ...], np.ndarray]:
    text = block.attrs.get("blockSlice", b"")
    text = text.decode() if isinstance(text, bytes) else str(text)
    match = _BLOCK_SLICE.match(text.replace(" ", ""))
    data = np.asarray(block[()])
    if not match:
        raise UserError(f"The label block {block.name} in {source.project_path} has no valid blockSlice ({text!r}).")
    bounds = [tuple(int(v) for v in part.split(":")) for part in match.group(1).split(",")]
    axes = _saved_label_axes(source, lane_index, block)
    if "c" not in axes and len(bounds) == len(axes) + 1:
        axes += "c"
    if (len(axes) != len(bounds) or data.shape != tuple(stop - start for start, stop in bounds)
            or set(axes) - set(INTERNAL_AXES)):
        raise UserError(f"The label block {block.name} in {source.project_path} does not match its blockSlice "
                        f"{text} and the image axes '{axes}'; the project is damaged.")
    by_axis = dict(zip(axes, bounds))
    slices = tuple(slice(*by_axis.get(key, (0, 1))) for key in INTERNAL_AXES)
    return slices, np.ascontiguousarray(to_tzyxc(data.astype(np.uint8, copy=False), axes))
