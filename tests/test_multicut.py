"""Edge Training With Multicut headless: ilastik's GUI-test references (superpixels → multicut without and with an
edge forest, by ilastik's own measure and thresholds), the three fixture projects on their own inputs, the
heuristic solvers against the exact one on the fixtures' graphs, and one clear line for each mistake."""

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.cli import main
from hpc_ilastik.graphs.watershed import boundary_map
from hpc_ilastik.project.reader import open_project
from hpc_ilastik.workflows.multicut import segment, voxel_channels, watershed_superpixels
from tests.conftest import FIXTURES
from tests.multicut_support import gui_project
from tests.segmentation import gui_reference, mean_segmentation_accuracy

INPUTS = FIXTURES / "inputdata"
SYNTHETIC = (f"{INPUTS}/3d1c-synthetic.h5/data", f"{INPUTS}/3d1c-synthetic_Probabilities.h5/exported_data")
FIXTURE_PROJECTS = {"": ("3d.h5/data", "3d_Probabilities.h5/exported_data"),
                    "1c": ("3d1c.h5/data", "3d1c_Probabilities.h5/exported_data"),
                    "2c": ("3d2c.h5/data", "3d2c_Probabilities.h5/exported_data")}
def _gui_project(folder: Path, threshold: float, forest: bool, edge_labels: tuple | None = None) -> Path:
    """The GUI test's project on the synthetic volume (`tests/multicut_support.gui_project`)."""
    path = folder / f"gui_{threshold}_{'rf' if forest else 'no_rf'}.ilp"
    return gui_project(FIXTURES / "Boundary-basedSegmentationwMulticut3d1c.ilp", path, *SYNTHETIC, threshold, forest,
                       edge_labels)


def _segment_cli(project: Path, out: Path, raw: str, probabilities: str, *options: str) -> np.ndarray:
    argv = ["--headless", f"--project={project}", f"--raw_data={raw}", f"--probabilities={probabilities}",
            "--output_format=hdf5", f"--output_filename_format={out}", "--quiet", *options]
    assert main(argv) == 0
    with h5py.File(out, "r") as f:
        return f["exported_data"][()]


@pytest.mark.parametrize("threshold, reference, segments, required", [
    (0.5, "multicut_segmentation_no_rf_t0.5_kerningham-lin.h5", 5, 0.98),
    # ilastik's test no longer compares this older file: it was made from other superpixels (28 of the reference
    # superpixels lie across two of its segments), so it cannot be matched to ilastik's 0.98
    (0.6, "multicut_segmentation_no_rf_t0.6_kerningham-lin.h5", 4, 0.95),
])
def test_gui_reference_without_an_edge_forest(tmp_path, record_property, threshold, reference, segments, required):
    ours = _segment_cli(_gui_project(tmp_path, threshold, forest=False), tmp_path / "seg.h5", *SYNTHETIC)
    expected = gui_reference(reference)
    assert ours.dtype == np.uint32 and ours.shape == expected.shape + (1,)
    accuracy = mean_segmentation_accuracy(ours[..., 0], expected)
    record_property("figures", f"multicut without forest, threshold {threshold}: mean segmentation accuracy "
                    f"{accuracy:.4f} against ilastik's (> {required}), {len(np.unique(ours))} segments (ilastik "
                    f"{len(np.unique(expected))})")
    assert accuracy > required
    assert len(np.unique(ours)) == segments  # ilastik's test asserts 5 at threshold 0.5


def test_gui_reference_with_an_edge_forest_trained_from_the_groundtruth(tmp_path, record_property, capsys):
    """The GUI test trains the forest on edge labels from a groundtruth (its own reference); here the labels are
    stored in the project, which has no forest: the headless run trains one (seeded) on its training lane."""
    from hpc_ilastik.graphs.rag import region_adjacency_graph
    from hpc_ilastik.graphs.training import groundtruth_edge_labels

    expected = gui_reference("multicut_segmentation_rf_t0.5_kerningham-lin.h5")
    probabilities = h5py.File(SYNTHETIC[1].rsplit("/", 1)[0], "r")["exported_data"][()]
    superpixels = watershed_superpixels(open_project(str(_gui_project(tmp_path, 0.5, False))), probabilities, 1)
    edges = region_adjacency_graph(superpixels).edges
    labels = groundtruth_edge_labels(superpixels, expected, edges)
    project = _gui_project(tmp_path, 0.5, forest=True, edge_labels=(edges.astype(np.uint32), labels.astype(np.uint8)))
    ours = _segment_cli(project, tmp_path / "seg.h5", *SYNTHETIC, "--debug")
    assert f"training the edge classifier (the project has none) on {len(edges)} labelled edges" in capsys.readouterr().err
    accuracy = mean_segmentation_accuracy(ours[..., 0], expected)
    record_property("figures", f"multicut with an edge forest trained from the groundtruth: mean segmentation "
                    f"accuracy {accuracy:.4f} against ilastik's (> 0.98), {len(np.unique(ours))} segments (ilastik "
                    f"{len(np.unique(expected))}), {np.count_nonzero(labels == 2)} of {len(labels)} edges split")
    assert accuracy > 0.98


@pytest.mark.parametrize("name", sorted(FIXTURE_PROJECTS))
def test_fixture_projects_segment_their_own_inputs(tmp_path, record_property, name, capsys):
    """ilastik 1.2's projects: their stored forests on ilastikrag's features of their stored feature names (the
    watershed runs with ilastik's defaults, as ilastik's headless does with these old projects); the labelled
    edges of their cached superpixels are all found when the forest is retrained."""
    project = FIXTURES / f"Boundary-basedSegmentationwMulticut3d{name}.ilp"
    raw, probabilities = (f"{INPUTS}/{spec}" for spec in FIXTURE_PROJECTS[name])
    ours = _segment_cli(project, tmp_path / "seg.h5", raw, probabilities)
    with h5py.File(raw.rsplit("/", 1)[0], "r") as f:
        shape = f["data"].shape
    assert ours.dtype == np.uint32 and ours.shape[:3] == shape[:3]
    stored = open_project(str(project))
    n_labels = int(np.count_nonzero(stored.edge_labels[0][1]))
    retrained = _segment_cli(project, tmp_path / "retrained.h5", raw, probabilities, "--retrain", "--debug")
    assert f"training the edge classifier (--retrain) on {n_labels} labelled edges" in capsys.readouterr().err
    record_property("figures", f"Multicut3d{name}: {len(np.unique(ours))} segments with the stored forest, "
                    f"{len(np.unique(retrained))} retrained on its {n_labels} edge labels; "
                    f"{len(stored.classifier_features)} edge features")
    assert 1 < len(np.unique(ours)) and retrained.shape == ours.shape


def test_kernighan_lin_against_the_exact_multicut_on_the_fixtures(record_property):
    gaps = []
    for name, (raw_spec, prob_spec) in sorted(FIXTURE_PROJECTS.items()):
        project = open_project(str(FIXTURES / f"Boundary-basedSegmentationwMulticut3d{name}.ilp"))
        with h5py.File(f"{INPUTS}/{raw_spec.split('/')[0]}", "r") as f:
            raw = f["data"][()].astype(np.float32)
        with h5py.File(f"{INPUTS}/{prob_spec.split('/')[0]}", "r") as f:
            probabilities = f["exported_data"][()]
        raw = raw if raw.ndim == 4 else raw[..., np.newaxis]
        superpixels = watershed_superpixels(project, probabilities, 1)
        channels = voxel_channels(raw, probabilities, boundary_map(probabilities, project.watershed.channels))
        classifier = (project.classifier, project.classifier_features)
        heuristic = segment(replace(project, solver_name="kernighan-lin"), classifier, superpixels, channels)
        exact = segment(replace(project, solver_name="ilp"), classifier, superpixels, channels)
        assert exact.energy <= heuristic.energy + 1e-9
        gaps.append((name, heuristic.energy, exact.energy))
    record_property("figures", "Kernighan-Lin vs exact multicut energy on the fixtures: " + "; ".join(
        f"3d{name} {h:.4f} vs {e:.4f}" for name, h, e in gaps))
    assert np.mean([(h - e) / abs(e) for _, h, e in gaps]) <= 0.01


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["--headless", *argv])
    return code, capsys.readouterr().err


def test_mistakes_get_one_clear_line(tmp_path, capsys):
    project = f"--project={FIXTURES / 'Boundary-basedSegmentationwMulticut3d1c.ilp'}"
    raw, probabilities = (f"{INPUTS}/{spec}" for spec in FIXTURE_PROJECTS["1c"])
    out = f"--output_filename_format={tmp_path}/{{nickname}}.h5"
    cases = [
        ((project, out, f"--raw_data={raw}"), "give --probabilities with one map per --raw_data input"),
        ((project, out, f"--raw_data={raw}", "--probabilities", probabilities, probabilities),
         "2 --probabilities file(s) for 1 raw input(s)"),
        ((project, out, f"--raw_data={raw}", f"--probabilities={SYNTHETIC[1]}"),
         "has shape (1, 64, 56, 32) (tzyx) but the raw data"),
        ((f"--project={_gui_project(tmp_path, 0.5, forest=True)}", out, f"--raw_data={SYNTHETIC[0]}",
          f"--probabilities={SYNTHETIC[1]}"), "has neither a trained edge classifier nor edge labels"),
    ]
    for argv, words in cases:
        code, err = _run(capsys, *argv)
        lines = [line for line in err.splitlines() if line.startswith("hpc-ilastik: error: ")]
        assert code == 2 and len(lines) == 1 and words in lines[0], err
        assert "Traceback" not in err
    assert not list(tmp_path.glob("*.h5"))


def _mpi_segment(project: Path, out: Path, raw: str, probabilities: str, *options: str):
    import subprocess
    import sys

    return subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless", "--distributed",
                           f"--project={project}", f"--raw_data={raw}", f"--probabilities={probabilities}",
                           "--output_format=n5", f"--output_filename_format={out}", "--quiet", *options],
                          capture_output=True, text=True, timeout=300)


def _n5(path: Path) -> np.ndarray:
    from hpc_ilastik.io.n5 import open_n5_dataset

    dataset = open_n5_dataset(str(path), "exported_data")
    assert dataset.attributes.get("complete") is True
    return dataset.read(tuple(slice(0, n) for n in dataset.shape))


def test_distributed_equals_one_process(tmp_path, record_property):
    """--distributed under mpiexec -n 2 (superpixels, graph and features block by block, the solve on rank 0,
    the segmentation written by both ranks) gives the one-process segmentation: a fixture project (whole-image
    watershed, 135 features over 4 channels incl. superpixel statistics) and a blockwise-watershed project on a
    volume of two watershed blocks (ids offset across them)."""
    fixture = FIXTURES / "Boundary-basedSegmentationwMulticut3d2c.ilp"
    raw, probabilities = (f"{INPUTS}/{spec}" for spec in FIXTURE_PROJECTS["2c"])
    wide = tmp_path / "wide"
    wide.mkdir()
    with h5py.File(SYNTHETIC[0].rsplit("/", 1)[0], "r") as f, h5py.File(wide / "raw.h5", "w") as g:
        g["data"] = np.tile(f["data"][()], (1, 1, 5, 1))  # x: 160 > one 128³ watershed block
    with h5py.File(SYNTHETIC[1].rsplit("/", 1)[0], "r") as f, h5py.File(wide / "probs.h5", "w") as g:
        g["exported_data"] = np.tile(f["exported_data"][()], (1, 1, 5, 1))
    blockwise = _gui_project(tmp_path, 0.5, forest=False)
    with h5py.File(blockwise, "r+") as f:
        f["DT Watershed/BlockwiseWatershed"][...] = True
    figures = []
    for name, project, inputs in (("3d2c fixture", fixture, (raw, probabilities)),
                                  ("blockwise watershed", blockwise, (f"{wide}/raw.h5/data",
                                                                       f"{wide}/probs.h5/exported_data"))):
        serial = _segment_cli(project, tmp_path / f"{len(figures)}.h5", *inputs)
        done = _mpi_segment(project, tmp_path / f"{len(figures)}.n5", *inputs, "--distributed_block_roi=24")
        assert done.returncode == 0, done.stderr
        distributed = _n5(tmp_path / f"{len(figures)}.n5")
        assert np.array_equal(distributed, serial), name
        assert not list(tmp_path.glob("*scratch*"))  # the intermediate superpixels are gone
        figures.append(f"{name}: {len(np.unique(serial))} segments, identical")
    record_property("figures", "multicut mpiexec -n 2 --distributed vs one process: " + "; ".join(figures))


def test_an_image_over_the_memory_budget_runs_block_by_block_in_one_process(tmp_path, monkeypatch, capsys):
    """LAZYFLOW_TOTAL_RAM_MB below what the whole image needs: the one-process run goes block by block (the
    scratch superpixels beside the output, removed after) and gives the same segmentation."""
    project = FIXTURES / "Boundary-basedSegmentationwMulticut3d1c.ilp"
    raw, probabilities = (f"{INPUTS}/{spec}" for spec in FIXTURE_PROJECTS["1c"])
    whole = _segment_cli(project, tmp_path / "whole.h5", raw, probabilities)
    monkeypatch.setenv("LAZYFLOW_TOTAL_RAM_MB", "1")
    blocks = _segment_cli(project, tmp_path / "blocks.h5", raw, probabilities, "--distributed_block_roi=20",
                          "--debug")
    assert "graph blocks computed" in capsys.readouterr().err  # the block-by-block path ran
    assert np.array_equal(blocks, whole) and not list(tmp_path.glob("*scratch*"))


def test_a_2d_image_in_one_process_and_block_by_block(tmp_path, monkeypatch):
    """A 2-D image (yx with channels) runs with a 3-D project's settings: superpixels, graph and multicut in 2-D,
    the same segmentation whole and block by block."""
    with h5py.File(SYNTHETIC[0].rsplit("/", 1)[0], "r") as f, h5py.File(tmp_path / "raw.h5", "w") as g:
        g["data"] = f["data"][30]  # (y, x, c)
    with h5py.File(SYNTHETIC[1].rsplit("/", 1)[0], "r") as f, h5py.File(tmp_path / "probs.h5", "w") as g:
        g["exported_data"] = f["exported_data"][30]
    project = _gui_project(tmp_path, 0.5, forest=False)
    inputs = (f"{tmp_path}/raw.h5/data", f"{tmp_path}/probs.h5/exported_data")
    whole = _segment_cli(project, tmp_path / "whole.h5", *inputs, "--input_axes=yxc")
    assert whole.shape == (56, 32, 1) and whole.dtype == np.uint32 and 1 < len(np.unique(whole)) < 56 * 32 // 7
    monkeypatch.setenv("LAZYFLOW_TOTAL_RAM_MB", "0.01")
    blocks = _segment_cli(project, tmp_path / "blocks.h5", *inputs, "--input_axes=yxc", "--distributed_block_roi=16")
    assert np.array_equal(blocks, whole)
