"""vigra's 2-D skeleton features (hpc_ilastik.objects.skeleton): against the values real ilastik
projects cached, and on hand-made label images whose skeleton is known by construction."""

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi

from hpc_ilastik.objects.skeleton import SKELETON_FEATURES, skeleton_features
from tests.conftest import FIXTURES

# Projects (ilastik 1.2.2, all 2-D object classification fixtures) whose cached "2D Skeleton
# Features" are compared, per time frame, with where their label images come from. "cache":
# ObjectExtraction/LabelImage_v2 (one block per frame). "segmentation": the project's binary
# segmentation input labelled as ilastik does (4-connected components of the value-1 pixels,
# numbered in scan order): the LabelImage_v2 caches of these three projects are stale (their pixel
# counts disagree with the cached "Count"), the segmentation reproduces every cached Count.
# These projects cache seven of the nine features (no "Terminal 1" / "Terminal 2").
# ObjectClassification2d3c_wLabels.ilp (1.4.2) is left out: its RegionFeatures/0000 group is empty,
# so it caches no feature values to compare with.
PROJECTS = [
    ("ObjectClassification2d_wPred.ilp", "cache", 1),
    ("ObjectClassification2d_wSeg.ilp", "cache", 1),
    ("ObjectClassification2d3c_wPred.ilp", "cache", 1),
    ("ObjectClassification2d3c_wSeg.ilp", "segmentation", 1),
    ("ObjectClassification5t2d1c_wPred.ilp", "cache", 5),
    ("ObjectClassification5t2d1c_wSeg.ilp", "segmentation", 5),
    ("ObjectClassification5t2d2c_wPred.ilp", "cache", 5),
    ("ObjectClassification5t2d2c_wSeg.ilp", "segmentation", 5),
]
CASES = [(name, source, t) for name, source, frames in PROJECTS for t in range(frames)]


def _label_image(project: h5py.File, source: str, t: int) -> np.ndarray:
    """The (y, x) label image of frame t of lane 0."""
    if source == "cache":
        for block in project["ObjectExtraction/LabelImage_v2/labelimage000"].values():
            # blocks are (t, x, y, z, c); blockSlice "[t0:t1,...]" names the frame
            if int(block.attrs["blockSlice"].strip("[]").split(":")[0]) == t:
                return block[0, :, :, 0, 0].T
        raise AssertionError(f"no cached label image for frame {t}")
    path = project["Input Data/infos/lane0000/Segmentation Image/filePath"][()].decode()
    file_name, dataset = path.split(".h5/")
    with h5py.File(FIXTURES / f"{file_name}.h5", "r") as f:
        seg = f[dataset][()]  # (y, x, c) or (t, y, x, c)
    return ndi.label(seg.reshape((-1,) + seg.shape[-3:])[t, :, :, 0] == 1)[0]


@pytest.mark.parametrize("name,source,t", CASES)
def test_matches_the_features_ilastik_cached(name, source, t, fixtures_dir, record_property):
    """Every cached feature of every object equals ours cast to float32, bit for bit (the skeleton
    features are stored as vigra's doubles cast to float32, not rounded further)."""
    with h5py.File(fixtures_dir / name, "r") as project:
        labels = _label_image(project, source, t)
        roi = project[f"ObjectExtraction/RegionFeatures/0000/[[{t}], [{t + 1}]]"]
        counts = np.bincount(labels.ravel())
        np.testing.assert_array_equal(counts[1:], roi["Default features/Count"][1:, 0])
        cached = {feature: values[()] for feature, values in roi["2D Skeleton Features"].items()}
    assert set(cached) == set(SKELETON_FEATURES) - {"Terminal 1", "Terminal 2"}
    ours = skeleton_features(labels)
    worst = {}
    for feature, want in cached.items():
        got = ours[feature]
        assert got.shape == want.shape == (counts.size, 2 if feature == "Skeleton Center" else 1)
        np.testing.assert_array_equal(got[1:].astype(np.float32), want[1:], err_msg=feature)
        worst[feature] = float(np.abs(got[1:] - want[1:]).max())
    # the terminals we return are the ends whose distance ilastik cached as "Euclidean Diameter"
    ends = np.hypot(*(ours["Terminal 1"][1:] - ours["Terminal 2"][1:]).T)
    np.testing.assert_array_equal(ends.astype(np.float32), cached["Euclidean Diameter"][1:, 0])
    figures = ", ".join(f"{f} {d:.1e}" for f, d in worst.items())
    summary = f"{name} t={t}: {counts.size - 1} objects bit-equal as float32; worst |ours - cached| {figures}"
    record_property("figures", summary)
    print(summary)


def _row(result: dict[str, np.ndarray], k: int) -> dict[str, object]:
    """Row k: scalars as floats, points as (x, y) tuples."""
    return {name: (float(v[k, 0]) if v.shape[1] == 1 else tuple(v[k].tolist())) for name, v in result.items()}


def test_one_pixel_line_is_its_own_skeleton():
    """A 21-pixel horizontal line: the centre line is the line, rooted at its middle pixel, with two
    branches of length 10. Terminal 1 is the end farthest from the last skeleton pixel in scan order
    (the right end), Terminal 2 the other one."""
    labels = np.zeros((11, 31), np.uint16)
    labels[5, 5:26] = 1
    result = skeleton_features(labels)
    assert list(result) == list(SKELETON_FEATURES)
    points = ("Skeleton Center", "Terminal 1", "Terminal 2")
    assert {k: (v.dtype, v.shape) for k, v in result.items()} == {
        k: (np.float64, (2, 2 if k in points else 1)) for k in SKELETON_FEATURES}
    assert _row(result, 1) == {
        "Diameter": 20.0, "Euclidean Diameter": 20.0, "Total Length": 20.0, "Average Length": 10.0,
        "Branch Count": 2.0, "Hole Count": 0.0, "Skeleton Center": (15.0, 5.0),
        "Terminal 1": (25.0, 5.0), "Terminal 2": (5.0, 5.0),
    }
    assert not any(v[0].any() for v in result.values())  # row 0: label 0 is never skeletonised


def test_bar_runs_from_end_to_end():
    """A 3 x 21 bar: no hole, two branches, terminals on its two short ends, the Euclidean diameter
    between them at least the bar's length."""
    labels = np.zeros((11, 31), np.uint8)
    labels[4:7, 5:26] = 1
    r = _row(skeleton_features(labels), 1)
    assert (r["Hole Count"], r["Branch Count"]) == (0.0, 2.0)
    assert sorted([r["Terminal 1"][0], r["Terminal 2"][0]]) == [5.0, 25.0]
    assert all(4 <= p[1] <= 6 for p in (r["Terminal 1"], r["Terminal 2"], r["Skeleton Center"]))
    assert r["Euclidean Diameter"] == np.hypot(*np.subtract(r["Terminal 1"], r["Terminal 2"])) >= 20.0
    assert r["Diameter"] >= r["Euclidean Diameter"]


def test_ring_has_one_hole_and_no_branch():
    """An annulus: its skeleton is one closed loop around the hole, with nothing left to prune."""
    yy, xx = np.mgrid[:21, :21]
    radius = np.hypot(yy - 10, xx - 10)
    labels = ((radius >= 4) & (radius < 8)).astype(np.int32)
    r = _row(skeleton_features(labels), 1)
    assert (r["Hole Count"], r["Branch Count"], r["Average Length"]) == (1.0, 0.0, 0.0)
    assert r["Total Length"] > 0


def test_holes_are_counted():
    """A rectangle with two separate 3 x 3 holes."""
    labels = np.zeros((15, 27), np.int64)
    labels[2:13, 2:25] = 3
    labels[6:9, 7:10] = 0
    labels[6:9, 16:19] = 0
    result = skeleton_features(labels)
    assert result["Hole Count"][:, 0].tolist() == [0.0, 0.0, 0.0, 2.0]
    assert not result["Diameter"][1:3].any()  # labels that do not occur: zeros


def test_l_shape_ends_at_both_arms():
    labels = np.zeros((20, 20), np.uint32)
    labels[3:17, 3:6] = 1  # vertical arm, top end at y = 3
    labels[14:17, 3:15] = 1  # horizontal arm, right end at x = 14
    r = _row(skeleton_features(labels), 1)
    assert (r["Hole Count"], r["Branch Count"]) == (0.0, 2.0)
    ends = sorted([r["Terminal 1"], r["Terminal 2"]], key=lambda p: p[1])
    assert ends[0][1] == 3.0 and 3 <= ends[0][0] <= 5  # top of the vertical arm
    assert ends[1][0] == 14.0 and 14 <= ends[1][1] <= 16  # right end of the horizontal arm


def test_touching_objects_are_skeletonised_separately():
    """Two equal rectangles sharing an edge: each one's boundary includes the other, so label 2's
    features are label 1's, its points shifted by the 12 pixels between them."""
    labels = np.zeros((11, 31), np.uint32)
    labels[3:8, 3:15] = 1
    labels[3:8, 15:27] = 2
    result = skeleton_features(labels)
    for feature, values in result.items():
        shift = [12.0, 0.0] if values.shape[1] == 2 else [0.0]
        np.testing.assert_array_equal(values[2], values[1] + shift, err_msg=feature)
    assert result["Hole Count"][1, 0] == 0.0 and result["Diameter"][1, 0] > 0


def test_image_border_is_not_a_boundary():
    """vigra's boundary distance ignores the image border, so a strip running into it is skeletonised
    as if it went on: its centre line ends on the border, on the strip's middle row."""
    labels = np.zeros((11, 31), np.uint32)
    labels[3:8, 0:20] = 1  # rows 3..7, middle row 5
    r = _row(skeleton_features(labels), 1)
    assert (0.0, 5.0) in (r["Terminal 1"], r["Terminal 2"])
    assert r["Hole Count"] == 0.0
    across = np.zeros((11, 31), np.uint32)
    across[4:7, :] = 1  # touches the left and the right border
    r = _row(skeleton_features(across), 1)
    assert sorted([r["Terminal 1"][0], r["Terminal 2"][0]]) == [0.0, 30.0]
    assert r["Euclidean Diameter"] >= 30.0


def test_rejects_what_vigra_cannot_take():
    with pytest.raises(ValueError):
        skeleton_features(np.zeros((2, 3, 4), np.uint32))
    with pytest.raises(ValueError):
        skeleton_features(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError):
        skeleton_features(np.full((3, 4), -1, np.int32))
