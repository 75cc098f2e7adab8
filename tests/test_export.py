"""export.py: export sources, list-string options, renormalisation, axes, cut-outs and file names."""

import logging
import os

import numpy as np
import pytest

from hpc_ilastik.errors import UserError
from hpc_ilastik.io import export, formats, paths
from hpc_ilastik.pixel import pipeline
from hpc_ilastik.project.common import ExportSettings
from hpc_ilastik.workflows import export as workflow_export
from tests.conftest import API

AUTOCONTEXT = ["Probabilities Stage 2", "Simple Segmentation Stage 2", "Uncertainty Stage 2", "Features Stage 2",
               "Labels Stage 2", "Input Stage 2", "Probabilities Stage 1", "Simple Segmentation Stage 1",
               "Uncertainty Stage 1", "Features Stage 1", "Labels Stage 1", "Input Stage 1", "Probabilities All Stages"]
PIXEL = ["Probabilities", "Simple Segmentation", "Uncertainty", "Features", "Labels"]


# ---- export sources --------------------------------------------------------------------------------


def test_simple_segmentation_is_one_based_argmax():
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.0, 0.0, 0.0]], np.float32)
    seg = pipeline.simple_segmentation(p)
    assert seg.dtype == np.uint8 and seg.shape == (3, 1)
    assert seg[:, 0].tolist() == [2, 1, 1]  # all-zero (masked) pixels become class 1


def test_uncertainty_is_one_minus_margin_of_top_two():
    p = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05], [0.5, 0.5, 0.0]], np.float32)
    u = pipeline.uncertainty(p)
    assert u.dtype == np.float32 and u.shape == (3, 1)
    np.testing.assert_allclose(u[:, 0], [0.8, 0.15, 1.0], atol=1e-6)
    single = pipeline.uncertainty(np.full((4, 5, 1), 0.7, np.float32))
    assert single.shape == (4, 5, 1) and not single.any()


def test_export_sources_on_ilastik_probabilities():
    p = np.load(API / "res-Data_1channel_pc1xyc.npy")  # ilastik's own yxc probabilities, 2 classes
    seg, unc = pipeline.simple_segmentation(p), pipeline.uncertainty(p)
    assert seg.shape == (128, 128, 1) and set(np.unique(seg)) <= {1, 2}
    assert np.array_equal(seg[..., 0] == 2, p[..., 1] > p[..., 0])
    np.testing.assert_allclose(unc[..., 0], 1 - np.abs(p[..., 0] - p[..., 1]), atol=1e-6)


def test_resolve_export_source_ignores_case_and_accepts_the_manuals_misspelling():
    assert workflow_export.resolve_export_source("simple segmentation", PIXEL) == "Simple Segmentation"
    assert workflow_export.resolve_export_source("  UNCERTAINTY ", PIXEL) == "Uncertainty"
    assert workflow_export.resolve_export_source("Propabilities All Stages", AUTOCONTEXT) == "Probabilities All Stages"
    with pytest.raises(UserError, match="Valid options are: Probabilities, Simple Segmentation"):
        workflow_export.resolve_export_source("Probability", PIXEL)
    with pytest.raises(UserError):
        workflow_export.resolve_export_source("Propabilities All Stages", PIXEL)


# ---- list strings and normalisation settings ---------------------------------------------------------


def test_parse_list_string_like_ilastik():
    assert export.parse_list_string("(0,1)") == [0, 1]
    assert export.parse_list_string("[0.0,255]") == [0.0, 255]
    assert export.parse_list_string("[(0,None,0),(1,None,10)]") == [[0, None, 0], [1, None, 10]]
    for bad in ("abc", "5", "(0,1", "{'a': 1}"):
        with pytest.raises(UserError):
            export.parse_list_string(bad)


def test_parse_range_needs_two_numbers():
    assert export.parse_range("(0,255)", "--export_drange") == (0, 255)
    assert export.parse_range([np.float64(0.5), np.int64(2)], "x") == (0.5, 2)
    for bad in ("(1,2,3)", "(1)", "(None,1)", '("a",1)'):
        with pytest.raises(UserError, match="--export_drange"):
            export.parse_range(bad, "--export_drange")


def test_resolve_normalization_rule(caplog):
    assert export.resolve_normalization("(0.0,1.0)", "(0,255)") == ((0.0, 1.0), (0, 255))
    assert export.resolve_normalization(None, None) == (None, None)
    with pytest.raises(UserError, match="Cannot renormalize to custom export_drange without a specified "
                                        "pipeline_result_drange"):
        export.resolve_normalization(None, "(0,255)")
    with caplog.at_level(logging.WARNING, logger="hpc_ilastik.io.export"):
        assert export.resolve_normalization("(0,1)", None) == (None, None)
    assert "ignored" in caplog.text
    # stored project settings apply when all four are stored; the command line wins when both are given
    stored = ExportSettings(input_min=0.0, input_max=1.0, export_min=0, export_max=100)
    assert export.resolve_normalization(None, None, stored) == ((0.0, 1.0), (0, 100))
    assert export.resolve_normalization(None, None, ExportSettings(input_min=0.0, input_max=1.0)) == (None, None)
    assert export.resolve_normalization("(0,2)", "(0,10)", stored) == ((0, 2), (0, 10))
    assert export.resolve_normalization("(0,2)", None, stored) == ((0.0, 1.0), (0, 100))


# ---- values ----------------------------------------------------------------------------------------


def test_normalize_rounds_float_to_int_since_ilastik_1_4_2():
    p = np.array([0.5, 0.3, 0.302, 1.0, 0.0, 0.002], np.float32)
    out = export.normalize(p, (0, 1), (0, 255), np.uint8)
    assert out.dtype == np.uint8
    # 127.5 → 128 and 76.5 → 76 (half to even: float32(0.3)·255 is exactly 76.5 in float32), 77.01 → 77, 0.51 → 1
    assert out.tolist() == [128, 76, 77, 255, 0, 1]


def test_normalize_does_not_clip():
    p = np.array([-0.1, 1.2], np.float32)
    as_float = export.normalize(p, (0, 1), (0, 255), np.float32)
    np.testing.assert_allclose(as_float, [-25.5, 306.0], rtol=1e-6)
    with np.errstate(invalid="ignore"):
        wrapped = np.array([-26.0, 306.0], np.float32).astype(np.uint8)  # numpy's own cast of the rounded values
    assert export.normalize(p, (0, 1), (0, 255), np.uint8).tolist() == wrapped.tolist()


def test_normalize_ratio_is_float32_and_empty_input_range_maps_to_start():
    p = np.array([0.25], np.float32)
    ratio = np.float32(1000.0 / 3.0)
    assert export.normalize(p, (0, 3), (0, 1000), np.float32)[0] == np.float32(0.25) * ratio
    assert export.normalize(p, (2, 2), (7, 9), np.float32).tolist() == [7.0]


def test_normalize_integer_source_truncates_with_ilastiks_numpy_types():
    seg = np.array([1, 2, 3], np.uint8)
    # integer start: uint8·float32 arithmetic, 3·float32(10/3) rounds to 10.0 in float32
    assert export.normalize(seg, (0, 3), (0, 10), np.uint8).tolist() == [3, 6, 10]
    # float start: Python float promotes to float64, where 3·float32(10/3) = 9.99999976 truncates to 9
    assert export.normalize(seg, (0.0, 3.0), (0, 10), np.uint8).tolist() == [3, 6, 9]
    assert export.normalize(seg, (1, 3), (0, 100), np.int16).tolist() == [0, 50, 100]
    assert export.normalize(np.array([0], np.uint8), (-1, 1), (0, 10), np.uint8).tolist() == [5]


def test_convert_dtype_is_a_plain_cast():
    assert export.convert_dtype(np.array([0.9, 1.0, 0.2], np.float32), "uint8").tolist() == [0, 1, 0]
    assert export.convert_dtype(np.array([-1.5, 2.7]), np.int8).tolist() == [-1, 2]
    x = np.ones(3, np.float32)
    assert export.convert_dtype(x, np.float32) is x


# ---- cut-outs and axes -----------------------------------------------------------------------------


def test_ilastik_axes_drop_singleton_t_and_z_only():
    assert export.ilastik_axes((1, 1, 5, 6, 1)) == "yxc"
    assert export.ilastik_axes((1, 3, 5, 6, 2)) == "zyxc"
    assert export.ilastik_axes((4, 1, 1, 6, 1)) == "tyxc"
    assert export.ilastik_axes((2, 3, 5, 6, 1)) == "tzyxc"


def test_parse_cutout_in_ilastik_internal_order():
    shape = (1, 1, 100, 80, 3)  # a yx PNG's export: ilastik order yxc
    cut = export.parse_cutout("[(10,10,None),(60,60,None)]", shape)
    assert cut == (slice(0, 1), slice(0, 1), slice(10, 60), slice(10, 60), slice(0, 3))
    assert export.parse_cutout("[(0,5,1),(0,0,2)]", shape) == (slice(0, 1), slice(0, 1), slice(0, 100), slice(5, 80),
                                                               slice(1, 2))
    volume = (1, 20, 30, 40, 2)  # zyxc
    assert export.parse_cutout("[(2,0,0,0),(4,None,None,1)]", volume)[1:] == (
        slice(2, 4), slice(0, 30), slice(0, 40), slice(0, 1))


def test_parse_cutout_also_takes_tzyxc_tuples():
    assert export.parse_cutout("[(0,0,1,2,0),(1,1,3,4,3)]", (1, 1, 100, 80, 3)) == (
        slice(0, 1), slice(0, 1), slice(1, 3), slice(2, 4), slice(0, 3))


@pytest.mark.parametrize("text, message", [
    ("[(0,0,0),(101,10,3)]", r"stops at 101 on axis y, beyond the image \(shape \(1, 1, 100, 80, 3\)"),
    ("[(0,0,0),(10,10,4)]", "beyond the image"),
    ("[(20,0,0),(10,10,3)]", r"empty \(20:10\)"),
    ("[(0,80,0),(None,None,None)]", "empty"),
    ("[(0,0),(10,10)]", "needs 3 .*yxc.* or 5"),
    ("[(0,0,0),(10,10)]", "two tuples of equal length"),
    ("[(0,0,0)]", "two tuples"),
    ("[(-1,0,0),(10,10,3)]", "non-negative integer"),
    ("[(0.5,0,0),(10,10,3)]", "non-negative integer"),
])
def test_parse_cutout_errors(text, message):
    with pytest.raises(UserError, match=message):
        export.parse_cutout(text, (1, 1, 100, 80, 3))


def test_output_axes_default_is_the_inputs_order_plus_c():
    assert export.output_axes("yx", None, (1, 1, 5, 6, 2)) == "yxc"
    assert export.output_axes("cyx", None, (1, 1, 5, 6, 2)) == "cyx"
    assert export.output_axes("tzyxc", None, (1, 1, 5, 6, 2)) == "tzyxc"
    assert export.output_axes("yx", "XYC", (1, 1, 5, 6, 2)) == "xyc"
    assert export.output_axes("yx", "tczyx", (1, 1, 5, 6, 2)) == "tczyx"


@pytest.mark.parametrize("requested, message", [
    ("yxq", "Invalid axes specified output_axis_order"),
    ("", "Invalid axes"),
    ("yxcc", "more than once"),
    ("tyx", "leaves out axis 'c' of size 2"),
    ("zyxc", "leaves out axis 't' of size 4"),
])
def test_output_axes_errors(requested, message):
    with pytest.raises(UserError, match=message):
        export.output_axes("tyxc", requested, (4, 1, 5, 6, 2))


def test_reorder_shape_slices_and_data():
    x = np.arange(1 * 1 * 2 * 3 * 4).reshape(1, 1, 2, 3, 4)
    assert export.reorder_shape(x.shape, "cxy") == (4, 3, 2)
    out = export.reorder(x, "cxy")
    assert out.shape == (4, 3, 2) and out[3, 2, 1] == x[0, 0, 1, 2, 3]
    slices = (slice(0, 1), slice(0, 1), slice(2, 4), slice(5, 7), slice(0, 3))
    assert export.reorder_slices(slices, "cxy") == (slice(0, 3), slice(5, 7), slice(2, 4))
    with pytest.raises(UserError):
        export.reorder_shape((1, 1, 2, 3, 4), "yx")


# ---- file names ------------------------------------------------------------------------------------

REGION = (slice(0, 1), slice(0, 1), slice(10, 60), slice(20, 80), slice(0, 3))
NAMES = dict(dataset_dir="/data/run1", nickname="img", result_type="Simple Segmentation", region=REGION)


def test_format_path_fills_every_placeholder():
    template = ("{dataset_dir}/{nickname}_{result_type}_{roi}_t{t_start}-{t_stop}_z{z_start}-{z_stop}"
                "_y{y_start}-{y_stop}_x{x_start}-{x_stop}_c{c_start}-{c_stop}")
    assert paths.format_path(template, **NAMES) == (
        "/data/run1/img_Simple Segmentation_[(10, 20, 0), (60, 80, 3)]_t0-1_z0-1_y10-60_x20-80_c0-3")


def test_format_path_roi_uses_ilastik_order_and_format_specs():
    volume = (slice(0, 1), slice(2, 5), slice(0, 8), slice(0, 9), slice(0, 1))
    assert paths.format_path("{roi}", **{**NAMES, "region": volume}) == "[(2, 0, 0, 0), (5, 8, 9, 1)]"
    assert paths.format_path("{roi}", **{**NAMES, "region": volume, "roi_axes": "tzyxc"}) == (
        "[(0, 2, 0, 0, 0), (1, 5, 8, 9, 1)]")
    assert paths.format_path("{nickname}_{x_start:05d}_{slice_index:04d}", **NAMES, slice_index=7) == "img_00020_0007"


def test_format_path_leaves_unknown_placeholders_and_malformed_templates():
    assert paths.format_path("{nickname}_{slice_index}_{foo:03d}_{bar!r}", **NAMES) == "img_{slice_index}_{foo:03d}_{bar!r}"
    assert paths.format_path("{nickname}_{oops", **NAMES) == "{nickname}_{oops"
    assert paths.format_path("{nickname}", **{**NAMES, "nickname": "stack_*"}) == "stack_"
    with pytest.raises(UserError, match="nickname"):
        paths.format_path("{nickname:d}", **NAMES)


def test_format_path_expands_home():
    assert paths.format_path("~/out/{nickname}", **NAMES) == os.path.expanduser("~") + "/out/img"


def test_output_path_extension_and_base_dir(tmp_path):
    kwargs = dict(dataset_dir="/data", nickname="img", result_type="Probabilities", region=REGION)
    assert paths.output_path("{dataset_dir}/{nickname}_{result_type}", "compressed hdf5", base_dir="/x",
                              **kwargs) == "/data/img_Probabilities.h5"
    # a dotted nickname swallows the rest of the name, as in ilastik
    assert paths.output_path("{dataset_dir}/{nickname}_{result_type}", "hdf5", base_dir="/x",
                              **{**kwargs, "nickname": "cells.ome"}) == "/data/cells.h5"
    assert paths.output_path("out/{nickname}.tiff", "png", base_dir=str(tmp_path), **kwargs) == str(tmp_path / "out/img.png")
    assert paths.output_path("/a.b/c", "numpy", base_dir="/x", **kwargs) == "/a.b/c.npy"
    assert paths.output_path("/o/{nickname}_{slice_index}", "png sequence", base_dir="/x", **kwargs) == (
        "/o/img_{slice_index}.png")


@pytest.mark.parametrize("fmt, ext", [
    ("hdf5", "h5"), ("compressed hdf5", "h5"), ("n5", "n5"), ("compressed n5", "n5"), ("numpy", "npy"),
    ("single-scale OME-Zarr", "zarr"), ("multi-scale ome-zarr", "zarr"), ("zarr", "zarr"), ("tif", "tif"),
    ("tiff", "tiff"), ("jpeg", "jpeg"), ("png sequence", "png"), ("multipage tiff", "tiff"),
    ("multipage tiff sequence", "tiff"), ("hdr", "hdr"),
])
def test_with_extension(fmt, ext):
    assert formats.with_extension("/d/name.old", fmt) == f"/d/name.{ext}"
    assert formats.with_extension("/d.x/name", fmt) == f"/d.x/name.{ext}"


@pytest.mark.parametrize("fmt, message", [("dvid", "not supported"), ("blockwise hdf5", "not supported"),
                                          ("xv", "Unknown output format")])
def test_with_extension_refuses(fmt, message):
    with pytest.raises(UserError, match=message):
        formats.with_extension("/d/name", fmt)


def test_output_formats_in_ilastiks_order():
    images = ["bmp", "gif", "hdr", "jpeg", "jpg", "pbm", "pgm", "png", "pnm", "ppm", "ras", "tif", "tiff"]
    assert list(formats.OUTPUT_FORMATS) == images + [f"{e} sequence" for e in images] + [
        "multipage tiff", "multipage tiff sequence", "hdf5", "compressed hdf5", "n5", "compressed n5",
        "single-scale OME-Zarr", "multi-scale OME-Zarr", "numpy", "dvid", "blockwise hdf5", "zarr"]


def test_slice_index_padding_rule():
    assert paths.slice_index_digits(0, 9) == 1
    assert paths.slice_index_digits(0, 10) == 2  # 00 … 09, as ilastik
    assert paths.slice_index_digits(95, 5) == 3
    assert paths.pad_slice_index("/o/z{slice_index}.png", 0, 10) == "/o/z{slice_index:02d}.png"
    assert paths.pad_slice_index("/o/z{slice_index:04d}.png", 0, 10) == "/o/z{slice_index:04d}.png"
    with pytest.raises(UserError, match="must contain the '{slice_index}' field"):
        paths.pad_slice_index("/o/z.png", 0, 10)
