"""ilastikrag's edge features for ilastik's Multicut workflow: `standard_edge_*` (vigra statistics of the edge
pixels), `standard_sp_*` (vigra statistics of the two superpixels, as sum and difference) and
`edgeregion_edge_*` (PCA of the edge pixel coordinates), with ilastikrag's names and column order.

Facts from ilastikrag (`rag.py` `compute_features`, `_get_feature_groups`, `_append_*_features_for_values`;
`accumulators/standard/{standard_edge,standard_sp}_accumulator.py`, `vigra_util.py`;
`accumulators/edgeregion/edgeregion_edge_accumulator.py`) and ilastik's `OpComputeEdgeFeatures`
(`applets/edgeTraining/opEdgeTraining.py`), ilastik-workflows-spec.md §C.2:
* names are lower-cased and grouped: `edgeregion_edge`, then `standard_edge`, then `standard_sp`; each
  group keeps the given order, with its shorthands (`…_quantiles`, `…_regionradii`, `…_regionaxes`)
  expanded at its end. When a channel asks for both edge groups, ilastikrag deletes the `edgeregion`
  columns again (the `standard_edge` pass removes every `_edge_` column not named in its own group).
* standard_edge: one vigra accumulator per axis over that axis' edge pixels (raster order), merged axis
  after axis (vigra's operator+=); histogram range [min, max + 1.0] of all edge values (the `if
  histogram_range:` in standard_edge_accumulator.py is always true; the sum in double, as numpy 1.x promotes
  float32 + 1.0); NaN skewness/kurtosis → 0.
* standard_sp: vigra over the whole label image (no ignore label, histogram over the global min/max);
  per edge `<name>_sum` = a + b and `<name>_difference` = |a − b| in float32, both raised to the power
  float32(1/ndim) for names ending in `_count` or `_sum`. `regionaxes_<k><a>` is vigra's
  RegionAxes[k, a] (row k = coordinate axis k, column a = eigenvector a; x, y, z), as ilastikrag indexes it.
* edgeregion: per edge the coordinates (z, y, x columns, float32) of its pixels, axis tables concatenated;
  covariance = centred.T · centred / n in float32, numpy `eigh`, descending, eigenvectors as rows,
  negative eigenvalues → 0, radii = sqrt; area = r0·r1, volume = r0·r1·r2.
* ilastik prefixes every column with "<channel name> ", channels in stack order.

vigra's arithmetic is `hpc_ilastik.objects.accumulators`' (its two passes and its histogram quantiles, the
latter compiled here with numba); `_merge` is vigra's merge of two accumulator chains
(`include/vigra/accumulator.hxx`, `Central<PowerSum<2..4>>::operator+=`). Superpixel statistics of a block
layout are computed per superpixel on its bounding box (`rag.block_superpixel_boxes`), so every superpixel is
accumulated whole, in raster order, as vigra does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from hpc_ilastik import libm
from hpc_ilastik.errors import UserError
from hpc_ilastik.graphs.rag import RegionAdjacencyGraph, region_adjacency_graph
from hpc_ilastik.objects import accumulators
from hpc_ilastik.objects.accumulators import HISTOGRAM_BINS, region_statistics
from hpc_ilastik.objects.standard import feature_value

log = logging.getLogger(__name__)

QUANTILES = ("0", "10", "25", "50", "75", "90", "100")
_STATISTICS = ("count", "sum", "minimum", "maximum", "mean", "variance", "kurtosis", "skewness")
STANDARD = _STATISTICS + tuple(f"quantiles_{q}" for q in QUANTILES)  # the statistics of `_segment_statistics`
_GROUPS = ("edgeregion_edge", "standard_edge", "standard_sp")


def _radii(ndim: int) -> list[str]:
    return [f"regionradii_{k}" for k in range(ndim)]


def _axes(ndim: int) -> list[str]:
    return [f"regionaxes_{k}{'xyz'[a]}" for k in range(ndim) for a in range(ndim)]


def _shorthands(group: str, ndim: int) -> dict[str, list[str]]:
    """A group's shorthand names and their expansion, in the order ilastikrag expands them."""
    quantiles = {"quantiles": [f"quantiles_{q}" for q in QUANTILES]}
    region = {"regionradii": _radii(ndim), "regionaxes": _axes(ndim)}
    parts = {"standard_edge": quantiles, "standard_sp": {**quantiles, **region}, "edgeregion_edge": region}[group]
    return {f"{group}_{short}": [f"{group}_{name}" for name in names] for short, names in parts.items()}


def supported_features(ndim: int) -> list[str]:
    """ilastikrag's `Rag.supported_features()` for a label image of `ndim` dimensions."""
    names = []
    for group in _GROUPS:
        shorthands = _shorthands(group, ndim)
        if group == "edgeregion_edge":
            names += [f"{group}_area"] + ([f"{group}_volume"] if ndim == 3 else [])
        else:
            names += [f"{group}_{statistic}" for statistic in _STATISTICS]
        names += list(shorthands) + [name for expansion in shorthands.values() for name in expansion]
    return names


@dataclass(frozen=True)
class ChannelFeatures:
    """The expanded feature names of one voxel channel, per group (columns in this order)."""

    channel: str
    edgeregion: tuple[str, ...]
    edge: tuple[str, ...]
    sp: tuple[str, ...]

    def columns(self) -> list[str]:
        """ilastik's column names for this channel."""
        sp = [f"{name}_{kind}" for name in self.sp for kind in ("sum", "difference")]
        return [f"{self.channel} {name}" for name in (*self.edgeregion, *self.edge, *sp)]


def plan_features(channel_names: Sequence[str], feature_names: Mapping[str, Sequence[str]],
                  ndim: int) -> list[ChannelFeatures]:
    """The channels (in stack order) that have feature names, each with its expanded names; UserError for a
    name ilastikrag does not offer for `ndim`-D superpixels."""
    offered = set(supported_features(ndim))
    plans = []
    for channel in channel_names:
        names = [str(name).lower() for name in feature_names.get(channel, ())]
        unknown = [name for name in names if name not in offered]
        if unknown:
            raise UserError(f"the project asks for the edge feature(s) {', '.join(unknown)} of channel '{channel}', "
                            f"which ilastikrag does not offer for {ndim}-D superpixels")
        if not names:
            continue
        groups = {group: _expand([n for n in names if n.startswith(group + "_")], group, ndim) for group in _GROUPS}
        if groups["edgeregion_edge"] and groups["standard_edge"]:
            log.warning("channel '%s' asks for edgeregion and standard_edge features: ilastikrag drops the "
                        "edgeregion columns in that case, and so do we", channel)
            groups["edgeregion_edge"] = ()
        plans.append(ChannelFeatures(channel, groups["edgeregion_edge"], groups["standard_edge"],
                                     groups["standard_sp"]))
    return plans


def _expand(names: list[str], group: str, ndim: int) -> tuple[str, ...]:
    """ilastikrag's shorthand expansion (appended at the end); a repeated name keeps its first place."""
    names = list(dict.fromkeys(names))
    for short, expansion in _shorthands(group, ndim).items():
        if short in names:
            names.remove(short)
            names += expansion
    return tuple(dict.fromkeys(names))


def edge_value_channels(plans: Sequence[ChannelFeatures]) -> list[str]:
    """The channels whose edge values the graph must carry (standard_edge features), in this order."""
    return [plan.channel for plan in plans if plan.edge]


def superpixel_channels(plans: Sequence[ChannelFeatures]) -> list[str]:
    """The channels with superpixel features, in stack order."""
    return [plan.channel for plan in plans if plan.sp]




@njit(cache=True, nogil=True, error_model="numpy")
def _merge(mine: np.ndarray, other: np.ndarray) -> None:
    """vigra's `a += b` of two single-band chains given as (count, sum, min, max, M2, M3, M4): each central
    moment merges with the counts, means and lower moments of both sides as they were before the merge
    (accumulator.hxx, `Central<PowerSum<2..4>>::operator+=`, applied from the highest order down)."""
    n1, n2 = mine[0], other[0]
    n = n1 + n2
    mean1, mean2 = mine[1] / n1, other[1] / n2
    delta = mean2 - mean1
    weight4 = n1 * n2 * (n1 * n1 - n1 * n2 + n2 * n2) / (n * n) / n
    mine[6] += (other[6] + weight4 * math.pow(delta, 4.0)
                + 6.0 / (n * n) * (delta * delta) * (n1 * n1 * other[4] + n2 * n2 * mine[4])
                + 4.0 / n * delta * (n1 * other[5] - n2 * mine[5]))
    weight3 = n1 * n2 * (n1 - n2) / (n * n)
    mine[5] += other[5] + weight3 * math.pow(delta, 3.0) + 3.0 / n * delta * (n1 * other[4] - n2 * mine[4])
    mine[4] += other[4] + n1 * n2 / (n1 + n2) * ((mean1 - mean2) * (mean1 - mean2))
    mine[0] = n
    mine[1] += other[1]
    mine[2] = min(mine[2], other[2])
    mine[3] = max(mine[3], other[3])


@njit(cache=True, nogil=True, error_model="numpy")
def _segment_statistics(values: np.ndarray, starts: np.ndarray, stops: np.ndarray, offset: float, scale: float,
                        bins: int, out: np.ndarray) -> None:
    """out[s] = the STANDARD statistics of segment s, made of the parts values[starts[k, s]:stops[k, s]]
    (k = 0, 1, ...: the axes), each accumulated by vigra in order and the parts merged in order; histogram of
    `bins` bins (0: none, quantiles left NaN) mapped by (offset, scale)."""
    total, part = np.zeros(7), np.zeros(7)
    moments = np.zeros((6, 1))  # sums, M2, min, max, M3, M4 of one part
    histogram, part_histogram = np.zeros(bins), np.zeros(bins)
    outliers, part_outliers = np.zeros(2), np.zeros(2)
    no_coords, scatter, empty = np.zeros((0, 0), np.int64), np.zeros(1), np.zeros(0)
    for s in range(starts.shape[1]):
        total[0] = 0.0
        histogram[:] = 0.0
        outliers[:] = 0.0
        for k in range(starts.shape[0]):
            a, b = starts[k, s], stops[k, s]
            if a == b:
                continue
            chunk = values[a:b].reshape((b - a, 1))
            moments[:] = 0.0
            part_histogram[:] = 0.0
            part_outliers[:] = 0.0
            accumulators.first_pass(chunk, no_coords, moments[0], moments[1], moments[2], moments[3], scatter,
                                     empty, empty, empty, empty)
            accumulators.second_pass(chunk, moments[0], float(b - a), moments[4], moments[5], part_histogram,
                                      part_outliers, offset, scale)
            part[0] = float(b - a)
            for j in range(6):
                part[(1, 4, 2, 3, 5, 6)[j]] = moments[j, 0]
            if total[0] == 0.0:
                total[:] = part
            else:
                _merge(total, part)
            histogram += part_histogram
            outliers += part_outliers
        n, m2 = total[0], total[4]
        for j in range(8):
            out[s, j] = (n, total[1], total[2], total[3], total[1] / n, m2 / n, n * total[6] / (m2 * m2) - 3.0,
                         math.sqrt(n) * total[5] / math.pow(m2, 1.5))[j]
        quantiles = accumulators.standard_quantiles(histogram, outliers, total[2], total[3], n, scale, offset) if bins else \
            np.full(len(QUANTILES), np.nan)
        for j in range(len(QUANTILES)):
            out[s, 8 + j] = quantiles[j]
        if bins:
            out[s, 8 + len(QUANTILES) - 1] = total[3]  # ilastikrag takes quantiles_100 from the maximum


def _statistics(values: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                histogram_range: tuple[float, float] | None) -> np.ndarray:
    """(S, len(STANDARD)) float64: vigra's statistics of the segments (`_segment_statistics`)."""
    table = np.zeros((starts.shape[1], len(STANDARD)))
    offset, scale = accumulators.histogram_mapping(*histogram_range) if histogram_range else (0.0, 1.0)
    _segment_statistics(np.ascontiguousarray(values, dtype=np.float32), starts, stops, offset, scale,
                        HISTOGRAM_BINS if histogram_range else 0, table)
    return table


def _columns(table: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(S, len(names)) float32: ilastikrag's `<group>_<statistic>` columns of a STANDARD table; NaN kurtosis
    and skewness become 0 (`vigra_util.append_vigra_features_to_dataframe`)."""
    picked = table[:, [STANDARD.index(name.split("_", 2)[2]) for name in names]]
    for j, name in enumerate(names):
        if name.endswith(("_kurtosis", "_skewness")):
            picked[np.isnan(picked[:, j]), j] = 0.0
    return picked.astype(np.float32)


def _wants_histogram(names: Sequence[str]) -> bool:
    return any("_quantiles_" in name for name in names)


def standard_edge_statistics(graph: RegionAdjacencyGraph, column: int, histogram: bool) -> np.ndarray:
    """(E, len(STANDARD)) float64: vigra's statistics of each edge's values in `column`, one accumulator per
    axis merged axis after axis; with `histogram`, quantiles over [min, max + 1.0] of all edge values."""
    values, starts, stops = [], [], []
    offset = 0
    for axis in range(len(graph.pixels.image_shape)):
        order, bounds = graph.segments(axis)
        values.append(graph.pixels.values[axis][order, column])
        starts.append(bounds[:-1] + offset)
        stops.append(bounds[1:] + offset)
        offset += len(order)
    values = np.concatenate(values)
    histogram_range = (float(values.min()), float(values.max()) + 1.0) if histogram and len(values) else None
    return _statistics(values, np.array(starts), np.array(stops), histogram_range)


def standard_edge_features(graph: RegionAdjacencyGraph, column: int, names: Sequence[str]) -> np.ndarray:
    """(E, len(names)) float32 standard_edge features of the graph's edge values in `column`."""
    return _columns(standard_edge_statistics(graph, column, _wants_histogram(names)), names)


def edgeregion_features(graph: RegionAdjacencyGraph, names: Sequence[str]) -> np.ndarray:
    """(E, len(names)) float32 edgeregion features: PCA of each edge's pixel coordinates, as ilastikrag."""
    ndim = len(graph.pixels.image_shape)
    coords, edge = [], []
    for axis in range(ndim):
        coords.append(graph.coordinates(axis))
        edge.append(graph.pixel_edge[axis])
    edge = np.concatenate(edge)
    order = np.argsort(edge, kind="stable")  # by edge, then axis, then raster order
    coords = np.asfortranarray(np.concatenate(coords)[order], dtype=np.float32)
    bounds = np.searchsorted(edge[order], np.arange(len(graph.edges) + 1))
    covariance = np.zeros((len(graph.edges), ndim, ndim), dtype=np.float32)
    for e in range(len(graph.edges)):
        centred = np.asfortranarray(coords[bounds[e]:bounds[e + 1]])  # a DataFrame's .values: column-major
        centred -= centred.mean(axis=0)
        matrix = centred.transpose().dot(centred)
        matrix[:] /= len(centred)
        covariance[e] = matrix
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = eigenvalues[:, ::-1]
    eigenvectors = eigenvectors[:, ::-1].transpose(0, 2, 1)
    eigenvalues[eigenvalues < 0.0] = 0.0
    radii = np.sqrt(eigenvalues, out=eigenvalues)
    axes = "zyx"[-ndim:]
    columns = []
    for name in names:
        feature = name[len("edgeregion_edge_"):]
        if feature.startswith("regionradii_"):
            columns.append(radii[:, int(feature[-1])])
        elif feature.startswith("regionaxes_"):
            columns.append(eigenvectors[:, int(feature[-2]), axes.index(feature[-1])])
        elif feature == "area":
            columns.append(np.prod(radii[:, :2], axis=1))
        else:  # volume
            columns.append(np.prod(radii, axis=1))
    return np.stack(columns, axis=1).astype(np.float32)


@dataclass(frozen=True)
class SuperpixelTable:
    """The standard_sp features of one channel per superpixel: ids (S,) uint32 sorted, columns name → (S,)
    float32."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]


def superpixel_features(labels: np.ndarray, values: np.ndarray, names: Sequence[Sequence[str]],
                        value_ranges: Sequence[tuple[float, float]], start: Sequence[int] | None = None,
                        ids: Sequence[int] | None = None) -> list[SuperpixelTable]:
    """Per channel of `values` (channels last) the standard_sp features `names[c]` of the superpixels `ids`
    (default: all), each of which must lie entirely in `labels`; `start` places the array in the image (vigra's
    coordinates are absolute), `value_ranges[c]` is the channel's (min, max) over the whole image."""
    start = np.zeros(labels.ndim, np.int64) if start is None else np.asarray(start, dtype=np.int64)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")  # each superpixel's voxels in raster order
    present, first = np.unique(flat[order], return_index=True)
    bounds = np.append(first, len(flat))
    wanted = present if ids is None else np.asarray(ids, dtype=present.dtype)
    k = np.searchsorted(present, wanted)
    if np.any(k >= len(present)) or np.any(present[np.minimum(k, len(present) - 1)] != wanted):
        raise ValueError("a requested superpixel is not in the given labels")
    starts, stops = bounds[k][None], bounds[k + 1][None]
    geometric = sorted({name for channel in names for name in channel if _is_geometric(name)})
    geometry = _geometry(order, starts[0], stops[0], labels.shape, start, geometric)
    flat_values = values.reshape(-1, values.shape[-1])
    tables = []
    for c, channel_names in enumerate(names):
        statistics = [name for name in channel_names if not _is_geometric(name)]
        histogram_range = value_ranges[c] if _wants_histogram(statistics) else None
        found = _columns(_statistics(flat_values[order, c], starts, stops, histogram_range), statistics) \
            if statistics else None
        columns = {name: geometry[name] if _is_geometric(name) else found[:, statistics.index(name)]
                   for name in channel_names}
        tables.append(SuperpixelTable(wanted.astype(np.uint32), columns))
    return tables


def _is_geometric(name: str) -> bool:
    return "_regionradii_" in name or "_regionaxes_" in name


def _geometry(order: np.ndarray, starts: np.ndarray, stops: np.ndarray, shape: tuple[int, ...], start: np.ndarray,
              names: Sequence[str]) -> dict[str, np.ndarray]:
    """vigra's RegionRadii / RegionAxes of each superpixel (voxels order[starts[s]:stops[s]], x, y, z
    coordinates); `regionaxes_<k><a>` = RegionAxes[k, a]."""
    ndim = len(shape)
    rows = np.zeros((len(starts), len(names)), dtype=np.float64)
    for s, (a, b) in enumerate(zip(starts, stops) if names else ()):
        coords = np.stack(np.unravel_index(order[a:b], shape)[::-1], axis=1) + start[::-1]
        stats = region_statistics(np.zeros((b - a, 0), np.float32), coords)
        radii, axes = feature_value(stats, "RegionRadii"), feature_value(stats, "RegionAxes")
        for j, name in enumerate(names):
            suffix = name.rsplit("_", 1)[1]
            rows[s, j] = radii[int(suffix)] if "_regionradii_" in name else axes[int(suffix[0]) * ndim
                                                                                  + "xyz".index(suffix[1])]
    return {name: rows[:, j].astype(np.float32) for j, name in enumerate(names)}


def merge_superpixel_tables(parts: Sequence[SuperpixelTable]) -> SuperpixelTable:
    """One channel's table from tables of disjoint sets of superpixels."""
    ids = np.concatenate([p.ids for p in parts])
    order = np.argsort(ids, kind="stable")
    columns = {name: np.concatenate([p.columns[name] for p in parts])[order] for name in parts[0].columns}
    return SuperpixelTable(ids[order], columns)


def superpixel_edge_features(edges: np.ndarray, table: SuperpixelTable, names: Sequence[str],
                             ndim: int) -> np.ndarray:
    """(E, 2·len(names)) float32: `_sum` and `_difference` of each feature over the edge's two superpixels."""
    rows = [np.searchsorted(table.ids, edges[:, k]) for k in range(2)]
    for k in range(2):
        if np.any(rows[k] >= len(table.ids)) or np.any(table.ids[np.minimum(rows[k], len(table.ids) - 1)]
                                                        != edges[:, k]):
            raise ValueError("the superpixel table lacks superpixels of the graph")
    root = np.float32(1.0 / ndim)
    columns = []
    for name in names:
        a, b = table.columns[name][rows[0]], table.columns[name][rows[1]]
        total, difference = a + b, np.abs(a - b)
        if name.endswith("_count") or name.endswith("_sum"):
            total, difference = libm.powf(total, root), libm.powf(difference, root)
        columns += [total, difference]
    return np.stack(columns, axis=1) if columns else np.zeros((len(edges), 0), np.float32)


def assemble_features(graph: RegionAdjacencyGraph, plans: Sequence[ChannelFeatures],
                      superpixels: Mapping[str, SuperpixelTable]) -> tuple[np.ndarray, list[str]]:
    """The (E, F) float32 feature matrix and its column names, from the graph (its edge values in the order
    of `edge_value_channels(plans)`) and the superpixel tables of `superpixel_channels(plans)`."""
    ndim = len(graph.pixels.image_shape)
    edge_columns = edge_value_channels(plans)
    blocks, columns = [], []
    for plan in plans:
        if plan.edgeregion:
            blocks.append(edgeregion_features(graph, plan.edgeregion))
        if plan.edge:
            blocks.append(standard_edge_features(graph, edge_columns.index(plan.channel), plan.edge))
        if plan.sp:
            blocks.append(superpixel_edge_features(graph.edges, superpixels[plan.channel], plan.sp, ndim))
        columns += plan.columns()
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(graph.edges), 0), np.float32)
    return matrix.astype(np.float32, copy=False), columns


def edge_feature_matrix(labels: np.ndarray, channels: Sequence[tuple[str, np.ndarray]],
                        feature_names: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """ilastik's edge features of a whole (z, y, x) or (y, x) uint32 superpixel image: the edges (E, 2) uint32,
    the feature matrix (E, F) float32 and the column names "<channel name> <feature>"."""
    arrays = {name: np.asarray(array, dtype=np.float32) for name, array in channels}
    plans = plan_features([name for name, _ in channels], feature_names, labels.ndim)
    edge_channels = edge_value_channels(plans)
    values = np.stack([arrays[name] for name in edge_channels], axis=-1) if edge_channels else None
    graph = region_adjacency_graph(labels, values)
    sp_plans = {plan.channel: plan for plan in plans if plan.sp}
    tables: dict[str, SuperpixelTable] = {}
    if sp_plans:
        sp_values = np.stack([arrays[name] for name in sp_plans], axis=-1)
        ranges = [(float(arrays[name].min()), float(arrays[name].max())) for name in sp_plans]
        found = superpixel_features(labels, sp_values, [plan.sp for plan in sp_plans.values()], ranges)
        tables = dict(zip(sp_plans, found))
    matrix, columns = assemble_features(graph, plans, tables)
    return graph.edges, matrix, columns
