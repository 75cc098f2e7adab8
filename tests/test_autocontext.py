"""Autocontext headless: the fixture projects on their own data, every export source of ilastik's manual,
blockwise (with both stages' halos) equal to whole-image, and 2 MPI ranks equal to serial."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from hpc_ilastik.io.n5 import open_n5_dataset
from hpc_ilastik.pixel.pipeline import simple_segmentation, uncertainty
from hpc_ilastik.project.reader import open_project
from tests.conftest import FIXTURES, export_with_cli, label_agreement, training_image

AC2D3C = FIXTURES / "Autocontext2d3c.ilp"  # ilastik 1.3.0, 2d3c.h5 (73x187, 3 channels, uint8)
AC5T = FIXTURES / "Autocontext5t2d1c.ilp"  # ilastik 1.3.0, 5 time points of 33x77, 1 channel
NOTEBOOK = FIXTURES / "notebooks" / "ac.ilp"  # ilastik 1.4.1, 1024x1344 image stored inside the project
NOTEBOOK_PNG = FIXTURES / "notebooks" / "2d_cells_apoptotic_1channel.png"  # the same image as a file
AGREEMENT = 0.8

# the export sources as ilastik's headless manual lists them (the misspelling included)
PER_STAGE = ["Probabilities", "Simple Segmentation", "Uncertainty", "Features", "Labels", "Input"]
SOURCES = [f"{kind} Stage {stage}" for stage in (1, 2) for kind in PER_STAGE] + [
    "Probabilities All Stages", "Propabilities All Stages"]
EIGENVALUE_FEATURES = {"StructureTensorEigenvalues", "HessianOfGaussianEigenvalues"}


def _feature_channels(selection, n_input_channels: int, n_spatial: int) -> int:
    """Feature channels of a 2D/3D image: one per selected (feature, scale, input channel), eigenvalue
    features one per spatial axis."""
    per_channel = sum((n_spatial if fid in EIGENVALUE_FEATURES else 1) * sum(row)
                      for fid, row in zip(selection.feature_ids, selection.matrix))
    return per_channel * n_input_channels


def _raw_tzyxc(project) -> np.ndarray:
    """The project's HDF5 training image read with h5py and put in tzyxc by its stored axes."""
    ref = open_project(str(project)).lanes[0].roles["Raw Data"]
    file, inner = ref.path.split(".h5/")
    with h5py.File(f"{file}.h5", "r") as f:
        data = f[inner][()]
    axes = ref.axes if "c" in ref.axes else ref.axes + "c"
    data = data.reshape(data.shape + (1,) * (len(axes) - data.ndim))
    order = [axes.index(a) for a in "tzyxc" if a in axes]
    return data.transpose(order).reshape([dict(zip(axes, data.shape)).get(a, 1) for a in "tzyxc"])


def _check_labels(ac, both: np.ndarray) -> str:
    """Assert that each stage's argmax (in `Probabilities All Stages`, tzyxc) gives the stage's own labels
    for the large majority of its labelled pixels; returns the figures."""
    n1 = len(ac.stages[0].label_names)
    figures = []
    for index, (stage, probs) in enumerate(zip(ac.stages, (both[..., :n1], both[..., n1:])), start=1):
        agree, total = label_agreement(probs, stage)
        assert total > 0 and agree >= AGREEMENT * total, (index, agree, total)
        figures.append(f"stage {index} {agree}/{total} ({100 * agree / total:.1f} %)")
    return "argmax = label on " + ", ".join(figures) + " labelled pixels"


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, np.ndarray]:
    """Every export source of Autocontext2d3c.ilp on its training image, in tzyxc."""
    out = tmp_path_factory.mktemp("ac2d3c")
    image = training_image(AC2D3C)
    return {name: export_with_cli(out / str(i), AC2D3C, [image], f"--export_source={name}",
                                  "--output_axis_order=tzyxc")
            for i, name in enumerate(SOURCES)}


@pytest.fixture(scope="module")
def notebook_all_stages(tmp_path_factory) -> np.ndarray:
    """notebooks/ac.ilp on the image a user has as a file: both stages' probabilities, whole image."""
    return export_with_cli(tmp_path_factory.mktemp("notebook"), NOTEBOOK, [NOTEBOOK_PNG],
                           "--export_source=Probabilities All Stages", "--output_axis_order=tzyxc")


def test_every_export_source_has_the_right_shape_and_dtype(exports):
    project = open_project(str(AC2D3C))
    raw = _raw_tzyxc(AC2D3C)
    n1, n2 = (len(stage.label_names) for stage in project.stages)
    assert (n1, n2) == (3, 2) and raw.shape == (1, 1, 73, 187, 3) and raw.dtype == np.uint8
    f1 = _feature_channels(project.stages[0].features, 3, 2)
    f2 = _feature_channels(project.stages[1].features, 3 + n1, 2)
    expected = {"Probabilities": (n1, n2, np.float32), "Simple Segmentation": (1, 1, np.uint8),
                "Uncertainty": (1, 1, np.float32), "Features": (f1, f2, np.float32), "Labels": (1, 1, np.uint8),
                "Input": (3, 3 + n1, np.uint8)}
    for kind, (stage1, stage2, dtype) in expected.items():
        for stage, channels in ((1, stage1), (2, stage2)):
            result = exports[f"{kind} Stage {stage}"]
            assert result.shape == raw.shape[:4] + (channels,) and result.dtype == dtype, (kind, stage)
    for name in ("Probabilities All Stages", "Propabilities All Stages"):
        assert exports[name].shape == raw.shape[:4] + (n1 + n2,) and exports[name].dtype == np.float32


def test_inputs_of_the_stages(exports):
    """Stage 1 sees the raw data; stage 2 the raw channels, then stage 1's probabilities in the raw dtype."""
    raw = _raw_tzyxc(AC2D3C)
    probs1 = exports["Probabilities Stage 1"]
    np.testing.assert_array_equal(exports["Input Stage 1"], raw)
    stage2 = exports["Input Stage 2"]
    np.testing.assert_array_equal(stage2[..., :3], raw)
    np.testing.assert_array_equal(stage2[..., 3:], (np.float32(255) * probs1).astype(np.uint8))
    assert stage2[..., 3:].max() > 200  # the probabilities are scaled to the uint8 range, not cast


def test_derived_sources_agree_with_the_probabilities(exports):
    for stage in (1, 2):
        probs = exports[f"Probabilities Stage {stage}"]
        assert probs.min() >= 0 and probs.max() <= 1
        np.testing.assert_allclose(probs.sum(axis=-1), 1, atol=1e-5)
        np.testing.assert_array_equal(exports[f"Simple Segmentation Stage {stage}"], simple_segmentation(probs))
        np.testing.assert_array_equal(exports[f"Uncertainty Stage {stage}"], uncertainty(probs))
        assert not exports[f"Labels Stage {stage}"].any()  # a headless input is a new lane, without labels
    both = np.concatenate([exports["Probabilities Stage 1"], exports["Probabilities Stage 2"]], axis=-1)
    np.testing.assert_array_equal(exports["Probabilities All Stages"], both)
    np.testing.assert_array_equal(exports["Propabilities All Stages"], both)


def test_stage_features_are_computed_on_the_stage_input(exports):
    """Per selected (feature, scale), stage 2's channels start with stage 1's: the same filters on the raw
    channels, followed by the same filters on stage 1's probabilities (the feature stack's channel order)."""
    stages = open_project(str(AC2D3C)).stages
    assert stages[0].features == stages[1].features  # both stages select the same features here
    f1, f2 = exports["Features Stage 1"], exports["Features Stage 2"]
    start1 = start2 = 0
    for fid, row in zip(stages[0].features.feature_ids, stages[0].features.matrix):
        width = 2 if fid in EIGENVALUE_FEATURES else 1
        for _ in range(sum(row)):
            np.testing.assert_array_equal(f2[..., start2:start2 + 3 * width], f1[..., start1:start1 + 3 * width])
            start1, start2 = start1 + 3 * width, start2 + 6 * width
    assert (start1, start2) == (f1.shape[-1], f2.shape[-1])


@pytest.mark.parametrize("project", [AC2D3C, AC5T], ids=lambda path: path.name)
def test_fixture_projects_predict_their_own_labels(project, tmp_path, record_property):
    """Both stages, on the project's own training image: right shape, and the argmax matches the labels."""
    ac = open_project(str(project))
    image = training_image(project)
    raw = _raw_tzyxc(project)
    both = export_with_cli(tmp_path, project, [image], "--export_source=Probabilities All Stages",
                           "--output_axis_order=tzyxc")
    n1, n2 = (len(stage.label_names) for stage in ac.stages)
    assert both.shape == raw.shape[:4] + (n1 + n2,)
    record_property("figures", f"{project.name}: output {both.shape} (tzyxc), {_check_labels(ac, both)}")


def test_notebook_project_on_its_image(notebook_all_stages, record_property):
    ac = open_project(str(NOTEBOOK))
    n1, n2 = (len(stage.label_names) for stage in ac.stages)
    assert notebook_all_stages.shape == (1, 1, 1024, 1344, n1 + n2) == (1, 1, 1024, 1344, 5)
    record_property("figures", f"notebooks/ac.ilp: {_check_labels(ac, notebook_all_stages)}")


CUTOUT = "[(448,576,None),(576,704,None)]"  # yxc: a 128x128 region in the middle of the 1024x1344 image
REGION = (slice(None), slice(None), slice(448, 576), slice(576, 704))


def test_notebook_project_on_its_project_internal_image(notebook_all_stages, tmp_path):
    """The image stored inside ac.ilp, passed as an HDF5 path into the project, gives the PNG's result."""
    internal = training_image(NOTEBOOK)
    assert internal.startswith(f"{NOTEBOOK}/Input Data/local_data/")
    part = export_with_cli(tmp_path, NOTEBOOK, [internal], "--export_source=Probabilities All Stages",
                           "--output_axis_order=tzyxc", f"--cutout_subregion={CUTOUT}")
    np.testing.assert_array_equal(part, notebook_all_stages[REGION])


def test_blockwise_equals_whole_image_with_both_stages_halos(notebook_all_stages, exports, tmp_path):
    """Small blocks, each read with stage 1's and stage 2's halo, give the whole image's result."""
    blocks = export_with_cli(tmp_path / "notebook", NOTEBOOK, [NOTEBOOK_PNG],
                             "--export_source=Probabilities All Stages", "--output_axis_order=tzyxc",
                             f"--cutout_subregion={CUTOUT}", '--distributed_block_roi={"x": 48, "y": 40}')
    np.testing.assert_array_equal(blocks, notebook_all_stages[REGION])
    small = export_with_cli(tmp_path / "2d3c", AC2D3C, [training_image(AC2D3C)],
                            "--export_source=Probabilities All Stages", "--output_axis_order=tzyxc",
                            "--distributed_block_roi=16")
    np.testing.assert_array_equal(small, exports["Probabilities All Stages"])


def test_two_mpi_ranks_equal_serial(exports, tmp_path):
    """`mpiexec -n 2 ... --distributed`: the ranks share the blocks and write one N5 equal to the serial run."""
    out = tmp_path / "ac.n5"
    command = ["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless", "--distributed",
               f"--project={AC2D3C}", "--export_source=Probabilities All Stages", "--output_format=n5",
               "--distributed_block_roi=24", "--output_axis_order=tzyxc", f"--output_filename_format={out}",
               training_image(AC2D3C)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "blocks 32/32 (100%)" in done.stderr  # 73x187 in 24x24 blocks: 4 x 8
    dataset = open_n5_dataset(str(out), "exported_data")
    assert dataset.attributes.get("complete") is True
    np.testing.assert_array_equal(dataset.read(tuple(slice(0, n) for n in dataset.shape)),
                                  exports["Probabilities All Stages"])
