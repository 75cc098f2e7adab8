"""Writing a Pixel Classification project (`.ilp`) in the layout ilastik 1.4 saves.

The groups, datasets, dtypes and attributes follow what ilastik 1.4.1 wrote into the fixture
projects (`api/PixelClass.ilp`) and its serializers (ilastik-spec.md §3.1-§3.6): `Input Data`
(one lane, the image referenced by path or copied into `local_data`), `FeatureSelections`,
`PixelClassification` (label names/colours, label blocks, classifier factory and forests) and
`Prediction Export`. The two pickles ilastik keeps (classifier factory, bookmarks) are written as the
fixed protocol-0 text ilastik produces; nothing is ever unpickled.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import h5py
import numpy as np

from hpc_ilastik.forest.ensemble import ForestEnsemble, write_classifier
from hpc_ilastik.io.axes import INTERNAL_AXES, from_tzyxc, internal_slices, make_axistags, to_tzyxc
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.pixel.features import FeatureSelection
from hpc_ilastik.pixel.training import LabelBlock

log = logging.getLogger(__name__)

ILASTIK_VERSION = "1.4.0"
WORKFLOW_NAME = "Pixel Classification"
ROLE_NAMES = ("Raw Data", "Prediction Mask")
TRAINING_APPLET = 2  # `currentApplet`: the GUI opens on the Training applet
LOCAL_DATA = "Input Data/local_data"
# Image formats ilastik reads with vigra's impex, which always yields a channel axis (yx → yxc).
CHANNEL_ALWAYS_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# volumina's `default16_new` label colours (ilastik's GUI gives label k colour k; 0 is transparent).
LABEL_COLORS = (
    (255, 225, 25), (0, 130, 200), (230, 25, 75), (70, 240, 240), (60, 180, 75),
    (250, 190, 190), (170, 110, 40), (145, 30, 180), (0, 128, 128), (245, 130, 48),
    (240, 50, 230), (210, 245, 60), (255, 215, 180), (230, 190, 255), (128, 128, 128),
)

# Protocol-0 pickle text of ParallelVigraRfLazyflowClassifierFactory(num_trees, num_forests) as ilastik
# 1.4 stores it (VERSION 2; ilastik parses this text with a regex, it never needs unpickling).
_FACTORY_TEMPLATE = (
    "ccopy_reg\n_reconstructor\np0\n(clazyflow.classifiers.parallelVigraRfLazyflowClassifier\n"
    "ParallelVigraRfLazyflowClassifierFactory\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\n"
    "VVERSION\np6\nI2\nsV_num_trees\np7\nI{trees}\nsV_label_proportion\np8\nN"
    "sV_variable_importance_path\np9\nNsV_variable_importance_enabled\np10\nI00\n"
    "sV_kwargs\np11\n(dp12\nsV_num_forests\np13\nI{forests}\nsb."
)
_EMPTY_BOOKMARKS = b"(lp0\n."  # protocol-0 pickle of [] (ilastik stores it as numpy.void)

_ASCII = h5py.string_dtype("ascii")


@dataclass(frozen=True)
class _Image:
    """The training image as the writer needs it: its own axes and shape, and a tzyxc reader."""

    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nickname: str
    resolutions: dict[str, float] | None
    read: Callable[[tuple[slice, ...]], np.ndarray]  # tzyxc region → tzyxc array

    @property
    def shape_tzyxc(self) -> tuple[int, ...]:
        sizes = dict(zip(self.axes, self.shape))
        return tuple(sizes.get(key, 1) for key in INTERNAL_AXES)


def _as_image(raw: Source | tuple[np.ndarray, str], nickname: str | None, file_path: str | None) -> _Image:
    """The image as ilastik will see it: PNG & co. always get a channel axis (vigra's impex gives yxc)."""
    if isinstance(raw, Source):
        image = _Image(raw.axes, tuple(raw.shape), np.dtype(raw.dtype), nickname or raw.nickname,
                       raw.resolutions, raw.read)
    else:
        array, axes = raw
        if len(axes) != array.ndim:
            raise ValueError(f"axes {axes!r} do not match an array of shape {array.shape}")
        view = to_tzyxc(array, axes)
        image = _Image(axes, tuple(array.shape), array.dtype, nickname or "image", None, lambda roi: view[roi])
    ext = os.path.splitext(file_path or "")[1].lower()
    if ext in CHANNEL_ALWAYS_EXTS and "c" not in image.axes:
        return replace(image, axes=image.axes + "c", shape=image.shape + (1,))
    return image


def lane_axes(shape_tzyxc: Sequence[int]) -> str:
    """ilastik's internal order for a Pixel Classification lane: t and z only when longer than 1, channels last.

    (The shortest allowed order holding every non-singleton axis: yxc, zyxc, tyxc or tzyxc; ilastik-spec.md §1.3.)
    """
    t, z = shape_tzyxc[0], shape_tzyxc[1]
    return ("t" if t > 1 else "") + ("z" if z > 1 else "") + "yxc"


def _scalar_text(group: h5py.Group, name: str, text: str | bytes) -> None:
    """A scalar variable-length ASCII string dataset, as ilastik's serializers write (bytes)."""
    group.create_dataset(name, data=text.encode() if isinstance(text, str) else text, dtype=_ASCII)


def _storage_version(group: h5py.Group, version: str) -> None:
    """`StorageVersion`: ilastik writes it as a Python str (variable-length UTF-8), unlike its other texts."""
    group.create_dataset("StorageVersion", data=version, dtype=h5py.string_dtype("utf-8"))


def _write_root(f: h5py.File) -> None:
    _scalar_text(f, "ilastikVersion", ILASTIK_VERSION)
    _scalar_text(f, "workflowName", WORKFLOW_NAME)
    _scalar_text(f, "time", time.ctime())
    f.create_dataset("currentApplet", data=np.int64(TRAINING_APPLET))


def _copy_inside(f: h5py.File, image: _Image, dataset_id: str) -> str:
    """Copy the image (its own axes) into `Input Data/local_data/<id>`, slab by slab; return its path."""
    chunks = tuple(min(n, 64 if key in "zyx" else 1) if key != "c" else n for key, n in zip(image.axes, image.shape))
    dataset = f.create_dataset(f"{LOCAL_DATA}/{dataset_id}", shape=image.shape, dtype=image.dtype, chunks=chunks)
    # the metadata ilastik's OpH5N5WriterBigDataset attaches (drange: ilastik assumes 0..255 for uint8)
    dataset.attrs["axistags"] = make_axistags(image.axes, image.resolutions)
    dataset.attrs["display_mode"] = "default"
    if image.dtype == np.uint8:
        dataset.attrs["drange"] = np.array([0, 255], dtype=np.int64)
    for index, key in enumerate(image.axes):
        dataset.dims[index].label = key
    t_size, z_size = image.shape_tzyxc[:2]
    slab = 32
    for t in range(t_size):
        for z0 in range(0, z_size, slab):
            roi = (slice(t, t + 1), slice(z0, min(z0 + slab, z_size)), slice(None), slice(None), slice(None))
            dataset[internal_slices(roi, image.axes)] = from_tzyxc(image.read(roi), image.axes)
    return dataset.name


def _project_file_path(file_path: str, project_dir: str) -> tuple[str, str]:
    """(`__class__`, filePath): paths relative to the project's folder when every file lies below it, else
    absolute; several files (a stack) stay joined by os.pathsep, globs and HDF5 inner paths are kept."""
    absolute = [os.path.abspath(part) for part in file_path.split(os.pathsep) if part]
    relative = [os.path.relpath(part, project_dir) for part in absolute]
    if all(r != ".." and not r.startswith(".." + os.sep) for r in relative):
        return "RelativeFilesystemDatasetInfo", os.pathsep.join(r.replace(os.sep, "/") for r in relative)
    return "FilesystemDatasetInfo", os.pathsep.join(a.replace(os.sep, "/") for a in absolute)


def _write_input_data(f: h5py.File, image: _Image, file_path: str | None, project_dir: str) -> None:
    """One lane: the image referenced by `file_path`, or copied into the project when it is None."""
    top = f.create_group("Input Data")
    top.create_dataset("Role Names", data=[name.encode() for name in ROLE_NAMES], dtype=_ASCII)
    _storage_version(top, "0.2")
    top.create_group("local_data")
    lane = top.create_group("infos/lane0000")
    lane.create_group("Prediction Mask")
    info = lane.create_group("Raw Data")
    dataset_id = str(uuid.uuid1())
    if file_path is None:
        inner_path = _copy_inside(f, image, dataset_id)
        _scalar_text(info, "__class__", "ProjectInternalDatasetInfo")
        _scalar_text(info, "location", "ProjectInternal")
        _scalar_text(info, "filePath", inner_path)
        _scalar_text(info, "inner_path", inner_path)
        info.create_dataset("fromstack", data=True)
    else:
        class_name, stored_path = _project_file_path(file_path, project_dir)
        _scalar_text(info, "__class__", class_name)
        _scalar_text(info, "location", "FileSystem")
        _scalar_text(info, "filePath", stored_path)
    info.create_dataset("allowLabels", data=True)
    _scalar_text(info, "axistags", make_axistags(image.axes, image.resolutions))
    _scalar_text(info, "datasetId", dataset_id)
    _scalar_text(info, "display_mode", "default")
    _scalar_text(info, "nickname", image.nickname)
    info.create_dataset("normalizeDisplay", data=False)
    info.create_dataset("shape", data=np.asarray(image.shape, dtype=np.int64))
    info.create_dataset("scale_locked", data=False)
    _scalar_text(info, "working_scale", "")


def _write_feature_selection(f: h5py.File, selection: FeatureSelection, z_size: int) -> None:
    group = f.create_group("FeatureSelections")
    group.create_dataset("FeatureIds", data=np.array([fid.encode() for fid in selection.feature_ids]))
    group.create_dataset("Scales", data=np.asarray(selection.scales, dtype=np.float64))
    group.create_dataset("SelectionMatrix", data=np.asarray(selection.matrix, dtype=bool))
    group.create_dataset("ComputeIn2d", data=np.asarray(selection.resolved_in_2d(z_size), dtype=bool))
    _storage_version(group, "0.1")


def _block_slice_text(slices: Sequence[slice]) -> bytes:
    """ilastik's `blockSlice` attribute: `[start:stop,...]` as ASCII bytes."""
    return ("[" + ",".join(f"{s.start}:{s.stop}" for s in slices) + "]").encode()


def _write_label_blocks(group: h5py.Group, blocks: Sequence[LabelBlock], axes: str) -> None:
    """Label blocks shrunk to their non-zero bounding box, in the lane's internal order `axes`."""
    tags = make_axistags(axes)
    count = 0
    for slices, labels in blocks:
        nonzero = np.nonzero(labels)
        if not nonzero[0].size:
            continue
        lo = [int(i.min()) for i in nonzero]
        hi = [int(i.max()) + 1 for i in nonzero]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        image_box = tuple(slice(s.start + a, s.start + b) for s, a, b in zip(slices, lo, hi))
        dataset = group.create_dataset(f"block{count:04d}", data=from_tzyxc(labels[box].astype(np.uint8), axes))
        dataset.attrs.create("blockSlice", _block_slice_text(internal_slices(image_box, axes)), dtype=_ASCII)
        dataset.attrs["axistags"] = tags
        count += 1


def _write_pixel_classification(f: h5py.File, blocks: Sequence[LabelBlock], axes: str,
                                ensemble: ForestEnsemble | None, label_names: Sequence[str],
                                feature_names: Sequence[str], tree_count: int, n_forests: int) -> None:
    group = f.create_group("PixelClassification")
    names = group.create_dataset("LabelNames", data=np.array([name.encode() for name in label_names]))
    colors = np.array([LABEL_COLORS[k % len(LABEL_COLORS)] for k in range(len(label_names))], dtype=np.int64)
    for dataset in (names, group.create_dataset("LabelColors", data=colors),
                    group.create_dataset("PmapColors", data=colors)):
        dataset.attrs["isEmpty"] = False
    bookmark = group.create_dataset("Bookmarks/0000", data=np.void(_EMPTY_BOOKMARKS))
    bookmark.attrs["version"] = np.int64(1)
    _write_label_blocks(group.create_group("LabelSets/labels000"), blocks, axes)
    _scalar_text(group, "ClassifierFactory", _FACTORY_TEMPLATE.format(trees=int(tree_count), forests=int(n_forests)))
    if ensemble is not None:
        write_classifier(group.create_group("ClassifierForests"), ensemble, list(feature_names))
    _storage_version(group, "0.1")


def _write_prediction_export(f: h5py.File) -> None:
    group = f.create_group("Prediction Export")
    _scalar_text(group, "OutputFilenameFormat", "{dataset_dir}/{nickname}_{result_type}")
    _scalar_text(group, "OutputFormat", "hdf5")
    _scalar_text(group, "OutputInternalPath", "exported_data")
    _storage_version(group, "0.1")


def write_pixel_classification_project(
    path: str,
    *,
    raw: Source | tuple[np.ndarray, str],
    store_data_inside: bool,
    labels_tzyxc: Sequence[LabelBlock],
    selection: FeatureSelection,
    ensemble: ForestEnsemble | None,
    label_names: Sequence[str],
    feature_names: Sequence[str],
    raw_file_path: str | None = None,
    nickname: str | None = None,
    tree_count: int | None = None,
) -> None:
    """Write a one-lane Pixel Classification project as ilastik 1.4 saves it.

    `raw` is an opened input or an (array, axes) pair; it is copied into the project when
    `store_data_inside`, else referenced by `raw_file_path` (the input argument, e.g. `f.h5/raw`;
    stored relative to the project when it lies below the project's folder). Give `raw_file_path`
    whenever the image comes from a file: ilastik sees PNG & co. with a channel axis, and so does the project. `labels_tzyxc` are label
    blocks (tzyxc slices in the image, uint8 tzyxc arrays; 0 = unlabelled). The factory records
    `tree_count` trees (default: the ensemble's) in as many forests as the ensemble has. The file is
    written under a temporary name and renamed when complete.
    """
    image = _as_image(raw, nickname, raw_file_path)
    if not store_data_inside and raw_file_path is None:
        raise ValueError("a project that references its image needs raw_file_path")
    if ensemble is not None and len(feature_names) != ensemble.n_features:
        raise ValueError(f"{len(feature_names)} feature names for a classifier of {ensemble.n_features} features")
    project_dir = os.path.dirname(os.path.abspath(path))
    axes = lane_axes(image.shape_tzyxc)
    trees = tree_count or (ensemble.n_trees if ensemble is not None else 100)
    n_forests = len(ensemble.forests) if ensemble is not None else 1
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with h5py.File(partial, "w") as f:
            _write_root(f)
            _write_input_data(f, image, None if store_data_inside else raw_file_path, project_dir)
            _write_feature_selection(f, selection, image.shape_tzyxc[1])
            _write_pixel_classification(f, labels_tzyxc, axes, ensemble, label_names, feature_names, trees, n_forests)
            _write_prediction_export(f)
        if os.path.exists(path):
            log.warning("replacing the existing project %s", path)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
