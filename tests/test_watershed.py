"""DT-watershed superpixels against vigra itself (references made with the oracle build, tests/data/wsdt_oracle.h5)
and against ilastik's own GUI-test reference (`testEdgeTrainingWithMulticutReference.zip`, superpixels.h5)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.graphs.seeds import from_scan, local_maxima, to_scan
from hpc_ilastik.graphs.watershed import (
    blockwise_watershed,
    boundary_map,
    distance_to_boundary,
    distance_transform_watershed,
    fastfilters_gaussian,
    seeded_watershed,
    watershed_blocks,
    wsdt_block,
    wsdt_superpixels,
)
from hpc_ilastik.objects.labeling import label_components
from tests.conftest import FIXTURES
from tests.segmentation import gui_reference, mean_segmentation_accuracy

ORACLE = Path(__file__).parent / "data" / "wsdt_oracle.h5"
PROBABILITIES = FIXTURES / "inputdata" / "3d1c-synthetic_Probabilities.h5"
# the crops the oracle ran elf's distance_transform_watershed on (attribute `crop` of each group)
CROPS = {"3d": np.s_[16:48, 8:44, 4:28, 1], "3d_pitch": np.s_[16:48, 8:44, 4:28, 1],
         "3d_filtered": np.s_[16:48, 8:44, 4:28, 1], "2d": np.s_[30, :, :, 1], "2d_all_filtered": np.s_[30, :, :, 1]}


@pytest.fixture(scope="module")
def oracle():
    with h5py.File(ORACLE, "r") as f:
        yield f


@pytest.fixture(scope="module")
def probabilities() -> np.ndarray:
    with h5py.File(PROBABILITIES, "r") as f:
        return f["exported_data"][()]  # zyxc 64x56x32x2 float32


def test_accuracy_helper_is_elfs_measure():
    a = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    assert mean_segmentation_accuracy(a, a * 7) == 1.0  # relabelling does not matter
    b = a.copy()
    b[0, 2] = 1  # IoU 4/5 (object 1), 3/4 (object 2), 1 (object 3); np.arange's 0.75 and 0.8 lie just above
    # thresholds 0.5..0.7: 3 matches (accuracy 1); 0.75: objects 1, 3 (2/4); 0.8..0.95: object 3 (1/5)
    assert mean_segmentation_accuracy(b, a) == pytest.approx((5 * 1.0 + 2 / 4 + 4 * (1 / 5)) / 10)


@pytest.mark.parametrize("key", ["maxima2d_n4_plateaus0", "maxima2d_n4_plateaus1", "maxima2d_n8_plateaus0",
                                 "maxima2d_n8_plateaus1", "maxima3d_n6_plateaus0", "maxima3d_n6_plateaus1",
                                 "maxima3d_n26_plateaus0", "maxima3d_n26_plateaus1"])
def test_local_maxima_equal_vigra(oracle, key):
    group = oracle["local_maxima"]
    image = group["image2d" if key.startswith("maxima2d") else "image3d"][()]
    neighborhood = int(key.split("_n")[1].split("_")[0])
    ours = local_maxima(image, 1.0, neighborhood, allow_plateaus=key.endswith("1"))
    expected = group[key][()]
    assert ours.dtype == np.float32 and expected.sum() > 0
    np.testing.assert_array_equal(ours, expected)


def test_nan_marked_maxima_and_seed_ids_equal_vigra(oracle):
    """elf's seeds: localMaxima3D(marker=nan, defaults 6-neighbourhood) then labelMultiArrayWithBackground on the
    plain array, whose ids follow first occurrence with numpy axis 0 fastest."""
    group = oracle["local_maxima"]
    marked = local_maxima(group["image3d"][()], np.nan)
    np.testing.assert_array_equal(np.isnan(marked), np.isnan(group["maxima3d_nan_marker"][()]))
    assert np.all(marked[~np.isnan(marked)] == 0)
    seeds = from_scan(label_components(to_scan(np.isnan(marked)))[0], marked.shape)
    np.testing.assert_array_equal(seeds, group["maxima3d_labels"][()])
    assert not np.array_equal(seeds, label_components(np.isnan(marked))[0])  # C order would differ


@pytest.mark.parametrize("name", ["2d", "3d", "3d_big"])
def test_seeded_watershed_equals_vigra(oracle, name):
    """Quantised heights: most pops are ties, decided by the order of vigra's std::priority_queue."""
    group = oracle["watershed"]
    heights, seeds = group[f"heights{name}"][()], group[f"seeds{name}"][()]
    labels, max_id = seeded_watershed(heights, seeds)
    np.testing.assert_array_equal(labels, group[f"labels{name}"][()])
    assert max_id == group[f"labels{name}"].attrs["max_id"]
    labels, max_id = seeded_watershed(heights, np.zeros_like(seeds))  # vigra seeds at the strict minima itself
    np.testing.assert_array_equal(labels, group[f"unseeded{name}"][()])
    assert max_id == group[f"unseeded{name}"].attrs["max_id"] > 1


def test_distance_transform_equals_vigra(oracle):
    group = oracle["distance"]
    compared = 0
    for key in group:
        if key.startswith("dt"):
            mask = group["mask" + key[2:].rsplit("_", 1)[0]][()].astype(bool)
            pitch = [float(p) for p in group[key].attrs["pixel_pitch"]] or None
            np.testing.assert_array_equal(distance_to_boundary(mask, pitch), group[key][()], err_msg=key)
            compared += 1
    assert compared == 8


@pytest.mark.parametrize("name", list(CROPS))
def test_distance_transform_watershed_equals_elf_with_vigra(oracle, probabilities, name, record_property):
    """elf <= 0.8.1 run by the oracle with the real vigra (and fastfilters' Gaussian emulated in numpy): the
    distance transform, seeds and first watershed from the oracle's own intermediates are equal; the whole
    function, with our Gaussian, too."""
    group = oracle[f"dtws_{name}"]
    attrs = group.attrs
    pmap = np.ascontiguousarray(probabilities[CROPS[name]])
    pitch = [float(p) for p in attrs["pixel_pitch"]] or None
    dt = distance_to_boundary(pmap > np.float32(attrs["threshold"]), pitch)
    np.testing.assert_array_equal(dt, group["raw_dt"][()])
    if "smoothed_dt" in group:
        smoothed = group["smoothed_dt"][()]
        ours = fastfilters_gaussian(dt, attrs["sigma"])
        np.testing.assert_allclose(ours, smoothed, rtol=2e-6, atol=1e-6)
        record_property("figures", f"wsdt {name}: Gaussian of the distance vs the oracle's: max |diff| "
                        f"{np.abs(ours - smoothed).max():.2e}, {int((ours != smoothed).sum())} of {dt.size} differ")
        maxima = local_maxima(smoothed, np.nan)
        seeds = from_scan(label_components(to_scan(np.isnan(maxima)))[0], maxima.shape)
        np.testing.assert_array_equal(seeds, group["seeds"][()])
        first, _ = seeded_watershed(group["hmap"][()], seeds)
        np.testing.assert_array_equal(first, group["first_ws"][()])
    labels, max_id = distance_transform_watershed(pmap, attrs["threshold"], attrs["sigma"], attrs["sigma"],
                                                  int(attrs["min_size"]), attrs["alpha"], pitch)
    expected = group["ws"][()]
    np.testing.assert_array_equal(labels, expected)
    assert max_id == attrs["max_id"]
    if name == "3d_filtered":  # segments below MinSize are re-grown, their ids are not reused
        assert np.setdiff1d(np.unique(group["first_ws"][()]), np.unique(labels)).size > 0


def test_blockwise_equals_ilastik_parallel_watershed(oracle, probabilities, record_property):
    """parallel_watershed emulated in the oracle on 2x2x2 blocks: ids per block in labelMultiArray's order, offset
    by the maxima of the blocks before."""
    group = oracle["blockwise"]
    attrs = group.attrs
    labels, max_id = blockwise_watershed(probabilities[..., 1], attrs["threshold"], int(attrs["min_size"]),
                                         attrs["sigma"], attrs["alpha"], None, tuple(attrs["block_shape"]),
                                         tuple(attrs["halo"]))
    expected = group["labels"][()]
    differ = int((labels != expected).sum())
    record_property("figures", f"wsdt blockwise vs oracle: {differ} of {labels.size} voxels differ, "
                    f"max id {max_id} (oracle {attrs['max_id']})")
    assert max_id == attrs["max_id"]
    assert differ <= 0.001 * labels.size  # 1-ulp Gaussian taps (pixel.kernels) move a few voxels on near-ties
    for block in watershed_blocks(labels.shape, tuple(attrs["block_shape"]), tuple(attrs["halo"])):
        np.testing.assert_array_equal(np.unique(labels[block.inner]), np.unique(expected[block.inner]))


def test_blocks_are_independent_and_offset(probabilities):
    """A 140x64x64 volume with ilastik's default 128^3 blocks (halo 10): every block's labels are its own
    watershed of block + halo relabelled 1..n, raised by the maxima of the blocks before, and never cross a
    block border."""
    pmap = np.pad(probabilities[..., 1], ((38, 38), (4, 4), (16, 16)), mode="reflect")
    assert pmap.shape == (140, 64, 64)
    labels, max_id = blockwise_watershed(pmap, 0.6, 7, 1.1, 0.4)
    blocks = watershed_blocks(pmap.shape)
    assert [b.inner for b in blocks] == [(slice(0, 128), slice(0, 64), slice(0, 64)),
                                         (slice(128, 140), slice(0, 64), slice(0, 64))]
    assert blocks[1].outer == (slice(118, 140), slice(0, 64), slice(0, 64))
    offset = 0
    for block in blocks:
        own = wsdt_block(pmap[block.outer], block, 0.6, 7, 1.1, 0.4)
        assert np.array_equal(np.unique(own), np.arange(1, own.max() + 1))
        np.testing.assert_array_equal(labels[block.inner], own + offset)
        offset += int(own.max())
    assert max_id == offset == labels.max()
    assert not np.intersect1d(labels[127], labels[128]).size  # the border between the two blocks
    whole, _ = distance_transform_watershed(pmap, 0.6, 1.1, 1.1, 7, 0.4)
    assert np.intersect1d(whole[127], whole[128]).size  # the whole-image watershed has segments across it


def test_superpixels_match_ilastik_gui_reference(probabilities, record_property):
    """ilastik's testEdgeTrainingWithMulticutGui: channel [1], Threshold 0.6, MinSize 7, Sigma 1.1, Alpha 0.4;
    ilastik accepts mean_segmentation_accuracy > 0.97. The reference's ids are the unblocked seed ids."""
    reference = gui_reference("superpixels.h5")
    unblocked = wsdt_superpixels(probabilities, [1], 0.6, 7, 1.1, 0.4, [], blockwise=False)
    blocked = wsdt_superpixels(probabilities, [1], 0.6, 7, 1.1, 0.4, [], blockwise=True)
    accuracy = mean_segmentation_accuracy(unblocked, reference)
    same_ids = float(np.mean(unblocked == reference))
    record_property("figures", f"wsdt vs ilastik GUI reference: mean segmentation accuracy {accuracy:.4f} (> 0.97), "
                    f"{unblocked.max()} superpixels (ilastik {reference.max()}), identical ids on {same_ids:.2%}")
    assert unblocked.dtype == np.uint32 and unblocked.shape == reference.shape
    assert accuracy > 0.97
    assert same_ids > 0.9
    assert mean_segmentation_accuracy(blocked, unblocked) == 1.0  # one 128^3 block: the same partition


def test_superpixels_match_elf_with_vigra_on_the_whole_volume(oracle, probabilities, record_property):
    """The same step run by the oracle (real vigra, elf <= 0.8.1 unblocked): the reference's 1.6 % of other
    voxels are ilastik's platform, not ours."""
    group = oracle["dtws_full"]
    expected = group["ws"][()]
    ours = wsdt_superpixels(probabilities, [1], 0.6, 7, 1.1, 0.4, [], blockwise=False)
    differ = int((ours != expected).sum())
    record_property("figures", f"wsdt whole fixture volume vs elf+vigra: {differ} of {ours.size} voxels differ")
    assert ours.max() == group.attrs["max_id"]
    assert differ <= 0.002 * ours.size  # 1-ulp Gaussian taps (pixel.kernels) move a few voxels on near-ties


def test_superpixel_step_sums_channels_and_treats_z1_as_2d(oracle, probabilities):
    summed = boundary_map(probabilities, [1, 0])
    np.testing.assert_array_equal(summed, probabilities[..., 0] + probabilities[..., 1])
    group = oracle["dtws_2d"]
    attrs = group.attrs
    slice2d = probabilities[30:31]  # z == 1: ilastik's yxc image, 8-neighbourhood maxima
    labels = wsdt_superpixels(slice2d, [1], attrs["threshold"], int(attrs["min_size"]), attrs["sigma"],
                              attrs["alpha"], [], blockwise=False)
    assert labels.shape == (1, 56, 32)
    np.testing.assert_array_equal(labels[0], group["ws"][()])
