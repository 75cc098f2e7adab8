"""The region adjacency graph and ilastikrag's edge features against the real ilastikrag + vigra (references
in tests/data/ilastikrag_oracle.h5, see its `provenance`), on the superpixels of ilastik's multicut GUI test
(3-D) and a slice of them with an id 0 (2-D); and the block-by-block graph and features equal, bit for bit,
to the whole image's for several block layouts."""

import io
import itertools
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.errors import UserError
from hpc_ilastik.graphs.edge_features import (
    STANDARD,
    assemble_features,
    edge_feature_matrix,
    edge_value_channels,
    merge_superpixel_tables,
    plan_features,
    standard_edge_statistics,
    superpixel_channels,
    superpixel_features,
    supported_features,
)
from hpc_ilastik.graphs.rag import (
    block_edge_pixels,
    block_superpixel_boxes,
    edge_window,
    merge_edge_pixels,
    merge_superpixel_boxes,
    region_adjacency_graph,
)
from tests.conftest import FIXTURES

ORACLE = Path(__file__).parent / "data" / "ilastikrag_oracle.h5"
CASES = ("2d_all", "2d_shorthand", "3d_all", "3d_shorthand", "3d_project")


def _hashed(shape):
    """The oracle's continuous "Hashed" channel: a multiplicative hash of the raster index in [-300, 700)."""
    index = np.arange(int(np.prod(shape)), dtype=np.uint64)
    fraction = ((index * np.uint64(2654435761)) % np.uint64(2 ** 32)).astype(np.float64) / 2.0 ** 32
    return (fraction * 1000.0 - 300.0).astype(np.float32).reshape(shape)


@pytest.fixture(scope="module")
def images():
    """{ndim: (labels, {channel name: float32 array})} as the oracle script built them."""
    with zipfile.ZipFile(FIXTURES / "outputdata" / "testEdgeTrainingWithMulticutReference.zip") as z:
        with h5py.File(io.BytesIO(z.read("superpixels.h5")), "r") as f:
            sp3 = f["exported_data"][..., 0]
    with h5py.File(FIXTURES / "inputdata" / "3d1c-synthetic.h5", "r") as f:
        raw3 = f["data"][..., 0].astype(np.float32)
    with h5py.File(FIXTURES / "inputdata" / "3d1c-synthetic_Probabilities.h5", "r") as f:
        prob3 = f["exported_data"][:].astype(np.float32)
    sp2 = np.ascontiguousarray(sp3[:, :, 3])
    sp2[sp2 == sp2[0, 0]] = 0
    out = {}
    for ndim, labels, raw, prob in ((3, sp3, raw3, prob3), (2, sp2, raw3[:, :, 3], prob3[:, :, 3])):
        channels = {"Raw Data": raw, "Probabilities-0": prob[..., 0], "Probabilities-1": prob[..., 1],
                    "Hashed": _hashed(labels.shape)}
        out[ndim] = (labels, {k: np.ascontiguousarray(v) for k, v in channels.items()})
    out["project"] = (sp3, {"Raw Data-0": out[3][1]["Raw Data"], "Raw Data-1": out[3][1]["Hashed"],
                            "Probabilities-0": out[3][1]["Probabilities-0"],
                            "Probabilities-1": out[3][1]["Probabilities-1"]})
    return out


def _case(images, key):
    """(labels, channels in stack order, FeatureNames, {reference name: array or attribute}) of one oracle case."""
    with h5py.File(ORACLE, "r") as f:
        group = f[key]
        ref = {**dict(group.attrs)}
        group.visititems(lambda name, node: ref.update({name: node[()]}) if isinstance(node, h5py.Dataset) else None)
    labels, arrays = images["project" if key == "3d_project" else int(key[0])]
    channels = [(name, arrays[name]) for name in json.loads(ref["channels"])]
    return labels, channels, json.loads(ref["feature_names"]), ref


@pytest.mark.parametrize("key", ["2d_all", "3d_all"])
def test_graph_and_edge_pixels_are_ilastikrags(images, key):
    labels, _, _, ref = _case(images, key)
    graph = region_adjacency_graph(labels)
    assert np.array_equal(graph.edges, ref["edges"])
    assert (graph.edges[:, 0] < graph.edges[:, 1]).all()
    if key == "2d_all":
        assert graph.edges[0, 0] == 0  # 0 is an ordinary superpixel id
    for axis, name in enumerate("zyx"[-labels.ndim:]):
        # ilastikrag's dense edge table of this axis: raster order, the lower voxel's coordinates
        assert np.array_equal(graph.coordinates(axis), ref[f"edge_pixels/{name}/coords"].astype(np.int64))
        assert np.array_equal(graph.pixel_edge[axis], ref[f"edge_pixels/{name}/edge"].astype(np.int64))


@pytest.mark.parametrize("key", CASES)
def test_features_are_ilastikrags_bit_for_bit(images, key, record_property):
    labels, channels, feature_names, ref = _case(images, key)
    edges, matrix, columns = edge_feature_matrix(labels, channels, feature_names)
    assert columns == json.loads(ref["columns"])
    assert np.array_equal(edges, ref["edges"])
    expected = ref["features"]
    assert matrix.dtype == np.float32 and matrix.shape == expected.shape
    differing = [c for j, c in enumerate(columns) if not np.array_equal(matrix[:, j], expected[:, j])]
    assert not differing, differing
    record_property("figures", f"{key}: {matrix.shape[1]} columns x {matrix.shape[0]} edges identical to "
                               "ilastikrag's float32")


@pytest.mark.parametrize("key", ["2d_all", "3d_all"])
def test_edge_statistics_are_vigras_float64(images, key):
    """Before the float32 cast: vigra accumulates each axis' edge pixels in raster order and merges the axes
    (one accumulator over all of an edge's pixels differs in variance, skewness, kurtosis for ~half the edges)."""
    labels, channels, _, ref = _case(images, key)
    for name in ("Hashed", "Probabilities-1"):
        graph = region_adjacency_graph(labels, dict(channels)[name][..., None])
        ours = standard_edge_statistics(graph, 0, histogram=True)
        expected = ref[f"vigra_edge_statistics/{name}"]
        assert ours.shape == expected.shape == (len(graph.edges), len(STANDARD))
        assert np.array_equal(ours, expected, equal_nan=True), name


def test_supported_names_and_errors():
    with h5py.File(ORACLE, "r") as f:
        for ndim in (2, 3):
            assert sorted(supported_features(ndim)) == sorted(json.loads(f.attrs[f"supported_{ndim}d"]))
    names = ["Raw Data", "Probabilities"]
    with pytest.raises(UserError, match="standard_edge_median") as error:
        plan_features(names, {"Raw Data": ["standard_edge_mean", "standard_edge_median"]}, 3)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="edgeregion_edge_volume of channel 'Probabilities'.*2-D"):
        plan_features(names, {"Probabilities": ["edgeregion_edge_volume"]}, 2)
    plans = plan_features(names, {"Probabilities": ["Standard_SP_Count", "standard_edge_mean"], "Other": ["x"]}, 3)
    assert [p.channel for p in plans] == ["Probabilities"]  # channels not in the stack are ignored, as ilastik does
    assert plans[0].columns() == ["Probabilities standard_edge_mean", "Probabilities standard_sp_count_sum",
                                  "Probabilities standard_sp_count_difference"]


def _blocks(shape, block_shape):
    for start in itertools.product(*(range(0, n, b) for n, b in zip(shape, block_shape))):
        yield start, tuple(min(a + b, n) for a, b, n in zip(start, block_shape, shape))


def _blockwise(labels, channels, feature_names, block_shape):
    """Edges, features and columns computed block by block, as the workflow runs them: edge pixels of each
    block read with its one-voxel overlap; superpixel boxes and value ranges per block; the superpixel
    features of each superpixel on its box."""
    plans = plan_features([name for name, _ in channels], feature_names, labels.ndim)
    arrays = dict(channels)
    edge_values = np.stack([arrays[name] for name in edge_value_channels(plans)], axis=-1)
    sp_channels = superpixel_channels(plans)
    sp_values = np.stack([arrays[name] for name in sp_channels], axis=-1)
    parts, boxes = [], []
    for start, stop in _blocks(labels.shape, block_shape):
        window = edge_window(start, stop, labels.shape)
        parts.append(block_edge_pixels(labels[window], edge_values[window], start, stop, labels.shape))
        owned = tuple(slice(a, b) for a, b in zip(start, stop))
        boxes.append(block_superpixel_boxes(labels[owned], sp_values[owned], start))
    graph = merge_edge_pixels(parts)
    boxes = merge_superpixel_boxes(boxes)
    ranges = [(float(lo), float(hi)) for lo, hi in zip(boxes.value_min, boxes.value_max)]
    sp_names = [next(p.sp for p in plans if p.channel == name) for name in sp_channels]
    per_box = [superpixel_features(labels[boxes.box(k)], sp_values[boxes.box(k)], sp_names, ranges,
                                   start=boxes.lower[k], ids=[sp]) for k, sp in enumerate(boxes.ids)]
    tables = {name: merge_superpixel_tables([tables[c] for tables in per_box]) for c, name in enumerate(sp_channels)}
    matrix, columns = assemble_features(graph, plans, tables)
    return graph, matrix, columns


@pytest.mark.parametrize("key, layouts", [
    ("3d_all", [(16, 16, 16), (21, 55, 31), (7, 13, 5), (1, 56, 32)]),  # (21, 55, 31): last blocks 1 voxel thick
    ("2d_all", [(9, 55), (63, 1), (64, 56)]),
])
def test_blockwise_equals_whole_image(images, key, layouts, record_property):
    labels, channels, feature_names, _ = _case(images, key)
    plans = plan_features([name for name, _ in channels], feature_names, labels.ndim)
    values = np.stack([dict(channels)[name] for name in edge_value_channels(plans)], axis=-1)
    whole = region_adjacency_graph(labels, values)
    edges, expected, columns = edge_feature_matrix(labels, channels, feature_names)
    for block_shape in layouts:
        graph, matrix, block_columns = _blockwise(labels, channels, feature_names, block_shape)
        assert np.array_equal(graph.edges, edges)
        for axis in range(labels.ndim):
            assert np.array_equal(graph.pixels.keys[axis], whole.pixels.keys[axis])
            assert np.array_equal(graph.pixels.pairs[axis], whole.pixels.pairs[axis])
            assert np.array_equal(graph.pixel_edge[axis], whole.pixel_edge[axis])
            assert graph.pixels.values[axis].tobytes() == whole.pixels.values[axis].tobytes()
        assert block_columns == columns
        assert matrix.tobytes() == expected.tobytes(), block_shape
    record_property("figures", f"{key}: {len(layouts)} block layouts bit-identical to the whole image "
                               f"({expected.shape[1]} columns x {expected.shape[0]} edges)")


def test_blocks_must_not_overlap(images):
    labels = images[2][0]
    whole = block_edge_pixels(labels, None, (0, 0), labels.shape, labels.shape)
    with pytest.raises(ValueError, match="overlap"):
        merge_edge_pixels([whole, whole])
    with pytest.raises(ValueError, match="edge window"):
        block_edge_pixels(labels[:10], None, (0, 0), (10, labels.shape[1]), labels.shape)
