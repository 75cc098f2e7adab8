"""Merger resolution: objects the solver gave two or more objects are split by a Gaussian mixture on their
pixel coordinates, then the links around them are re-solved among the split objects.

Sources: hytra `hytra/core/mergerresolver.py` (`_createUnresolvedGraph`, `_minCostMaxFlowMergerResolving`),
`hytra/core/ilastikmergerresolver.py` (`fitAndRefineNodesForTimestep`, `_computeObjectFeatures`,
`_updateHypothesesGraph`), `hytra/core/jsongraph.py` (`getMergersDetectionsLinksDivisions`, `getMergerLinks`,
`getDivisionsPerTimestep`), `hytra/plugins/merger_resolver/gmm_merger_resolver.py` and ilastik's
`opConservationTracking._resolveMergers` (RANDOM_SEED_MERGER = 42, new ids from the frame's largest label + 1).

The steps as hytra runs them:
1. merger links: active links with a merger (value > 1) at either end; their end nodes form the unresolved graph
   (a merger that also divides is an error); a merger without active links is left as it is;
2. frame by frame, mergers in label order: `GaussianMixture(n_components=value, random_state=42).fit(pixels)`
   (the fits of the previous frame that hytra passes as "initializations" are ignored by scikit-learn's `fit`, which
   re-initialises by k-means); each merger becomes `value` new objects with ids max label + 1, ...; they inherit
   the merger's links (to the new objects where a neighbour was split too);
3. on that graph: dpct's `trackMaxFlow`, the maximum flow from sources (nodes without incoming links, appearance
   cost 0.01) to sinks (no outgoing links, disappearance 0.01) through nodes of capacity 1 (2 for a dividing
   source with two children) costing 1 per unit, along links costing negLog(p) - negLog(1 - p), p =
   exp(-distance / 5) between RegionCenters (a new object's is its Gaussian's mean), at minimum cost. We solve this
   linear program exactly with HiGHS (dpct: lemon's Preflow then CapacityScaling), so only ties may differ;
4. the mergers are replaced by the new objects (value 1 each, whatever the flow), and every re-solved link at a new
   object is added with its flow; an active one first clears the other links out of its source and into its
   target (unless the source divides).
Pixels of a merger go to the component `predict` gives them (`updateLabelImage`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hpc_ilastik import libm
from hpc_ilastik.errors import UserError
from hpc_ilastik.tracking.energies import neg_log
from hpc_ilastik.tracking.lineage import TrackGraph

logger = logging.getLogger(__name__)

RANDOM_SEED_MERGER = 42
TRANSITION_PARAMETER = 5.0  # MergerResolver._minCostMaxFlowMergerResolving's default, the one ilastik uses


@dataclass(frozen=True)
class MergerSplit:
    """One resolved merger: its new object ids, the Gaussians' means, and the new id of each of its pixels."""

    frame: int
    label: int
    new_ids: np.ndarray  # (count,) int64
    means: np.ndarray  # (count, D) float64 in the coordinates' axis order
    pixel_ids: np.ndarray  # (P,) int64, aligned with the coordinates given


class _Digraph:
    """The little of networkx's DiGraph that hytra's resolver relies on: insertion-ordered nodes and arcs."""

    def __init__(self) -> None:
        self.succ: dict[tuple, dict[tuple, None]] = {}
        self.pred: dict[tuple, dict[tuple, None]] = {}
        self.attrs: dict[tuple, dict] = {}

    def add_node(self, node: tuple, **attrs) -> None:
        if node not in self.succ:
            self.succ[node], self.pred[node], self.attrs[node] = {}, {}, {}
        self.attrs[node].update(attrs)

    def add_edge(self, a: tuple, b: tuple) -> None:
        self.add_node(a)
        self.add_node(b)
        self.succ[a][b] = None
        self.pred[b][a] = None

    def remove_node(self, node: tuple) -> None:
        for b in self.succ.pop(node):
            del self.pred[b][node]
        for a in self.pred.pop(node):
            del self.succ[a][node]
        del self.attrs[node]

    def copy(self) -> _Digraph:
        other = _Digraph()
        for node in self.succ:
            other.add_node(node, **self.attrs[node])
        for a, targets in self.succ.items():
            for b in targets:
                other.add_edge(a, b)
        return other

    def edges(self) -> list[tuple[tuple, tuple]]:
        return [(a, b) for a, targets in self.succ.items() for b in targets]


def mergers_to_resolve(tracks: TrackGraph) -> np.ndarray:
    """Node indices of the mergers whose pixels `resolve_mergers` needs: value > 1 with an active link."""
    active = tracks.links[tracks.link_value > 0]
    linked = np.zeros(len(tracks.frame), dtype=bool)
    linked[active.ravel()] = True
    return np.flatnonzero((tracks.value > 1) & linked)


def _unresolved_graph(tracks: TrackGraph) -> _Digraph:
    """`_createUnresolvedGraph` on the merger links, with `division` and `count` per node."""
    key = list(zip(tracks.frame.tolist(), tracks.label.tolist()))
    active = np.flatnonzero(tracks.link_value > 0)
    merger = tracks.value > 1
    children = np.bincount(tracks.links[active, 0], minlength=len(key))
    order = active[np.argsort(tracks.frame[tracks.links[active, 1]], kind="stable")]  # by frame, then link order
    graph = _Digraph()
    for e in order:
        a, b = tracks.links[e]
        if not (merger[a] or merger[b]):
            continue
        for node in (a, b):
            if key[node] in graph.succ:
                continue
            division = bool(tracks.division[node])
            if division and children[node] != 2:
                raise ValueError(f"the division of {key[node]} does not have two children")
            if merger[node] and division:
                raise UserError("Merger resolution: an object is both a merger and a division; retrain the object "
                                "count and division classifiers so that they disagree less")
            graph.add_node(key[node], division=division, count=int(tracks.value[node]) if merger[node] else 1,
                           index=int(node))
        graph.add_edge(key[a], key[b])
    return graph


def _fit(coordinates: np.ndarray, count: int, random_state: int):
    """`resolveMergerForCoords`: a fitted scikit-learn GaussianMixture with `count` components, fitted to the pixels
    in the order ilastik lists them (`np.where` on the x, y, z frame: sorted by x, then y, then z), since k-means'
    random initialisation depends on that order. One thread: a merger has a few thousand pixels, and OpenMP/BLAS
    threads cost more than they save there (10x on a busy node)."""
    from sklearn.mixture import GaussianMixture  # lazy: sklearn's import is slow
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    gmm = GaussianMixture(n_components=count, random_state=random_state)
    with threadpool_limits(limits=1):
        gmm.fit(coordinates[np.lexsort(coordinates.T[::-1])])
    if not gmm.converged_:
        raise RuntimeError("the Gaussian mixture of a merger did not converge")
    return gmm


def _min_cost_max_flow(n_nodes: int, capacity: np.ndarray, node_cost: np.ndarray, sources: np.ndarray,
                       sinks: np.ndarray, links: np.ndarray, link_cost: np.ndarray) -> np.ndarray:
    """Link flows of the cheapest maximum flow (nodes as arcs with capacity and unit cost; appearance
    and disappearance arcs of capacity = the node's, unit cost 0.01), as two exact linear programs."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # lazy: scipy.optimize pulls in scipy.linalg
    from scipy.sparse import coo_matrix

    n_links = len(links)
    # variables: node flows, link flows, appearance flows (sources), disappearance flows (sinks)
    n_vars = n_nodes + n_links + len(sources) + len(sinks)
    upper = np.concatenate([capacity, np.ones(n_links), capacity[sources], capacity[sinks]])
    link_var = n_nodes + np.arange(n_links)
    app_var = n_nodes + n_links + np.arange(len(sources))
    dis_var = n_nodes + n_links + len(sources) + np.arange(len(sinks))
    rows = np.concatenate([links[:, 1], sources, np.arange(n_nodes),  # into a node = its flow
                           n_nodes + links[:, 0], n_nodes + sinks, n_nodes + np.arange(n_nodes)])  # = out of it
    cols = np.concatenate([link_var, app_var, np.arange(n_nodes), link_var, dis_var, np.arange(n_nodes)])
    vals = np.concatenate([np.ones(n_links + len(sources)), -np.ones(n_nodes),
                           np.ones(n_links + len(sinks)), -np.ones(n_nodes)])
    conservation = LinearConstraint(coo_matrix((vals, (rows, cols)), shape=(2 * n_nodes, n_vars)).tocsr(), 0, 0)
    bounds = (np.zeros(n_vars), upper)
    total = np.zeros(n_vars)
    total[app_var] = 1.0
    most = milp(-total, constraints=conservation, integrality=np.ones(n_vars), bounds=Bounds(*bounds))
    value = round(-most.fun) if most.x is not None else 0
    cost = np.concatenate([node_cost, link_cost, np.full(len(sources) + len(sinks), 0.01)])
    fixed = LinearConstraint(total[None, :], value, value)
    best = milp(cost, constraints=[conservation, fixed], integrality=np.ones(n_vars), bounds=Bounds(*bounds))
    if best.x is None:
        raise RuntimeError(f"merger re-linking failed: {best.message}")
    return np.round(best.x[link_var]).astype(np.int64)


def resolve_mergers(tracks: TrackGraph, coordinates: dict[int, np.ndarray], max_label: dict[int, int],
                    random_state: int = RANDOM_SEED_MERGER,
                    transition_parameter: float = TRANSITION_PARAMETER) -> tuple[TrackGraph, list[MergerSplit]]:
    """Split the mergers of `mergers_to_resolve` and re-link them (see the module docstring).

    `coordinates[node]` are the pixel coordinates of that merger, one row per pixel in any order, in ilastik's axis
    order (x, y, z; ilastik includes z = 0 for 2-D frames, and so should the caller); `max_label[frame]` is the
    largest label of that frame's label image. Returns the updated graph (mergers removed, new objects appended)
    and one MergerSplit per merger, in the order hytra adds them.
    """
    unresolved = _unresolved_graph(tracks)
    if not unresolved.succ:
        return tracks, []
    resolved = unresolved.copy()
    centers = {(int(t), int(i)): c for t, i, c in zip(tracks.frame, tracks.label, tracks.center)}
    splits: dict[tuple, MergerSplit] = {}
    for frame in sorted({node[0] for node in unresolved.succ}):
        next_id = int(max_label[frame]) + 1
        for node in sorted(n for n in unresolved.succ if n[0] == frame):
            attrs = unresolved.attrs[node]
            if attrs["count"] < 2:
                continue
            pixels = np.asarray(coordinates[attrs["index"]], dtype=np.float64)
            gmm = _fit(pixels, attrs["count"], random_state)
            new_ids = np.arange(next_id, next_id + attrs["count"], dtype=np.int64)
            next_id += attrs["count"]
            splits[node] = MergerSplit(frame, node[1], new_ids, gmm.means_.copy(), new_ids[gmm.predict(pixels)])
            for new_id, mean in zip(new_ids.tolist(), gmm.means_):
                new_node = (frame, new_id)
                resolved.add_node(new_node, division=False, count=1)
                centers[new_node] = np.pad(mean, (0, max(0, 3 - len(mean))))[:3]
                for target in unresolved.succ[node]:
                    resolved.add_edge(new_node, target)
                for source in unresolved.pred[node]:
                    if source in splits:
                        for earlier in splits[source].new_ids.tolist():
                            resolved.add_edge((source[0], earlier), new_node)
                    else:
                        resolved.add_edge(source, new_node)
            resolved.remove_node(node)

    nodes = list(resolved.succ)
    index = {node: i for i, node in enumerate(nodes)}
    capacity = np.ones(len(nodes), dtype=np.int64)
    for i, node in enumerate(nodes):
        if (not resolved.pred[node] and node in unresolved.succ and unresolved.attrs[node]["division"]
                and len(unresolved.succ[node]) == 2):
            capacity[i] = 2
    edges = resolved.edges()
    pairs = np.array([(index[a], index[b]) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    dist = np.array([np.linalg.norm(centers[b] - centers[a]) for a, b in edges])
    p = libm.exp(-dist / transition_parameter)
    link_cost = neg_log(p) - neg_log(1.0 - p)
    sources = np.array([i for i, node in enumerate(nodes) if not resolved.pred[node]], dtype=np.int64)
    sinks = np.array([i for i, node in enumerate(nodes) if not resolved.succ[node]], dtype=np.int64)
    link_flow = _min_cost_max_flow(len(nodes), capacity, np.ones(len(nodes)), sources, sinks, pairs, link_cost)
    ordered = {node: splits[node] for node in unresolved.succ if node in splits}  # hytra adds them in this order
    logger.info("merger resolution: %d mergers split, %d links re-solved", len(ordered), len(edges))
    return _update_graph(tracks, ordered, resolved, edges, link_flow), list(ordered.values())


def _update_graph(tracks: TrackGraph, splits: dict[tuple, MergerSplit], resolved: _Digraph, edges: list,
                  link_flow: np.ndarray) -> TrackGraph:
    """`_updateHypothesesGraph`: mergers out, their new objects in (value 1), re-solved links at new objects in."""
    key = list(zip(tracks.frame.tolist(), tracks.label.tolist()))
    removed = {node for node in splits}
    keep = np.array([k not in removed for k in key], dtype=bool)
    frame, label, center = [tracks.frame[keep]], [tracks.label[keep]], [tracks.center[keep]]
    merger_label = [tracks.merger_label[keep]]
    for node, split in splits.items():
        count = len(split.new_ids)
        frame.append(np.full(count, node[0], dtype=np.int64))
        label.append(split.new_ids)
        center.append(np.stack([np.pad(m, (0, max(0, 3 - len(m))))[:3] for m in split.means]))
        merger_label.append(np.full(count, node[1], dtype=np.int64))
    frame, label, center, merger_label = (np.concatenate(a) for a in (frame, label, center, merger_label))
    n_new = len(frame) - int(keep.sum())
    value = np.concatenate([tracks.value[keep], np.ones(n_new, dtype=np.int64)])
    division = np.concatenate([tracks.division[keep], np.zeros(n_new, dtype=bool)])
    position = np.cumsum(keep) - 1
    index = {(int(t), int(i)): n for n, (t, i) in enumerate(zip(frame, label))}
    kept_links = keep[tracks.links[:, 0]] & keep[tracks.links[:, 1]]
    links = [tuple(pair) for pair in position[tracks.links[kept_links]].tolist()]
    link_value = tracks.link_value[kept_links].tolist()
    new_labels = {(node[0], int(i)) for node, split in splits.items() for i in split.new_ids}
    out_of: dict[int, list[int]] = {}
    into: dict[int, list[int]] = {}
    for e, (s, d) in enumerate(links):
        out_of.setdefault(s, []).append(e)
        into.setdefault(d, []).append(e)
    for (a, b), flow in zip(edges, link_flow.tolist()):
        if a not in new_labels and b not in new_labels:
            continue
        src, dst = index[a], index[b]
        if flow > 0 and not resolved.attrs[a]["division"]:
            for e in out_of.get(src, []) + into.get(dst, []):
                link_value[e] = 0
        out_of.setdefault(src, []).append(len(links))
        into.setdefault(dst, []).append(len(links))
        links.append((src, dst))
        link_value.append(flow)
    links = np.array(links, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(links[:, 0], kind="stable")  # networkx's edge order: by source, each in insertion order
    return TrackGraph(frame, label, center, value, division, merger_label, links[order],
                      np.array(link_value, dtype=np.int64)[order])
