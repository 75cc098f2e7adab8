"""Reading real ilastik projects (1.2-1.4): stages, lanes, labels, export settings, and bad inputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.errors import UserError
from hpc_ilastik.project.reader import open_project

PIXEL = [
    "PixelClassification2d.ilp", "PixelClassification2d3c.ilp", "PixelClassification2d_units.ilp",
    "PixelClassification3d.ilp", "PixelClassification3d1c.ilp", "PixelClassification3d2c.ilp",
    "PixelClassification5t2d1c.ilp", "PixelClassification5t2d2c.ilp", "PixelClassification5t3d2c.ilp",
    "api/PixelClass.ilp", "api/PixelClass3D.ilp", "api/PixelClassNoClassifier.ilp", "api/PixelClassNoData.ilp",
    "notebooks/pc.ilp", "inputdata/mitocheckPixelClassification.ilp",
    "inputdata/mitocheckPixelClassificationMergers.ilp",
]
AUTOCONTEXT = ["Autocontext2d3c.ilp", "Autocontext5t2d1c.ilp", "api/Autocontext_2D.ilp", "notebooks/ac.ilp"]
OTHER_WORKFLOWS = ("Carving", "Manual Tracking Workflow")  # ilastik's workflows that hpc-ilastik does not run


def _stage_groups(name: str) -> list[tuple[str, str]]:
    first = [("FeatureSelections", "PixelClassification")]
    return first + [("FeatureSelections01", "PixelClassification01")] if name in AUTOCONTEXT else first


@pytest.mark.parametrize("name", PIXEL + AUTOCONTEXT)
def test_every_pixel_and_autocontext_fixture_opens(fixtures_dir, name):
    path = fixtures_dir / name
    project = open_project(str(path))
    assert project.path == str(path)
    assert len(project.stages) == (2 if name in AUTOCONTEXT else 1)
    with h5py.File(path, "r") as f:
        assert project.workflow_name == f["workflowName"][()].decode()
        assert project.ilastik_version == f["ilastikVersion"][()].decode()
        for stage, (features_name, pixel_name) in zip(project.stages, _stage_groups(name)):
            features, pixel = f[features_name], f[pixel_name]
            if "FeatureIds" in features:
                assert stage.features.feature_ids == tuple(v.decode() for v in features["FeatureIds"][()])
                assert stage.features.scales == tuple(features["Scales"][()])
                np.testing.assert_array_equal(np.array(stage.features.matrix), features["SelectionMatrix"][()])
                in_2d = features["ComputeIn2d"][()].tolist() if "ComputeIn2d" in features else None
                assert stage.features.compute_in_2d == (tuple(in_2d) if in_2d else None)
            else:
                assert stage.features.feature_ids == () and stage.features.matrix == ()
            if "ClassifierForests" in pixel:
                forests = pixel["ClassifierForests"]
                assert stage.classifier.n_trees == 100
                assert stage.classifier.n_features == len(forests["feature_names"])
                np.testing.assert_array_equal(stage.classifier.known_labels, forests["known_labels"][()])
                assert len(stage.label_names) == len(forests["known_labels"])
            else:
                assert stage.classifier is None


def test_label_names_and_classifier_of_named_fixtures(fixtures_dir):
    ac = open_project(str(fixtures_dir / "notebooks" / "ac.ilp"))
    assert ac.workflow_name == "AutocontextTwoStage"
    assert ac.stages[0].label_names == ["background", "dim nuclei", "bright nuclei"]
    assert ac.stages[1].label_names == ["nuclei", "background"]
    assert ac.stages[1].classifier.n_features == 196
    no_classifier = open_project(str(fixtures_dir / "api" / "PixelClassNoClassifier.ilp"))
    assert no_classifier.stages[0].classifier is None
    assert no_classifier.stages[0].label_names == ["Label 1", "Label 2"]
    assert no_classifier.stages[0].labels(0) == []
    no_data = open_project(str(fixtures_dir / "api" / "PixelClassNoData.ilp"))
    assert no_data.lanes == [] and no_data.stages[0].label_names == [] and no_data.stages[0].classifier is None


def test_multicut_projects_old_and_new_parameter_names(fixtures_dir, tmp_path, caplog):
    """ilastik 1.2's watershed names are ignored (defaults, said once), 1.4's are read; the edge forest, its
    columns, the edge labels and the superpixels ilastik cached are read."""
    import shutil

    import h5py

    old = open_project(str(fixtures_dir / "Boundary-basedSegmentationwMulticut3d2c.ilp"))
    assert "ilastik 1.2's names (Pmin" in caplog.text
    assert (old.watershed.threshold, old.watershed.min_size, old.watershed.sigma, old.watershed.alpha) == (0.5, 100, 3, 0.9)
    assert old.watershed.channels == (1,) and old.watershed.blockwise is False and old.solver_name == "Nifty_FmGreedy"
    assert old.train_forest and len(old.classifier.forests) == 8 and old.classifier.n_features == 135
    assert old.classifier_features[0] == "Raw Data-0 edgeregion_edge_area" and len(old.classifier_features) == 135
    assert list(old.feature_names) == ["Probabilities-0", "Probabilities-1", "Raw Data-0", "Raw Data-1"]
    pairs, labels = old.edge_labels[0]
    assert pairs.shape == (7, 2) and labels.tolist() == [2, 2, 1, 1, 2, 2, 2]
    cached = old.cached_superpixels(0)
    assert cached.shape == (1, 50, 60, 55) and cached.dtype == np.uint32 and np.all(np.isin(pairs, cached))
    new = tmp_path / "new.ilp"
    shutil.copy(fixtures_dir / "Boundary-basedSegmentationwMulticut3d2c.ilp", new)
    with h5py.File(new, "r+") as f:
        for name, value in (("Threshold", 0.6), ("MinSize", 7), ("Sigma", 1.1), ("Alpha", 0.4),
                            ("BlockwiseWatershed", True), ("PixelPitch", np.array([2.0, 1.0, 1.0]))):
            f["DT Watershed"][name] = value
        f["Training and Multicut/TrainRandomForest"] = False
        f["Training and Multicut/ProbabilityThreshold"] = 0.3
    read = open_project(str(new))
    assert (read.watershed.threshold, read.watershed.min_size, read.watershed.sigma, read.watershed.alpha) == (
        0.6, 7, 1.1, 0.4)
    assert read.watershed.blockwise and read.watershed.pixel_pitch == (2.0, 1.0, 1.0)
    assert not read.train_forest and read.probability_threshold == 0.3


@pytest.mark.parametrize("workflow", OTHER_WORKFLOWS)
def test_other_workflows_are_refused_by_name(fixtures_dir, tmp_path, workflow):
    project = tmp_path / "other.ilp"
    shutil.copy(fixtures_dir / "PixelClassification2d.ilp", project)
    with h5py.File(project, "r+") as f:
        del f["workflowName"]
        f["workflowName"] = workflow.encode()
    with pytest.raises(UserError) as info:
        open_project(str(project))
    message = str(info.value)
    assert f"'{workflow}'" in message and "not supported yet" in message and "Pixel Classification" in message


def test_lanes_resolve_paths_axes_and_shapes(fixtures_dir):
    old = open_project(str(fixtures_dir / "PixelClassification2d.ilp"))  # 1.2.2: './inputdata/2d.h5/data', no shape
    raw = old.lanes[0].roles["Raw Data"]
    assert raw.location == "FileSystem"
    assert raw.path == str(fixtures_dir / "inputdata" / "2d.h5" / "data")
    assert (raw.axes, raw.shape, raw.nickname) == ("yx", None, "2d")
    assert old.lanes[0].roles["Prediction Mask"] is None

    new = open_project(str(fixtures_dir / "api" / "PixelClass3D.ilp")).lanes[0].roles["Raw Data"]
    assert (new.path, new.axes, new.shape) == (str(fixtures_dir / "api" / "Data_3D.npy"), "zyxc", (64, 64, 64, 1))
    assert np.load(new.path, mmap_mode="r").shape == (64, 64, 64, 1)

    absolute = open_project(str(fixtures_dir / "api" / "PixelClass.ilp")).lanes[0].roles["Raw Data"]
    assert absolute.path == (  # an absolute path is kept as stored
        "/Users/kutra/sources/ilastik-meta/ilastik/tests/test_ilastik/data/api_projects/Data_1channel.png")
    assert absolute.nickname == "2d_cells_128px"

    mito = open_project(str(fixtures_dir / "inputdata" / "mitocheckPixelClassification.ilp")).lanes[0].roles["Raw Data"]
    assert mito.axes == "txyzc"
    assert mito.path == str(fixtures_dir / "inputdata" / "mitocheck_2d+t" / "mitocheck_small_2D+t.h5" / "exported_data")

    internal = open_project(str(fixtures_dir / "notebooks" / "pc.ilp")).lanes[0].roles["Raw Data"]
    assert internal.location == "ProjectInternal"
    assert (internal.axes, internal.shape) == ("yxc", (1024, 1344, 1))
    with h5py.File(fixtures_dir / "notebooks" / "pc.ilp", "r") as f:
        assert f[internal.path].shape == internal.shape


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    return dst


def _replace(group: h5py.Group, name: str, value) -> None:
    if name in group:
        del group[name]
    group[name] = value


def test_windows_separators_and_stacks(fixtures_dir, tmp_path):
    path = _writable_copy(fixtures_dir / "PixelClassification2d3c.ilp", tmp_path / "p.ilp")
    info_path = "Input Data/infos/lane0000/Raw Data"
    with h5py.File(path, "a") as f:
        _replace(f[info_path], "filePath", b"inputdata\\2d3c.h5\\data")
    assert open_project(str(path)).lanes[0].roles["Raw Data"].path == str(tmp_path / "inputdata" / "2d3c.h5" / "data")
    with h5py.File(path, "a") as f:
        _replace(f[info_path], "filePath", b"C:\\data\\a.png;C:\\data\\b.png")
    windows_stack = open_project(str(path)).lanes[0].roles["Raw Data"].path
    assert windows_stack == os.pathsep.join(["C:/data/a.png", "C:/data/b.png"])
    with h5py.File(path, "a") as f:
        _replace(f[info_path], "filePath", b"stack/a.png:stack/b.png")
    expected = os.pathsep.join(str(tmp_path / "stack" / n) for n in ("a.png", "b.png"))
    assert open_project(str(path)).lanes[0].roles["Raw Data"].path == expected


def test_legacy_single_role_project_internal_layout(fixtures_dir, tmp_path):
    """Very old layout: no Role Names, the lane group is the info; internal data found by its datasetId."""
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "legacy.ilp")
    image = np.arange(128 * 128, dtype=np.uint8).reshape(128, 128, 1)
    with h5py.File(path, "a") as f:
        del f["Input Data/Role Names"]
        del f["Input Data/infos/lane0000"]
        lane = f.create_group("Input Data/infos/lane0000")
        lane["location"] = b"ProjectInternal"
        lane["datasetId"] = b"1234-abcd"
        lane["axisorder"] = b"yxc"
        lane["nickname"] = b"cells"
        f["Input Data/local_data/1234-abcd"] = image
    project = open_project(str(path))
    assert list(project.lanes[0].roles) == ["Raw Data"]
    ref = project.lanes[0].roles["Raw Data"]
    assert (ref.location, ref.path, ref.axes, ref.shape, ref.nickname) == (
        "ProjectInternal", "/Input Data/local_data/1234-abcd", "yxc", (128, 128, 1), "cells")
    assert len(project.stages[0].labels(0)) == 1


def test_label_blocks_of_a_1_4_project(fixtures_dir):
    path = fixtures_dir / "api" / "PixelClass.ilp"
    blocks = open_project(str(path)).stages[0].labels(0)
    with h5py.File(path, "r") as f:
        stored = f["PixelClassification/LabelSets/labels000/block0000"][()]  # yxc, blockSlice [26:64,36:101,0:1]
    assert len(blocks) == 1
    slices, data = blocks[0]
    assert slices == (slice(0, 1), slice(0, 1), slice(26, 64), slice(36, 101), slice(0, 1))
    assert data.dtype == np.uint8 and data.shape == (1, 1, 38, 65, 1)
    np.testing.assert_array_equal(data[0, 0], stored)
    counts = np.bincount(data.ravel(), minlength=3)
    assert counts[1] > 0 and counts[2] > 0 and counts.sum() == stored.size


def test_label_blocks_of_a_1_2_project_in_txyzc(fixtures_dir):
    """ilastik 1.2 stored labels in the image's own axis order (here txyzc): they come back in tzyxc."""
    path = fixtures_dir / "inputdata" / "mitocheckPixelClassification.ilp"
    blocks = open_project(str(path)).stages[0].labels(0)
    with h5py.File(path, "r") as f:
        stored = f["PixelClassification/LabelSets/labels000/block0000"][()]  # blockSlice [2:3,42:49,50:63,0:1,0:1]
    slices, data = blocks[0]
    assert slices == (slice(2, 3), slice(0, 1), slice(50, 63), slice(42, 49), slice(0, 1))
    np.testing.assert_array_equal(data, stored.transpose(0, 3, 2, 1, 4))


def test_autocontext_stages_have_their_own_labels(fixtures_dir):
    path = fixtures_dir / "api" / "Autocontext_2D.ilp"
    project = open_project(str(path))
    with h5py.File(path, "r") as f:
        for stage, group in zip(project.stages, ("PixelClassification", "PixelClassification01")):
            (slices, data), = stage.labels(0)
            stored = f[f"{group}/LabelSets/labels000/block0000"]
            bounds = [tuple(map(int, part.split(":"))) for part in stored.attrs["blockSlice"][1:-1].split(",")]
            assert slices[2:] == tuple(slice(a, b) for a, b in bounds)
            np.testing.assert_array_equal(data[0, 0], stored[()])
    with pytest.raises(IndexError):
        project.stages[0].labels(1)


def _axistags(keys: str) -> bytes:
    flags = {"t": 8, "c": 1}
    return json.dumps({"axes": [{"key": k, "typeFlags": flags.get(k, 2), "resolution": 0, "description": ""}
                                for k in keys]}).encode()


def test_label_axis_order_follows_the_saving_version(fixtures_dir, tmp_path):
    """1.3.3post2 ≤ v ≤ 1.4.0b7 saved labels in the raw image's original order, whatever else the block says."""
    reference = open_project(str(fixtures_dir / "api" / "PixelClass.ilp")).stages[0].labels(0)
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "xy.ilp")
    with h5py.File(path, "a") as f:
        _replace(f, "ilastikVersion", b"1.4.0b5")
        info = f["Input Data/infos/lane0000/Raw Data"]
        _replace(info, "axistags", _axistags("xyc"))
        block = f["PixelClassification/LabelSets/labels000/block0000"]
        data, attrs = block[()], dict(block.attrs)
        del f["PixelClassification/LabelSets/labels000/block0000"]
        f["PixelClassification/LabelSets/labels000/block0000"] = data.transpose(1, 0, 2)
        f["PixelClassification/LabelSets/labels000/block0000"].attrs["blockSlice"] = "[36:101,26:64,0:1]"
        f["PixelClassification/LabelSets/labels000/block0000"].attrs["axistags"] = attrs["axistags"]  # says yxc
    (slices, data), = open_project(str(path)).stages[0].labels(0)
    assert slices == reference[0][0]
    np.testing.assert_array_equal(data, reference[0][1])
    with h5py.File(path, "a") as f:  # a later version trusts the block's own axistags
        _replace(f, "ilastikVersion", b"1.4.1")
        f["PixelClassification/LabelSets/labels000/block0000"].attrs["axistags"] = _axistags("xyc").decode()
    (slices, data), = open_project(str(path)).stages[0].labels(0)
    assert slices == reference[0][0]
    np.testing.assert_array_equal(data, reference[0][1])


@pytest.mark.parametrize("block_slice", ["[26:64,36:101]", "[26:64,36:100,0:1]", "26:64,36:101,0:1", "[a:b]"])
def test_damaged_label_blocks_raise_user_errors(fixtures_dir, tmp_path, block_slice):
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "labels.ilp")
    with h5py.File(path, "a") as f:
        f["PixelClassification/LabelSets/labels000/block0000"].attrs["blockSlice"] = block_slice
    stage = open_project(str(path)).stages[0]
    with pytest.raises(UserError, match="blockSlice"):
        stage.labels(0)


def test_export_settings(fixtures_dir, tmp_path):
    stored = open_project(str(fixtures_dir / "api" / "PixelClass.ilp")).export_settings
    assert stored.output_format == "hdf5"
    assert stored.output_internal_path == "exported_data"
    assert stored.output_filename_format == "{dataset_dir}/{nickname}_{result_type}"
    assert stored.export_dtype is None and stored.region_start is None and stored.input_min is None
    assert open_project(str(fixtures_dir / "PixelClassification5t2d1c.ilp")).export_settings.export_dtype == "float32"
    compressed = open_project(str(fixtures_dir / "PixelClassification2d3c.ilp")).export_settings
    assert compressed.output_format == "compressed hdf5"

    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "export.ilp")
    with h5py.File(path, "a") as f:
        group = f["Prediction Export"]
        group["RegionStart"] = np.array([-1, 10, 0])
        group["RegionStop"] = np.array([-1, 50, -1])
        group["InputMin"], group["InputMax"] = 0, 255
        group["ExportMin"], group["ExportMax"] = 0.0, 1.0
        group["ExportDtype"] = b"uint8"
        group["OutputAxisOrder"] = b"cyx"
    settings = open_project(str(path)).export_settings
    assert settings.region_start == (None, 10, 0) and settings.region_stop == (None, 50, None)
    assert (settings.input_min, settings.input_max, settings.export_min, settings.export_max) == (0, 255, 0, 1)
    assert (settings.export_dtype, settings.output_axis_order) == ("uint8", "cyx")


def test_classifier_with_more_classes_than_label_names_is_dropped(fixtures_dir, tmp_path):
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "names.ilp")
    with h5py.File(path, "a") as f:
        _replace(f["PixelClassification"], "LabelNames", np.array([b"only one"]))
    stage = open_project(str(path)).stages[0]
    assert stage.label_names == ["only one"] and stage.classifier is None


def test_missing_label_names_are_derived_from_the_labels(fixtures_dir, tmp_path):
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "nonames.ilp")
    with h5py.File(path, "a") as f:
        del f["PixelClassification/LabelNames"]
    assert open_project(str(path)).stages[0].label_names == ["Label 1", "Label 2"]


def test_sklearn_classifier_is_refused(fixtures_dir, tmp_path):
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "sk.ilp")
    with h5py.File(path, "a") as f:
        _replace(f["PixelClassification/ClassifierForests"], "pickled_type",
                 b"clazyflow.classifiers.sklearnLazyflowClassifier\nSklearnLazyflowClassifier\np0\n.")
    with pytest.raises(UserError, match="SklearnLazyflowClassifier"):
        open_project(str(path))


def test_bad_inputs_raise_user_errors(fixtures_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_project(str(tmp_path / "missing.ilp"))
    text = tmp_path / "notes.ilp"
    text.write_text("not a project")
    with pytest.raises(UserError, match=r"is not an ilastik project \(\.ilp\)"):
        open_project(str(text))
    with pytest.raises(UserError, match=r"is not an ilastik project \(\.ilp\)"):
        open_project(str(tmp_path))
    other = tmp_path / "data.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(UserError, match=r"is not an ilastik project \(\.ilp\)"):
        open_project(str(other))
    whole = (fixtures_dir / "api" / "PixelClass.ilp").read_bytes()
    truncated = tmp_path / "truncated.ilp"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="damaged"):
        open_project(str(truncated))


def test_project_opens_while_another_process_writes_it(fixtures_dir, tmp_path):
    """Opened without HDF5 file locking: a project held open for writing elsewhere still opens."""
    path = _writable_copy(fixtures_dir / "api" / "PixelClass.ilp", tmp_path / "busy.ilp")
    script = f"import h5py, sys; f = h5py.File({str(path)!r}, 'a'); print('ready', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert open_project(str(path)).stages[0].classifier.n_trees == 100
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
