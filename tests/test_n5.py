"""Our N5 layer: round trips, the on-disk format decoded by hand, tensorstore interoperability, atomic chunks."""

import gzip
import json
import os
import struct

import numpy as np
import pytest
import tensorstore

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.n5 import create_n5_dataset, list_n5_datasets, open_n5_dataset

SHAPE = (7, 10, 13)  # uneven against CHUNKS on every axis
CHUNKS = (3, 4, 5)
EVERYTHING = (slice(None),) * 3


def _data(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 60000, SHAPE) if np.dtype(dtype).kind == "u" else rng.normal(0, 1e3, SHAPE)
    return values.astype(dtype)


@pytest.mark.parametrize("compression", ["gzip", "raw"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_round_trip_with_uneven_edge_chunks(tmp_path, dtype, compression):
    data = _data(dtype)
    container = str(tmp_path / "out.n5")
    create_n5_dataset(container, "group/data", SHAPE, CHUNKS, dtype, compression=compression).write(EVERYTHING, data)

    reopened = open_n5_dataset(container, "/group/data/")
    assert (reopened.shape, reopened.chunks, reopened.dtype) == (SHAPE, CHUNKS, np.dtype(dtype))
    np.testing.assert_array_equal(reopened.read(), data)
    region = (slice(2, 7), slice(3, 9), slice(4, 13))
    np.testing.assert_array_equal(reopened.read(region), data[region])


def test_files_follow_the_n5_spec_decoded_by_hand(tmp_path):
    data = _data("uint16")
    container = tmp_path / "out.n5"
    ds = create_n5_dataset(str(container), "data", SHAPE, CHUNKS, "uint16", attributes={"axes": ["x", "y", "z"]})
    ds.write(EVERYTHING, data)

    assert json.loads((container / "attributes.json").read_text())["n5"]
    meta = json.loads((container / "data" / "attributes.json").read_text())
    assert meta["dimensions"] == [13, 10, 7] and meta["blockSize"] == [5, 4, 3]
    assert meta["dataType"] == "uint16" and meta["compression"]["type"] == "gzip"
    assert meta["axes"] == ["x", "y", "z"]

    # The last chunk: grid (2, 2, 2) in numpy order lives at x/y/z = 2/2/2 and is truncated to (1, 2, 3).
    raw = (container / "data" / "2" / "2" / "2").read_bytes()
    mode, ndim = struct.unpack(">HH", raw[:4])
    block = struct.unpack(">3I", raw[4:16])
    assert (mode, ndim, block) == (0, 3, (3, 2, 1))
    values = np.frombuffer(gzip.decompress(raw[16:]), dtype=">u2").reshape(block[::-1])
    np.testing.assert_array_equal(values, data[6:7, 8:10, 10:13])

    # A chunk with a different position on each axis: grid (0, 1, 2) is stored at x/y/z = 2/1/0.
    raw = (container / "data" / "2" / "1" / "0").read_bytes()
    values = np.frombuffer(gzip.decompress(raw[16:]), dtype=">u2").reshape(3, 4, 3)
    np.testing.assert_array_equal(values, data[0:3, 4:8, 10:13])


@pytest.mark.parametrize("compression", ["gzip", "raw", {"type": "zstd", "level": 3},
                                         {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0}])
def test_tensorstore_reads_what_we_write(tmp_path, compression):
    data = _data("float32")
    ours = tmp_path / "ours.n5"
    create_n5_dataset(str(ours), "data", SHAPE, CHUNKS, "float32", compression).write(EVERYTHING, data)
    store = tensorstore.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(ours / "data")}}).result()
    np.testing.assert_array_equal(store.read().result(), data.T)  # tensorstore keeps N5's x-first order
    if isinstance(compression, dict) and compression["type"] == "blosc":  # blosc got bytes: 1-byte elements
        assert (ours / "data" / "0" / "0" / "0").read_bytes()[16 + 3] == 1  # blosc header: typesize


@pytest.mark.parametrize("compression", [{"type": "gzip"}, None])  # None: tensorstore's default, blosc
def test_we_read_what_tensorstore_writes(tmp_path, compression):
    metadata = {"dimensions": [13, 10, 7], "blockSize": [5, 4, 3], "dataType": "int16"}
    if compression:
        metadata["compression"] = compression
    path = str(tmp_path / "theirs.n5" / "data")
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": path}, "metadata": metadata, "create": True}
    written = _data("float64").astype("int16").T
    tensorstore.open(spec).result().write(written).result()
    np.testing.assert_array_equal(open_n5_dataset(str(tmp_path / "theirs.n5"), "data").read(), written.T)


def test_missing_chunks_read_as_zero(tmp_path):
    ds = create_n5_dataset(str(tmp_path / "c.n5"), "d", SHAPE, CHUNKS, "float32")
    block = np.full((3, 4, 5), 7, np.float32)
    ds.write_chunk((1, 0, 1), block)
    assert ds.chunk_exists((1, 0, 1)) and not ds.chunk_exists((0, 0, 0))
    expected = np.zeros(SHAPE, np.float32)
    expected[3:6, 0:4, 5:10] = 7
    np.testing.assert_array_equal(ds.read(), expected)


def test_a_region_reads_only_its_chunks(tmp_path):
    ds = create_n5_dataset(str(tmp_path / "c.n5"), "d", SHAPE, CHUNKS, "uint8")
    data = _data("uint8")
    ds.write(EVERYTHING, data)
    with open(ds.chunk_path((2, 2, 2)), "wb") as f:
        f.write(b"broken")
    np.testing.assert_array_equal(ds.read((slice(0, 6), slice(0, 8))), data[:6, :8])
    with pytest.raises(UserError, match="truncated or corrupt"):
        ds.read()


def test_interrupted_write_leaves_no_chunk(tmp_path, monkeypatch):
    ds = create_n5_dataset(str(tmp_path / "c.n5"), "d", SHAPE, CHUNKS, "uint8")
    # A writer killed after creating its temporary file leaves it behind: it is not a chunk.
    os.makedirs(os.path.dirname(ds.chunk_path((0, 0, 0))), exist_ok=True)
    with open(ds.chunk_path((0, 0, 0)) + ".tmp-999-deadbeef", "wb") as f:
        f.write(b"\x00\x00\x00\x03partial")
    assert not ds.chunk_exists((0, 0, 0))
    assert not ds.read().any()

    # A write failing before the rename leaves neither a chunk nor its temporary file.
    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        ds.write_chunk((1, 1, 1), np.ones((3, 4, 5), np.uint8))
    monkeypatch.undo()
    assert not ds.chunk_exists((1, 1, 1))
    assert [n for n in os.listdir(os.path.dirname(ds.chunk_path((1, 1, 1)))) if n.startswith("1.tmp")] == []


def test_existing_dataset_is_reused_only_when_identical(tmp_path):
    container = str(tmp_path / "c.n5")
    first = create_n5_dataset(container, "d", SHAPE, CHUNKS, "uint8", attributes={"axes": ["x", "y", "z"]})
    first.write_chunk((0, 0, 0), np.full((3, 4, 5), 9, np.uint8))

    with pytest.raises(UserError, match="already exists"):
        create_n5_dataset(container, "d", SHAPE, CHUNKS, "uint8")
    for shape, chunks, dtype in [((7, 10, 14), CHUNKS, "uint8"), (SHAPE, (3, 4, 4), "uint8"), (SHAPE, CHUNKS, "int8")]:
        with pytest.raises(UserError, match="already exists with shape"):
            create_n5_dataset(container, "d", shape, chunks, dtype, exist_ok=True)

    resumed = create_n5_dataset(container, "d", SHAPE, CHUNKS, "uint8", attributes={"done": 1}, exist_ok=True)
    assert resumed.chunk_exists((0, 0, 0)) and resumed.read()[0, 0, 0] == 9
    assert open_n5_dataset(container, "d").attributes == {"axes": ["x", "y", "z"], "done": 1}


def test_attributes_and_errors(tmp_path):
    container = str(tmp_path / "c.n5")
    ds = create_n5_dataset(container, "a/b", (4, 4), (2, 2), "int32", compression="raw")
    create_n5_dataset(container, "c", (4, 4), (2, 2), "int8")
    ds.set_attributes({"resolution": [1.5, 2.0]})
    assert open_n5_dataset(container, "a/b").attributes == {"resolution": [1.5, 2.0]}
    assert list_n5_datasets(container) == ["a/b", "c"]

    with pytest.raises(ValueError):
        ds.set_attributes({"dimensions": [1, 1]})
    with pytest.raises(ValueError, match="aligned"):
        ds.write((slice(1, 3), slice(0, 4)), np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="int32"):
        ds.write_chunk((0, 0), np.zeros((2, 2), np.float64))
    with pytest.raises(UserError, match="no dataset 'x'.*a/b, c"):
        open_n5_dataset(container, "x")
    with pytest.raises(UserError, match="cannot store"):
        create_n5_dataset(container, "e", (2, 2), (1, 1), "bool")
    with pytest.raises(UserError, match="compression"):
        create_n5_dataset(container, "e", (2, 2), (1, 1), "uint8", compression="lz4")
