"""Opening inputs: every format on real files, ROI reads in tzyxc, nicknames, axes rules and user errors."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import (
    default_axes,
    from_tzyxc,
    internal_slices,
    make_axistags,
    parse_axistags,
    to_tzyxc,
    validate_axes,
)
from hpc_ilastik.io.inputs import open_input, open_project_internal
from hpc_ilastik.io.n5 import create_n5_dataset

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ilastik"
INPUTDATA = FIXTURES / "inputdata"
API = FIXTURES / "api"


def _sub_roi(shape_tzyxc: tuple[int, ...]) -> tuple[slice, ...]:
    """A tzyxc region strictly inside the data on every axis longer than 2."""
    return tuple(slice(n // 3, n - n // 4) for n in shape_tzyxc)


def _internal(array: np.ndarray, axes: str) -> np.ndarray:
    """Reference reordering to tzyxc, written independently of axes.to_tzyxc."""
    for key in "tzyxc":
        if key not in axes:
            array, axes = array[..., np.newaxis], axes + key
    return np.transpose(array, [axes.index(k) for k in "tzyxc"])


# ---- axes.py -------------------------------------------------------------------------------------


def test_axistags_match_what_ilastik_wrote():
    with h5py.File(INPUTDATA / "5t2d1c.h5", "r") as f:
        written = f["data"].attrs["axistags"]
    assert parse_axistags(written) == "tyxc"
    assert make_axistags("tyxc") == written
    with h5py.File(FIXTURES / "PixelClassification2d_units.ilp", "r") as f:
        with_sizes = f["Input Data/infos/lane0000/Raw Data/axistags"][()].decode()
    assert make_axistags("yx", {"y": 6, "x": 5}) == with_sizes


@pytest.mark.parametrize(
    "shape, axes",
    [((5, 6), "yx"), ((5, 6, 4), "yxc"), ((5, 6, 5), "zyx"), ((2, 5, 6, 3), "zyxc"), ((1, 2, 5, 6, 3), "tzyxc")],
)
def test_default_axes_follow_ilastiks_shape_rule(shape, axes):
    assert default_axes(shape) == axes


def test_default_axes_refuses_other_dimensionalities():
    with pytest.raises(UserError, match=r"shape \(10,\).*--input_axes"):
        default_axes((10,))


@pytest.mark.parametrize(
    "axes, message",
    [("yxq", "unknown letters q"), ("yyx", "more than once"), ("zyc", "both x and y"), ("zyx", r"shape \(4, 5\)")],
)
def test_validate_axes_errors(axes, message):
    with pytest.raises(UserError, match=message):
        validate_axes(axes, (4, 5))


def test_validate_axes_accepts_upper_case():
    assert validate_axes("TZYXC", (1, 2, 3, 4, 5)) == "tzyxc"


def test_to_and_from_tzyxc():
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # c, y, x
    internal = to_tzyxc(array, "cyx")
    assert internal.shape == (1, 1, 3, 4, 2) and np.shares_memory(internal, array)
    np.testing.assert_array_equal(internal[0, 0, :, :, 1], array[1])
    np.testing.assert_array_equal(from_tzyxc(internal, "cyx"), array)
    assert from_tzyxc(internal, "xycz").shape == (4, 3, 2, 1)
    with pytest.raises(UserError, match="axis 'c' of size 2"):
        from_tzyxc(internal, "yx")


def test_internal_slices_keep_the_sources_order():
    roi = (slice(0, 1), slice(2, 3), slice(4, 5), slice(6, 7), slice(8, 9))
    assert internal_slices(roi, "cyx") == (slice(8, 9), slice(4, 5), slice(6, 7))


# ---- HDF5 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, inner, axes",
    [("5t2d1c.h5", "data", "tyxc"), ("5t3d2c.h5", "data", "tzyxc"), ("3d.h5", "data", "zyx"), ("2d3c.h5", "", "yxc")],
)
def test_hdf5_axes_from_axistags_or_shape_and_roi_reads(name, inner, axes):
    source = open_input(str(INPUTDATA / name) + (f"/{inner}" if inner else ""))
    with h5py.File(INPUTDATA / name, "r") as f:
        full = f["data"][()]
    assert (source.axes, source.shape, source.dtype) == (axes, full.shape, full.dtype)
    expected = _internal(full, axes)
    assert source.shape_tzyxc == expected.shape
    np.testing.assert_array_equal(source.read(), expected)
    roi = _sub_roi(expected.shape)
    np.testing.assert_array_equal(source.read(roi), expected[roi])
    assert source.nickname == Path(name).stem + (f"-{inner}" if inner else "")
    assert source.dataset_dir == str(INPUTDATA)
    assert source.paths == (str(INPUTDATA / name),)


def test_hdf5_nickname_uses_the_inner_path(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["volume/data"] = np.zeros((4, 5), np.uint8)
        f["other"] = np.zeros((4, 5), np.uint8)
    assert open_input(f"{path}/volume/data").nickname == "f-volume-data"


def test_hdf5_needs_an_inner_path_when_ambiguous_or_wrong(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((4, 5))
        f["g/b"] = np.zeros((4, 5, 6))
    with pytest.raises(UserError, match=r"holds 2 image datasets.*/a \(4, 5\), /g/b \(4, 5, 6\)"):
        open_input(str(path))
    with pytest.raises(UserError, match=r"no dataset '/nope'.*/a \(4, 5\)"):
        open_input(f"{path}/nope")


def test_hdf5_axes_attribute_is_read_reversed(tmp_path):
    path = tmp_path / "ng.h5"
    with h5py.File(path, "w") as f:
        f["d"] = np.zeros((3, 4, 5), np.uint8)
        f["d"].attrs["axes"] = "xyt"
    assert open_input(str(path)).axes == "tyx"


def test_project_internal_data_equals_its_source_image():
    with h5py.File(FIXTURES / "notebooks" / "pc.ilp", "r") as f:
        dataset = f["Input Data/local_data/3cccd446-5f3a-11eb-b5ca-00e04c00063c"]
        source = open_project_internal(dataset, None, "cells", str(FIXTURES / "notebooks"))
        assert (source.axes, source.nickname) == ("yxc", "cells")
        assert source.paths == (str(FIXTURES / "notebooks" / "pc.ilp"),)
        internal = source.read((slice(None), slice(None), slice(100, 300), slice(50, 90), slice(None)))
        overridden = open_project_internal(dataset, "zyx", "cells", "")
        assert overridden.shape_tzyxc == (1, 1024, 1344, 1, 1)
    image = iio.imread(FIXTURES / "notebooks" / "2d_cells_apoptotic_1channel.png")
    np.testing.assert_array_equal(internal[0, 0, :, :, 0], image[100:300, 50:90])


def test_hdf5_opens_while_another_process_holds_a_write_lock(tmp_path):
    path = tmp_path / "locked.h5"
    with h5py.File(path, "w") as f:
        f["d"] = np.arange(20, dtype=np.uint8).reshape(4, 5)
    holder = "import sys, h5py; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True); sys.stdin.read()"
    command = [sys.executable, "-c", holder, str(path)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "open"
            source = open_input(str(path))
            np.testing.assert_array_equal(source.read()[0, 0, :, :, 0], np.arange(20).reshape(4, 5))
        finally:
            proc.stdin.close()


# ---- images, TIFF, numpy -------------------------------------------------------------------------


def test_grayscale_png_is_yx():
    source = open_input(str(API / "Data_1channel.png"))
    image = iio.imread(API / "Data_1channel.png")
    assert (source.axes, source.shape, source.nickname) == ("yx", (128, 128), "Data_1channel")
    np.testing.assert_array_equal(source.read(_sub_roi((1, 1, 128, 128, 1)))[0, 0, :, :, 0], image[42:96, 42:96])


def test_rgba_png_keeps_four_channels():
    source = open_input(str(INPUTDATA / "rgba.png"))
    image = iio.imread(INPUTDATA / "rgba.png")
    assert (source.axes, source.shape_tzyxc) == ("yxc", (1, 1, 400, 640, 4))
    np.testing.assert_array_equal(source.read()[0, 0], image)


def test_whole_file_images_are_decoded_once_and_reads_are_independent(monkeypatch):
    calls = []
    real = iio.imread
    monkeypatch.setattr(iio, "imread", lambda *a, **k: calls.append(a) or real(*a, **k))
    source = open_input(str(API / "Data_1channel.png"))
    first = source.read()
    first[...] = 0
    second = source.read((slice(None), slice(None), slice(40, 80), slice(40, 80), slice(None)))
    assert len(calls) == 1
    np.testing.assert_array_equal(second[0, 0, :, :, 0], real(API / "Data_1channel.png")[40:80, 40:80])


def test_tiff_pixel_sizes_match_what_ilastik_stored():
    source = open_input(str(INPUTDATA / "2d_with_pixel_sizes.tif"))
    with h5py.File(FIXTURES / "PixelClassification2d_units.ilp", "r") as f:
        info = f["Input Data/infos/lane0000/Raw Data"]
        tags = json.loads(info["axistags"][()])["axes"]
        units = json.loads(info["axis_units"][()])
        shape = tuple(info["shape"][()])
    assert source.axes == "yx" and source.shape == shape
    assert source.resolutions == pytest.approx({t["key"]: t["resolution"] for t in tags}, rel=1e-4)
    assert source.units == units
    assert open_input(str(INPUTDATA / "2d_with_pixel_sizes.tif"), axes="xy").resolutions is None


def test_imagej_hyperstack_axes_spacing_and_roi(tmp_path):
    data = np.random.default_rng(1).integers(0, 60000, (6, 2, 40, 50), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    metadata = {"axes": "ZCYX", "spacing": 2.5, "unit": "um"}
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0), metadata=metadata)
    source = open_input(str(path))
    assert source.axes == "zcyx"
    assert source.resolutions == {"z": 2.5, "y": 0.25, "x": 0.25}
    assert source.units == {"z": "um", "y": "um", "x": "um"}
    expected = _internal(data, "zcyx")
    roi = (slice(None), slice(1, 5), slice(3, 33), slice(10, 50), slice(1, 2))
    np.testing.assert_array_equal(source.read(roi), expected[:, 1:5, 3:33, 10:50, 1:2])


def test_tiff_axes_like_ilastik(tmp_path):
    tifffile.imwrite(tmp_path / "shaped.tif", np.zeros((3, 4, 5, 6), np.uint8), photometric="minisblack")
    assert open_input(str(tmp_path / "shaped.tif")).axes == "zyxc"  # tifffile says QQYX: shape rule
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((3, 5, 6), np.uint8), photometric="minisblack", metadata=None)
    assert open_input(str(tmp_path / "pages.tif")).axes == "tyx"  # a page sequence (I) is time
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 6, 3), np.uint8), photometric="rgb")
    assert open_input(str(tmp_path / "rgb.tif")).axes == "yxc"  # samples (S) are channels


def test_npy_zyxc_roi():
    source = open_input(str(API / "Data_3D.npy"))
    full = np.load(API / "Data_3D.npy")
    assert (source.axes, source.nickname) == ("zyxc", "Data_3D")
    roi = (slice(None), slice(10, 20), slice(0, 5), slice(60, 64), slice(None))
    np.testing.assert_array_equal(source.read(roi), full[np.newaxis][roi])


def test_npz_with_and_without_key(tmp_path):
    a, b = np.arange(30, dtype=np.int16).reshape(5, 6), np.ones((5, 6, 2), np.float32)
    np.savez(tmp_path / "one.npz", only=a)
    np.savez(tmp_path / "two.npz", a=a, b=b)
    single = open_input(str(tmp_path / "one.npz"))
    assert (single.axes, single.dtype, single.nickname) == ("yx", np.dtype(np.int16), "one")
    np.testing.assert_array_equal(single.read()[0, 0, :, :, 0], a)
    keyed = open_input(f"{tmp_path}/two.npz/b")
    assert (keyed.axes, keyed.nickname) == ("yxc", "two-b")
    np.testing.assert_array_equal(keyed.read()[0, 0], b)
    with pytest.raises(UserError, match="holds 2 arrays.*a, b"):
        open_input(str(tmp_path / "two.npz"))
    with pytest.raises(UserError, match="no array 'c'"):
        open_input(f"{tmp_path}/two.npz/c")


# ---- N5 and zarr ---------------------------------------------------------------------------------


def test_n5_axes_attribute_reversed_and_roi(tmp_path):
    full = np.load(API / "Data_3D.npy")  # zyxc
    container = str(tmp_path / "vol.n5")
    raw = create_n5_dataset(container, "raw", full.shape, (20, 30, 25, 1), "uint8", attributes={"axes": list("cxyz")})
    raw.write((slice(None),) * 4, full)
    create_n5_dataset(container, "copy", full.shape[:3], (64, 64, 64), full.dtype, attributes={"axes": "xyz"})
    source = open_input(f"{container}/raw")
    assert (source.axes, source.nickname, source.paths) == ("zyxc", "vol-raw", (container,))
    roi = (slice(None), slice(15, 45), slice(20, 64), slice(3, 29), slice(None))
    np.testing.assert_array_equal(source.read(roi), full[np.newaxis][roi])
    assert open_input(f"{container}/copy").axes == "zyx"
    with pytest.raises(UserError, match="holds 2 datasets.*copy, raw"):
        open_input(container)


def test_ome_zarr_root_reads_full_resolution_scale(tmp_path, caplog):
    data = np.random.default_rng(2).integers(0, 255, (2, 30, 40), dtype=np.uint8)
    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    root.create_array("s0", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype)[...] = data
    root.create_array("s1", shape=(2, 15, 20), chunks=(1, 16, 16), dtype=data.dtype)
    axes = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space", "unit": "micrometer"} for n in "yx"]
    datasets = [
        {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.25]}]},
        {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1.0, 0.5]}]},
    ]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]

    with caplog.at_level(logging.INFO, logger="hpc_ilastik.io.inputs"):
        source = open_input(str(tmp_path / "img.zarr"))
    assert "full-resolution scale 's0'" in caplog.text
    assert (source.axes, source.shape, source.nickname) == ("cyx", (2, 30, 40), "img")
    assert source.resolutions == {"c": 1.0, "y": 0.5, "x": 0.25}
    assert source.units == {"y": "micrometer", "x": "micrometer"}
    roi = _sub_roi(source.shape_tzyxc)
    np.testing.assert_array_equal(source.read(roi), _internal(data, "cyx")[roi])
    low = open_input(str(tmp_path / "img.zarr/s1"))
    assert (low.shape, low.axes, low.nickname, low.resolutions["y"]) == ((2, 15, 20), "cyx", "img-s1", 1.0)


def test_ome_zarr_v3_scale_path_and_plain_zarr(tmp_path):
    data = np.arange(3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    root = zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3)
    array = root.create_array("0", shape=data.shape, chunks=(1, 8, 8), dtype=data.dtype, dimension_names=list("tyx"))
    array[...] = data
    multiscale = {"axes": [{"name": n} for n in "tyx"], "datasets": [{"path": "0"}]}
    root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    source = open_input(str(tmp_path / "v3.zarr/0"))
    assert source.axes == "tyx"
    roi = _sub_roi(source.shape_tzyxc)
    np.testing.assert_array_equal(source.read(roi), _internal(data, "tyx")[roi])

    plain = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=(5, 6, 7), chunks=(2, 2, 2), dtype="uint8")
    plain[...] = 3
    assert open_input(str(tmp_path / "plain.zarr")).axes == "zyx"
    with pytest.raises(UserError, match="no zarr array 'x'.*arrays there: 0"):
        open_input(str(tmp_path / "v3.zarr/x"))


# ---- stacks --------------------------------------------------------------------------------------


@pytest.fixture
def png_slices(tmp_path) -> np.ndarray:
    volume = np.load(API / "Data_3D.npy")[:5, :, :, 0]
    for z, plane in enumerate(volume):
        iio.imwrite(tmp_path / f"slice_{z:02d}.png", plane)
    return volume


def test_png_glob_is_one_stack_along_z(tmp_path, png_slices):
    source = open_input(str(tmp_path / "slice_*.png"))
    assert (source.axes, source.shape, source.nickname) == ("zyx", (5, 64, 64), "slice_0")
    assert source.paths == tuple(str(tmp_path / f"slice_{z:02d}.png") for z in range(5))
    roi = (slice(None), slice(1, 4), slice(10, 50), slice(0, 64), slice(None))
    np.testing.assert_array_equal(source.read(roi), _internal(png_slices, "zyx")[roi])
    np.testing.assert_array_equal(source.read()[0, :, :, :, 0], png_slices)


def test_stack_along_t_and_c_and_pathsep_lists(tmp_path, png_slices):
    along_t = open_input(str(tmp_path / "slice_*.png"), stack_along="t")
    assert along_t.axes == "tyx" and along_t.shape_tzyxc == (5, 1, 64, 64, 1)
    listed = os.pathsep.join(str(tmp_path / f"slice_{z:02d}.png") for z in (3, 1))
    along_c = open_input(listed, stack_along="c")
    assert along_c.axes == "cyx"
    np.testing.assert_array_equal(along_c.read()[0, 0], np.moveaxis(png_slices[[1, 3]], 0, -1))  # sorted like ilastik


def test_stack_concatenates_along_an_existing_axis(tmp_path):
    rng = np.random.default_rng(3)
    parts = [rng.random((2, 6, 7, 1), dtype=np.float32) for _ in range(3)]
    for i, part in enumerate(parts):
        with h5py.File(tmp_path / f"t{i}.h5", "w") as f:
            f["data"] = part
            f["data"].attrs["axistags"] = make_axistags("tyxc")
    source = open_input(str(tmp_path / "t*.h5/data"), stack_along="t")
    whole = np.concatenate(parts)
    assert (source.axes, source.shape, source.nickname) == ("tyxc", (6, 6, 7, 1), "t-data")
    roi = (slice(1, 5), slice(None), slice(2, 6), slice(None), slice(None))
    np.testing.assert_array_equal(source.read(roi), _internal(whole, "tyxc")[roi])


def test_stack_with_different_shapes_is_refused(tmp_path, png_slices):
    iio.imwrite(tmp_path / "slice_99.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match=r"same shape.*slice_99.png is \(10, 10\)"):
        open_input(str(tmp_path / "slice_*.png"))


def test_stack_of_different_file_types_is_refused(tmp_path, png_slices):
    np.save(tmp_path / "x.npy", png_slices[0])
    with pytest.raises(UserError, match="different types"):
        open_input(f"{tmp_path / 'slice_00.png'}{os.pathsep}{tmp_path / 'x.npy'}")


def test_stack_nickname_without_common_name(tmp_path):
    for name in ("apple.png", "banana.png"):
        iio.imwrite(tmp_path / name, np.zeros((4, 4), np.uint8))
    assert open_input(str(tmp_path / "*.png")).nickname == tmp_path.name


# ---- axes overrides and user errors ---------------------------------------------------------------


def test_axes_override_reinterprets_the_file():
    source = open_input(str(INPUTDATA / "3d.h5"), axes="tyx")
    assert source.axes == "tyx" and source.shape_tzyxc == (50, 1, 60, 55, 1)


def test_axes_override_of_wrong_length_names_shape_and_axes():
    with pytest.raises(UserError, match=r"Axes 'zyxc'.*shape \(50, 60, 55\)"):
        open_input(str(INPUTDATA / "3d.h5"), axes="zyxc")


def test_relative_paths_resolve_against_the_working_directory(monkeypatch):
    monkeypatch.chdir(API)
    here = os.getcwd()  # API with any symbolic link resolved, as the process sees it
    source = open_input("Data_1channel.png")
    assert source.dataset_dir == here and source.paths == (os.path.join(here, "Data_1channel.png"),)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.png", "Input file not found: .*missing.png"),
        ("nothing_*.tif", "No file matches .*nothing_"),
        ("notes.txt", "unknown file type '.txt'; supported: .h5"),
        ("folder", "is a folder: give a .*glob"),
    ],
)
def test_user_errors(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match=message):
        open_input(spec)


def test_bad_stack_axis_and_unreadable_file(tmp_path, png_slices):
    with pytest.raises(UserError, match="Cannot stack along 'x'"):
        open_input(str(tmp_path / "slice_*.png"), stack_along="x")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="Cannot read .*broken.h5"):
        open_input(str(tmp_path / "broken.h5"))


def test_data_with_unguessable_axes_asks_for_input_axes():
    with pytest.raises(UserError, match=r"shape \(10,\).*--input_axes"):
        open_input(str(INPUTDATA / "1d.h5/data"))
