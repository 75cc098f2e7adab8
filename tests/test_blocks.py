"""The block grid: --distributed_block_roi parsing, block planning (uneven edges, cut-outs), halo reads."""

import os

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from hpc_ilastik.errors import UserError
from hpc_ilastik.run.blocks import parse_block_roi, plan_blocks, read_region
from hpc_ilastik.workflows.blockwise import thread_count, tiles_of
from hpc_ilastik.workflows.options import RunOptions

SHAPE = (2, 600, 300, 100, 3)  # t, z, y, x, c


@pytest.mark.parametrize("text, expected", [
    (None, (1, 256, 256, 100, 3)),                                    # ilastik's defaults, clamped to x=100
    ("", (1, 256, 256, 100, 3)),
    ("64", (1, 64, 64, 64, 3)),                                       # an int: x = y = z
    (" 1000 ", (1, 600, 300, 100, 3)),                                # clamped to the image
    ('{"x": 50, "z": None, "c": 1}', (1, 600, 256, 50, 1)),           # None = whole axis
    ("{'t': None, 'y': 7}", (2, 256, 7, 100, 3)),
    ('{"x": 150, "y": 300, "z": 1, "c": 3}', (1, 1, 300, 100, 3)),   # the example of ilastik's manual
    ("{}", (1, 256, 256, 100, 3)),
])
def test_parse_block_roi(text, expected):
    assert parse_block_roi(text, SHAPE) == expected


@pytest.mark.parametrize("text", [
    "abc", "0", "-4", "True", "1.5", "[64, 64]", "(64,)", '"64"', '{"q": 3}', '{"xy": 3}', "{1: 3}",
    '{"x": 0}', '{"x": -1}', '{"x": 1.5}', '{"x": "64"}', '{"x": True}', "__import__('os')",
])
def test_parse_block_roi_rejects_with_the_accepted_syntax(text):
    with pytest.raises(UserError) as info:
        parse_block_roi(text, SHAPE)
    message = str(info.value)
    assert "--distributed_block_roi" in message and "'xyztc'" in message and "None" in message


def _coverage(blocks, shape):
    count = np.zeros(shape, dtype=np.int32)
    for block in blocks:
        count[block.slices] += 1
    return count


def test_plan_blocks_covers_the_image_once_with_uneven_edge_blocks():
    shape, block = (2, 23, 17, 11, 3), (1, 8, 8, 4, 3)
    blocks = plan_blocks(shape, block)
    assert len(blocks) == 2 * 3 * 3 * 3
    assert (_coverage(blocks, shape) == 1).all()
    assert [b.number for b in blocks] == list(range(len(blocks)))
    assert [b.index for b in blocks] == sorted(b.index for b in blocks)  # C order, t slowest
    last = blocks[-1]
    assert last.index == (1, 2, 2, 2, 0)
    assert last.slices == (slice(1, 2), slice(16, 23), slice(16, 17), slice(8, 11), slice(0, 3))
    assert last.shape == (1, 7, 1, 3, 3) and last.voxels == 21
    assert sum(b.voxels for b in blocks) == 2 * 23 * 17 * 11  # what the progress line's total counts
    assert all(b.out_slices == b.slices for b in blocks)
    for b in blocks:  # the grid index is the chunk position: start = index * block shape
        assert all(s.start == i * n for s, i, n in zip(b.slices, b.index, block))
    assert str(blocks[1]) == "block 1 (t 0:1, z 0:8, y 0:8, x 4:8, c 0:3)"


def test_plan_blocks_on_a_cutout_anchors_the_grid_at_its_start():
    shape = (1, 30, 20, 10, 2)
    region = (slice(None), slice(5, 20), slice(None), slice(2, 9), slice(1, 2))
    blocks = plan_blocks(shape, (1, 8, 20, 4, 1), region)
    assert [b.slices[1] for b in blocks if b.index[3] == 0] == [slice(5, 13), slice(13, 20)]
    assert [b.out_slices[1] for b in blocks if b.index[3] == 0] == [slice(0, 8), slice(8, 15)]
    assert [b.slices[3] for b in blocks if b.index[1] == 0] == [slice(2, 6), slice(6, 9)]
    count = _coverage(blocks, shape)
    inside = np.zeros(shape, dtype=bool)
    inside[region] = True
    assert (count[inside] == 1).all() and (count[~inside] == 0).all()
    out_count = np.zeros((1, 15, 20, 7, 1), dtype=np.int32)
    for b in blocks:
        out_count[b.out_slices] += 1
    assert (out_count == 1).all()


@pytest.mark.parametrize("region", [
    (slice(None),) * 4,
    (slice(None), slice(5, 40), slice(None), slice(None), slice(None)),
    (slice(None), slice(7, 7), slice(None), slice(None), slice(None)),
    (slice(None), slice(0, 10, 2), slice(None), slice(None), slice(None)),
])
def test_plan_blocks_rejects_regions_outside_the_image(region):
    with pytest.raises(UserError):
        plan_blocks((1, 30, 20, 10, 2), (1, 8, 8, 8, 2), region)


def test_read_region_clips_the_halo_at_the_border_and_crops_back_to_the_block():
    shape = (2, 20, 21, 22, 2)
    data = np.arange(np.prod(shape)).reshape(shape)
    blocks = plan_blocks(shape, (1, 8, 8, 8, 1))
    halo = (2, 3, 4)
    interior = next(b for b in blocks if b.index == (1, 1, 1, 1, 1))
    read, crop = read_region(interior, halo, shape)
    assert read == (slice(1, 2), slice(6, 18), slice(5, 19), slice(4, 20), slice(0, 2))  # all input channels
    corner = blocks[0]
    read0, crop0 = read_region(corner, halo, shape)
    assert read0 == (slice(0, 1), slice(0, 10), slice(0, 11), slice(0, 12), slice(0, 2))
    edge = blocks[-1]  # z 16:20, y 16:21, x 16:22: the halo stops at the image's end
    read1, _ = read_region(edge, halo, shape)
    assert read1[1:4] == (slice(14, 20), slice(13, 21), slice(12, 22))
    for block in blocks:
        read, crop = read_region(block, halo, shape)
        np.testing.assert_array_equal(data[read][crop], data[block.slices])


def test_a_filter_on_block_plus_halo_equals_the_whole_image_result_on_the_block():
    volume = np.random.default_rng(1).random((1, 19, 23, 17, 1), dtype=np.float32)
    sigma, halo = 1.2, 4  # scipy's radius for truncate=3: int(3 * 1.2 + 0.5) = 4
    whole = gaussian_filter(volume[0, ..., 0], sigma, mode="mirror", truncate=3.0)
    for block in plan_blocks(volume.shape, (1, 7, 9, 6, 1)):
        read, crop = read_region(block, (halo,) * 3, volume.shape)
        local = gaussian_filter(volume[read][0, ..., 0], sigma, mode="mirror", truncate=3.0)
        np.testing.assert_array_equal(local[crop[1:4]], whole[block.slices[1:4]])


def test_thread_count_honours_threads_then_lazyflow_threads_then_slurm_or_the_cpu_affinity(monkeypatch):
    monkeypatch.delenv("LAZYFLOW_THREADS", raising=False)
    assert thread_count(RunOptions()) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("LAZYFLOW_THREADS", "3")
    assert thread_count(RunOptions()) == 3 and thread_count(RunOptions(threads=2)) == 2
    monkeypatch.setenv("LAZYFLOW_THREADS", "0")  # ilastik's "no worker threads": the caller's thread only
    assert thread_count(RunOptions()) == 1
    for bad in ("-2", "many"):
        monkeypatch.setenv("LAZYFLOW_THREADS", bad)
        with pytest.raises(UserError, match="LAZYFLOW_THREADS"):
            thread_count(RunOptions())
    # one MPI rank of several: SLURM's --cpus-per-task, else one thread (a rank per core)
    monkeypatch.delenv("LAZYFLOW_THREADS")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert thread_count(RunOptions(), under_mpi=True) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert thread_count(RunOptions(), under_mpi=True) == 6 and thread_count(RunOptions(threads=2), under_mpi=True) == 2
    assert thread_count(RunOptions()) == len(os.sched_getaffinity(0))  # a single process: its CPU affinity


def test_tiles_of_a_block_cover_it_once_with_slices_relative_to_it():
    shape = (2, 50, 40, 30, 3)
    block = plan_blocks(shape, (1, 32, 32, 32, 3))[3]  # t 0, z 32:50, y 32:40, x 0:30
    tiles = tiles_of(block, (1, 8, 16, 16, 3), shape)
    assert [t.slices[1:4] for t in tiles[:3]] == [(slice(32, 40), slice(32, 40), slice(0, 16)),
                                                  (slice(32, 40), slice(32, 40), slice(16, 30)),
                                                  (slice(40, 48), slice(32, 40), slice(0, 16))]
    covered = np.zeros(block.shape[:4], int)
    for tile in tiles:
        covered[tile.out_slices[:4]] += 1
        assert all(o.start + b.start == s.start for o, b, s in zip(tile.out_slices[:4], block.slices[:4], tile.slices[:4]))
    assert len(tiles) == 3 * 1 * 2 and (covered == 1).all()
    assert tiles_of(block, (1, 64, 64, 64, 3), shape) == [block]  # no larger than a tile: itself
