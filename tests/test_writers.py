"""writers.py: every output format round-trips, metadata, format limits, sequences, atomicity, resume."""

import json
import os
import struct

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from hpc_ilastik.errors import UserError
from hpc_ilastik.io import formats, images, output, paths, writers
from hpc_ilastik.io.hdf5_chunks import block_aligned_chunks, write_whole_chunks
from hpc_ilastik.io.n5 import open_n5_dataset
from tests.conftest import API

PROBS = np.load(API / "res-Data_1channel_pc1xyc.npy")  # ilastik's yxc probabilities (128, 128, 2) float32


def write_blocks(fmt, path, image, axes, block=None, **kwargs):
    """Write `image` through a writer in blocks of `block` (default: one block), last block first."""
    block = block or image.shape
    with output.open_writer(fmt, str(path), shape=image.shape, dtype=image.dtype, axes=axes, **kwargs) as w:
        starts = list(np.ndindex(*(-(-n // b) for n, b in zip(image.shape, block))))
        for index in reversed(starts):
            region = tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, image.shape))
            w.write(region, image[region])
    return w


def axis_keys(axistags: str) -> str:
    return "".join(a["key"] for a in json.loads(axistags)["axes"])


# ---- HDF5 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, compression", [("hdf5", None), ("compressed hdf5", "gzip")])
def test_hdf5_round_trip_with_ilastik_metadata(tmp_path, fmt, compression):
    image = PROBS[np.newaxis]  # zyxc with z = 1
    path = tmp_path / "out.h5"
    write_blocks(fmt, path, image, "zyxc", block=(1, 50, 60, 2), internal_path="/exported_data", drange=(0.0, 1.0),
                 resolutions={"x": 0.5}, units={"x": "micrometer"})
    with h5py.File(path, "r") as f:
        ds = f["exported_data"]
        assert ds.dtype == np.float32 and np.array_equal(ds[...], image)
        assert axis_keys(ds.attrs["axistags"]) == "zyxc"
        assert json.loads(ds.attrs["axistags"])["axes"][2]["resolution"] == 0.5
        assert [d.label for d in ds.dims] == list("zyxc")
        assert ds.attrs["drange"].tolist() == [0.0, 1.0]
        assert json.loads(ds.attrs["axis_units"]) == {"x": "micrometer"}
        assert ds.compression == compression and (compression is None or ds.compression_opts == 1)
    assert os.listdir(tmp_path) == ["out.h5"]


def test_hdf5_chunks_follow_ilastiks_512kb_rule(tmp_path):
    # lazyflow determineBlockShape with t and c limited to 1: 128000 float32 values → y 358, then x 128000//358 = 357
    path = tmp_path / "big.h5"
    with output.open_writer("hdf5", str(path), shape=(1, 1, 1000, 2000, 3), dtype=np.float32, axes="tzyxc") as w:
        w.write((slice(0, 1),) * 2 + (slice(0, 10), slice(0, 10), slice(0, 3)), np.ones((1, 1, 10, 10, 3), np.float32))
    with h5py.File(path, "r") as f:
        assert f["exported_data"].chunks == (1, 1, 358, 357, 1)


def test_hdf5_chunks_divide_the_blocks():
    assert block_aligned_chunks((50, 51, 50, 1), (96, 96, 96, 3)) == (48, 48, 48, 1)
    assert block_aligned_chunks((1, 1, 358, 357, 1), (1, 1, 1024, 1024, 2)) == (1, 1, 256, 256, 1)
    assert block_aligned_chunks((50, 50), (97, 30)) == (97, 30)  # a prime block side: one chunk across it


@pytest.mark.parametrize("fmt, compression", [("hdf5", None), ("compressed hdf5", "gzip")])
@pytest.mark.parametrize("block", [(32, 24, 40, 3), (30, 25, 40, 3)])  # the grid's blocks; the second not aligned
def test_hdf5_blocks_go_in_as_whole_chunks(tmp_path, monkeypatch, fmt, compression, block):
    image = np.random.default_rng(1).random((70, 50, 90, 3), dtype=np.float32)  # edge blocks are cut short
    whole = []
    monkeypatch.setattr(writers, "write_whole_chunks", lambda *args: whole.append(write_whole_chunks(*args))
                        or whole[-1])
    write_blocks(fmt, tmp_path / "out.h5", image, "zyxc", block=block, chunks=(32, 24, 40, 3))
    assert whole and (all(whole) if block[0] == 32 else not any(whole))  # only aligned blocks as whole chunks
    with h5py.File(tmp_path / "out.h5", "r") as f:
        ds = f["exported_data"]
        # ilastik's (51, 50, 50, 1), each moved to the nearest divisor of the block
        assert ds.chunks == (32, 24, 40, 1) and ds.compression == compression
        np.testing.assert_array_equal(ds[...], image)


def test_hdf5_whole_chunks_in_any_axis_order(tmp_path, monkeypatch):
    image = np.random.default_rng(2).integers(0, 60000, (2, 3, 20, 30, 40), dtype=np.uint16)  # tczyx
    whole = []
    monkeypatch.setattr(writers, "write_whole_chunks", lambda *args: whole.append(write_whole_chunks(*args))
                        or whole[-1])
    write_blocks("compressed hdf5", tmp_path / "out.h5", image, "tczyx", block=(1, 3, 10, 30, 20),
                 chunks=(1, 3, 10, 30, 20))
    assert len(whole) == 2 * 2 * 2 and all(whole)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["exported_data"].chunks == (1, 1, 10, 30, 20)
        np.testing.assert_array_equal(f["exported_data"][...], image)


def test_abort_waits_for_zarrs_writes_in_flight(tmp_path):
    """zarr writes a node's documents concurrently and reports the first failure while the others run on: an
    aborted zarr output is cleaned only once they are done (else their `.partial` temporaries could stay)."""
    import asyncio

    from zarr.core.sync import _get_loop

    from hpc_ilastik.io import streaming

    image = np.zeros((4, 5, 1), np.uint8)
    writer = output.open_writer("zarr", str(tmp_path / "out.zarr"), shape=image.shape, dtype=image.dtype, axes="yxc")
    late = tmp_path / "out.zarr" / ".late.partial"

    async def slow_write() -> None:  # a write still running when the error came back
        await asyncio.sleep(0.3)
        late.write_bytes(b"x")

    running = asyncio.run_coroutine_threadsafe(slow_write(), _get_loop())
    writer.abort()
    assert running.done() and not late.exists()
    streaming._settle_zarr_writes()  # nothing left to wait for: returns at once


def test_hdf5_whole_chunk_writes_only_where_every_chunk_is_covered(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", shape=(10, 7), dtype=np.uint16, chunks=(4, 7), compression="gzip")
        assert not write_whole_chunks(ds, (slice(2, 6), slice(0, 7)), np.ones((4, 7), np.uint16))
        assert not write_whole_chunks(ds, (slice(0, 4), slice(0, 5)), np.ones((4, 5), np.uint16))
        assert not ds.id.get_num_chunks()
        assert write_whole_chunks(ds, (slice(4, 10), slice(0, 7)), np.full((6, 7), 9, np.uint16))
        assert ds.id.get_num_chunks() == 2
        assert ds[...].tolist() == [[0] * 7] * 4 + [[9] * 7] * 6
        shuffled = f.create_dataset("y", shape=(4, 7), dtype=np.uint16, chunks=(4, 7), shuffle=True)
        assert not write_whole_chunks(shuffled, (slice(0, 4), slice(0, 7)), np.ones((4, 7), np.uint16))
        other_type = np.ones((4, 7), ">u2")  # big-endian: HDF5 converts it, a direct write would not
        assert not write_whole_chunks(ds, (slice(0, 4), slice(0, 7)), other_type)
        ds[0:4] = other_type
        assert ds[...].tolist() == [[1] * 7] * 4 + [[9] * 7] * 6


def test_hdf5_into_existing_file_replaces_only_its_dataset(tmp_path):
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as f:
        f["keep/me"] = np.arange(3)
        f["group/pred"] = np.zeros(7)
    image = np.full((4, 5, 1), 3, np.uint8)
    write_blocks("hdf5", path, image, "yxc", internal_path="group/pred")
    with h5py.File(path, "r") as f:
        assert f["keep/me"][...].tolist() == [0, 1, 2]
        assert np.array_equal(f["group/pred"][...], image)
        assert [d.label for d in f["group/pred"].dims] == list("yxc")
    assert os.listdir(tmp_path) == ["out.h5"]


def test_hdf5_refuses_an_existing_non_hdf5_file(tmp_path):
    path = tmp_path / "out.h5"
    path.write_text("not hdf5")
    with pytest.raises(UserError, match="existing file"):
        write_blocks("hdf5", path, np.zeros((2, 2, 1), np.uint8), "yxc")
    assert path.read_text() == "not hdf5" and os.listdir(tmp_path) == ["out.h5"]


def test_hdf5_needs_an_internal_path(tmp_path):
    with pytest.raises(UserError, match="output_internal_path"):
        output.open_writer("hdf5", str(tmp_path / "o.h5"), internal_path="/", shape=(2, 2), dtype=np.uint8, axes="yx")


# ---- N5, zarr, OME-Zarr ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, compression", [("n5", "raw"), ("compressed n5", "gzip")])
def test_n5_round_trip_with_ilastik_metadata(tmp_path, fmt, compression):
    path = tmp_path / "out.n5"
    write_blocks(fmt, path, PROBS, "yxc", block=(64, 64, 2), chunks=(64, 64, 2), internal_path="exported_data",
                 drange=(0.0, 1.0))
    ds = open_n5_dataset(str(path), "exported_data")
    assert ds.dtype == np.float32 and ds.chunks == (64, 64, 2) and np.array_equal(ds.read(), PROBS)
    assert ds.attributes["axes"] == ["c", "x", "y"] and axis_keys(ds.attributes["axistags"]) == "yxc"
    assert ds.attributes["drange"] == [0.0, 1.0]
    assert ds.compression["type"] == compression and ds.compression.get("level", 1) == 1


def test_n5_replaces_an_existing_dataset_and_keeps_others(tmp_path):
    path = tmp_path / "out.n5"
    write_blocks("n5", path, np.ones((4, 4, 1), np.uint8), "yxc", internal_path="other")
    write_blocks("n5", path, np.ones((4, 4, 1), np.uint8), "yxc", internal_path="pred")
    write_blocks("n5", path, np.full((6, 2, 1), 9, np.uint16), "yxc", internal_path="pred")
    assert open_n5_dataset(str(path), "other").read().sum() == 16
    assert open_n5_dataset(str(path), "pred").read().tolist() == np.full((6, 2, 1), 9).tolist()


def test_zarr_round_trip(tmp_path):
    path = tmp_path / "out.zarr"
    image = np.moveaxis(PROBS, -1, 0)  # cyx
    write_blocks("zarr", path, image, "cyx", block=(2, 32, 128), chunks=(2, 32, 128), internal_path="a/b", drange=(0, 1))
    array = zarr.open_array(str(path), path="a/b", mode="r")
    assert array.metadata.zarr_format == 3 and array.chunks == (2, 32, 128)
    assert np.array_equal(array[...], image) and list(array.metadata.dimension_names) == list("cyx")
    assert axis_keys(array.attrs["axistags"]) == "cyx" and array.attrs["drange"] == [0, 1]


def test_single_scale_ome_zarr(tmp_path):
    path = tmp_path / "out.zarr"
    write_blocks("single-scale OME-Zarr", path, PROBS, "yxc", block=(64, 32, 2), chunks=(64, 32, 2),
                 resolutions={"x": 0.25, "y": 0.5}, units={"x": "micrometer", "y": "micrometer"},
                 offset=(10, 20, 0), drange=(0.0, 1.0))
    root = zarr.open_group(str(path), mode="r")
    meta = root.attrs["multiscales"][0]
    assert meta["version"] == "0.4"
    assert [a["name"] for a in meta["axes"]] == list("tczyx")
    assert [a["type"] for a in meta["axes"]] == ["time", "channel", "space", "space", "space"]
    assert meta["axes"][4]["unit"] == "micrometer" and "unit" not in meta["axes"][0]
    assert meta["datasets"] == [{"path": "s0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, 1.0, 0.5, 0.25]}]}]
    assert meta["coordinateTransformations"][1] == {"type": "translation", "translation": [0, 0, 0, 5.0, 5.0]}
    s0 = root["s0"]
    assert s0.metadata.zarr_format == 2 and s0.chunks == (1, 1, 1, 64, 32)
    assert np.array_equal(s0[...], np.moveaxis(PROBS, -1, 0)[np.newaxis, :, np.newaxis])
    assert axis_keys(s0.attrs["axistags"]) == "tczyx" and s0.attrs["drange"] == [0.0, 1.0]
    assert (path / "s0" / "0" / "1" / "0" / "1" / "3").is_file()  # "/" separated chunk keys (t/c/z/y/x)
    assert root.attrs["_creator"]["name"] == "hpc-ilastik"


def test_ome_zarr_refuses_an_existing_path(tmp_path):
    path = tmp_path / "out.zarr"
    path.mkdir()
    with pytest.raises(UserError, match="already exists"):
        write_blocks("single-scale OME-Zarr", path, PROBS, "yxc")


def test_multi_scale_ome_zarr_pyramid(tmp_path):
    path = tmp_path / "out.zarr"
    floats = np.random.default_rng(0).random((40, 64, 2)).astype(np.float32)
    write_blocks("multi-scale OME-Zarr", path, floats, "yxc", block=(16, 16, 2), chunks=(16, 16, 2))
    root = zarr.open_group(str(path), mode="r")
    datasets = root.attrs["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["s0", "s1", "s2"]  # 40x64 → 20x32 → 10x16 fits one 16x16 chunk
    assert [d["coordinateTransformations"][0]["scale"][3:] for d in datasets] == [[1, 1], [2, 2], [4, 4]]
    s1 = root["s1"][0, :, 0]  # (c, y, x)
    expected = floats.reshape(20, 2, 32, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(np.moveaxis(s1, 0, -1), expected, rtol=1e-6)
    assert root["s2"].shape == (1, 2, 1, 10, 16)

    labels = np.arange(10 * 12, dtype=np.uint16).reshape(10, 12, 1)
    write_blocks("multi-scale OME-Zarr", tmp_path / "labels.zarr", labels, "yxc", chunks=(4, 4, 1))
    labels_root = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")
    assert np.array_equal(labels_root["s1"][0, 0, 0], labels[::2, ::2, 0])
    assert np.array_equal(labels_root["s2"][0, 0, 0], labels[::4, ::4, 0][:2, :3])


# ---- whole-image formats ---------------------------------------------------------------------------


def test_numpy_round_trip(tmp_path):
    image = np.moveaxis(PROBS, -1, 0)
    write_blocks("numpy", tmp_path / "out.npy", image, "cyx", block=(1, 100, 100))
    loaded = np.load(tmp_path / "out.npy")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, image)


def test_tiff_any_channel_count_and_vigra_orientation(tmp_path):
    image = np.random.default_rng(1).random((6, 9, 5)).astype(np.float32)  # yxc, 5 channels
    write_blocks("tiff", tmp_path / "a.tiff", image, "yxc", block=(4, 4, 5))
    write_blocks("tif", tmp_path / "b.tif", np.transpose(image, (1, 0, 2)), "xyc")  # same image, x first
    for name in ("a.tiff", "b.tif"):
        read = tifffile.imread(tmp_path / name)
        assert read.shape == (6, 9, 5) and np.array_equal(read, image)


def test_multipage_tiff_is_ome_tzcyx(tmp_path):
    image = np.random.default_rng(2).integers(0, 60000, (3, 7, 8, 2)).astype(np.uint16)  # zyxc
    write_blocks("multipage tiff", tmp_path / "m.tiff", image, "zyxc", block=(1, 7, 8, 2),
                 resolutions={"x": 0.2, "z": 1.5}, units={"x": "micrometer", "z": "micrometer"})
    with tifffile.TiffFile(tmp_path / "m.tiff") as tif:
        assert tif.is_ome and len(tif.pages) == 6
        series = tif.series[0]
        assert series.axes == "ZCYX" and np.array_equal(series.asarray(), np.transpose(image, (0, 3, 1, 2)))
        pixels = tif.ome_metadata
    assert 'PhysicalSizeX="0.2"' in pixels and 'PhysicalSizeZ="1.5"' in pixels and 'PhysicalSizeXUnit="µm"' in pixels


def test_bigtiff_switch():
    assert not images._needs_bigtiff(2**31)
    assert images._needs_bigtiff(2**32)


@pytest.mark.parametrize("fmt", ["png", "bmp", "gif", "pgm", "pbm", "pnm", "ppm", "ras", "tif"])
def test_8bit_gray_images(tmp_path, fmt):
    seg = (PROBS.argmax(axis=-1) * 200 + 7).astype(np.uint8)[:, :100, np.newaxis]  # yxc, 1 channel
    write_blocks(fmt, tmp_path / f"s.{fmt}", seg, "yxc", block=(50, 50, 1))
    with Image.open(tmp_path / f"s.{fmt}") as im:
        assert im.size == (100, 128)
        assert np.array_equal(np.asarray(im.convert("L")), seg[..., 0])


@pytest.mark.parametrize("fmt", ["png", "bmp", "gif", "pnm", "ppm", "ras"])
def test_8bit_rgb_images(tmp_path, fmt):
    rgb = np.random.default_rng(3).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    if fmt == "gif":
        rgb = (rgb // 128) * 255  # few colours, so GIF's palette keeps them exactly
    write_blocks(fmt, tmp_path / f"c.{fmt}", rgb, "yxc")
    with Image.open(tmp_path / f"c.{fmt}") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), rgb)


def test_16bit_images(tmp_path):
    gray = np.arange(4 * 6, dtype=np.uint16).reshape(4, 6) * 2700
    for fmt in ("png", "pgm"):
        write_blocks(fmt, tmp_path / f"g.{fmt}", gray, "yx")
        with Image.open(tmp_path / f"g.{fmt}") as im:
            assert np.array_equal(np.asarray(im).astype(np.uint16), gray)
    rgb = np.stack([gray, gray // 2, gray // 3], axis=-1)
    write_blocks("png", tmp_path / "c.png", rgb, "yxc")
    data = (tmp_path / "c.png").read_bytes()
    assert struct.unpack(">IIBB", data[16:26]) == (6, 4, 16, 2)  # width, height, 16 bit, RGB
    with Image.open(tmp_path / "c.png") as im:  # Pillow reads 16-bit RGB as its high bytes
        assert np.array_equal(np.asarray(im), (rgb >> 8).astype(np.uint8))


def test_jpeg_is_close(tmp_path):
    smooth = np.tile(np.linspace(0, 250, 64).astype(np.uint8), (32, 1))
    for fmt in ("jpg", "jpeg"):
        write_blocks(fmt, tmp_path / f"j.{fmt}", smooth, "yx")
        with Image.open(tmp_path / f"j.{fmt}") as im:
            assert im.format == "JPEG" and np.abs(np.asarray(im).astype(int) - smooth).max() <= 4


def test_hdr_radiance_rgbe_bytes(tmp_path):
    image = np.zeros((2, 9, 3), np.float32)
    image[0] = (1.0, 0.5, 0.25)  # max 1.0 = 0.5·2^1 → mantissa scale 128, exponent byte 129
    image[1, 0] = (3.0, 0.0, 6.0)  # max 6 = 0.75·2^3 → scale 32: (96, 0, 192), exponent 131
    write_blocks("hdr", tmp_path / "h.hdr", image, "yxc")
    data = (tmp_path / "h.hdr").read_bytes()
    header = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 9\n"
    assert data.startswith(header)
    rows = data[len(header):]
    first = bytes([2, 2, 0, 9]) + bytes([9] + [128] * 9) + bytes([9] + [64] * 9) + bytes([9] + [32] * 9) + bytes([9] + [129] * 9)
    second = bytes([2, 2, 0, 9]) + bytes([9, 96] + [0] * 8) + bytes([9] + [0] * 9) + bytes([9, 192] + [0] * 8) + bytes([9, 131] + [0] * 8)
    assert rows == first + second


def test_large_image_buffers_in_a_removed_memmap(tmp_path):
    image = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    write_blocks("numpy", tmp_path / "out.npy", image, "yx", block=(7, 8), memory_limit=100)
    assert np.array_equal(np.load(tmp_path / "out.npy"), image)
    assert os.listdir(tmp_path) == ["out.npy"]


# ---- sequences -------------------------------------------------------------------------------------


def test_png_sequence_zero_pads_a_bare_slice_index(tmp_path):
    volume = np.random.default_rng(4).integers(0, 255, (10, 4, 5)).astype(np.uint8)
    write_blocks("png sequence", tmp_path / "img_z{slice_index}.png", volume, "zyx", block=(3, 4, 5))
    assert sorted(os.listdir(tmp_path)) == [f"img_z{i:02d}.png" for i in range(10)]
    with Image.open(tmp_path / "img_z07.png") as im:
        assert np.array_equal(np.asarray(im), volume[7])


def test_sequence_offset_and_explicit_spec(tmp_path):
    volume = np.ones((5, 4, 5, 1), np.uint8)
    write_blocks("tiff sequence", tmp_path / "a{slice_index}.tiff", volume, "zyxc", offset=(95, 0, 0, 0))
    write_blocks("bmp sequence", tmp_path / "b{slice_index:04d}.bmp", volume[:3], "zyxc", offset=(2, 0, 0, 0))
    assert sorted(os.listdir(tmp_path)) == [f"a{i:03d}.tiff" for i in range(95, 100)] + [
        "b0002.bmp", "b0003.bmp", "b0004.bmp"]


def test_sequence_steps_along_channels_when_they_come_first(tmp_path):
    probs = np.moveaxis(PROBS, -1, 0)  # cyx: one 16-bit png per class
    as_uint16 = np.rint(probs * 65535).astype(np.uint16)
    write_blocks("png sequence", tmp_path / "p_{slice_index}.png", as_uint16, "cyx")
    assert sorted(os.listdir(tmp_path)) == ["p_0.png", "p_1.png"]
    with Image.open(tmp_path / "p_1.png") as im:
        assert np.array_equal(np.asarray(im).astype(np.uint16), as_uint16[1])


def test_multipage_tiff_sequence(tmp_path):
    movie = np.random.default_rng(5).random((3, 2, 4, 5, 1)).astype(np.float32)  # tzyxc
    write_blocks("multipage tiff sequence", tmp_path / "t{slice_index}.tiff", movie, "tzyxc", block=(1, 1, 4, 5, 1))
    assert sorted(os.listdir(tmp_path)) == ["t0.tiff", "t1.tiff", "t2.tiff"]
    with tifffile.TiffFile(tmp_path / "t2.tiff") as tif:
        assert tif.is_ome and np.array_equal(tif.series[0].asarray(), movie[2, :, :, :, 0])


def test_sequence_template_needs_slice_index(tmp_path):
    with pytest.raises(UserError, match="slice_index"):
        output.open_writer("png sequence", str(tmp_path / "img.png"), shape=(3, 4, 5), dtype=np.uint8, axes="zyx")
    assert os.listdir(tmp_path) == []


# ---- format limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, dtype, shape, axes, message", [
    ("png", np.float32, (5, 6, 1), "yxc", "cannot hold float32 data"),
    ("png", np.uint8, (5, 6, 4), "yxc", "cannot hold 4 channel"),
    ("jpeg", np.uint8, (5, 6, 3), "yxc", "cannot hold 3 channel"),
    ("hdr", np.uint8, (5, 6, 3), "yxc", "cannot hold uint8"),
    ("hdr", np.float32, (5, 6, 1), "yxc", "cannot hold 1 channel"),
    ("tif", np.int16, (5, 6), "yx", "cannot hold int16"),
    ("png", np.uint8, (3, 5, 6), "zyx", "exactly 2 non-singleton"),
    ("tiff", np.uint8, (3, 5, 6), "zyx", "exactly 2 non-singleton"),
    ("bmp", np.uint8, (1, 6), "yx", "exactly 2 non-singleton"),
    ("png sequence", np.uint8, (5, 6, 3), "yxc", "non-singleton"),
    ("png sequence", np.uint8, (4, 5, 6, 2), "zyxc", "cannot hold 2 channel"),
    ("multipage tiff", np.uint8, (5, 6), "yx", "2 to 5 non-singleton"),
    ("numpy", np.float16, (5, 6), "yx", "cannot hold float16"),
])
def test_format_limits_are_checked_before_writing(tmp_path, fmt, dtype, shape, axes, message):
    with pytest.raises(UserError, match=message):
        formats.check_format(fmt, dtype, shape, axes)
    with pytest.raises(UserError):
        output.open_writer(fmt, str(tmp_path / "x{slice_index}"), shape=shape, dtype=dtype, axes=axes)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt, dtype, shape, axes", [
    ("png", np.uint16, (1, 1, 5, 6, 3), "tzyxc"),
    ("hdr", np.float32, (5, 6, 3), "yxc"),
    ("tiff", np.float64, (5, 6, 7), "yxc"),
    ("png sequence", np.uint8, (4, 5, 6, 3), "zyxc"),
    ("png sequence", np.uint8, (7, 5, 6), "cyx"),
    ("multipage tiff", np.uint8, (2, 5, 6), "cyx"),
    ("multipage tiff", np.uint32, (2, 5, 6), "zyx"),
    ("multipage tiff sequence", np.uint8, (2, 3, 5, 6, 4), "tzyxc"),
    ("hdf5", np.int64, (2, 3, 5, 6, 4), "tzyxc"),
    ("compressed n5", np.int8, (6,), "x"),
])
def test_format_limits_accept(fmt, dtype, shape, axes):
    assert formats.check_format(fmt, dtype, shape, axes) == fmt


@pytest.mark.parametrize("fmt, message", [("dvid", "not supported"), ("blockwise hdf5", "not supported"),
                                          ("exr", "Unknown output format")])
def test_unsupported_formats(fmt, message):
    with pytest.raises(UserError, match=message):
        formats.check_format(fmt)


def test_format_names_match_ignoring_case():
    assert formats.check_format("Multi-Scale OME-Zarr") == "multi-scale OME-Zarr"
    assert formats.check_format("PNG  Sequence") == "png sequence"


# ---- atomicity, safety and resume ------------------------------------------------------------------


@pytest.mark.parametrize("fmt, name", [("png", "o.png"), ("numpy", "o.npy"), ("compressed hdf5", "o.h5"),
                                       ("n5", "o.n5"), ("zarr", "o.zarr"), ("single-scale OME-Zarr", "o.zarr"),
                                       ("png sequence", "o{slice_index}.png")])
def test_abort_and_exceptions_leave_no_output(tmp_path, fmt, name):
    shape, axes = ((3, 4, 5), "zyx") if "sequence" in fmt else ((4, 5, 1), "yxc")
    writer = output.open_writer(fmt, str(tmp_path / name), shape=shape, dtype=np.uint8, axes=axes, memory_limit=10)
    writer.write(tuple(slice(0, n) for n in shape), np.ones(shape, np.uint8))
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError):
        with output.open_writer(fmt, str(tmp_path / name), shape=shape, dtype=np.uint8, axes=axes) as w:
            w.write(tuple(slice(0, n) for n in shape), np.ones(shape, np.uint8))
            raise RuntimeError("computation failed half-way")
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_the_previous_file(tmp_path):
    write_blocks("png", tmp_path / "o.png", np.full((4, 5), 7, np.uint8), "yx")
    write_blocks("hdf5", tmp_path / "o.h5", np.full((4, 5), 7, np.uint8), "yx")
    for fmt, name in (("png", "o.png"), ("hdf5", "o.h5")):
        with pytest.raises(RuntimeError):
            with output.open_writer(fmt, str(tmp_path / name), shape=(4, 5), dtype=np.uint8, axes="yx") as w:
                w.write((slice(0, 4), slice(0, 5)), np.zeros((4, 5), np.uint8))
                raise RuntimeError("stop")
    with Image.open(tmp_path / "o.png") as im:
        assert np.asarray(im).min() == 7
    with h5py.File(tmp_path / "o.h5", "r") as f:
        assert f["exported_data"][...].min() == 7
    assert sorted(os.listdir(tmp_path)) == ["o.h5", "o.png"]


def test_check_not_overwriting(tmp_path):
    raw = tmp_path / "raw.h5"
    raw.write_bytes(b"x")
    (tmp_path / "link.h5").symlink_to(raw)
    for out in (raw, tmp_path / "sub" / ".." / "raw.h5", tmp_path / "link.h5"):
        with pytest.raises(UserError, match="would destroy the input"):
            paths.check_not_overwriting(str(out), [str(tmp_path / "project.ilp"), str(raw)])
    paths.check_not_overwriting(str(tmp_path / "raw_Probabilities.h5"), [str(raw)])


def test_unusable_output_directory_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create the output directory .*file/sub"):
        output.open_writer("numpy", str(tmp_path / "file" / "sub" / "o.npy"), shape=(2,), dtype=np.uint8, axes="x")


def test_missing_output_directories_are_created(tmp_path):
    write_blocks("png", tmp_path / "a" / "b" / "o.png", np.zeros((2, 3), np.uint8), "yx")
    assert (tmp_path / "a" / "b" / "o.png").is_file()


@pytest.mark.parametrize("fmt, name", [("n5", "o.n5"), ("zarr", "o.zarr"), ("single-scale OME-Zarr", "o.zarr"),
                                       ("multi-scale OME-Zarr", "o.zarr")])
def test_resumable_output_keeps_chunks_and_tells_which_blocks_are_done(tmp_path, fmt, name):
    image = np.arange(8 * 6, dtype=np.uint16).reshape(8, 6, 1)
    run = {"project": "p.ilp", "input": "raw.h5"}
    kwargs = dict(shape=image.shape, dtype=image.dtype, axes="yxc", chunks=(4, 6, 1), fingerprint=run)
    first = output.open_writer(fmt, str(tmp_path / name), **kwargs)
    top, bottom = (slice(0, 4), slice(0, 6), slice(0, 1)), (slice(4, 8), slice(0, 6), slice(0, 1))
    first.write(top, image[top])
    first.abort()  # e.g. the job ran out of time
    second = output.open_writer(fmt, str(tmp_path / name), **kwargs)
    assert second.block_done(top) and not second.block_done(bottom)
    second.write(bottom, image[bottom])
    second.close()
    again = output.open_writer(fmt, str(tmp_path / name), **kwargs)  # the same command after success: nothing to do
    assert again.block_done(top) and again.block_done(bottom)
    again.close()
    with pytest.raises(UserError, match="different command"):
        output.open_writer(fmt, str(tmp_path / name), **{**kwargs, "fingerprint": {**run, "input": "other.h5"}})
    if fmt == "n5":
        ds = open_n5_dataset(str(tmp_path / name), "exported_data")
        assert np.array_equal(ds.read(), image) and ds.attributes["complete"] is True
    else:
        group = zarr.open_group(str(tmp_path / name), mode="r")
        array = group["s0"][0, 0, 0][..., np.newaxis] if "OME" in fmt else group["exported_data"][...]
        assert np.array_equal(array, image)


def test_whole_image_writers_never_report_blocks_done(tmp_path):
    writer = output.open_writer("png", str(tmp_path / "o.png"), shape=(2, 3), dtype=np.uint8, axes="yx",
                                 fingerprint={"a": 1})
    assert not writer.block_done((slice(0, 2), slice(0, 3)))
    writer.abort()


def test_several_mpi_ranks_need_a_streaming_format(tmp_path):
    class TwoRanks:
        size = 2

    with pytest.raises(UserError, match="several MPI ranks"):
        output.open_writer("hdf5", str(tmp_path / "o.h5"), shape=(2, 3), dtype=np.uint8, axes="yx", ranks=TwoRanks())
