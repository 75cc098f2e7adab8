"""Tests of tests/tracking_support.py: the smallVideo conservation-tracking project has every group ilastik's
serializers write and hpc-ilastik reads it; its object labels agree with ilastik's reference Contours and
Multi-Worm-Tracker exports of that video; the Cell Tracking Challenge check accepts a valid result and names each
kind of violation; the Contours comparison reports the lines that differ."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from hpc_ilastik.objects.labeling import label_components
from hpc_ilastik.project.reader import open_project
from tests.conftest import FIXTURES
from tests.tracking_support import (
    COUNT_CLASSES,
    DIVIDING,
    DIVISION_CLASSES,
    FALSE_DETECTION,
    ONE_OBJECT,
    ROLE_NAMES,
    SELECTED_FEATURES_COUNT,
    SELECTED_FEATURES_DIVISION,
    SMALL_VIDEO_COUNT_LABELS,
    SMALL_VIDEO_DIVISION_LABELS,
    TWO_OBJECTS,
    WORKFLOW_NAME,
    check_ctc_folder,
    outline_agreement,
    read_outline,
    write_conservation_project,
)

INPUTS = FIXTURES / "inputdata"
RAW = f"{INPUTS}/smallVideo.h5/data"
SEGMENTATION = f"{INPUTS}/smallVideoSimpleSegmentation.h5/exported_data"
OUTLINE = INPUTS / "smallVideo_Contours_reference.outline"
SUMMARY = INPUTS / "smallVideo_Multi-Worm-Tracker_reference.summary"
# what ilastik's headless run reads from Parameters (conservationTrackingWorkflow.prepare_lane_for_export) and the
# kind of value ilastik stores for it
HEADLESS_PARAMETERS = {
    "size_range": "i", "scales": "f", "maxDist": "i", "maxObj": "i", "divThreshold": "f", "avgSize": "f",
    "withTracklets": "b", "sizeDependent": "b", "divWeight": "f", "transWeight": "f", "withDivisions": "b",
    "withOpticalCorrection": "b", "withClassifierPrior": "b", "withMergerResolution": "b", "borderAwareWidth": "i",
    "withArmaCoordinates": "b", "cplex_timeout": "O", "appearanceCost": "i", "disappearanceCost": "i",
    "max_nearest_neighbors": "i", "numFramesPerSplit": "i",
}


@pytest.fixture(scope="module")
def small_video() -> list[np.ndarray]:
    """The objects of each frame of smallVideo's segmentation (y, x), as vigra labels them."""
    with h5py.File(INPUTS / "smallVideoSimpleSegmentation.h5", "r") as f:
        frames = f["exported_data"][..., 0]
    return [label_components((frame > 0).astype(np.uint8)[np.newaxis])[0][0] for frame in frames]


def _features(group: h5py.Group) -> dict[str, set[str]]:
    return {plugin: set(group[plugin]) for plugin in group}


def test_project_has_every_group(tmp_path, small_video):
    path = write_conservation_project(tmp_path / "smallVideo.ilp", RAW, SEGMENTATION)
    with h5py.File(path, "r") as f:
        assert set(f) == {"Input Data", "TrackingFeatureExtraction", "DivisionDetection", "CountClassification",
                          "ConservationTracking", "Tracking Result Export", "currentApplet", "ilastikVersion", "time",
                          "workflowName"}
        assert f["workflowName"][()].decode() == WORKFLOW_NAME
        assert f["ilastikVersion"][()] == b"1.4.0"

        data = f["Input Data"]
        assert [r.decode() for r in data["Role Names"][()]] == list(ROLE_NAMES)
        for role, spec, nickname in zip(ROLE_NAMES, (RAW, SEGMENTATION),
                                        ("smallVideo-data", "smallVideoSimpleSegmentation-exported_data")):
            info = data["infos/lane0000"][role]
            assert info["filePath"][()].decode() == spec  # absolute: the data is not under the project's folder
            assert info["__class__"][()] == b"FilesystemDatasetInfo"
            assert info["location"][()] == b"FileSystem"
            assert info["nickname"][()].decode() == nickname  # ilastik's test expects smallVideo-data_<source>
            assert [a["key"] for a in json.loads(info["axistags"][()])["axes"]] == list("tyxc")
            assert tuple(info["shape"][()]) == (7, 408, 408, 1)
        assert tuple(data["infos/lane0000/Segmentation Image/drange"][()]) == (0, 1)

        parameters = f["ConservationTracking/Parameters"]
        for name, kind in HEADLESS_PARAMETERS.items():
            assert parameters[name].dtype.kind == kind, name
        assert list(parameters["time_range"][()]) == [0, 6]
        assert list(parameters["x_range"][()]) == list(parameters["y_range"][()]) == [0, 408]
        assert parameters["maxObj"][()] == 2 and parameters["withDivisions"][()]
        assert pickle.loads(f["ConservationTracking/ExportSettings"][()].tobytes())[0]["file type"] == "csv"

        for name, classes, selected, labels in (
                ("CountClassification", COUNT_CLASSES, SELECTED_FEATURES_COUNT, SMALL_VIDEO_COUNT_LABELS),
                ("DivisionDetection", DIVISION_CLASSES, SELECTED_FEATURES_DIVISION, SMALL_VIDEO_DIVISION_LABELS)):
            group = f[name]
            assert [n.decode() for n in group["LabelNames"][()]] == list(classes)
            assert group["MaxNumObj"][()] == len(classes) - 1
            assert group["LabelColors"].shape == group["PmapColors"].shape == (len(classes), 3)
            assert len(group["ClassifierForests"]) == 0  # nothing trained: the workflow trains from the labels
            assert pickle.loads(group["ExportSettings"][()].tobytes()) == (None, None)
            assert _features(group["SelectedFeatures"]) == {p: set(names) for p, names in selected.items()}
            frames = group["LabelInputs/0000"]
            assert sorted(frames, key=int) == [str(t) for t in range(7)]
            for t, objects in enumerate(small_video):
                stored = frames[str(t)][()]
                assert len(stored) == objects.max() + 1
                expected = np.zeros(len(stored))
                for (frame, obj), value in labels.items():
                    if frame == t:
                        expected[obj] = value
                assert np.array_equal(stored, expected), (name, t)

        extraction = f["TrackingFeatureExtraction"]
        assert set(_features(extraction["FeatureNamesVigra"])) == {
            "2D Skeleton Features", "2D Convex Hull Features", "Standard Object Features"}
        assert "SquaredDistances_2" in extraction["FeatureNamesDivision/Cell Division Features"]
        export = f["Tracking Result Export"]
        assert export["OutputFilenameFormat"][()] == b"{dataset_dir}/{nickname}_{result_type}"
        assert export["OutputFormat"][()] == b"hdf5" and export["OutputInternalPath"][()] == b"exported_data"


def test_project_is_read_by_hpc_ilastik(tmp_path):
    project = open_project(str(write_conservation_project(tmp_path / "smallVideo.ilp", RAW, SEGMENTATION)))
    assert project.workflow_name == WORKFLOW_NAME and not project.structured
    roles = project.lanes[0].roles
    assert roles["Raw Data"].path == RAW and roles["Segmentation Image"].path == SEGMENTATION
    assert roles["Raw Data"].axes == "tyxc"
    p = project.parameters
    assert (p["maxObj"], p["maxDist"], p["max_nearest_neighbors"], p["borderAwareWidth"]) == (2, 200, 2, 10)
    assert (p["transWeight"], p["divWeight"], p["appearanceCost"], p["disappearanceCost"]) == (1.0, 10.0, 5000, 5000)
    assert p["withDivisions"] and p["withTracklets"] and p["withClassifierPrior"] and p["withMergerResolution"]
    assert p["size_range"] == (2, 10001) and p["time_range"] == (0, 6)
    for classifier, labels in ((project.count_classifier, SMALL_VIDEO_COUNT_LABELS),
                               (project.division_classifier, SMALL_VIDEO_DIVISION_LABELS)):
        assert classifier.forest is None and classifier.trainable
        read = {(t, int(o)): int(frame[o]) for t, frame in enumerate(classifier.object_labels[0])
                for o in np.flatnonzero(frame)}
        assert read == labels
    assert project.export_settings.output_format == "hdf5"


def _write_video(path: Path, frames: np.ndarray) -> str:
    with h5py.File(path, "w") as f:
        f["data"] = frames[..., np.newaxis]
    return f"{path}/data"


def test_relative_paths_labels_and_parameters_of_another_video(tmp_path):
    frames = np.zeros((3, 20, 30), dtype=np.uint8)
    frames[:, 2:6, 3:8] = 1
    frames[2, 10:14, 20:25] = 1  # frame 2: two objects, the second at raster position after the first
    spec = _write_video(tmp_path / "video.h5", frames)
    path = write_conservation_project(tmp_path / "p.ilp", spec, spec, parameters={"maxObj": 1, "withDivisions": False},
                                      count_labels={(0, 1): ONE_OBJECT, (2, 2): FALSE_DETECTION},
                                      division_labels={(1, 1): DIVIDING})
    with h5py.File(path, "r") as f:
        info = f["Input Data/infos/lane0000/Raw Data"]
        assert info["__class__"][()] == b"RelativeFilesystemDatasetInfo"
        assert info["filePath"][()] == b"video.h5/data"
        assert [a["key"] for a in json.loads(info["axistags"][()])["axes"]] == list("tyxc")  # default for no tags
        parameters = f["ConservationTracking/Parameters"]
        assert parameters["maxObj"][()] == 1 and not parameters["withDivisions"][()]
        assert list(parameters["x_range"][()]) == [0, 30] and list(parameters["y_range"][()]) == [0, 20]
        assert list(parameters["time_range"][()]) == [0, 2] and list(parameters["z_range"][()]) == [0, 1]
        counts = [f[f"CountClassification/LabelInputs/0000/{t}"][()].tolist() for t in range(3)]
        assert counts == [[0, ONE_OBJECT], [0, 0], [0, 0, FALSE_DETECTION]]
        assert f["DivisionDetection/LabelInputs/0000/1"][()].tolist() == [0, DIVIDING]
    assert open_project(str(path)).lanes[0].roles["Raw Data"].path == spec
    with pytest.raises(ValueError, match="CountClassification: no object 2 in frame 0"):
        write_conservation_project(tmp_path / "q.ilp", spec, spec, count_labels={(0, 2): ONE_OBJECT},
                                   division_labels={})
    with pytest.raises(ValueError, match="DivisionDetection: no class 3"):
        write_conservation_project(tmp_path / "q.ilp", spec, spec, count_labels={}, division_labels={(0, 1): 3})


def _claims(small_video: list[np.ndarray]) -> dict[tuple[int, int], int]:
    """(frame, lineage) → the object the reference Contours export draws for that lineage: the object every contour
    point touches (marching squares at level 0 puts the points on the background pixels next to the object)."""
    claims = {}
    for contour in read_outline(OUTLINE):
        labels = np.pad(small_video[contour.frame], 1)
        touched = Counter()
        for y, x in contour.points.astype(int):
            window = labels[y:y + 3, x:x + 3]
            touched.update(set(window[window > 0].tolist()))
        [(obj, votes)] = touched.most_common()  # exactly one object
        assert votes == len(contour.points)
        claims[contour.frame, contour.lineage] = obj
    return claims


def test_labels_agree_with_the_reference_tracking(small_video, record_property):
    """Mergers are the objects two lineages of the reference share, the dividing object is the one whose lineage
    continues at half its size, and the reference tracks every object (no false detection)."""
    claims = _claims(small_video)
    area = [np.bincount(frame.ravel()) for frame in small_video]
    owners: dict[tuple[int, int], set[int]] = {}
    for (t, lineage), obj in claims.items():
        owners.setdefault((t, obj), set()).add(lineage)
    assert {lineage for _, lineage in claims} == {2, 3, 4}  # 3 lineages, as ilastik's headless test expects
    mergers = {key for key, lineages in owners.items() if len(lineages) == 2}
    assert mergers == {key for key, value in SMALL_VIDEO_COUNT_LABELS.items() if value == TWO_OBJECTS}
    assert all(len(owners.get(key, ())) <= 1 for key, value in SMALL_VIDEO_COUNT_LABELS.items() if value == ONE_OBJECT)
    assert FALSE_DETECTION not in SMALL_VIDEO_COUNT_LABELS.values()
    # Multi-Worm-Tracker summary: "t+1 t objects ...": every object tracked, a merger counting as two
    tracked = {int(line.split()[1]): int(line.split()[2]) for line in SUMMARY.read_text().splitlines() if line}
    assert tracked == {t: int(frame.max()) + sum(f == t for f, _ in mergers) for t, frame in enumerate(small_video)}

    for (t, obj), value in SMALL_VIDEO_DIVISION_LABELS.items():
        lineages = owners[t, obj]
        share = area[t][obj] / len(lineages)
        halves = all(area[t + 1][claims[t + 1, lineage]] < 0.6 * share for lineage in lineages)
        assert halves == (value == DIVIDING), (t, obj)
    [(t_div, dividing)] = [key for key, value in SMALL_VIDEO_DIVISION_LABELS.items() if value == DIVIDING]
    unclaimed = [(t, obj) for t, frame in enumerate(small_video) for obj in range(1, int(frame.max()) + 1)
                 if (t, obj) not in owners]
    assert unclaimed and all(t > t_div for t, _ in unclaimed)  # the second child, drawn under its sibling's lineage
    assert all(0.4 < area[t][obj] / area[t_div][dividing] < 0.6 for t, obj in unclaimed)
    record_property("figures", f"reference lineages 2-4 on {len(owners)} objects; mergers {sorted(mergers)}; "
                               f"division of {(t_div, dividing)} into halves")


def _write_ctc(folder: Path, tracks: list[tuple[int, int, int, int]], masks: list[np.ndarray]) -> Path:
    folder.mkdir()
    (folder / "res_track.txt").write_text("".join(f"{l} {b} {e} {p}\n" for l, b, e, p in tracks))
    for t, mask in enumerate(masks):
        tifffile.imwrite(folder / f"mask{t:03d}.tif", mask)
    return folder


def _valid_ctc() -> tuple[list[tuple[int, int, int, int]], list[np.ndarray]]:
    """Track 1 (frames 0-1) divides into 2 and 3 (frames 2-3); track 4 runs through all four frames."""
    tracks = [(1, 0, 1, 0), (2, 2, 3, 1), (3, 2, 3, 1), (4, 0, 3, 0)]
    masks = [np.zeros((6, 8), dtype=np.uint16) for _ in range(4)]
    for label, begin, end, _ in tracks:
        for t in range(begin, end + 1):
            masks[t][label, label:label + 2] = label
    return tracks, masks


def test_ctc_check_accepts_a_valid_result(tmp_path):
    assert check_ctc_folder(_write_ctc(tmp_path / "ok", *_valid_ctc())) == []


def _set_pixel(masks: list[np.ndarray], t: int, label: int) -> None:
    masks[t][0, 0] = label


@pytest.mark.parametrize("breakage, expected", [
    (lambda tracks, masks: tracks.append((4, 0, 3, 0)), "label 4 is not unique"),
    (lambda tracks, masks: tracks.__setitem__(1, (2, 2, 3, 9)), "track 2: parent 9 is not a track"),
    (lambda tracks, masks: (tracks.__setitem__(0, (1, 0, 2, 0)), _set_pixel(masks, 2, 1)),
     "track 2: parent 1 ends in frame 2, not before the child begins in frame 2"),
    (lambda tracks, masks: _set_pixel(masks, 0, 7), "mask of frame 0: label 7 is not in res_track.txt"),
    (lambda tracks, masks: masks[1].__setitem__(masks[1] == 4, 0), "track 4 (0..3): absent from the mask of frame 1"),
    (lambda tracks, masks: _set_pixel(masks, 3, 1), "track 1 (0..1): present in the mask of frame 3"),
    (lambda tracks, masks: tracks.__setitem__(3, (4, 0, 5, 0)), "track 4: ends in frame 5, beyond the last mask 3"),
    (lambda tracks, masks: tracks.__setitem__(3, (4, 3, 0, 0)), "track 4 spans frames 3..0"),
    (lambda tracks, masks: tracks.__setitem__(3, (70000, 0, 3, 0)), "label 70000 is not a positive 16-bit value"),
    (lambda tracks, masks: masks.__setitem__(0, masks[0].astype(np.int32)), "mask000.tif: int32, not uint16"),
])
def test_ctc_check_names_each_violation_of_content(tmp_path, breakage, expected):
    tracks, masks = _valid_ctc()
    breakage(tracks, masks)
    problems = check_ctc_folder(_write_ctc(tmp_path / "res", tracks, masks))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("breakage, expected", [
    (lambda folder: (folder / "res_track.txt").unlink(), "no res_track.txt"),
    (lambda folder: (folder / "res_track.txt").write_text("1 0 1\n"), "line 1: '1 0 1' is not four integers"),
    (lambda folder: (folder / "mask002.tif").unlink(), "mask002.tif: missing"),
    (lambda folder: (folder / "mask000.tif").rename(folder / "mask0.tif"), "mask0.tif: not a mask name for 4 frames"),
    (lambda folder: [p.unlink() for p in folder.glob("mask*.tif")], "no masks"),
])
def test_ctc_check_names_each_violation_of_files(tmp_path, breakage, expected):
    folder = _write_ctc(tmp_path / "res", *_valid_ctc())
    breakage(folder)
    problems = check_ctc_folder(folder)
    assert any(expected in problem for problem in problems), problems


def test_ctc_check_four_digits_beyond_1000_frames(tmp_path):
    masks = [np.ones((1, 1), dtype=np.uint16)] * 1001
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "res_track.txt").write_text("1 0 1000 0\n")
    for t, mask in enumerate(masks):
        tifffile.imwrite(folder / f"mask{t:04d}.tif", mask)
    assert check_ctc_folder(folder) == []
    (folder / "mask0005.tif").rename(folder / "mask005.tif")
    problems = check_ctc_folder(folder)
    assert "mask005.tif: not a mask name for 1001 frames (4 digits)" in problems
    assert "mask0005.tif: missing" in problems


def test_read_outline_of_the_reference():
    contours = read_outline(OUTLINE)
    assert [(c.frame, c.lineage) for c in contours] == [(t, lineage) for lineage in (2, 3, 4) for t in range(7)]
    for contour in contours:
        assert contour.points.shape[1] == 2 and len(contour.points) > 100
        assert np.array_equal(contour.points[0], contour.points[-1])  # closed contours
        assert contour.line.startswith(f"00000000_{contour.frame:06d} {contour.lineage:05d} 0.000 ")
    assert contours[0].points[0].tolist() == [245.0, 159.0]


def test_outline_agreement_reports_differing_lines(tmp_path):
    same = outline_agreement(OUTLINE, OUTLINE)
    assert same.identical and same.equal == same.total == 21
    lines = OUTLINE.read_text().splitlines()
    words = lines[4].split(" ")
    words[5] = str(float(words[5]) + 1)  # frame 4, lineage 2: the y of point 1
    lines[4] = " ".join(words)
    ours = tmp_path / "ours.outline"
    ours.write_text("\n".join(lines[:-1]) + "\n")
    result = outline_agreement(ours, read_outline(OUTLINE))
    assert not result.identical and (result.equal, result.total) == (19, 21)
    assert result.differences[0].startswith("line 5: frame 4, lineage 2: 1 of 271 points differ, the first at 1:")
    assert result.differences[1] == "line 21: frame 6, lineage 4 missing from ours"
    swapped = outline_agreement([*read_outline(OUTLINE)[1:], read_outline(OUTLINE)[0]], OUTLINE)
    assert "where the reference has frame 0, lineage 2" in swapped.differences[0]
