"""The headless export surface through the real command line: every export source, every output format
family read back, every export option, the project's stored settings, every input kind, masks, several
inputs and retraining, on ilastik's own test projects (`api/PixelClass.ilp`, `api/PixelClass3D.ilp`)."""

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from hpc_ilastik.cli import main
from hpc_ilastik.project.reader import open_project
from tests.conftest import API, FIXTURES

PROJECT = API / "PixelClass.ilp"
PROJECT_3D = API / "PixelClass3D.ilp"
SOURCES = ["Probabilities", "Simple Segmentation", "Uncertainty", "Features", "Labels"]
# channels each ilastik feature gives per input channel in 2D (the eigenvalue features: one per axis)
CHANNELS_2D = {"GaussianSmoothing": 1, "LaplacianOfGaussian": 1, "GaussianGradientMagnitude": 1,
               "DifferenceOfGaussians": 1, "StructureTensorEigenvalues": 2, "HessianOfGaussianEigenvalues": 2}


def headless(*args: str, project: Path = PROJECT) -> None:
    assert main(["--headless", "--quiet", f"--project={project}", *map(str, args)]) == 0


def read_h5(path: Path, internal: str = "exported_data") -> tuple[np.ndarray, dict]:
    with h5py.File(path, "r") as f:
        dataset = f[internal]
        return dataset[()], {**dataset.attrs, "compression": dataset.compression}


def axis_keys(axistags: str) -> str:
    return "".join(entry["key"] for entry in json.loads(axistags)["axes"])


def read_n5(dataset_dir: Path) -> tuple[np.ndarray, dict]:
    """An N5 dataset read by hand from its spec: reversed (F-order) dimensions, big-endian chunks with a header."""
    attrs = json.loads((dataset_dir / "attributes.json").read_text())
    shape, block = attrs["dimensions"][::-1], attrs["blockSize"][::-1]
    dtype = np.dtype(attrs["dataType"]).newbyteorder(">")
    out = np.zeros(shape, dtype)
    for index in np.ndindex(*[-(-n // b) for n, b in zip(shape, block)]):
        raw = dataset_dir.joinpath(*map(str, index[::-1])).read_bytes()
        mode, ndim = struct.unpack(">HH", raw[:4])
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])[::-1]
        body = raw[4 + 4 * ndim:]
        if attrs["compression"]["type"] == "gzip":
            body = zlib.decompress(body, 47)  # gzip or zlib header
        assert mode == 0
        out[tuple(slice(i * b, i * b + d) for i, b, d in zip(index, block, dims))] = np.frombuffer(body, dtype).reshape(dims)
    return out.astype(out.dtype.newbyteorder("=")), attrs


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Inputs copied to a temporary folder and the full Probabilities of the 2D image (the reference output)."""
    folder = tmp_path_factory.mktemp("inputs")
    image = iio.imread(API / "Data_1channel.png")
    shutil.copy(API / "Data_1channel.png", folder)
    headless(f"--output_filename_format={folder}/full", "--output_format=hdf5", folder / "Data_1channel.png")
    probabilities, _ = read_h5(folder / "full.h5")
    volume = np.load(API / "Data_3D.npy")[:20, :24, :28]  # small enough to be quick, large enough for sigma 5
    np.save(folder / "volume.npy", volume)
    return {"dir": folder, "png": folder / "Data_1channel.png", "image": image, "probs": probabilities,
            "volume": volume, "volume_npy": folder / "volume.npy"}


def test_probabilities_match_ilastiks_reference(data):
    probs = data["probs"]
    assert probs.shape == (128, 128, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1, atol=1e-5)
    difference = np.abs(probs - np.load(API / "res-Data_1channel_pc1xyc.npy"))
    assert (difference >= 0.015).mean() < 0.001 and difference.max() < 0.15  # ilastik's own tolerance


def test_console_script_ends_with_complete_outputs_and_log(data, tmp_path):
    """`python -m hpc_ilastik` ends through cli.finish (gc.freeze, then the ordinary exit): the HDF5 output and
    the log file must be complete; a failed run keeps its exit code."""
    log = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-m", "hpc_ilastik", "--headless", f"--project={PROJECT}",
                           "--output_format=hdf5", f"--output_filename_format={tmp_path}/out", f"--logfile={log}",
                           str(data["png"])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    values, attrs = read_h5(tmp_path / "out.h5")
    np.testing.assert_array_equal(values, data["probs"])
    assert "Probabilities written to" in log.read_text()
    failed = subprocess.run([sys.executable, "-m", "hpc_ilastik", "--headless", f"--project={PROJECT}",
                             str(tmp_path / "missing.png")], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "missing.png" in failed.stderr


def test_the_command_starts_without_the_collector_and_a_caller_of_main_keeps_its_own(data, tmp_path):
    """The command (`__main__.main`) imports and starts with the cyclic garbage collector off, then freezes what
    the start made and turns the collector on before the blocks; `cli.main` called from Python leaves the
    caller's collector as it was."""
    script = f"""
import gc, sys
from hpc_ilastik.run import process
if sys.argv[1] == "command":
    process.start_without_collecting()
assert gc.isenabled() == (sys.argv[1] != "command")
import numpy as np
from hpc_ilastik import cli
assert gc.isenabled() == (sys.argv[1] != "command")  # the imports ran without it
assert cli.main(["--headless", "--project={PROJECT}", "--output_filename_format={tmp_path}/" + sys.argv[1],
                 "--output_format=hdf5", "{data['png']}"]) == 0
print(gc.isenabled(), gc.get_freeze_count() > 10_000)
"""
    for kind, frozen in (("command", "True"), ("caller", "False")):
        done = subprocess.run([sys.executable, "-c", script, kind], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", frozen]
        np.testing.assert_array_equal(read_h5(tmp_path / f"{kind}.h5")[0], data["probs"])


def test_a_run_imports_only_what_it_uses_compiles_nothing_and_numba_still_has_blas(data, tmp_path):
    """Every process (every MPI rank) pays for its imports and for what numba compiles: an HDF5-to-HDF5 run
    loads no image, TIFF, zarr or N5-codec library; once numba's cache holds the kernels a later run only loads
    them (a numba typed List, for one, compiled its helpers afresh in every process: 0.4 s), and
    cli.start_numba_lightly spares it numba's registries (numba.np.arraymath and the rest, 0.1 s). The run
    that compiles imports arraymath without its BLAS probe (scipy.linalg, 0.2 s); numba code that does use
    BLAS still compiles afterwards."""
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["raw"] = data["image"]
    script = f"""
import sys
import numpy as np
from numba.core import event
from hpc_ilastik.cli import main
with event.install_recorder("numba:compile") as recorder:
    assert main(["--headless", "--project={PROJECT}", "--output_filename_format={tmp_path}/" + sys.argv[1],
                 "{tmp_path}/in.h5/raw"]) == 0
compiled = sorted({{e.data["dispatcher"].py_func.__qualname__ for _, e in recorder.buffer if e.is_start}})
assert "scipy.linalg" not in sys.modules and ("numba.np.arraymath" in sys.modules) == bool(compiled)
unused = [name for name in ("tifffile", "imageio", "PIL", "zarr", "numcodecs") if name in sys.modules]
assert not unused, unused
print(compiled)
import numba
dot = numba.njit(lambda a, b: np.dot(a, b))
assert dot(np.eye(3), np.arange(3.0)).tolist() == [0.0, 1.0, 2.0]
"""
    runs = [subprocess.run([sys.executable, "-c", script, out], capture_output=True, text=True, timeout=600)
            for out in ("first", "second")]  # two outputs: the second run computes every block too
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    assert runs[1].stdout.splitlines()[-1] == "[]"  # the first run may have filled the cache
    for out in ("first", "second"):
        values, _ = read_h5(tmp_path / f"{out}.h5")
        np.testing.assert_array_equal(values, data["probs"])


_REFAULTS = """
import ctypes, resource, sys, threading
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, whatever the machine's huge-page mode
import numpy as np
from hpc_ilastik.run.process import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
faults = []
def blocks_in_a_thread():
    for _ in range(3):  # block after block needs the same temporaries (3 MiB: below numpy's huge pages)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        temporaries = [np.ones(3 * 2**20 // 4, np.float32) for _ in range(64)]
        del temporaries
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
worker = threading.Thread(target=blocks_in_a_thread)
worker.start()
worker.join()
print(min(faults[1:]), max(faults[1:]))
"""


@pytest.mark.parametrize("keep", [True, False])
def test_a_worker_threads_freed_memory_is_reused_without_page_faults(keep):
    """keep_freed_memory: a worker thread's temporaries (192 MiB here, more than one 64 MiB heap of a thread's
    own arena) are page-faulted afresh on every block (~49,000 faults) unless malloc keeps freed memory in one
    arena for all threads (with threads' own arenas ~17,000 remain); the ordinary setting shows the cost."""
    done = subprocess.run([sys.executable, "-c", _REFAULTS, "keep" if keep else "default"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fewest, most = map(int, done.stdout.split())
    assert (most < 100) if keep else (fewest > 10_000)


def _feature_channels(project: Path) -> int:
    with h5py.File(project, "r") as f:
        group = f["FeatureSelections"]
        ids = [name.decode() for name in group["FeatureIds"][()]]
        matrix = group["SelectionMatrix"][()]
    return sum(CHANNELS_2D[name] * int(row.sum()) for name, row in zip(ids, matrix))


@pytest.mark.parametrize("source", SOURCES)
def test_export_sources(data, tmp_path, source):
    headless(f"--export_source={source}", f"--output_filename_format={tmp_path}/{{nickname}}_{{result_type}}", data["png"])
    values, attrs = read_h5(tmp_path / f"Data_1channel_{source}.h5")
    probs = data["probs"]
    assert axis_keys(attrs["axistags"]) == "yxc"
    if source == "Probabilities":
        assert values.dtype == np.float32 and tuple(attrs["drange"]) == (0.0, 1.0)
        np.testing.assert_array_equal(values, probs)
    elif source == "Simple Segmentation":
        assert values.shape == (128, 128, 1) and values.dtype == np.uint8
        np.testing.assert_array_equal(values[..., 0], probs.argmax(axis=-1) + 1)
        assert set(np.unique(values)) == {1, 2}
    elif source == "Uncertainty":
        ordered = np.sort(probs, axis=-1)
        assert values.shape == (128, 128, 1) and values.dtype == np.float32
        np.testing.assert_allclose(values[..., 0], 1 - (ordered[..., -1] - ordered[..., -2]), atol=1e-6)
    elif source == "Features":
        assert _feature_channels(PROJECT) == 25
        assert values.shape == (128, 128, 25) and values.dtype == np.float32 and "drange" not in attrs
        # channel 0 is Gaussian smoothing at sigma 0.3: the image, barely blurred
        assert np.corrcoef(values[..., 0].ravel(), data["image"].ravel().astype(float))[0, 1] > 0.99
        assert np.isfinite(values).all() and len({float(values[..., k].std()) for k in range(25)}) == 25
    else:
        assert values.shape == (128, 128, 1) and values.dtype == np.uint8 and not values.any()


def _read_ome_zarr(path: Path) -> tuple[np.ndarray, dict]:
    group = zarr.open_group(path, mode="r")
    return group["s0"][...], dict(group.attrs)


FORMATS = {  # format → (extra options, file suffix, reader giving the image in yxc order)
    "hdf5": ([], ".h5", lambda p: read_h5(p)[0]),
    "compressed hdf5": ([], ".h5", lambda p: read_h5(p)[0]),
    "n5": ([], ".n5", lambda p: read_n5(p / "exported_data")[0]),
    "compressed n5": ([], ".n5", lambda p: read_n5(p / "exported_data")[0]),
    "zarr": ([], ".zarr", lambda p: zarr.open_array(p, path="exported_data", mode="r")[...]),
    "single-scale OME-Zarr": ([], ".zarr", lambda p: _read_ome_zarr(p)[0][0, :, 0].transpose(1, 2, 0)),
    "numpy": ([], ".npy", np.load),
    "tiff": ([], ".tiff", tifffile.imread),
    "multipage tiff": (["--output_axis_order=cyx"], ".tiff", lambda p: tifffile.imread(p).transpose(1, 2, 0)),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_output_format_round_trip(data, tmp_path, fmt):
    options, suffix, read = FORMATS[fmt]
    headless(f"--output_format={fmt}", f"--output_filename_format={tmp_path}/out.anything", *options, data["png"])
    path = tmp_path / f"out{suffix}"
    values = read(path)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, data["probs"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
    if fmt.endswith("hdf5"):
        _, attrs = read_h5(path)
        assert axis_keys(attrs["axistags"]) == "yxc" and tuple(attrs["drange"]) == (0.0, 1.0)
        assert attrs["compression"] == ("gzip" if fmt.startswith("compressed") else None)
    if fmt.endswith("n5"):
        _, attrs = read_n5(path / "exported_data")
        assert axis_keys(attrs["axistags"]) == "yxc" and attrs["drange"] == [0.0, 1.0]
        assert attrs["compression"]["type"] == ("gzip" if fmt.startswith("compressed") else "raw")
    if fmt == "multipage tiff":
        with tifffile.TiffFile(path) as tif:
            assert tif.is_ome and len(tif.pages) == 2


def test_ome_zarr_output_has_ngff_axes_and_the_inputs_scale(data, tmp_path):
    store = zarr.open_group(tmp_path / "in.zarr", mode="w", zarr_format=2)
    store.create_array("s0", shape=data["image"].shape, dtype=np.uint8, chunks=(64, 64))[...] = data["image"]
    store.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.25]}]}]}]
    headless("--output_format=single-scale OME-Zarr", f"--output_filename_format={tmp_path}/out", tmp_path / "in.zarr/s0")
    values, attrs = _read_ome_zarr(tmp_path / "out.zarr")
    assert values.shape == (1, 2, 1, 128, 128)
    np.testing.assert_array_equal(values[0, :, 0].transpose(1, 2, 0), data["probs"])
    (multiscale,) = attrs["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == list("tczyx")
    assert [a["type"] for a in multiscale["axes"]] == ["time", "channel", "space", "space", "space"]
    assert multiscale["axes"][3].get("unit") == "micrometer"
    (level,) = multiscale["datasets"]
    assert level["path"] == "s0"
    assert level["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 1.0, 1.0, 0.5, 0.25]}]


def test_png_of_the_simple_segmentation(data, tmp_path):
    headless("--output_format=png", "--export_source=Simple Segmentation", f"--output_filename_format={tmp_path}/seg",
             data["png"])
    with Image.open(tmp_path / "seg.png") as png:
        assert png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), data["probs"].argmax(axis=-1) + 1)


def test_png_sequence_of_a_3d_project_along_the_chosen_axis(data, tmp_path):
    headless("--export_source=Simple Segmentation", f"--output_filename_format={tmp_path}/seg", "--output_format=hdf5",
             data["volume_npy"], project=PROJECT_3D)
    segmentation, attrs = read_h5(tmp_path / "seg.h5")
    assert segmentation.shape == (20, 24, 28, 1) and axis_keys(attrs["axistags"]) == "zyxc"
    headless("--export_source=Simple Segmentation", "--output_format=png sequence", "--output_axis_order=yzxc",
             f"--output_filename_format={tmp_path}/seq/{{nickname}}_y{{slice_index}}.png", data["volume_npy"],
             project=PROJECT_3D)
    names = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert names == [f"volume_y{i:02d}.png" for i in range(24)]  # ilastik's padding: ceil(log10(24 + 1)) digits
    for i, name in enumerate(names):
        np.testing.assert_array_equal(iio.imread(tmp_path / "seq" / name), segmentation[:, i, :, 0])  # rows z, columns x


def test_every_filename_placeholder_and_the_internal_path(data, tmp_path):
    template = ("{dataset_dir}/res/{nickname}_{result_type}_{roi}_x{x_start}-{x_stop}_y{y_start}-{y_stop}"
                "_z{z_start}-{z_stop}_t{t_start}-{t_stop}_c{c_start}-{c_stop}")
    headless(f"--output_filename_format={template}", "--export_source=Simple Segmentation",
             "--output_internal_path=results/{nickname}/{result_type}",
             "--cutout_subregion=[(10,20,None),(50,None,None)]", data["png"])
    expected = (data["dir"] / "res" / "Data_1channel_Simple Segmentation_[(10, 20, 0), (50, 128, 1)]"
                "_x20-128_y10-50_z0-1_t0-1_c0-1.h5")
    assert [p.name for p in (data["dir"] / "res").iterdir()] == [expected.name]
    values, _ = read_h5(expected, "results/Data_1channel/Simple Segmentation")
    np.testing.assert_array_equal(values[..., 0], data["probs"][10:50, 20:].argmax(axis=-1) + 1)


@pytest.mark.parametrize("cutout, crop", [
    ("[(10,20,None),(50,None,None)]", np.s_[10:50, 20:, :]),
    ("[(10,20,0),(50,0,0)]", np.s_[10:50, 20:, :]),  # ilastik: a stop of 0 means "to the end"
    ("[(0,0,0,0,1),(1,1,128,64,2)]", np.s_[:, :64, 1:2]),  # all of tzyxc, one channel
    ("[(None,100,None),(30,None,None)]", np.s_[:30, 100:, :]),
])
def test_cutout_equals_the_crop_of_the_full_output(data, tmp_path, cutout, crop):
    headless(f"--cutout_subregion={cutout}", f"--output_filename_format={tmp_path}/cut", data["png"])
    values, _ = read_h5(tmp_path / "cut.h5")
    # features near the crop's border see the whole image (as in ilastik): the crop is exact
    np.testing.assert_array_equal(values, data["probs"][crop])


def test_renormalisation_to_uint8(data, tmp_path):
    headless("--export_dtype=uint8", "--pipeline_result_drange=(0.0,1.0)", "--export_drange=(0,255)",
             f"--output_filename_format={tmp_path}/u8", data["png"])
    values, attrs = read_h5(tmp_path / "u8.h5")
    assert values.dtype == np.uint8 and tuple(attrs["drange"]) == (0, 255)
    # by hand: 0 + (p - 0.0) * float32(255/1), in float32 as ilastik's numpy does, rounded half to even (>= 1.4.2)
    np.testing.assert_array_equal(values, np.rint((data["probs"] - np.float32(0)) * np.float32(255)).astype(np.uint8))
    # probabilities of 100 trees are multiples of 0.01: 0.5 gives exactly 127.5, rounded to the even 128
    assert (values[data["probs"] == np.float32(0.5)] == 128).all() and (data["probs"] == np.float32(0.5)).any()


def test_renormalisation_to_a_shifted_signed_range_is_not_clipped(data, tmp_path):
    headless("--export_dtype=int16", "--pipeline_result_drange=(0.5,1.0)", "--export_drange=(100,1100)",
             f"--output_filename_format={tmp_path}/i16", data["png"])
    values, attrs = read_h5(tmp_path / "i16.h5")
    assert values.dtype == np.int16 and tuple(attrs["drange"]) == (100, 1100)
    ratio = np.float32((1100 - 100) / (1.0 - 0.5))
    np.testing.assert_array_equal(values, np.rint(100 + (data["probs"] - np.float32(0.5)) * ratio).astype(np.int16))
    assert values.min() == -900 and values.max() == 1100  # p = 0 maps to -900: no clipping to (100, 1100)


def test_export_dtype_alone_is_a_plain_cast_and_pipeline_drange_alone_is_ignored(data, tmp_path):
    headless("--export_dtype=uint8", f"--output_filename_format={tmp_path}/cast", data["png"])
    values, _ = read_h5(tmp_path / "cast.h5")
    np.testing.assert_array_equal(values, (data["probs"] >= 1).astype(np.uint8))  # truncation toward zero
    headless("--pipeline_result_drange=(0,1)", f"--output_filename_format={tmp_path}/float", data["png"])
    values, _ = read_h5(tmp_path / "float.h5")
    np.testing.assert_array_equal(values, data["probs"])


@pytest.mark.parametrize("order, expected", [
    ("cxy", lambda p: p.transpose(2, 1, 0)),
    ("xyc", lambda p: p.transpose(1, 0, 2)),
    ("tczyx", lambda p: p.transpose(2, 0, 1)[np.newaxis, :, np.newaxis]),
])
def test_output_axis_order(data, tmp_path, order, expected):
    headless(f"--output_axis_order={order}", f"--output_filename_format={tmp_path}/ax", data["png"])
    values, attrs = read_h5(tmp_path / "ax.h5")
    assert axis_keys(attrs["axistags"]) == order
    np.testing.assert_array_equal(values, expected(data["probs"]))


def test_input_axes_override(data, tmp_path):
    headless("--input_axes=xy", f"--output_filename_format={tmp_path}/xy", data["png"])
    values, attrs = read_h5(tmp_path / "xy.h5")
    assert axis_keys(attrs["axistags"]) == "xyc"  # the input's own (overridden) order, plus c
    # the image read as its transpose: the prediction is the transposed prediction, written x-first, up to
    # float32 rounding (the filters' passes run in the other order, as in ilastik): a pixel whose feature
    # lies on a split threshold may get one tree's vote (0.01) the other way
    diff = np.abs(values - data["probs"])
    assert values.shape == data["probs"].shape and diff.max() <= 0.0101 and np.mean(diff > 1e-6) < 1e-3

    frames = np.stack([data["image"][:64, :64], data["image"][64:, 64:], data["image"][:64, 64:]])
    np.save(tmp_path / "frames.npy", frames)  # 3 x 64 x 64: ilastik's shape rule reads zyx
    headless("--input_axes=tyx", f"--output_filename_format={tmp_path}/t", tmp_path / "frames.npy")
    values, attrs = read_h5(tmp_path / "t.h5")
    assert axis_keys(attrs["axistags"]) == "tyxc" and values.shape == (3, 64, 64, 2)
    iio.imwrite(tmp_path / "frame1.png", frames[1])
    headless(f"--output_filename_format={tmp_path}/f1", tmp_path / "frame1.png")
    np.testing.assert_array_equal(values[1], read_h5(tmp_path / "f1.h5")[0])


def test_stack_along_z_of_png_slices(data, tmp_path):
    for z, plane in enumerate(data["volume"][..., 0]):
        iio.imwrite(tmp_path / f"slice{z:02d}.png", plane)
    headless("--stack_along=z", f"--output_filename_format={tmp_path}/stack", str(tmp_path / "slice*.png"),
             project=PROJECT_3D)
    headless(f"--output_filename_format={tmp_path}/whole", data["volume_npy"], project=PROJECT_3D)
    stacked, attrs = read_h5(tmp_path / "stack.h5")
    assert stacked.shape == (20, 24, 28, 2) and axis_keys(attrs["axistags"]) == "zyxc"
    np.testing.assert_array_equal(stacked, read_h5(tmp_path / "whole.h5")[0])


def test_stack_along_c_of_png_channels(tmp_path):
    project = FIXTURES / "PixelClassification2d3c.ilp"
    with h5py.File(FIXTURES / "inputdata" / "2d3c.h5", "r") as f:
        rgb = f["data"][()]
    assert rgb.shape == (73, 187, 3)
    for c in range(3):
        iio.imwrite(tmp_path / f"channel{c}.png", rgb[..., c])
    h5_input = tmp_path / "rgb.h5"
    with h5py.File(h5_input, "w") as f:
        f["data"] = rgb
    headless("--stack-along=c", f"--output_filename_format={tmp_path}/stack", str(tmp_path / "channel*.png"),
             project=project)
    headless(f"--output_filename_format={tmp_path}/whole", f"{h5_input}/data", project=project)
    stacked, attrs = read_h5(tmp_path / "stack.h5")
    assert axis_keys(attrs["axistags"]) == "cyx"  # yx files stacked along c: c is prepended, as in ilastik
    np.testing.assert_array_equal(stacked, read_h5(tmp_path / "whole.h5")[0].transpose(2, 0, 1))


@pytest.mark.parametrize("flag", [["--readonly"], ["--readonly=false"], ["--readonly", "yes"]])
def test_readonly_is_accepted(data, tmp_path, flag):
    before = PROJECT.read_bytes()
    headless(*flag, f"--output_filename_format={tmp_path}/ro", data["png"])
    np.testing.assert_array_equal(read_h5(tmp_path / "ro.h5")[0], data["probs"])
    assert PROJECT.read_bytes() == before


def test_stored_export_settings_apply_by_default(tmp_path, data):
    image = tmp_path / "Data_1channel.png"
    shutil.copy(data["png"], image)
    headless(image)  # PixelClass.ilp stores OutputFormat hdf5 and {dataset_dir}/{nickname}_{result_type}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Data_1channel.png", "Data_1channel_Probabilities.h5"]
    values, attrs = read_h5(tmp_path / "Data_1channel_Probabilities.h5")
    assert attrs["compression"] is None  # plain hdf5, as stored (not the default 'compressed hdf5')
    np.testing.assert_array_equal(values, data["probs"])


def _project_with(tmp_path: Path, **stored) -> Path:
    """A copy of PixelClass.ilp in tmp_path/project with these `Prediction Export` values stored."""
    folder = tmp_path / "project"
    folder.mkdir()
    project = folder / "PixelClass.ilp"
    shutil.copy(PROJECT, project)
    with h5py.File(project, "r+") as f:
        group = f["Prediction Export"]
        for name, value in stored.items():
            if name in group:
                del group[name]
            group[name] = value.encode() if isinstance(value, str) else value
    return project


def test_relative_templates_stored_resolve_against_the_project_given_against_cwd(tmp_path, data, monkeypatch):
    project = _project_with(tmp_path, OutputFilenameFormat="results/{nickname}_{result_type}", OutputFormat="numpy")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    headless(data["png"], project=project)
    np.testing.assert_array_equal(np.load(tmp_path / "project/results/Data_1channel_Probabilities.npy"), data["probs"])
    headless("--output_filename_format=cli/{nickname}", data["png"], project=project)
    np.testing.assert_array_equal(np.load(cwd / "cli/Data_1channel.npy"), data["probs"])  # stored format kept


def test_stored_renormalisation_applies_unless_overridden(tmp_path, data):
    project = _project_with(tmp_path, ExportDtype="uint8", InputMin=0.0, InputMax=1.0, ExportMin=0.0, ExportMax=255.0,
                            OutputFilenameFormat=f"{tmp_path}/stored")
    headless(data["png"], project=project)
    values, attrs = read_h5(tmp_path / "stored.h5")
    assert values.dtype == np.uint8
    np.testing.assert_array_equal(values, np.rint(data["probs"] * np.float32(255)).astype(np.uint8))
    headless("--export_dtype=uint16", "--pipeline_result_drange=(0,1)", "--export_drange=(0,1000)",
             f"--output_filename_format={tmp_path}/cli", data["png"], project=project)
    values, _ = read_h5(tmp_path / "cli.h5")
    assert values.dtype == np.uint16
    np.testing.assert_array_equal(values, np.rint(data["probs"] * np.float32(1000)).astype(np.uint16))


def _write_n5(container: Path, name: str, image: np.ndarray) -> None:
    """A raw (uncompressed) N5 dataset written by hand from the spec: one chunk, big-endian, reversed axes."""
    dataset = container / name
    (dataset / "0").mkdir(parents=True)
    (container / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    (dataset / "attributes.json").write_text(json.dumps({
        "dimensions": list(image.shape[::-1]), "blockSize": list(image.shape[::-1]),
        "dataType": image.dtype.name, "compression": {"type": "raw"}}))
    header = struct.pack(">HH", 0, image.ndim) + struct.pack(f">{image.ndim}I", *image.shape[::-1])
    (dataset / "0" / "0").write_bytes(header + image.astype(image.dtype.newbyteorder(">")).tobytes())


def test_n5_zarr_and_ome_zarr_inputs(data, tmp_path):
    image = data["image"]
    _write_n5(tmp_path / "in.n5", "raw", image)
    zarr.open_array(tmp_path / "plain.zarr", mode="w", shape=image.shape, dtype=image.dtype, chunks=(50, 50))[...] = image
    ome = zarr.open_group(tmp_path / "ome.zarr", mode="w", zarr_format=2)
    ome.create_array("s0", shape=image.shape, dtype=image.dtype, chunks=(64, 64))[...] = image
    ome.create_array("s1", shape=(64, 64), dtype=image.dtype, chunks=(64, 64))[...] = image[::2, ::2]
    ome.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                                 "datasets": [{"path": "s0"}, {"path": "s1"}]}]
    inputs = [tmp_path / "in.n5/raw", tmp_path / "plain.zarr", tmp_path / "ome.zarr/s0"]
    headless(f"--output_filename_format={tmp_path}/out/{{nickname}}", *inputs)
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == ["in-raw.h5", "ome-s0.h5", "plain.h5"]
    for name in outputs:
        np.testing.assert_array_equal(read_h5(tmp_path / "out" / name)[0], data["probs"])


def test_prediction_mask(data, tmp_path):
    mask = np.zeros((128, 128), np.uint8)
    mask[20:100, :70] = 1
    iio.imwrite(tmp_path / "mask.png", mask)
    headless(f"--output_filename_format={tmp_path}/masked", "--raw_data", data["png"],
             "--prediction_mask", tmp_path / "mask.png")
    headless(f"--output_filename_format={tmp_path}/seg", "--export_source=Simple Segmentation",
             "--raw-data", data["png"], "--prediction-mask", tmp_path / "mask.png")
    values, _ = read_h5(tmp_path / "masked.h5")
    inside = mask.astype(bool)
    assert not values[~inside].any()
    np.testing.assert_array_equal(values[inside], data["probs"][inside])
    segmentation, _ = read_h5(tmp_path / "seg.h5")
    assert (segmentation[~inside] == 1).all()  # ilastik: masked pixels have all-zero probabilities → class 1


def test_several_inputs_give_one_output_each(data, tmp_path):
    iio.imwrite(tmp_path / "flipped.png", data["image"][::-1])
    inputs = [data["png"], tmp_path / "flipped.png", PROJECT]
    before = [path.read_bytes() for path in inputs]
    headless(f"--output_filename_format={tmp_path}/out/{{nickname}}_{{result_type}}", data["png"], tmp_path / "flipped.png")
    assert [path.read_bytes() for path in inputs] == before  # inputs and project are never modified
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Data_1channel_Probabilities.h5",
                                                                      "flipped_Probabilities.h5"]
    np.testing.assert_array_equal(read_h5(tmp_path / "out/Data_1channel_Probabilities.h5")[0], data["probs"])
    flipped, _ = read_h5(tmp_path / "out/flipped_Probabilities.h5")
    np.testing.assert_allclose(flipped, data["probs"][::-1], atol=1e-5)  # mirror borders: flipping commutes


def test_retrain_agrees_with_the_stored_labels(tmp_path):
    shutil.copy(API / "Data_3D.npy", tmp_path)
    before = PROJECT_3D.read_bytes()
    headless("--retrain", "--export_source=Simple Segmentation", f"--output_filename_format={tmp_path}/seg",
             tmp_path / "Data_3D.npy", project=PROJECT_3D)
    assert PROJECT_3D.read_bytes() == before
    segmentation, _ = read_h5(tmp_path / "seg.h5")
    agree = total = 0
    for slices, labels in open_project(str(PROJECT_3D)).stages[0].labels(0):
        labelled = labels[0, ..., 0] > 0
        predicted = segmentation[slices[1:4]][..., 0]
        agree += int((predicted[labelled] == labels[0, ..., 0][labelled]).sum())
        total += int(labelled.sum())
    assert total > 0 and agree >= 0.9 * total


def test_several_export_sources_in_one_pass(tmp_path):
    """hpc-ilastik's extension: one computation, one file per source, each equal to its own run."""
    image = str(tmp_path / "img.png")
    shutil.copy(API / "Data_1channel.png", image)
    project = f"--project={API / 'PixelClass.ilp'}"
    both = ["--headless", project, "--output_format=numpy", "--quiet",
            f"--output_filename_format={tmp_path}/both/{{nickname}}_{{result_type}}.npy",
            "--export_source=probabilities, Simple Segmentation,Uncertainty", image]
    assert main(both) == 0
    for name in ("Probabilities", "Simple Segmentation", "Uncertainty"):
        single = ["--headless", project, "--output_format=numpy", "--quiet", f"--export_source={name}",
                  f"--output_filename_format={tmp_path}/single/{{nickname}}_{{result_type}}.npy", image]
        assert main(single) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "both" / f"img_{name}.npy"),
                                      np.load(tmp_path / "single" / f"img_{name}.npy"))


def test_several_export_sources_need_result_type_in_the_name(tmp_path, capsys):
    image = str(tmp_path / "img.png")
    shutil.copy(API / "Data_1channel.png", image)
    code = main(["--headless", f"--project={API / 'PixelClass.ilp'}", "--export_source=Probabilities,Uncertainty",
                 f"--output_filename_format={tmp_path}/out.npy", "--output_format=numpy", image])
    assert code == 2 and "{result_type}" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()
