"""The tracking workflows' per-object inputs against what ilastik cached in the tracking fixtures: the features
it computed per frame (`TrackingFeatureExtraction/RegionFeaturesVigra`), its "Cell Division Features"
(`RegionFeaturesDivision`, from the cached vigra features and label images) and the object-count and division
classifiers' probabilities (`CountClassification` / `DivisionDetection/CachedProbabilities`)."""

import re

import h5py
import numpy as np
import pytest
from scipy import ndimage

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import read_classifier
from hpc_ilastik.objects.features import (
    DEFAULT_PLUGIN,
    SKELETON_2D,
    ObjectCrop,
    check_features,
    crop_extent,
    feature_matrix,
    object_features,
)
from hpc_ilastik.objects.standard import PLUGIN as STANDARD
from hpc_ilastik.project.object_classification import read_feature_dict
from hpc_ilastik.tracking.features import (
    DIVISION_FEATURES,
    DIVISION_PLUGIN,
    computed_selection,
    division_features,
    has_successor_features,
    object_probabilities,
    tracking_feature_set,
)
from tests.conftest import FIXTURES

# project, raw data, spatial dimensions
BINARY = [("TrackingwLearning5t2d1c_wBin.ilp", "inputdata/5t2d1c.h5", 2),
          ("TrackingwLearning5t2d2c_wBin.ilp", "inputdata/5t2d2c.h5", 2),
          ("TrackingwLearning5t3d2c_wBin.ilp", "inputdata/5t3d2c.h5", 3)]


def _frames(group: h5py.Group) -> list[h5py.Group]:
    """The per-frame groups "[[t], [t+1]]" in frame order."""
    return [group[k] for k in sorted(group, key=lambda k: int(re.match(r"\[\[(\d+)\]", k).group(1)))]


def _cached(project: str) -> tuple[h5py.File, list[dict], list[dict], list[np.ndarray]]:
    """(open project, per frame: cached feature table, cached division features, label image (z, y, x))."""
    f = h5py.File(FIXTURES / project, "r")
    extraction = f["TrackingFeatureExtraction"]
    tables = [{plugin: {name: g[plugin][name][()] for name in g[plugin]} for plugin in g}
              for g in _frames(extraction["RegionFeaturesVigra/0000"])]
    divisions = [{name: g[DIVISION_PLUGIN][name][()] for name in g[DIVISION_PLUGIN]}
                 for g in _frames(extraction["RegionFeaturesDivision/0000"])]
    labels = {}
    for block in extraction["LabelImage_v2/labelimage000"].values():  # txyzc blocks, one frame each
        t = int(re.match(r"\[(\d+):", block.attrs["blockSlice"]).group(1))
        labels[t] = block[()][0, ..., 0].transpose(2, 1, 0)
    return f, tables, divisions, [labels[t] for t in sorted(labels)]


def _ours(tables: list[dict], labels: list[np.ndarray], ndim: int) -> list[dict]:
    """Our division features of every frame from the cached tables and label images."""
    n = len(labels)
    return [division_features(tables[t], tables[t + 1] if has_successor_features(t, n) else None,
                              labels[t + 1] if has_successor_features(t, n) else None, ndim) for t in range(n)]


@pytest.mark.parametrize("project, raw, ndim", BINARY)
def test_feature_set_is_what_ilastik_computes(project, raw, ndim):
    _, tables, _, _ = _cached(project)
    wanted = tracking_feature_set(ndim)
    for table in tables:
        cached = {(plugin, name) for plugin, names in table.items() if plugin != DEFAULT_PLUGIN for name in names}
        assert cached == {(plugin, name) for plugin, names in wanted.items() for name in names}
    for n_channels in (1, 2):
        check_features(wanted, n_channels, ndim)  # hpc-ilastik computes every one of them


@pytest.mark.parametrize("project, ndim", [(p, d) for p, _, d in BINARY]
                         + [("inputdata/mitocheckStructuredLearningTracking.ilp", 2)])
def test_division_features_equal_ilastiks(project, ndim, record_property):
    _, tables, cached, labels = _cached(project)
    assert len(cached) == len(labels)
    values = nondefault = 0
    for t, (ours, theirs) in enumerate(zip(_ours(tables, labels, ndim), cached)):
        assert set(ours) == set(theirs) == set(DIVISION_FEATURES)
        for name, reference in theirs.items():
            assert ours[name].shape == reference.shape, (t, name)
            np.testing.assert_array_equal(ours[name].astype(np.float32), reference.astype(np.float32),
                                          err_msg=f"frame {t} {name}")
            np.testing.assert_allclose(ours[name], reference, rtol=1e-13, atol=0)
            values += reference.size
        nondefault += int(np.count_nonzero(theirs["SquaredDistances_0"][1:] != 9999))
    assert nondefault > 10  # the comparison covers objects with successors, not only the defaults
    record_property("figures", f"{project}: {values} division feature values of {len(labels)} frames equal to "
                               f"float32 ({nondefault} objects with a successor)")


def _table(centers, counts, means) -> dict:
    """A feature table from per-object rows (row 0, the background, added)."""
    rows = lambda values: np.vstack([np.zeros((1, np.shape(values)[1])), values])  # noqa: E731
    return {STANDARD: {"RegionCenter": rows(centers), "Count": rows(counts), "Mean": rows(means)}}


def test_division_features_window_size_filter_and_ratios():
    # frame t + 1: object 1 at x 10, object 2 at x 40, a 3-pixel object 3 (filtered) and object 4 at x 49
    labels = np.zeros((1, 30, 80), np.uint32)
    for label, x in ((1, 10), (2, 40), (3, 24), (4, 49)):
        labels[0, 10, x] = label
    following = _table([[10, 10], [40, 10], [24, 10], [49, 10]], [[60], [40], [3], [10]], [[1], [3], [1], [1]])
    # the parent at x 24.5 rounds to 24 (half to even): window x [0, 49), object 4 outside; at 25.5 → [1, 51)
    current = _table([[24.5, 10], [25.5, 10]], [[100], [100]], [[2], [2]])
    result = division_features(current, following, labels, 2)
    assert [result[f"SquaredDistances_{i}"][1, 0] for i in range(3)] == [14.5, 15.5, 9999]
    assert [result[f"SquaredDistances_{i}"][2, 0] for i in range(3)] == [14.5, 15.5, 23.5]
    np.testing.assert_array_equal(result["ParentChildrenRatio_Count"][1:, 0], [1.0, 1.0])
    np.testing.assert_array_equal(result["ParentChildrenRatio_Mean"][1:, 0], [0.5, 0.5])
    assert result["ChildrenRatio_Count"][1, 0] == np.float32(1) / np.float32(np.float32(60) / np.float32(40))
    assert result["ChildrenRatio_Mean"][1, 0] == np.float32(1) / np.float32(3)
    np.testing.assert_allclose(result["ParentChildrenAngle_RegionCenter"][1:, 0], [180, 180])
    assert result["SquaredDistances_0"][0, 0] == 9999 and result["ParentChildrenRatio_Count"][0, 0] == 0


def test_division_features_without_successor():
    current = _table([[3, 4]], [[10]], [[1, 2]])
    result = division_features(current, None, None, 2)
    assert result["ParentChildrenRatio_Mean"].shape == (2, 2)
    assert all(np.all(result[f"SquaredDistances_{i}"] == 9999) for i in range(3))
    assert all(not np.any(result[name]) for name in DIVISION_FEATURES if not name.startswith("Squared"))
    assert [has_successor_features(t, 5) for t in range(5)] == [True, True, True, False, False]
    with pytest.raises(ValueError):  # a label image with more objects than the next frame's table
        division_features(current, _table([[3, 4]], [[10]], [[1, 2]]), np.full((1, 8, 8), 2, np.uint32), 2)


# (project, classifier group, use our division features): every cached probability table of the fixtures but
# 5t2d1c's count classifier, whose cache predates its forest (its inputs are reproduced exactly below, its 29
# objects' probabilities differ by up to 0.26 from the stored forest's).
PROBABILITIES = [("TrackingwLearning5t3d2c_wBin.ilp", "CountClassification", 3),
                 ("TrackingwLearning5t3d2c_wBin.ilp", "DivisionDetection", 3),
                 ("TrackingwLearning5t2d2c_wBin.ilp", "DivisionDetection", 2),
                 ("TrackingwLearning5t2d_wPred.ilp", "CountClassification", 2)]


@pytest.mark.parametrize("project, group, ndim", PROBABILITIES)
def test_probabilities_equal_ilastiks(project, group, ndim, record_property):
    f, tables, _, labels = _cached(project)
    classifier = f[group]
    forest = read_classifier(classifier["ClassifierForests"])
    selected = read_feature_dict(classifier["SelectedFeatures"])
    n_classes = len(classifier["LabelNames"][()])
    cached = classifier["CachedProbabilities/0000"]
    divisions = _ours(tables, labels, ndim) if group == "DivisionDetection" else None
    objects = 0
    for t in sorted(cached, key=int):
        table = dict(tables[int(t)])
        if divisions is not None:
            table[DIVISION_PLUGIN] = divisions[int(t)]
        ours = object_probabilities(table, selected, forest, n_classes)
        assert ours.dtype == np.float32 and not ours[0].any()
        np.testing.assert_array_equal(ours, cached[t][()])
        objects += len(ours) - 1
    record_property("figures", f"{project} {group}: {objects} objects' probabilities equal")


def test_selection_keeps_only_computed_features():
    f, tables, _, labels = _cached("TrackingwLearning5t3d2c_wBin.ilp")
    table = dict(tables[0], **{DIVISION_PLUGIN: _ours(tables, labels, 3)[0]})
    count = computed_selection(read_feature_dict(f["CountClassification/SelectedFeatures"]), table)
    assert {plugin: sorted(names) for plugin, names in count.items()} == {
        STANDARD: ["Count", "Mean", "RegionAxes", "RegionRadii", "Variance"]}  # no "2D ..." plugin
    division = computed_selection(read_feature_dict(f["DivisionDetection/SelectedFeatures"]), table)
    assert sorted(division[DIVISION_PLUGIN]) == sorted(DIVISION_FEATURES)  # no ChildrenRatio_SquaredDistances
    for group, selection in (("CountClassification", count), ("DivisionDetection", division)):
        assert feature_matrix(table, selection).shape == (28, read_classifier(f[group]["ClassifierForests"]).n_features)
    flat = read_feature_dict(h5py.File(FIXTURES / BINARY[0][0], "r")["CountClassification/SelectedFeatures"])
    assert "Area" in flat["2D Convex Hull Features"]
    assert "Area" not in computed_selection(flat, _cached(BINARY[0][0])[1][0])["2D Convex Hull Features"]
    np.testing.assert_array_equal(object_probabilities(tables[0], count, None, 3), np.zeros((28, 3), np.float32))
    background_only = {STANDARD: {name: values[:1] for name, values in tables[0][STANDARD].items()}}
    assert object_probabilities(background_only, count, read_classifier(f["CountClassification/ClassifierForests"]),
                                3).shape == (1, 3)
    with pytest.raises(UserError):
        object_probabilities(tables[0], {"2D Skeleton Features": {"Diameter": {}}},
                             read_classifier(f["CountClassification/ClassifierForests"]), 3)


@pytest.mark.parametrize("project, raw, ndim", BINARY)
def test_our_object_features_reproduce_ilastiks(project, raw, ndim, record_property):
    """Standard and convex-hull features of every object of the cached label images (the skeleton's are left
    out here only for the numba compile time; they agree too)."""
    _, tables, _, labels = _cached(project)
    pixels = h5py.File(FIXTURES / raw, "r")["data"][()].astype(np.float32)
    pixels = pixels[:, np.newaxis] if ndim == 2 else pixels
    wanted = {plugin: names for plugin, names in tracking_feature_set(ndim).items() if plugin != SKELETON_2D}
    compared = exact = 0
    for t, frame in enumerate(labels):
        for k, box in enumerate(ndimage.find_objects(frame), start=1):
            extent = crop_extent([s.start for s in box], [s.stop for s in box], wanted, frame.shape)
            crop = ObjectCrop(pixels[t][extent], frame[extent] == k, tuple(s.start for s in extent), frame.shape)
            for plugin, values in object_features(crop, wanted, None).items():
                for name, value in values.items():
                    reference = tables[t][plugin][name][k]
                    if name == "Coord<Maximum>":  # ilastik < 1.3.3post3 (these projects) gives the inclusive bound
                        reference = reference + 1
                    np.testing.assert_allclose(value.astype(np.float32), reference, rtol=1e-6, atol=1e-6,
                                               err_msg=f"frame {t} object {k} {plugin}/{name}")
                    compared += value.size
                    exact += int(np.sum((value.astype(np.float32) == reference) | np.isnan(reference)))
    record_property("figures", f"{project}: {compared} feature values of {sum(f.max() for f in labels)} objects "
                               f"within 1e-6, {exact} of them equal in float32")
