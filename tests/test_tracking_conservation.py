"""Conservation tracking headless on ilastik's own test video (`testConservationTrackingHeadless.py`): a project
built as ilastik's smallVideoConservationTracking.ilp (tests/tracking_support.py), then every check of ilastik's
test, and the Contours and Multi-Worm-Tracker exports byte for byte against ilastik's reference files."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.cli import main
from hpc_ilastik.io.inputs import open_input
from hpc_ilastik.io.n5 import open_n5_dataset
from hpc_ilastik.project.reader import open_project
from hpc_ilastik.workflows.options import HeadlessOptions, InputOptions
from hpc_ilastik.workflows.tracking import measure_time_series, object_image
from tests.conftest import FIXTURES, REPO
from tests.tracking_support import check_ctc_folder, outline_agreement, read_outline, write_conservation_project

INPUTS = FIXTURES / "inputdata"
RAW = f"{INPUTS}/smallVideo.h5/data"
SEGMENTATION = f"{INPUTS}/smallVideoSimpleSegmentation.h5/exported_data"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A folder with the conservation project; each test exports into it."""
    folder = tmp_path_factory.mktemp("smallVideo")
    write_conservation_project(folder / "smallVideoConservationTracking.ilp", RAW, SEGMENTATION)
    return folder


def _export(folder: Path, *options: str) -> None:
    argv = ["--headless", f"--project={folder / 'smallVideoConservationTracking.ilp'}", f"--raw_data={RAW}",
            f"--segmentation_image={SEGMENTATION}", f"--output_filename_format={folder}/{{nickname}}_{{result_type}}",
            "--quiet", *options]
    assert main(argv) == 0


def test_tracking_result(video):
    """ilastik's testTrackingHeadless: shape (7, 408, 408, 1), three lineages and the background."""
    _export(video, "--export_source=Tracking-Result")
    with h5py.File(video / "smallVideo-data_Tracking-Result.h5") as f:
        data = f["exported_data"][()]
    assert data.shape == (7, 408, 408, 1)
    assert len(np.unique(data)) == 3 + 1


def test_csv_table(video):
    """ilastik's testCSVExport: 23 rows, RegionRadii and RegionAxes columns, 2 mergers, 2 division children."""
    _export(video, "--export_source=Plugin", "--export_plugin=CSV-Table")
    data = np.genfromtxt(video / "smallVideo-data_CSV-Table.csv", dtype=float, delimiter=",", names=True)
    assert data.shape[0] == 23
    assert "Radii_of_the_object_0" in data.dtype.names
    assert "Principal_components_of_the_object_0" in data.dtype.names
    mergers = {(int(t), int(m)) for t, m in zip(data["frame"], data["mergerLabelId"]) if m != 0}
    assert len(mergers) == 2
    assert int(np.count_nonzero(data["parentTrackId"])) == 2


def test_cell_tracking_challenge(video):
    """ilastik's testCTCExport (5 tracks numbered 1-5, parents among them) and the challenge's format rules."""
    _export(video, "--export_source=Plugin", "--export_plugin=CellTrackingChallenge")
    folder = video / "smallVideo-data_CellTrackingChallenge"
    tracks = np.genfromtxt(folder / "res_track.txt", dtype=np.uint32, delimiter=" ")
    assert tracks.shape == (5, 4)
    assert np.array_equal(np.sort(tracks[:, 0]), np.arange(1, 6))
    assert all(p == 0 or p in tracks[:, 0] for p in tracks[:, 3])
    assert check_ctc_folder(folder) == []
    assert len(list(folder.glob("mask*.tif"))) == 7


def test_contours_and_worm_tracker_match_ilastik(video, record_property):
    """The Contours (.outline) and Multi-Worm-Tracker (.summary, .blobs) exports are ilastik's reference files."""
    _export(video, "--export_source=Plugin", "--export_plugin=Contours")
    _export(video, "--export_source=Plugin", "--export_plugin=Multi-Worm-Tracker")
    agreement = outline_agreement(read_outline(video / "smallVideo-data_Contours.outline"),
                                  read_outline(INPUTS / "smallVideo_Contours_reference.outline"))
    assert agreement.identical, agreement.differences
    same = {}
    for suffix in ("outline", "summary", "blobs"):
        ours = video / f"smallVideo-data_{'Contours' if suffix == 'outline' else 'Multi-Worm-Tracker'}.{suffix}"
        name = "Contours" if suffix == "outline" else "Multi-Worm-Tracker"
        same[suffix] = ours.read_bytes() == (INPUTS / f"smallVideo_{name}_reference.{suffix}").read_bytes()
    assert all(same.values()), same
    record_property("figures", "smallVideo Contours .outline, MWT .summary and .blobs: byte-identical to ilastik's "
                               f"references ({agreement.equal} contour lines)")


def test_mamut_and_json(video):
    """Fiji-MaMuT (with the BigDataViewer XML) has one spot per tracked object; the JSON graph the same objects."""
    _export(video, "--export_source=Plugin", "--export_plugin=Fiji-MaMuT",
            f"--big_data_viewer_xml_file={INPUTS / 'smallVideoBdv.xml'}")
    _export(video, "--export_source=Plugin", "--export_plugin=JSON")
    spots = ElementTree.parse(video / "smallVideo-data_Fiji-MaMuT_mamut.xml").getroot().iter("Spot")
    nodes = json.loads((video / "smallVideo-data_JSON.json").read_text())["nodes"]
    assert len(list(spots)) == len(nodes) == 23


def _mpi(folder: Path, out: str, *options: str):
    command = ["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless", "--distributed",
               f"--project={folder / 'smallVideoConservationTracking.ilp'}", f"--raw_data={RAW}",
               f"--segmentation_image={SEGMENTATION}", f"--output_filename_format={out}", "--quiet",
               '--distributed_block_roi={"x": 150, "y": 150}', *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_distributed_equals_one_process(video, tmp_path, record_property):
    """mpiexec -n 2 --distributed, frames cut into 3 × 3 blocks (objects found block by block and merged, features
    shared over the ranks, tracking on rank 0, the result written by both ranks) = one process: the Tracking-Result
    image and the CSV table byte for byte."""
    _export(video, "--export_source=Tracking-Result")
    _export(video, "--export_source=Plugin", "--export_plugin=CSV-Table")
    with h5py.File(video / "smallVideo-data_Tracking-Result.h5") as f:
        serial = f["exported_data"][()]
    done = _mpi(video, str(tmp_path / "result.n5"), "--export_source=Tracking-Result", "--output_format=n5")
    assert done.returncode == 0, done.stderr
    dataset = open_n5_dataset(str(tmp_path / "result.n5"), "exported_data")
    assert dataset.attributes.get("complete") is True
    distributed = dataset.read(tuple(slice(0, n) for n in dataset.shape))
    assert np.array_equal(distributed, serial)
    done = _mpi(video, str(tmp_path / "{result_type}"), "--export_source=Plugin", "--export_plugin=CSV-Table")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "CSV-Table.csv").read_bytes() == (video / "smallVideo-data_CSV-Table.csv").read_bytes()
    record_property("figures", f"smallVideo tracking, mpiexec -n 2 --distributed (9 blocks per frame) vs one "
                               f"process: Tracking-Result identical ({len(np.unique(serial)) - 1} labels), CSV "
                               "identical")


def test_merger_result_and_identities(video):
    """Merger-Result shows the lineage of exactly the objects split from mergers (their ids in Object-Identities
    are the CSV rows with a mergerLabelId), 0 elsewhere; Object-Identities holds the merger-relabelled ids."""
    _export(video, "--export_source=Merger-Result,Object-Identities,Tracking-Result")
    _export(video, "--export_source=Plugin", "--export_plugin=CSV-Table")
    images = {}
    for name in ("Merger-Result", "Object-Identities", "Tracking-Result"):
        with h5py.File(video / f"smallVideo-data_{name}.h5") as f:
            images[name] = f["exported_data"][()][..., 0]
    table = np.genfromtxt(video / "smallVideo-data_CSV-Table.csv", dtype=float, delimiter=",", names=True)
    split = np.zeros(images["Object-Identities"].shape, dtype=bool)
    for row in table[table["mergerLabelId"] != 0]:
        split[int(row["frame"])] |= images["Object-Identities"][int(row["frame"])] == int(row["labelimageId"])
    assert split.any()
    assert np.array_equal(images["Merger-Result"] > 0, split)
    assert np.array_equal(images["Merger-Result"][split], images["Tracking-Result"][split])


def test_cutout(video, tmp_path):
    """--cutout_subregion writes that region of the tracking of the whole video (objects, mergers split and
    lineages as without it)."""
    _export(video, "--export_source=Tracking-Result")
    argv = ["--headless", f"--project={video / 'smallVideoConservationTracking.ilp'}", f"--raw_data={RAW}",
            f"--segmentation_image={SEGMENTATION}", f"--output_filename_format={tmp_path}/cut.h5", "--quiet",
            "--export_source=Tracking-Result", "--cutout_subregion=[(1,50,60,0),(3,150,400,1)]"]
    assert main(argv) == 0
    with h5py.File(video / "smallVideo-data_Tracking-Result.h5") as f, h5py.File(tmp_path / "cut.h5") as g:
        whole, cut = f["exported_data"][()], g["exported_data"][()]
    assert cut.shape == (2, 100, 340, 1)
    assert np.array_equal(cut, whole[1:3, 50:150, 60:400]) and cut.max() > 1


def test_division_features_match_ilastiks_own_code(video, record_property):
    """The division features of the whole pipeline (our labels, our region features, our FeatureManager) against
    ilastik's own FeatureManager on vigra's labels and features, on smallVideo (stored by the oracle; no fixture
    caches this video's features): equal to float32 rounding. ilastik's operator gives frame T-2 the defaults
    (`has_successor_features`), so frames 0..T-3 are compared."""
    project = str(video / "smallVideoConservationTracking.ilp")
    tracking = open_project(project)
    options = HeadlessOptions(project=project, inputs=InputOptions(files={}))
    image = object_image(tracking, open_input(RAW, None, "z"), open_input(SEGMENTATION, None, "z"), options)
    measured, tables = measure_time_series(image, True, None, 1, True)
    compared = worst = 0
    with h5py.File(REPO / "tests" / "data" / "tracking_division_oracle.h5") as f:
        for t in range(len(measured) - 2):
            for name, reference in f[f"smallVideo/{t}"].items():
                ours = tables[t]["Cell Division Features"][name].reshape(len(reference), -1)
                assert ours.shape == reference.shape, name
                relative = np.abs(ours - reference[()]) / np.maximum(np.abs(reference[()]), 1e-6)
                worst = max(worst, float(relative.max()))
                compared += reference.size
    assert compared > 100 and worst < 1e-6
    record_property("figures", f"smallVideo division features vs ilastik's FeatureManager + vigra: {compared} values, "
                               f"max relative difference {worst:.2g}")
