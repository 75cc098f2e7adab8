"""Test support for the conservation-tracking workflow: an ilastik 1.4 project file for ilastik's headless test case
"smallVideo", the Cell Tracking Challenge format check, and the comparison of Contours (`.outline`) exports.

The project layout copies what ilastik's serializers write (ilastik/ilastik HEAD): `dataSelectionSerializer.py` and
`DatasetInfo.to_json_data` (group `Input Data`, as in the 1.4.0 fixture
`inputdata/mitocheckStructuredLearningTrackingHytraWithMergers.ilp`), `tracking/base/trackingSerializer.py` (group
`ConservationTracking`: the `Parameters` dictionary as `SerialDictSlot` stores Python values, `FilteredLabels`, the
pickled `ExportSettings`), `objectClassificationSerializer.py` (groups `CountClassification` and `DivisionDetection`:
SelectedFeatures stored as in `TrackingwLearning5t2d1c_wBin.ilp`, one empty group per feature; no forest, so the
workflow trains one from `LabelInputs` as ilastik does), `trackingFeatureExtractionSerializer.py` and
`trackingBaseDataExportApplet.py` (`Tracking Result Export`). The workflow name and the roles come from
`ilastik/workflows/tracking/conservation/conservationTrackingWorkflow.py`.

ilastik's own `tests/test_ilastik/data/inputdata/smallVideoConservationTracking.ilp` is not available (an LFS blob);
its first version (ilastik commit ea9ae3136, May 2016, ilastik 1.1.10a1, the first three frames of this video, no
divisions) is in ilastik's history as git blob 6bcc9e6. The later version with divisions (de1395ef9, Dec 2016) is not.
The parameters and labels below come from that first version plus ilastik's defaults of Dec 2016; see each constant.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tifffile

from hpc_ilastik.objects.labeling import label_components

WORKFLOW_NAME = "Automatic Tracking Workflow (Conservation Tracking) from binary image"
ROLE_NAMES = ("Raw Data", "Segmentation Image")  # opDataSelection.DatasetRoles of the binary variant
ILASTIK_VERSION = b"1.4.0"

# ilastik/workflows/tracking/common.py DIVISION_CLASSIFIER_LABEL_NAMES (PluralInflector) for maxObj = 2, and the
# division classifier's names set in conservationTrackingWorkflow.py; values in LabelInputs are 1-based class numbers.
COUNT_CLASSES = ("False Detection", "1 Object", "2 Objects")
DIVISION_CLASSES = ("Not Dividing", "Dividing")
FALSE_DETECTION, ONE_OBJECT, TWO_OBJECTS = 1, 2, 3
NOT_DIVIDING, DIVIDING = 1, 2
# ilastik 1.4's label colours, as the 1.4.0 fixture stores them (LabelColors and PmapColors alike)
LABEL_COLORS = ((255, 225, 25), (0, 130, 200), (230, 25, 75), (70, 240, 240))

_SKELETON = ("Diameter", "Total Length", "Euclidean Diameter", "Hole Count", "Branch Count", "Average Length")
_HULL = ("DefectDisplacementMean", "Area", "DefectCount", "DefectVolumeVariance", "DefectVolumeMean", "Convexity",
         "HullCenter", "InputCenter", "InputVolume")
# ilastik/applets/tracking/conservation/config.py selectedFeaturesObjectCount / selectedFeaturesDiv
SELECTED_FEATURES_COUNT = {
    "2D Skeleton Features": _SKELETON,
    "2D Convex Hull Features": _HULL,
    "Standard Object Features": ("Count", "Variance", "Mean", "RegionRadii", "RegionAxes"),
}
SELECTED_FEATURES_DIVISION = {
    "2D Skeleton Features": _SKELETON,
    "Cell Division Features": ("ChildrenRatio_SquaredDistances", "ChildrenRatio_Mean",
                               "ParentChildrenAngle_RegionCenter", "ParentChildrenRatio_Mean", "ChildrenRatio_Count",
                               "ParentChildrenRatio_Count", "SquaredDistances_0", "SquaredDistances_1",
                               "SquaredDistances_2"),
    "2D Convex Hull Features": _HULL,
    "Standard Object Features": ("Count", "Variance", "Mean"),
}
# TrackingFeatureExtraction: config.py allFeaturesObjectCount without the 3-D plugin (2-D data, as the 1.4.0 fixture
# stores it) and trackingFeatureExtraction/config.py division_features
FEATURE_NAMES_VIGRA = {
    "2D Skeleton Features": (*_SKELETON, "Skeleton Center", "Terminal 1", "Terminal 2"),
    "2D Convex Hull Features": _HULL,
    "Standard Object Features": (
        "Coord<Maximum>", "Coord<Minimum>", "Kurtosis", "Kurtosis in neighborhood", "Maximum",
        "Maximum in neighborhood", "Minimum", "Minimum in neighborhood", "Count", "Variance",
        "Variance in neighborhood", "Mean", "Mean in neighborhood", "Skewness", "Skewness in neighborhood", "Sum",
        "Sum in neighborhood", "RegionRadii", "RegionAxes", "RegionCenter"),
}
FEATURE_NAMES_DIVISION = {"Cell Division Features": (
    "ParentChildrenRatio_Count", "ParentChildrenRatio_Mean", "ChildrenRatio_Count", "ChildrenRatio_Mean",
    "ParentChildrenAngle_RegionCenter", "ChildrenRatio_SquaredDistances", "SquaredDistances_0", "SquaredDistances_1",
    "SquaredDistances_2")}

# The tracking parameters of smallVideoConservationTracking.ilp, with ilastik's stored Python types (SerialDictSlot:
# int → int64, float → float64, str → bytes). time/x/y/z_range are added from the image (the GUI stores the whole
# image: time_range [0, T-1], x_range [0, X], ...; the 2016 project has [0, 408] for x and y, [0, 1] for z).
SMALL_VIDEO_PARAMETERS: dict[str, Any] = {
    # as stored in the May 2016 project (git blob 6bcc9e6)
    "maxDist": 200, "maxObj": 2, "divThreshold": 0.1, "avgSize": [0.0], "withTracklets": True,
    "sizeDependent": False, "divWeight": 10.0, "transWeight": 1.0, "withOpticalCorrection": False,
    "withClassifierPrior": True, "withMergerResolution": True, "borderAwareWidth": 10, "withArmaCoordinates": True,
    "appearanceCost": 5000, "disappearanceCost": 5000, "cplex_timeout": "", "scales": [1.0, 1.0, 1.0],
    # the 2016 project stores [0, 10001]; OpConservationTracking.track stores (max(maxObj, lower), upper) since
    # 5be47cc0a (Nov 2016) and applies the same bound headless, so both run alike
    "size_range": [2, 10001],
    # Dec 2016 (de1395ef9, "include divisions"): the headless test expects 2 division children
    "withDivisions": True,
    # not in the 2016 project; stored by every later track(): max_nearest_neighbors since 8eb05d465 (Oct 2016, GUI
    # spin box minimum and track() default 2 in Dec 2016), solver since 6a0840275 (Nov 2016; headless ignores it and
    # runs "Flow-based"), detWeight (hard-coded 10.0), numFramesPerSplit (Mar 2017, GUI default 0)
    "max_nearest_neighbors": 2, "solver": "Flow-based", "detWeight": 10.0, "numFramesPerSplit": 0,
}

# Object labels of smallVideo: (frame, object id) → class, object ids as vigra labels each frame of the segmentation
# (hpc_ilastik.objects.labeling.label_components: raster order). The video: three worms A, B, C of ~3585 pixels;
# frame 1 object 1 is A and C merged (7170 px), frame 2 object 2 is B and C merged (7172 px); A (frame 4 object 1)
# divides into the two 1772-pixel objects 1 and 2 of frame 5. The reference Contours export draws lineage 2 on A,
# 3 on B, 4 on C and two lineages on each merger (see tests/test_tracking_support.py).
SMALL_VIDEO_COUNT_LABELS: dict[tuple[int, int], int] = {
    # the May 2016 project: frame 0 all "1 Object", the two mergers "2 Objects" (no "False Detection" example: there
    # is none in the video; ilastik's forest still has that class, trained with labels=[1, 2, 3])
    (0, 1): ONE_OBJECT, (0, 2): ONE_OBJECT, (0, 3): ONE_OBJECT, (1, 1): TWO_OBJECTS, (2, 2): TWO_OBJECTS,
    # added for the 7-frame video: single worms of frame 3 and the half-size objects after the division
    (3, 1): ONE_OBJECT, (3, 2): ONE_OBJECT, (3, 3): ONE_OBJECT, (5, 1): ONE_OBJECT, (5, 2): ONE_OBJECT,
}
SMALL_VIDEO_DIVISION_LABELS: dict[tuple[int, int], int] = {
    # the only division: A before it splits; "Not Dividing" on the objects whose next frame looks most like a
    # division (a merger that separates, (2, 2); an object meeting a merger, (0, 1), (1, 1)) and on single worms
    (4, 1): DIVIDING,
    (0, 1): NOT_DIVIDING, (0, 2): NOT_DIVIDING, (0, 3): NOT_DIVIDING, (1, 1): NOT_DIVIDING, (2, 2): NOT_DIVIDING,
    (3, 1): NOT_DIVIDING, (3, 2): NOT_DIVIDING, (3, 3): NOT_DIVIDING, (4, 2): NOT_DIVIDING, (4, 3): NOT_DIVIDING,
}

_H5_PATH = re.compile(r"^(.*?\.(?:h5|hdf5|hdf))/(.+)$")
_DEFAULT_AXISTAGS = "tyxc"


def _axistags_json(keys: str) -> str:
    """vigra's AxisTags.toJSON for plain axes (no resolution, no description)."""
    flags = {"t": 8, "c": 1}
    axes = [{"key": k, "typeFlags": flags.get(k, 2), "resolution": 0, "description": ""} for k in keys]
    return json.dumps({"axes": axes}, indent=2)


@dataclass(frozen=True)
class _Image:
    """An HDF5 input as ilastik's DatasetInfo describes it."""

    file: Path
    internal: str
    axistags: str  # JSON
    shape: tuple[int, ...]
    drange: tuple | None


def _image(spec: str) -> _Image:
    match = _H5_PATH.match(spec)
    if match is None:
        raise ValueError(f"{spec!r} is not an HDF5 dataset path (file.h5/internal/path)")
    file, internal = Path(match.group(1)).absolute(), match.group(2)
    with h5py.File(file, "r") as f:
        dataset = f[internal]
        tags = dataset.attrs.get("axistags")
        tags = tags.decode() if isinstance(tags, bytes) else tags or _axistags_json(_DEFAULT_AXISTAGS)
        drange = tuple(dataset.attrs["drange"]) if "drange" in dataset.attrs else None
        return _Image(file, internal, tags, tuple(dataset.shape), drange)


def _frames(image: _Image) -> np.ndarray:
    """The image as (t, z, y, x), channel 0."""
    with h5py.File(image.file, "r") as f:
        data = f[image.internal][()]
    keys = "".join(axis["key"] for axis in json.loads(image.axistags)["axes"])
    for key in "tzc":
        if key not in keys:
            data, keys = data[..., None], keys + key
    return np.transpose(data, [keys.index(k) for k in "tzyxc"])[..., 0]


def _object_counts(frames: np.ndarray) -> list[int]:
    """The number of objects per frame: vigra's connected components of the binary image (non-zero = object)."""
    return [label_components((frame > 0).astype(np.uint8))[1] for frame in frames]


def _write_dict(group: h5py.Group, name: str, value: Mapping) -> None:
    """SerialDictSlot._saveValue: nested dictionaries as groups, values as datasets (str as UTF-8 bytes)."""
    sub = group.create_group(name)
    for key, item in value.items():
        if isinstance(item, Mapping):
            _write_dict(sub, str(key), item)
        else:
            encoded = [v.encode() if isinstance(v, str) else v for v in item] if isinstance(item, list) else item
            sub.create_dataset(str(key), data=encoded.encode() if isinstance(encoded, str) else encoded)


def _features(names: Mapping[str, Sequence[str]]) -> dict[str, dict[str, dict]]:
    return {plugin: {feature: {} for feature in features} for plugin, features in names.items()}


def _write_list(group: h5py.Group, name: str, values: Sequence) -> None:
    """SerialListSlot._saveValue (strings as bytes, an `isEmpty` attribute)."""
    data = [v.encode() if isinstance(v, str) else v for v in values]
    group.create_dataset(name, data=data).attrs["isEmpty"] = len(values) == 0


def _write_pickle(group: h5py.Group, name: str, value: Any) -> None:
    """SerialPickleableSlot._saveValue: a protocol-0 pickle as numpy.void, attribute version 1."""
    group.create_dataset(name, data=np.void(pickle.dumps(value, 0))).attrs["version"] = 1


def _write_dataset_info(group: h5py.Group, image: _Image, project_dir: Path) -> None:
    """DatasetInfo.to_json_data of a FilesystemDatasetInfo, relative when the file lies under the project's folder
    (RelativeFilesystemDatasetInfo.create_or_fallback_to_absolute)."""
    try:
        path, kind = image.file.relative_to(project_dir).as_posix(), "RelativeFilesystemDatasetInfo"
    except ValueError:
        path, kind = image.file.as_posix(), "FilesystemDatasetInfo"
    values = {
        "axistags": image.axistags.encode(), "shape": np.asarray(image.shape, dtype=np.int64), "allowLabels": True,
        "display_mode": b"default", "nickname": f"{image.file.stem}-{image.internal.replace('/', '-')}".encode(),
        "normalizeDisplay": image.drange is not None, "drange": image.drange, "location": b"FileSystem",
        "filePath": f"{path}/{image.internal}".encode(), "datasetId": str(uuid.uuid1()).encode(),
        "__class__": kind.encode(),
    }
    for key, value in values.items():
        if value is not None:
            group.create_dataset(key, data=value)


def _write_classifier(f: h5py.File, name: str, classes: Sequence[str], selected: Mapping[str, Sequence[str]],
                      labels: Mapping[tuple[int, int], int], counts: Sequence[int]) -> None:
    """An object-classification group (objectClassificationSerializer.py) without a trained forest."""
    group = f.create_group(name)
    _write_dict(group, "SelectedFeatures", _features(selected))
    _write_list(group, "LabelNames", classes)
    colors = list(LABEL_COLORS[:len(classes)])
    _write_list(group, "LabelColors", colors)
    _write_list(group, "PmapColors", colors)
    per_frame = [np.zeros(n + 1) for n in counts]
    for (t, obj), value in labels.items():
        if not (0 <= t < len(counts) and 1 <= obj <= counts[t]):
            raise ValueError(f"{name}: no object {obj} in frame {t}")
        if not 1 <= value <= len(classes):
            raise ValueError(f"{name}: no class {value} (classes 1..{len(classes)})")
        per_frame[t][obj] = value
    _write_dict(group, "LabelInputs", {"0000": {str(t): values for t, values in enumerate(per_frame)}})
    group.create_group("ClassifierForests")
    group.create_dataset("MaxNumObj", data=len(classes) - 1)
    _write_pickle(group, "ExportSettings", (None, None))
    group.create_dataset("StorageVersion", data=b"0.1")


def write_conservation_project(path: str | os.PathLike, raw: str, segmentation: str,
                               parameters: Mapping[str, Any] | None = None,
                               count_labels: Mapping[tuple[int, int], int] = SMALL_VIDEO_COUNT_LABELS,
                               division_labels: Mapping[tuple[int, int], int] = SMALL_VIDEO_DIVISION_LABELS) -> Path:
    """An ilastik 1.4 conservation-tracking project (from binary image) on `raw` and `segmentation` ("file.h5/path"),
    one lane, tracking `parameters` over SMALL_VIDEO_PARAMETERS and the image's ranges, the object classifiers'
    labels as (frame, object id) → class (1-based), no trained forest."""
    path = Path(path).absolute()
    project_dir = path.parent
    images = [_image(raw), _image(segmentation)]
    frames = _frames(images[1])
    counts = _object_counts(frames)
    t, z, y, x = frames.shape
    stored = {**SMALL_VIDEO_PARAMETERS, "time_range": [0, t - 1], "x_range": [0, x], "y_range": [0, y],
              "z_range": [0, z], **(parameters or {})}
    with h5py.File(path, "w") as f:
        data = f.create_group("Input Data")
        data.create_group("local_data")
        data.create_dataset("Role Names", data=[name.encode() for name in ROLE_NAMES])
        lane = data.create_group("infos").create_group("lane0000")
        for role, image in zip(ROLE_NAMES, images):
            _write_dataset_info(lane.create_group(role), image, project_dir)
        data.create_dataset("StorageVersion", data=b"0.2")

        extraction = f.create_group("TrackingFeatureExtraction")
        _write_dict(extraction, "FeatureNamesVigra", _features(FEATURE_NAMES_VIGRA))
        _write_dict(extraction, "FeatureNamesDivision", _features(FEATURE_NAMES_DIVISION))
        extraction.create_dataset("StorageVersion", data=b"0.1")

        _write_classifier(f, "DivisionDetection", DIVISION_CLASSES, SELECTED_FEATURES_DIVISION, division_labels,
                          counts)
        _write_classifier(f, "CountClassification", COUNT_CLASSES, SELECTED_FEATURES_COUNT, count_labels, counts)

        tracking = f.create_group("ConservationTracking")
        _write_dict(tracking, "Parameters", stored)
        _write_dict(tracking, "FilteredLabels", {"0000": {}})
        # the workflow's default table export (conservationTrackingWorkflow.py), as the 2016 project stores it
        _write_pickle(tracking, "ExportSettings", (
            {"file path": "{dataset_dir}/{nickname}-exported_data.csv", "compression": {}, "file type": "csv"},
            ["Count", "RegionCenter", "RegionRadii", "RegionAxes"]))
        tracking.create_dataset("StorageVersion", data=b"0.1")

        export = f.create_group("Tracking Result Export")
        for key, value in {"OutputFilenameFormat": "{dataset_dir}/{nickname}_{result_type}", "OutputFormat": "hdf5",
                           "OutputInternalPath": "exported_data", "SelectedExportSource": "Tracking-Result"}.items():
            export.create_dataset(key, data=value.encode())
        export.create_group("AdditionalPluginArguments")
        export.create_dataset("StorageVersion", data=b"0.1")

        f.create_dataset("currentApplet", data=5)
        f.create_dataset("ilastikVersion", data=ILASTIK_VERSION)
        f.create_dataset("time", data=time.ctime().encode())
        f.create_dataset("workflowName", data=WORKFLOW_NAME.encode())
    return path


_MASK = re.compile(r"^mask(\d+)\.tif$")


def _read_tracks(path: Path, problems: list[str]) -> dict[int, tuple[int, int, int]]:
    """res_track.txt → label → (begin, end, parent); malformed lines and repeated labels go to `problems`."""
    tracks: dict[int, tuple[int, int, int]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4 or not all(re.fullmatch(r"-?\d+", v) for v in fields):
            problems.append(f"res_track.txt line {number}: {line!r} is not four integers 'L B E P'")
            continue
        label, begin, end, parent = map(int, fields)
        if not 0 < label < 2 ** 16:
            problems.append(f"res_track.txt line {number}: label {label} is not a positive 16-bit value")
        if begin < 0 or end < begin:
            problems.append(f"res_track.txt line {number}: track {label} spans frames {begin}..{end}")
        if parent < 0:
            problems.append(f"res_track.txt line {number}: track {label} has a negative parent {parent}")
        if label in tracks:
            problems.append(f"res_track.txt line {number}: label {label} is not unique")
            continue
        tracks[label] = (begin, end, parent)
    return tracks


def _read_masks(folder: Path, problems: list[str]) -> list[np.ndarray] | None:
    """mask000.tif, mask001.tif, ... (four digits beyond 1000 frames), one uint16 image per frame; None when the
    names do not give every frame from 0 exactly once (the problems say why)."""
    frames = {item.name: int(match.group(1)) for item in folder.iterdir() if (match := _MASK.match(item.name))}
    if not frames:
        problems.append(f"{folder}: no masks (mask000.tif, mask001.tif, ...)")
        return None
    count = max(frames.values()) + 1
    digits = 4 if count > 1000 else 3
    expected = {f"mask{t:0{digits}d}.tif" for t in range(count)}
    named = [f"{name}: not a mask name for {count} frames ({digits} digits)" for name in sorted(set(frames) - expected)]
    named += [f"mask{t:0{digits}d}.tif: missing" for t in range(count) if f"mask{t:0{digits}d}.tif" not in frames]
    problems.extend(named)
    if named:
        return None
    masks = [tifffile.imread(folder / f"mask{t:0{digits}d}.tif") for t in range(count)]
    problems.extend(f"mask{t:0{digits}d}.tif: {mask.dtype}, not uint16" for t, mask in enumerate(masks)
                    if mask.dtype != np.uint16)
    return masks


def check_ctc_folder(folder: str | os.PathLike) -> list[str]:
    """The violations of the Cell Tracking Challenge's result format in a folder (empty: valid).

    Rules from the challenge's "Naming and file content conventions" (linked from
    http://celltrackingchallenge.net/submission-of-results/), as the organisers' validator py-ctcmetrics applies them
    (https://github.com/CellTrackingChallenge/py-ctcmetrics, `ctc_metrics/utils/filesystem.py` read_tracking_file,
    `ctc_metrics/metrics/validation/valid.py`): `res_track.txt` has one line "L B E P" per track (L a unique positive
    16-bit label, B and E the zero-based first and last frame, P the parent's label or 0); the masks are
    `maskT.tif` (T with 3 digits, 4 beyond 1000 frames), one 16-bit label image per frame; a track's label is in
    exactly the masks of frames B..E, every label of a mask is a track, a parent exists and ends before its child
    begins (E_parent < B_child).
    """
    folder = Path(folder)
    problems: list[str] = []
    if not (folder / "res_track.txt").is_file():
        return [f"{folder}: no res_track.txt"]
    tracks = _read_tracks(folder / "res_track.txt", problems)
    masks = _read_masks(folder, problems)
    if masks is None:
        return problems
    for label, (begin, end, parent) in tracks.items():
        if parent and parent not in tracks:
            problems.append(f"track {label}: parent {parent} is not a track")
        elif parent and tracks[parent][1] >= begin:
            problems.append(f"track {label}: parent {parent} ends in frame {tracks[parent][1]}, not before the "
                            f"child begins in frame {begin}")
        if end >= len(masks):
            problems.append(f"track {label}: ends in frame {end}, beyond the last mask {len(masks) - 1}")
    for t, mask in enumerate(masks):
        present = set(np.unique(mask).tolist()) - {0}
        for label in sorted(present - set(tracks)):
            problems.append(f"mask of frame {t}: label {label} is not in res_track.txt")
        for label, (begin, end, _) in tracks.items():
            if begin <= t <= end and label not in present:
                problems.append(f"track {label} ({begin}..{end}): absent from the mask of frame {t}")
            elif not begin <= t <= end and label in present:
                problems.append(f"track {label} ({begin}..{end}): present in the mask of frame {t}")
    return problems


@dataclass(frozen=True)
class OutlineContour:
    """One line of a Contours export (`tracking_contour_export.py`): the frame, the lineage id and the contour as the
    plugin prints it: skimage `find_contours` points of a frame in (x, y) order printed column first, so each row
    is (y, x) of the image."""

    frame: int
    lineage: int
    points: np.ndarray  # (N, 2) float64
    line: str


def read_outline(path: str | os.PathLike) -> list[OutlineContour]:
    """The contours of an `.outline` file in file order ("00000000_<frame> <lineage> 0.000 y x y x ...")."""
    contours = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line:
            continue
        words = line.split(" ")
        stamp = re.fullmatch(r"\d{8}_(\d{6})", words[0])
        if stamp is None or len(words) < 3 or len(words) % 2 == 0:
            raise ValueError(f"{path} line {number}: not a contour line")
        points = np.asarray(words[3:], dtype=np.float64).reshape(-1, 2)
        contours.append(OutlineContour(int(stamp.group(1)), int(words[1]), points, line))
    return contours


@dataclass(frozen=True)
class OutlineAgreement:
    """Line-by-line comparison of two Contours exports (ilastik's test compares the lines' text)."""

    equal: int
    total: int  # lines of the reference
    differences: list[str]

    @property
    def identical(self) -> bool:
        return not self.differences


def _describe(ours: OutlineContour, reference: OutlineContour) -> str:
    where = f"frame {reference.frame}, lineage {reference.lineage}"
    if (ours.frame, ours.lineage) != (reference.frame, reference.lineage):
        return f"frame {ours.frame}, lineage {ours.lineage} where the reference has {where}"
    if len(ours.points) != len(reference.points):
        return f"{where}: {len(ours.points)} points, the reference {len(reference.points)}"
    differ = np.flatnonzero(np.any(ours.points != reference.points, axis=1))
    if len(differ):
        first = differ[0]
        return (f"{where}: {len(differ)} of {len(ours.points)} points differ, the first at {first}: "
                f"{ours.points[first].tolist()} vs {reference.points[first].tolist()}")
    return f"{where}: same points, different text"


def outline_agreement(ours: str | os.PathLike | Sequence[OutlineContour],
                      reference: str | os.PathLike | Sequence[OutlineContour]) -> OutlineAgreement:
    """How many lines of our Contours export equal the reference's, and a description of every other line."""
    ours = read_outline(ours) if isinstance(ours, (str, os.PathLike)) else list(ours)
    reference = read_outline(reference) if isinstance(reference, (str, os.PathLike)) else list(reference)
    differences = [f"line {i}: {_describe(a, b)}" for i, (a, b) in enumerate(zip(ours, reference), start=1)
                   if a.line != b.line]
    differences += [f"line {i}: frame {c.frame}, lineage {c.lineage} only in ours"
                    for i, c in enumerate(ours[len(reference):], start=len(reference) + 1)]
    differences += [f"line {i}: frame {c.frame}, lineage {c.lineage} missing from ours"
                    for i, c in enumerate(reference[len(ours):], start=len(ours) + 1)]
    equal = sum(a.line == b.line for a, b in zip(ours, reference))
    return OutlineAgreement(equal, len(reference), differences)
