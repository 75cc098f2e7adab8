"""The objects domain on arrays: vigra's connected components and relabelling, its eigen-system, the region
accumulators' definitions, ilastik's thresholding against the label images real projects cached, and the
block-by-block segmentation equal to the whole frame's."""

import math

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.inputs import open_input
from hpc_ilastik.objects.accumulators import region_statistics
from hpc_ilastik.objects.eigen import symmetric_eigensystem
from hpc_ilastik.objects.extraction import LABELS, PREDICTIONS, SEGMENTATION, Segmenter, object_mask
from hpc_ilastik.objects.graph_cut import BETA, graph_cut, graph_cut_mask, potentials
from hpc_ilastik.objects.labeling import label_components, relabel_consecutive
from hpc_ilastik.objects.standard import feature_value, neighborhood_masks
from hpc_ilastik.objects.threshold import (
    GRAPH_CUT,
    HYSTERESIS,
    ThresholdSettings,
    smooth,
    threshold_masks,
    vigra_gaussian,
)
from hpc_ilastik.project.reader import open_project
from hpc_ilastik.run.blocks import plan_blocks
from tests.conftest import FIXTURES

WPRED = [("ObjectClassification2d_wPred.ilp", "2d_Probabilities.h5"),
         ("ObjectClassification2d3c_wPred.ilp", "2d3c_Probabilities.h5"),
         ("ObjectClassification5t2d1c_wPred.ilp", "5t2d1c_Probabilities.h5"),
         ("ObjectClassification5t2d2c_wPred.ilp", "5t2d2c_Probabilities.h5"),
         ("ObjectClassification5t3d2c_wPred.ilp", "5t3d2c_Probabilities.h5")]


def _blobs(shape, seed):
    """A random binary image of blobs of various sizes."""
    return ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 1.0) > 0.53


@pytest.mark.parametrize("shape", [(1, 40, 50), (12, 20, 25), (7, 1, 30)])
def test_components_are_scipys_with_the_direct_neighbourhood(shape):
    mask = _blobs(shape, 1)
    ours, count = label_components(mask)
    theirs, theirs_count = ndi.label(mask)
    assert count == theirs_count > 3
    assert np.array_equal(ours, theirs)


def test_components_separate_touching_regions_of_different_values_in_raster_order():
    values = np.array([[1, 1, 2, 0, 3],
                       [0, 2, 2, 0, 3],
                       [5, 0, 0, 3, 3]], dtype=np.uint8)
    labels, count = label_components(values)
    assert count == 4
    assert labels.tolist() == [[1, 1, 2, 0, 3],
                               [0, 2, 2, 0, 3],
                               [4, 0, 0, 3, 3]]


def test_relabelling_follows_first_appearance_not_value():
    image = np.array([[0, 9, 9, 4], [7, 0, 4, 4], [9, 0, 0, 7]], dtype=np.uint16)
    relabelled, old = relabel_consecutive(image)
    assert old.tolist() == [9, 4, 7]
    assert relabelled.tolist() == [[0, 1, 1, 2], [3, 0, 2, 2], [1, 0, 0, 3]]


def test_eigensystem_is_vigras_descending_with_its_signs():
    rng = np.random.default_rng(3)
    for n in (2, 3, 4):
        a = rng.normal(size=(n, n))
        a = a + a.T
        values, vectors = symmetric_eigensystem(a)
        assert np.allclose(values, np.sort(np.linalg.eigvalsh(a))[::-1])
        assert np.allclose(a @ vectors, vectors * values)
    # object 1 of ObjectClassification2d3c_wPred.ilp: its coordinate scatter matrix gives vigra's RegionAxes
    # [0.99831, 0.05812, 0.05812, -0.99831] (a reflection, as tql2 returns it; numpy's eigh flips a column)
    project = h5py.File(FIXTURES / "ObjectClassification2d3c_wPred.ilp", "r")
    labels = project["ObjectExtraction/LabelImage_v2/labelimage000/block0000"][0, :, :, 0, 0].T
    ys, xs = np.nonzero(labels == 1)
    stats = region_statistics(np.zeros((len(xs), 1), np.float32), np.stack([xs, ys], axis=1))
    cached = project["ObjectExtraction/RegionFeatures/0000/[[0], [1]]/Standard Object Features/RegionAxes"][1]
    assert np.array_equal(feature_value(stats, "RegionAxes").astype(np.float32), cached)


def test_accumulators_follow_vigras_definitions():
    values = np.array([[1.0], [2.0], [2.0], [7.0]], dtype=np.float32)
    coords = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    stats = region_statistics(values, coords, histogram_range=(1.0, 7.0))
    mean = 3.0
    m2, m3, m4 = (sum((v - mean) ** k for v in (1, 2, 2, 7)) for k in (2, 3, 4))
    assert feature_value(stats, "Count").tolist() == [4.0]
    assert feature_value(stats, "Variance")[0] == pytest.approx(m2 / 4)                       # population
    assert feature_value(stats, "Skewness")[0] == pytest.approx(math.sqrt(4) * m3 / m2 ** 1.5)
    assert feature_value(stats, "Kurtosis")[0] == pytest.approx(4 * m4 / m2 ** 2 - 3)         # excess
    assert feature_value(stats, "RegionCenter").tolist() == [0.5, 0.5]
    assert feature_value(stats, "Coord<Minimum>").tolist() == [0, 0]
    assert feature_value(stats, "Coord<Maximum>").tolist() == [2, 2]                          # exclusive (1.4)
    histogram = feature_value(stats, "Histogram")
    assert histogram.sum() == 4 and histogram[0] == 1 and histogram[63] == 1 and histogram[10] == 2
    quantiles = feature_value(stats, "Quantiles")
    assert quantiles[0] == 1.0 and quantiles[-1] == 7.0 and np.all(np.diff(quantiles) >= 0)
    constant = region_statistics(np.full((3, 1), 5.0, np.float32), coords[:3])
    assert np.isnan(feature_value(constant, "Skewness")[0])  # 0/0, as vigra (ilastik turns it into 0 later)


def test_neighbourhood_is_within_the_margin_with_pixel_pitch():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    passed, context = neighborhood_masks(mask, [2, 2])
    assert passed.sum() == 9 and not context[4, 4] and context.sum() == 8    # Euclidean distance < 2
    passed, _ = neighborhood_masks(mask, [1, 3])  # pitch 3 along y: only the x neighbours are closer than 3
    assert np.flatnonzero(passed[4]).tolist() == [2, 3, 4, 5, 6] and passed[:, 4].sum() == 1


def _vigra_smoothing_reference(frame: np.ndarray, sigmas_zyx: tuple[float, float, float]) -> np.ndarray:
    """vigra's separable smoothing written out line by line: x first, each output a double sum over the source
    positions in increasing order (mirrored at the ends, the edge not repeated), rounded to float32."""
    out = frame.astype(np.float32)
    for axis in (2, 1, 0):
        if out.shape[axis] == 1:
            continue
        kernel = vigra_gaussian(sigmas_zyx[axis])
        radius, n = len(kernel) // 2, out.shape[axis]
        moved = np.moveaxis(out, axis, -1).copy()
        for line in moved.reshape(-1, n):
            source = line.copy()
            for x in range(n):
                total = 0.0
                for i in range(x - radius, x + radius + 1):
                    j = -i if i < 0 else (2 * n - 2 - i if i >= n else i)
                    total += kernel[radius + x - i] * float(source[j])
                line[x] = np.float32(total)
        out = np.moveaxis(moved, -1, axis)
    return out


@pytest.mark.parametrize("shape, sigmas", [((7, 9, 11), (1.0, 1.0, 1.0)), ((5, 13, 3), (2.0, 0.7, 1.2)),
                                           ((1, 17, 8), (1.0, 3.5, 0.9)), ((6, 1, 10), (1.5, 1.0, 2.5))])
def test_smoothing_equals_vigras_line_by_line_sums_bit_for_bit(shape, sigmas):
    frame = np.random.default_rng(7).random(shape).astype(np.float32)
    np.testing.assert_array_equal(smooth(frame, sigmas).view(np.uint32),
                                  _vigra_smoothing_reference(frame, sigmas).view(np.uint32))


def test_smoothing_is_vigras_kernel_with_reflective_border():
    kernel = vigra_gaussian(1.0)
    assert len(kernel) == 5 and kernel.sum() == pytest.approx(1.0)
    assert len(vigra_gaussian(0.1)) == 3    # radius int(2σ + 0.5), at least 1
    line = np.zeros((1, 1, 9), np.float32)
    line[0, 0, 1] = 1.0
    smoothed = smooth(line, (1.0, 1.0, 1.0))[0, 0]
    assert smoothed[0] == np.float32(kernel[1] + kernel[3])  # in[-1] = in[1]: mirrored without the edge sample
    assert smoothed[1] == np.float32(kernel[4] + kernel[2]) and smoothed[3] == np.float32(kernel[4])
    assert np.array_equal(smooth(line, (0.05, 1.0, 0.05)), line)   # a used sigma below 0.1: no smoothing at all
    with pytest.raises(UserError, match="kernel|pixels"):
        smooth(np.zeros((1, 1, 2), np.float32), (1.0, 1.0, 3.0))


@pytest.mark.parametrize("project_name, predictions", WPRED)
def test_thresholding_reproduces_the_label_images_ilastik_cached(project_name, predictions, record_property):
    project = open_project(str(FIXTURES / project_name))
    maps = open_input(str(FIXTURES / "inputdata" / predictions / "exported_data")).read()  # tzyxc
    segmenter = Segmenter(PREDICTIONS, project.threshold)
    cache = h5py.File(FIXTURES / project_name, "r")["ObjectExtraction/LabelImage_v2/labelimage000"]
    frames = 0
    for block in cache.values():
        t = int(str(block.attrs["blockSlice"]).strip("[]").split(",")[0].split(":")[0])
        expected = np.transpose(block[0, ..., 0], (2, 1, 0))  # txyzc → zyx
        frame = maps[t]
        ids = _objects_blockwise(segmenter, frame, (frame.shape[0], 17, 23))
        assert np.array_equal(ids, expected), f"frame {t}"
        frames += 1
    record_property("figures", f"{project_name}: {frames} frame(s) equal to ilastik's cached label images")


def _objects_blockwise(segmenter: Segmenter, frame_zyxc: np.ndarray, block_zyx) -> np.ndarray:
    """A frame's object ids computed block by block (each block read with the segmenter's halo)."""
    shape = frame_zyxc.shape[:3]
    halo = segmenter.halo(shape)
    grid = plan_blocks((1,) + shape + (1,), (1,) + tuple(block_zyx) + (1,))
    found, values = [], []
    for block in grid:
        read = tuple(slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(block.slices[1:4], halo, shape))
        crop = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(block.slices[1:4], read))
        v, core = segmenter.values(frame_zyxc[read], crop)
        values.append(v)
        found.append(segmenter.block(v, core, block.index[1:4], [s.start for s in block.slices[1:4]], shape))
    table, maps = segmenter.merge(found)
    ids = np.zeros(shape, np.uint32)
    for block, v, local_map in zip(grid, values, maps):
        ids[block.slices[1:4]] = local_map[segmenter.local_labels(v)]
    assert len(table) == ids.max()
    return ids


def _whole(segmenter, frame):
    return _objects_blockwise(segmenter, frame, frame.shape[:3])


@pytest.mark.parametrize("block", [(5, 6, 7), (1, 30, 4), (13, 1, 50)])
def test_blockwise_objects_equal_the_whole_frames(block):
    rng = np.random.default_rng(7)
    probabilities = ndi.gaussian_filter(rng.random((13, 30, 50)), 1.5)
    probabilities = (probabilities - probabilities.min()) / np.ptp(probabilities)
    frame = np.stack([probabilities, 1 - probabilities], axis=-1).astype(np.float32)
    simple = Segmenter(PREDICTIONS, ThresholdSettings(low=0.6, min_size=5, max_size=400, sigmas_zyx=(0.6, 1.0, 1.3)))
    hysteresis = Segmenter(PREDICTIONS, ThresholdSettings(method=HYSTERESIS, low=0.6, high=0.7, min_size=3,
                                                          sigmas_zyx=(0.6, 1.0, 1.3)))
    binary = Segmenter(SEGMENTATION)
    several = (rng.integers(0, 3, (13, 30, 50)) * _blobs((13, 30, 50), 2))[..., None].astype(np.uint8)
    labels = Segmenter(LABELS)
    ids_with_gaps = (ndi.label(_blobs((13, 30, 50), 3))[0] * 7 % 41).astype(np.uint32)[..., None]
    for segmenter, data in ((simple, frame), (hysteresis, frame), (binary, several), (labels, ids_with_gaps)):
        whole = _whole(segmenter, data)
        assert whole.max() >= 3
        assert np.array_equal(_objects_blockwise(segmenter, data, block), whole)


def test_hysteresis_keeps_components_that_hold_a_big_enough_core():
    final = np.zeros((1, 1, 30, 1), np.float32)
    final[0, 0, 2:8, 0] = 0.6     # no core
    final[0, 0, 10:16, 0] = 0.6   # core of 2 pixels (below the minimum size of 3)
    final[0, 0, 12:14, 0] = 0.9
    final[0, 0, 20:28, 0] = 0.6   # core of 4 pixels: kept
    final[0, 0, 22:26, 0] = 0.9
    segmenter = Segmenter(PREDICTIONS, ThresholdSettings(method=HYSTERESIS, low=0.5, high=0.8, min_size=3,
                                                         sigmas_zyx=(0.0, 0.0, 0.0)))
    ids = _whole(segmenter, final)
    assert np.flatnonzero(ids).tolist() == list(range(20, 28)) and ids.max() == 1


def test_an_objects_own_pixels_in_a_crop():
    values = np.zeros((1, 6, 8), np.uint8)
    values[0, 1:3, 1:3] = 1
    values[0, 3:5, 4:7] = 1
    assert object_mask(values, (0, 3, 5), SEGMENTATION, 1).sum() == 6
    assert object_mask(np.where(values > 0, 5, 0), (0, 0, 0), LABELS, 5).sum() == 10   # a label: every piece
    with pytest.raises(ValueError):
        object_mask(values, (0, 0, 0), SEGMENTATION, 1)


def test_segmenters_refuse_unusable_inputs():
    with pytest.raises(UserError, match="integer object ids"):
        Segmenter(LABELS).check_input(np.float32, 1, (1, 10, 10))
    with pytest.raises(UserError, match="one"):
        Segmenter(SEGMENTATION).check_input(np.uint8, 2, (1, 10, 10))
    with pytest.raises(UserError, match="channel"):
        Segmenter(PREDICTIONS, ThresholdSettings(channel=2)).check_input(np.float32, 2, (1, 10, 10))
    with pytest.raises(UserError, match="IPHT method, which hpc-ilastik does not support"):
        Segmenter(PREDICTIONS, ThresholdSettings(method=3)).check_input(np.float32, 2, (1, 10, 10))


def test_masks_from_a_stored_value_range():
    maps = np.full((1, 3, 3, 1), 128, np.uint8)
    final, core = threshold_masks(maps, ThresholdSettings(low=0.5, sigmas_zyx=(0, 0, 0)), drange=(0.0, 255.0))
    assert final.all() and core is None


def _potts_energy(mask: np.ndarray, p: np.ndarray, beta: float) -> float:
    """segmentGC's energy: p for background, 1 - p for an object pixel, beta per differing neighbour pair."""
    unary = np.where(mask, 1 - p.astype(np.float64), p.astype(np.float64)).sum()
    pairs = sum(np.count_nonzero(np.diff(mask.astype(np.int8), axis=a)) for a in range(mask.ndim))
    return unary + beta * pairs


def test_graph_cut_finds_the_least_cost_labelling():
    rng = np.random.default_rng(0)
    for shape, beta in [((1, 3, 4), 0.2), ((2, 2, 3), 0.5), ((1, 2, 6), 0.05)]:
        p = rng.random(shape).astype(np.float32)
        best = min(_potts_energy(np.array(bits, bool).reshape(shape), p, beta)
                   for bits in np.ndindex(*(2,) * p.size))  # every labelling of the 12 pixels
        assert _potts_energy(graph_cut(p, beta), p, beta) == pytest.approx(best, abs=1e-12)
    # a real frame: no single flipped pixel lowers the energy, and β smooths the simple threshold's mask
    with h5py.File(FIXTURES / "inputdata" / "2d_Probabilities.h5", "r") as f:
        frame = f["exported_data"][()].reshape(1, 1, *f["exported_data"].shape[-3:])[0]
    settings = ThresholdSettings(method=GRAPH_CUT, low=0.7, sigmas_zyx=(1.0, 1.0, 1.0))
    mask = graph_cut_mask(frame, settings)
    p = potentials(smooth(frame[..., 0], settings.sigmas_zyx), settings.low)
    energy = _potts_energy(mask, p, BETA)
    for index in map(tuple, rng.integers(0, mask.shape, size=(200, 3))):
        flipped = mask.copy()
        flipped[index] = ~flipped[index]
        assert _potts_energy(flipped, p, BETA) >= energy - 1e-9
    simple = smooth(frame[..., 0], settings.sigmas_zyx) >= settings.low
    assert energy <= _potts_energy(simple, p, BETA) and 0 < mask.sum() < mask.size
    # without the Potts term the cut is the simple threshold (the remapping puts the threshold on 0.5)
    unsmoothed = potentials(frame[..., 0], 0.7)
    assert np.array_equal(graph_cut(unsmoothed, 0.0)[frame[..., 0] != np.float32(0.7)],
                          (frame[..., 0] > 0.7)[frame[..., 0] != np.float32(0.7)])
