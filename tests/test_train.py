"""Training without the GUI: feature specs, forests, the `.ilp` layout ilastik 1.4 writes, retraining."""

import json
import re
import shutil
from dataclasses import replace
from functools import partial

import h5py
import imageio.v3 as iio
import numpy as np
import pytest

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.training import split_trees, train_forests
from hpc_ilastik.io.inputs import open_input
from hpc_ilastik.pixel import training
from hpc_ilastik.pixel.features import DEFAULT_FEATURE_IDS, DEFAULT_SCALES, compute_features, plan_features
from hpc_ilastik.pixel.pipeline import PixelStage, SourceRequest, compute_source
from hpc_ilastik.pixel.training import labelled_features, training_set
from hpc_ilastik.project.reader import open_project
from hpc_ilastik.project.writer import write_pixel_classification_project
from hpc_ilastik.synthetic import make_blobs_volume, sparse_labels
from hpc_ilastik.train import label_blocks_from_image, parse_feature_spec, train_command
from hpc_ilastik.workflows.pixel_classification import retrain_stage


def selected(selection) -> set[tuple[str, float]]:
    """The (feature id, scale) pairs a selection computes."""
    return {(fid, s) for fid, row in zip(selection.feature_ids, selection.matrix)
            for s, on in zip(selection.scales, row) if on}


@pytest.fixture(scope="module")
def sample_2d(tmp_path_factory):
    """A synthetic 2-D image (PNG) with sparse labels (npy) and its truth, in a fresh folder."""
    folder = tmp_path_factory.mktemp("sample")
    raw, truth = make_blobs_volume((96, 96), seed=4)
    labels = sparse_labels(truth, seed=2)
    iio.imwrite(folder / "raw.png", raw)
    np.save(folder / "labels.npy", labels)
    return folder, raw, truth, labels


# ---------------------------------------------------------------------------------------- feature specs


def test_feature_spec_flag_aliases_and_yaml(tmp_path):
    flag = parse_feature_spec("GaussianSmoothing:0.7,1.6;HessianOfGaussianEigenvalues:1.6,3.5")
    assert selected(flag) == {("GaussianSmoothing", 0.7), ("GaussianSmoothing", 1.6),
                              ("HessianOfGaussianEigenvalues", 1.6), ("HessianOfGaussianEigenvalues", 3.5)}
    assert flag.feature_ids == DEFAULT_FEATURE_IDS and flag.scales == DEFAULT_SCALES  # ilastik's full grid

    aliases = parse_feature_spec(" gs : 0.7, 1.6 ; Hessian of Gaussian Eigenvalues:1.6 ; hoge:3.5 ")
    assert aliases == flag

    spec = tmp_path / "features.yaml"
    spec.write_text("GaussianSmoothing: [0.7, 1.6]\nhessian: [1.6, 3.5]\n")
    assert parse_feature_spec(str(spec)) == flag


def test_feature_spec_default_set_and_mistakes(tmp_path):
    assert selected(parse_feature_spec(None)) == {
        ("GaussianSmoothing", 0.7), ("GaussianSmoothing", 1.6), ("GaussianSmoothing", 3.5),
        ("LaplacianOfGaussian", 1.0), ("LaplacianOfGaussian", 3.5),
        ("GaussianGradientMagnitude", 1.6), ("GaussianGradientMagnitude", 5.0),
        ("DifferenceOfGaussians", 1.6),
        ("StructureTensorEigenvalues", 1.6), ("StructureTensorEigenvalues", 3.5),
        ("HessianOfGaussianEigenvalues", 1.6), ("HessianOfGaussianEigenvalues", 3.5),
    }
    (tmp_path / "list.yaml").write_text("- GaussianSmoothing\n")
    for bad in ("Sobel:1.0", "gs:2.0", "LoG:0.3", "gs", "gs:0.7;dog:", "", str(tmp_path / "missing.yaml"),
                str(tmp_path / "list.yaml")):
        with pytest.raises(UserError):
            parse_feature_spec(bad)


# ---------------------------------------------------------------------------------------- training


def test_training_set_takes_only_the_labelled_pixels():
    features = np.arange(2 * 3 * 4 * 2, dtype=np.float64).reshape(2, 3, 4, 2)
    labels = np.zeros((2, 3, 4), dtype=np.uint8)
    labels[0, 1, 2], labels[1, 2, 3] = 2, 1
    X, y = training_set(features, labels)
    assert X.dtype == np.float32 and y.dtype == np.uint32
    np.testing.assert_array_equal(X, [features[0, 1, 2], features[1, 2, 3]])
    np.testing.assert_array_equal(y, [2, 1])


def test_trees_are_split_over_forests_as_ilastik_does(fixtures_dir):
    with h5py.File(fixtures_dir / "api" / "PixelClass.ilp", "r") as f:
        forests = f["PixelClassification/ClassifierForests"]
        stored = [int(forests[name]["_options/tree_count_"][0]) for name in sorted(forests) if name.startswith("Forest")]
    assert split_trees(sum(stored), len(stored)) == stored
    assert split_trees(3, 4) == [1, 1, 1]


def test_forests_written_to_a_project_predict_exactly_like_the_trained_ones(tmp_path, sample_2d):
    folder, raw, truth, labels = sample_2d
    selection = parse_feature_spec("gs:0.7,3.5;ggm:1.6;hoge:1.6")
    plan = plan_features(selection, (1,) + raw.shape, 1)
    features = compute_features(raw[None, :, :, None], plan)
    X, y = training_set(features, labels[None])
    ensemble = train_forests(X, y, tree_count=30, n_forests=3, seed=7)
    assert [f.n_trees for f in ensemble.forests] == [10, 10, 10]
    assert all(f.mtry == round(np.sqrt(X.shape[1])) for f in ensemble.forests)  # vigra's sqrt rule

    block = ((slice(0, 1), slice(0, 1), slice(0, 96), slice(0, 96), slice(0, 1)), labels[None, None, :, :, None])
    path = tmp_path / "p.ilp"
    write_pixel_classification_project(
        str(path), raw=(raw, "yx"), store_data_inside=True, labels_tzyxc=[block], selection=selection,
        ensemble=ensemble, label_names=["Label 1", "Label 2"], feature_names=plan.names)
    stage = open_project(str(path)).stages[0]
    flat = features.reshape(-1, features.shape[-1])
    np.testing.assert_array_equal(stage.classifier.predict_proba(flat, 2), ensemble.predict_proba(flat, 2))
    assert stage.features == replace(selection, compute_in_2d=(True,) * 7)  # ComputeIn2d always written

    # the model learnt the blobs, not just the scribbles
    segmentation = ensemble.predict_proba(flat, 2).argmax(1).reshape(truth.shape) + 1
    assert np.mean(segmentation == truth) > 0.95


def test_train_command_writes_a_project_we_can_read_back(tmp_path, sample_2d):
    folder, raw, truth, labels = sample_2d
    output = folder / "trained.ilp"
    train_command(str(folder / "raw.png"), str(folder / "labels.npy"), None, 100, str(output), None, False)
    project = open_project(str(output))
    assert project.workflow_name == "Pixel Classification"
    ref = project.lanes[0].roles["Raw Data"]
    assert ref.location == "FileSystem" and ref.path == str(folder / "raw.png")
    assert (ref.axes, ref.shape) == ("yxc", (96, 96, 1))  # as ilastik sees a grey PNG

    stage = project.stages[0]
    assert stage.label_names == ["Label 1", "Label 2"]
    assert [f.n_trees for f in stage.classifier.forests] == [25, 25, 25, 25]
    np.testing.assert_array_equal(stage.classifier.known_labels, [1, 2])
    stored = np.zeros((96, 96), dtype=np.uint8)
    for slices, block in stage.labels(0):
        stored[slices[2:4]] = np.where(block[0, 0, :, :, 0] > 0, block[0, 0, :, :, 0], stored[slices[2:4]])
    np.testing.assert_array_equal(stored, labels)

    plan = plan_features(stage.features, (1, 96, 96), 1)
    with h5py.File(output, "r") as f:
        names = [n.decode() for n in f["PixelClassification/ClassifierForests/feature_names"][()]]
        factory = f["PixelClassification/ClassifierFactory"][()]
    assert names == plan.names
    assert b"ParallelVigraRfLazyflowClassifierFactory" in factory and b"V_num_trees\np7\nI100\n" in factory
    assert b"V_num_forests\np13\nI4\n" in factory
    features = compute_features(raw[None, :, :, None], plan)
    probabilities = stage.classifier.predict_proba(features.reshape(-1, features.shape[-1]), 2)
    assert np.mean(probabilities.argmax(1).reshape(truth.shape) + 1 == truth) > 0.95

    outside = tmp_path / "elsewhere.ilp"  # the image is not below the project's folder: absolute path
    train_command(str(folder / "raw.png"), str(folder / "labels.npy"), "gs:1.0", 5, str(outside), None, False)
    with h5py.File(outside, "r") as f:
        info = f["Input Data/infos/lane0000/Raw Data"]
        assert info["__class__"][()] == b"FilesystemDatasetInfo"
        assert info["filePath"][()].decode() == str(folder / "raw.png")


def test_label_image_mistakes_are_user_errors(tmp_path, sample_2d):
    folder, raw, truth, labels = sample_2d
    cases = {
        "eraser.npy": np.where(labels == 2, 100, labels),
        "small.npy": labels[:50],
        "one_class.npy": np.where(labels == 2, 0, labels),
        "fractions.npy": labels * 0.5,
    }
    for name, image in cases.items():
        np.save(tmp_path / name, image)
        with pytest.raises(UserError):
            train_command(str(folder / "raw.png"), str(tmp_path / name), None, 3, str(tmp_path / "x.ilp"), None, False)
    assert not (tmp_path / "x.ilp").exists()


def test_features_around_the_labels_equal_the_whole_image_features(monkeypatch):
    monkeypatch.setitem(training.FEATURE_TILE, 3, (8, 24, 24))  # small tiles: many tiles, halos and borders
    raw, truth = make_blobs_volume((20, 50, 60), seed=8)
    labels = np.zeros_like(truth)
    labels[3, 5:9, 30:59] = 1  # near the border, over two tiles along x
    labels[6:12, 20:27, 40:42] = truth[6:12, 20:27, 40:42]  # across tiles along z and y
    labels[19, 49, 0] = 2  # a corner
    blocks = [((slice(0, 1), slice(0, 20), slice(0, 50), slice(0, 60), slice(0, 1)), labels[None, ..., None])]
    plan = plan_features(parse_feature_spec("gs:3.5;hoge:1.6;ste:0.7"), raw.shape, 1)
    X, y = labelled_features(lambda roi: raw[None, ..., None][roi], (1,) + raw.shape + (1,), blocks,
                             partial(compute_features, plan=plan), plan.halo)
    whole = compute_features(raw[..., None], plan)
    expected_X, expected_y = training_set(whole, labels)
    order, expected_order = np.lexsort(X.T[::-1]), np.lexsort(expected_X.T[::-1])
    np.testing.assert_array_equal(X[order], expected_X[expected_order])
    np.testing.assert_array_equal(y[order], expected_y[expected_order])


def test_label_blocks_are_bounding_boxes_of_the_labels(tmp_path):
    labels = np.zeros((3, 100, 90), dtype=np.uint16)
    labels[1, 10:12, 5:9] = 1
    labels[2, 60, 80] = 3
    np.save(tmp_path / "l.npy", labels)
    blocks = label_blocks_from_image(open_input(str(tmp_path / "l.npy"), axes="zyx"))
    rebuilt = np.zeros_like(labels)
    for slices, block in blocks:
        assert block.dtype == np.uint8 and block.shape == tuple(s.stop - s.start for s in slices)
        assert all(block.any(axis=tuple(i for i in range(5) if i != a)).all() for a in range(4))  # tight box
        rebuilt[slices[1:4]] += block[0, :, :, :, 0]
    np.testing.assert_array_equal(rebuilt, labels)


# ---------------------------------------------------------------------------------------- the .ilp layout


_NUMBERED = [(re.compile(r"Forest\d+"), "Forest#"), (re.compile(r"Tree_\d+"), "Tree_#"),
             (re.compile(r"block\d+"), "block#"), (re.compile(r"local_data/[^/]+"), "local_data/#")]


def _kind(dtype: np.dtype, shape: tuple) -> tuple:
    text = h5py.check_string_dtype(dtype)
    if text is not None:
        return ("string", text.encoding, "fixed" if text.length else "variable", len(shape))
    return (dtype.str, len(shape))


def layout(path) -> dict[str, tuple]:
    """Every group/dataset (numbered names folded) → its kind, dtype, rank and attributes' types."""
    found: dict[str, tuple] = {}

    def visit(name, obj):
        for pattern, folded in _NUMBERED:
            name = pattern.sub(folded, name)
        attrs = tuple(sorted((key, _kind(obj.attrs.get_id(key).dtype, obj.attrs.get_id(key).shape))
                             for key in obj.attrs))
        if isinstance(obj, h5py.Dataset):
            found.setdefault(name, ("dataset", _kind(obj.dtype, obj.shape), attrs))
        else:
            found.setdefault(name, ("group", attrs))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def test_layout_is_ilastik_1_4s(tmp_path, sample_2d, fixtures_dir):
    folder, raw, truth, labels = sample_2d
    referenced, inside = folder / "ref.ilp", tmp_path / "inside.ilp"
    train_command(str(folder / "raw.png"), str(folder / "labels.npy"), "gs:0.3,1.0;ste:1.6", 8, str(referenced), None, False)
    train_command(str(folder / "raw.png"), str(folder / "labels.npy"), "gs:0.3,1.0;ste:1.6", 8, str(inside), None, True)

    ilastik = layout(fixtures_dir / "api" / "PixelClass.ilp")  # written by ilastik 1.4.1
    assert layout(referenced) == ilastik

    ours = layout(inside)
    internal = {k for k in ours if k not in ilastik}
    assert internal == {"Input Data/infos/lane0000/Raw Data/fromstack", "Input Data/infos/lane0000/Raw Data/inner_path",
                        "Input Data/local_data/#"}
    assert {k: v for k, v in ours.items() if k in ilastik} == ilastik
    notebook = layout(fixtures_dir / "notebooks" / "pc.ilp")  # ilastik 1.4.0 with the image inside
    assert {key: ours[key] for key in internal} == {key: notebook[key] for key in internal}

    with h5py.File(referenced, "r") as f, h5py.File(inside, "r") as g:
        info, internal_info = f["Input Data/infos/lane0000/Raw Data"], g["Input Data/infos/lane0000/Raw Data"]
        assert info["__class__"][()] == b"RelativeFilesystemDatasetInfo" and info["filePath"][()] == b"raw.png"
        assert internal_info["__class__"][()] == b"ProjectInternalDatasetInfo"
        local = g[internal_info["inner_path"][()].decode()]
        np.testing.assert_array_equal(local[()], raw[:, :, None])  # with the channel axis ilastik gives PNGs
        assert internal_info["filePath"][()] == internal_info["inner_path"][()]
        assert internal_info["datasetId"][()].decode() in local.name
        assert f["ilastikVersion"][()] == b"1.4.0" and f["workflowName"][()] == b"Pixel Classification"


def test_a_3d_project_from_hdf5_has_ilastiks_3d_layout(tmp_path, fixtures_dir):
    raw, truth = make_blobs_volume((20, 40, 40), seed=6)
    labels = sparse_labels(truth, seed=6)
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f.create_dataset("raw", data=raw)
        f.create_dataset("labels", data=labels)
    output = tmp_path / "vol.ilp"
    train_command(f"{tmp_path}/vol.h5/raw", f"{tmp_path}/vol.h5/labels", "gs:1.0;hoge:1.6", 10, str(output), "zyx", False)
    ours, ilastik = layout(output), layout(fixtures_dir / "api" / "PixelClass3D.ilp")
    # ilastik 1.4.1 stored feature_names as fixed-length (PixelClass.ilp) and as variable-length strings
    # (this file, Autocontext_2D.ilp): either is an ASCII string list
    names = "PixelClassification/ClassifierForests/feature_names"
    assert ours.pop(names)[1][:2] == ilastik.pop(names)[1][:2] == ("string", "ascii")
    assert ours == ilastik
    project = open_project(str(output))
    assert project.lanes[0].roles["Raw Data"].path == f"{tmp_path}/vol.h5/raw"
    stage = project.stages[0]
    assert stage.features.compute_in_2d == (False,) * 7  # ilastik's default for volumes: 3-D filters
    stored = np.zeros_like(labels)
    for slices, block in stage.labels(0):
        stored[slices[1:4]] += block[0, :, :, :, 0]
    np.testing.assert_array_equal(stored, labels)
    with h5py.File(output, "r") as f:
        block = next(iter(f["PixelClassification/LabelSets/labels000"].values()))
        assert [a["key"] for a in json.loads(block.attrs["axistags"])["axes"]] == list("zyxc")


# ---------------------------------------------------------------------------------------- retraining


def test_retraining_a_3d_project_from_its_stored_labels(fixtures_dir):
    api = fixtures_dir / "api"
    project = open_project(str(api / "PixelClass3D.ilp"))
    ensemble = retrain_stage(project, 0, 100, seed=3)
    assert ensemble.n_trees == 100
    raw = np.load(api / "Data_3D.npy")
    plan = plan_features(project.stages[0].features, raw.shape[:3], 1)
    features = compute_features(raw, plan)
    probabilities = ensemble.predict_proba(features.reshape(-1, features.shape[-1]), 2).reshape(raw.shape[:3] + (2,))
    agree = [probabilities[slices[1:4]].argmax(-1)[block[0, ..., 0] > 0] + 1 == block[0, ..., 0][block[0, ..., 0] > 0]
             for slices, block in project.stages[0].labels(0)]
    assert np.mean(np.concatenate(agree)) >= 0.9
    reference = np.load(api / "res-Data_3D_pc3d.npy")  # ilastik's own forest: another random forest
    assert np.mean(probabilities.argmax(-1) == reference.argmax(-1)) >= 0.9


def test_retraining_autocontext_stage_two_on_stage_one_predictions(fixtures_dir):
    api = fixtures_dir / "api"
    project = open_project(str(api / "Autocontext_2D.ilp"))
    ensemble = retrain_stage(project, 1, 50, seed=5)
    raw = iio.imread(api / "Data_1channel.png")[None, :, :, None]
    stages, channels = [], 1
    for index, stage in enumerate(project.stages):
        plan = plan_features(stage.features, raw.shape[:3], channels)
        stages.append(PixelStage(plan, stage.classifier if index == 0 else ensemble, len(stage.label_names)))
        channels += len(stage.label_names)
    probabilities = compute_source(raw, stages, SourceRequest("Probabilities", 1))[0]
    reference = np.load(api / "res-Data_1channel_ac2ds2.npy")
    assert np.mean(probabilities.argmax(-1) == reference.argmax(-1)) >= 0.95


def test_retraining_needs_labels_and_the_training_image(fixtures_dir, tmp_path):
    api = fixtures_dir / "api"
    # ilastik's "insufficient data" project: features but neither labels nor a classifier
    with pytest.raises(UserError, match="no labels"):
        retrain_stage(open_project(str(api / "PixelClassNoClassifier.ilp")), 0)
    # PixelClass.ilp refers to Data_1channel.png by the absolute path on its author's machine
    with pytest.raises(UserError, match="2d_cells_128px"):
        retrain_stage(open_project(str(api / "PixelClass.ilp")), 0)

    moved = tmp_path / "PixelClass.ilp"  # the same project with its image path mapped into the api folder
    shutil.copy(api / "PixelClass.ilp", moved)
    with h5py.File(moved, "r+") as f:
        info = f["Input Data/infos/lane0000/Raw Data"]
        del info["filePath"]
        info.create_dataset("filePath", data=str(api / "Data_1channel.png").encode(), dtype=h5py.string_dtype("ascii"))
    project = open_project(str(moved))
    ensemble = retrain_stage(project, 0, 40, seed=11)
    raw = iio.imread(api / "Data_1channel.png")[None, :, :, None]
    features = compute_features(raw, plan_features(project.stages[0].features, (1, 128, 128), 1))
    segmentation = ensemble.predict_proba(features.reshape(-1, features.shape[-1]), 2).argmax(1).reshape(128, 128) + 1
    for slices, block in project.stages[0].labels(0):
        labelled = block[0, 0, :, :, 0] > 0
        assert np.mean(segmentation[slices[2:4]][labelled] == block[0, 0, :, :, 0][labelled]) >= 0.9
    reference = np.load(api / "res-Data_1channel_pc1xyc.npy")
    assert np.mean(segmentation == reference.argmax(-1) + 1) >= 0.9


def test_retraining_from_an_image_stored_inside_the_project(tmp_path, sample_2d):
    folder, raw, truth, labels = sample_2d
    output = tmp_path / "inside.ilp"
    train_command(str(folder / "raw.png"), str(folder / "labels.npy"), "gs:1.6;hoge:1.6,3.5", 20, str(output), None, True)
    project = open_project(str(output))
    assert project.lanes[0].roles["Raw Data"].location == "ProjectInternal"
    ensemble = retrain_stage(project, 0, 20, seed=2)
    features = compute_features(raw[None, :, :, None], plan_features(project.stages[0].features, (1, 96, 96), 1))
    segmentation = ensemble.predict_proba(features.reshape(-1, features.shape[-1]), 2).argmax(1).reshape(96, 96) + 1
    assert np.mean(segmentation == truth) > 0.9


# ---------------------------------------------------------------------------------------- synthetic data


def test_synthetic_blobs_and_scribbles():
    raw, truth = make_blobs_volume((24, 40, 48), seed=9)
    assert raw.shape == truth.shape == (24, 40, 48) and raw.dtype == truth.dtype == np.uint8
    assert set(np.unique(truth)) == {1, 2} and 0.2 < np.mean(truth == 2) < 0.5
    assert raw[truth == 2].mean() > raw[truth == 1].mean() + 50  # bright blobs on a dark background
    labels = sparse_labels(truth, seed=9)
    assert set(np.unique(labels)) == {0, 1, 2} and np.mean(labels > 0) < 0.05
    np.testing.assert_array_equal(labels[labels > 0], truth[labels > 0])  # a careful annotator
    np.testing.assert_array_equal(make_blobs_volume((24, 40, 48), seed=9)[0], raw)
    assert not np.array_equal(make_blobs_volume((24, 40, 48), seed=10)[0], raw)
