"""What every ilastik project (`.ilp`, HDF5) holds, read-only: the version and workflow name, the
`Input Data` lanes (one dataset per role), and the export settings; plus the small readers that every
workflow's own groups use.

Layout: ilastik-spec.md §3. The file is opened with `locking=False` (a shared project on a cluster
never blocks) and nothing stored in it is ever unpickled.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import parse_axistags
from hpc_ilastik.project.names import PIXEL_CLASSIFICATION

log = logging.getLogger(__name__)

DEFAULT_WORKFLOW = PIXEL_CLASSIFICATION  # what ilastik assumes when a project does not name its workflow
_EXPORT_GROUP = "Prediction Export"
_PRERELEASE = {"a": 0, "b": 1, "rc": 2}
_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)(?:[.-]?(a|b|rc)(\d*))?(?:[.-]?post(\d*))?(?:[.-]?dev(\d*))?(?:\+.*)?\s*$")
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
class Project:
    """What every project holds; each workflow's reader returns a subclass with its own groups."""

    path: str
    ilastik_version: str
    workflow_name: str
    lanes: list[Lane]
    export_settings: ExportSettings


def read_common(f: h5py.File, path: str) -> Project:
    """The parts every project has; UserError for a file that is no ilastik project or is older than 1.0."""
    if "ilastikVersion" not in f and "workflowName" not in f:
        raise UserError(f"{path} is not an ilastik project (.ilp): it has no ilastikVersion or workflowName.")
    version_text = read_text(f["ilastikVersion"]) if "ilastikVersion" in f else "0.5"
    version = version_key(version_text)
    if version is not None and version < version_key("0.6"):
        raise UserError(f"The project {path} was saved by ilastik {version_text}; projects older than ilastik 1.0 "
                        "are not supported (open and save it with a recent ilastik).")
    if "workflowName" in f:
        workflow = read_text(f["workflowName"])
    else:
        log.warning("%s does not name its workflow; assuming %s, as ilastik does", path, DEFAULT_WORKFLOW)
        workflow = DEFAULT_WORKFLOW
    return Project(path=path, ilastik_version=version_text, workflow_name=workflow,
                   lanes=_read_lanes(f, os.path.dirname(path)),
                   export_settings=read_export_settings(f.get(_EXPORT_GROUP)))


@contextmanager
def damage_is_user_error(path: str) -> Iterator[None]:
    """Turn what h5py and numpy raise on a damaged or incomplete file into a UserError."""
    try:
        yield
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise UserError(f"The project {path} is damaged or incomplete ({exc}).") from exc


def open_ilp(path: str) -> h5py.File:
    """Open read-only without file locking; if this process already holds the file open with locking
    (HDF5 refuses mismatched locking flags on one file), open it the way that handle did."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        try:
            return h5py.File(path, "r")
        except OSError:
            raise UserError(f"The project {path} cannot be opened; it is damaged or incomplete ({exc}).") from exc


def read_text(dataset: h5py.Dataset) -> str:
    """A stored string (bytes, numpy bytes, str, or a number such as ilastik 0.5's version)."""
    value = dataset[()]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else b""
    if isinstance(value, np.void):
        value = value.tobytes()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_list(group: h5py.Group, name: str) -> list | None:
    """A stored list slot: None if absent, [] if saved empty (`isEmpty` attribute)."""
    if name not in group:
        return None
    dataset = group[name]
    if dataset.attrs.get("isEmpty", False):
        return []
    values = np.atleast_1d(dataset[()])
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values.tolist()]


def read_number(group: h5py.Group, name: str) -> float | None:
    if name not in group:
        return None
    value = group[name][()]
    return None if isinstance(value, (bytes, str)) else float(np.ravel(value)[0])


def version_key(text: str) -> tuple | None:
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


def _read_lanes(f: h5py.File, project_dir: str) -> list[Lane]:
    infos = f.get("Input Data/infos")
    if infos is None:
        return []
    role_names = read_list(f["Input Data"], "Role Names")
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
        location = read_text(info["location"])
    else:
        location = "ProjectInternal" if read_text(info["__class__"]) == "ProjectInternalDatasetInfo" else "FileSystem"
    internal = None
    if location == "ProjectInternal":
        internal = _internal_dataset(f, info)
        path = internal.name if internal is not None else read_text(info["filePath"]) if "filePath" in info else ""
    else:
        path = _resolve_file_path(read_text(info["filePath"]), project_dir)
    shape = tuple(int(v) for v in np.ravel(info["shape"][()])) if "shape" in info else None
    if shape is None and internal is not None:
        shape = tuple(internal.shape)
    if "axistags" in info:
        axes = parse_axistags(read_text(info["axistags"]))
    elif "axisorder" in info:
        axes = read_text(info["axisorder"])
    elif internal is not None and "axistags" in internal.attrs:
        axes = parse_axistags(internal.attrs["axistags"])
    else:
        axes = ""
    if "nickname" in info:
        nickname = read_text(info["nickname"])
    else:
        nickname = os.path.splitext(os.path.basename(re.split(r"\.(?:h5|hdf5|hdf|n5|zarr)/", path)[0]))[0]
    return DatasetRef(location=location, path=path, axes=axes, shape=shape, nickname=nickname)


def _internal_dataset(f: h5py.File, info: h5py.Group) -> h5py.Dataset | None:
    """The project-internal copy of an image: `inner_path`, else `filePath`, else found by `datasetId`."""
    for key in ("inner_path", "filePath"):
        if key in info and isinstance(f.get(read_text(info[key])), h5py.Dataset):
            return f[read_text(info[key])]
    local = f.get("Input Data/local_data")
    if "datasetId" not in info or not isinstance(local, h5py.Group):
        return None
    dataset_id = read_text(info["datasetId"])
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


def first_role_axes(lane: Lane) -> str | None:
    first = next(iter(lane.roles.values()), None)
    return first.axes if first is not None else None


def read_export_settings(group: h5py.Group | None) -> ExportSettings:
    """An export-settings group (`Prediction Export` and its kin); every field None where not stored."""
    if group is None:
        return ExportSettings()

    def text(name: str) -> str | None:
        return read_text(group[name]) if name in group else None

    def region(name: str) -> tuple[int | None, ...] | None:
        values = read_list(group, name)
        return None if values is None else tuple(None if int(v) == -1 else int(v) for v in values)

    return ExportSettings(
        region_start=region("RegionStart"), region_stop=region("RegionStop"),
        input_min=read_number(group, "InputMin"), input_max=read_number(group, "InputMax"),
        export_min=read_number(group, "ExportMin"), export_max=read_number(group, "ExportMax"),
        export_dtype=text("ExportDtype"), output_axis_order=text("OutputAxisOrder"),
        output_filename_format=text("OutputFilenameFormat"), output_internal_path=text("OutputInternalPath"),
        output_format=text("OutputFormat"),
    )
