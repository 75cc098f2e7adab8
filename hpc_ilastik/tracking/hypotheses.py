"""Traxels, ilastik's traxel filter, hytra's hypotheses graph and its tracklet contraction.

Sources: ilastik `ilastik/applets/tracking/conservation/opConservationTracking.py` (`track`, `_generate_traxelstore`:
the size/bounding-box filter, the lower size bound raised to maxObj, probabilities clipped to [1e-7, 0.99999999],
divProb stored as [1 - p, p]); hytra `hytra/core/hypothesesgraph.py` (`buildFromProbabilityGenerator`,
`_findNearestNeighbors`, `_traxelMightDivide`, `generateTrackletGraph`).

Node i of a graph is traxel i; traxels are sorted by (frame, label), the order in which hytra inserts its nodes,
so node indices are hytra's node uuids. Links are listed in networkx's edge order of hytra's graph: by source
node, then in the order hytra first added them (forward neighbours nearest first, then the backward check).
That order decides which child of a division gets the lower track id (`lineage.compute_lineage`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

PROB_MIN = 0.0000001  # opConservationTracking clips every detection and division probability to this range
PROB_MAX = 0.99999999


@dataclass(frozen=True)
class Traxels:
    """The objects tracking works on, one row per (frame, label), sorted by frame then label."""

    frame: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64, the object id in the frame's label image
    center: np.ndarray  # (n, 3) float64 RegionCenter as ilastik orders it: x, y, z (z = 0 in 2-D)
    det_prob: np.ndarray  # (n, maxObj + 1) float64 object-count probabilities, clipped
    div_prob: np.ndarray | None  # (n,) float64 P(dividing), clipped; None without divisions

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def max_obj(self) -> int:
        return self.det_prob.shape[1] - 1

    def subset(self, keep: np.ndarray) -> Traxels:
        """The traxels where `keep` is true, order kept."""
        keep = np.asarray(keep, dtype=bool)
        return Traxels(self.frame[keep], self.label[keep], self.center[keep], self.det_prob[keep],
                       None if self.div_prob is None else self.div_prob[keep])


def make_traxels(frame: np.ndarray, label: np.ndarray, center: np.ndarray, det_prob: np.ndarray,
                 div_prob: np.ndarray | None = None, max_obj: int | None = None) -> Traxels:
    """Traxels from per-object arrays in any order: centers padded to x, y, z; probabilities clipped as ilastik.

    `det_prob` is the object-count classifier's output, one column per class ("False Detection", "1 Object", ...);
    hytra reads its first maxObj + 1 columns (all of them when `max_obj` is None; fewer is an error, as in
    ilastik). `div_prob` is the division classifier's probability of the class "Dividing" (column 1 of its output).
    """
    frame = np.asarray(frame, dtype=np.int64).reshape(-1)
    label = np.asarray(label, dtype=np.int64).reshape(-1)
    center = np.asarray(center, dtype=np.float64).reshape(len(frame), -1)
    if center.shape[1] not in (2, 3):
        raise ValueError("the RegionCenter must have 2 or 3 coordinates")
    center = np.pad(center, ((0, 0), (0, 3 - center.shape[1])))
    det_prob = np.clip(np.asarray(det_prob, dtype=np.float64).reshape(len(frame), -1), PROB_MIN, PROB_MAX)
    if max_obj is not None:
        if det_prob.shape[1] < max_obj + 1:
            raise ValueError(f"the object-count classifier has {det_prob.shape[1]} classes, maxObj + 1 = "
                             f"{max_obj + 1} are needed")
        det_prob = det_prob[:, :max_obj + 1]
    if div_prob is not None:
        div_prob = np.clip(np.asarray(div_prob, dtype=np.float64).reshape(-1), PROB_MIN, PROB_MAX)
    order = np.lexsort((label, frame))
    if len(order) > 1 and np.any((frame[order][1:] == frame[order][:-1]) & (label[order][1:] == label[order][:-1])):
        raise ValueError("each (frame, label) may occur only once")
    return Traxels(frame[order], label[order], center[order], det_prob[order],
                   None if div_prob is None else div_prob[order])


def filter_traxels(size: np.ndarray, bbox_min: np.ndarray, bbox_max: np.ndarray, size_range: tuple[float, float],
                   x_range: tuple[float, float], y_range: tuple[float, float], z_range: tuple[float, float],
                   max_obj: int) -> np.ndarray:
    """Which objects `_generate_traxelstore` keeps: size in [max(maxObj, lo), hi), bounding box inside the ranges.

    `bbox_min`/`bbox_max` are Coord<Minimum>/Coord<Maximum> in x, y[, z] (z is 0 for 2-D objects, as ilastik sets
    it). An object is dropped when x_upper < x_range[0] or x_lower >= x_range[1], likewise for y and z, or its size
    is below the lower bound or not below the upper bound. The lower bound is raised to maxObj because the merger
    resolver cannot fit more Gaussians than an object has pixels (`track`).
    """
    size = np.asarray(size, dtype=np.float64).reshape(-1)
    lower = np.asarray(bbox_min, dtype=np.float64).reshape(len(size), -1)
    upper = np.asarray(bbox_max, dtype=np.float64).reshape(len(size), -1)
    lower, upper = (np.pad(b, ((0, 0), (0, 3 - b.shape[1]))) for b in (lower, upper))
    low_size = max(max_obj, size_range[0])
    drop = (size < low_size) | (size >= size_range[1])
    for axis, (lo, hi) in enumerate((x_range, y_range, z_range)):
        drop |= (upper[:, axis] < lo) | (lower[:, axis] >= hi)
    return ~drop


@dataclass(frozen=True)
class HypothesesGraph:
    """Nodes are the traxels; links join a traxel of frame t to one of frame t + 1 (hytra's order, see above)."""

    traxels: Traxels
    links: np.ndarray  # (L, 2) int64 node indices

    @property
    def n_nodes(self) -> int:
        return len(self.traxels)


def _neighbours(tree, ids: np.ndarray, centers: np.ndarray, k: np.ndarray, max_dist: float) -> list[list[int]]:
    """hytra's `_findNearestNeighbors` for each query: all of the frame (in order) if it has <= k objects,
    else the k nearest (nearest first) that lie closer than max_dist."""
    found: list[list[int]] = [[int(i) for i in ids] if len(ids) <= kq else [] for kq in k]
    pending = np.array([len(ids) > kq for kq in k], dtype=bool)
    for kq in np.unique(k[pending]):
        rows = np.flatnonzero(pending & (k == kq))
        dist, index = tree.query(centers[rows], k=int(kq), return_distance=True)
        for row, d, i in zip(rows, dist, index):
            found[row] = [int(ids[j]) for dj, j in zip(d, i) if dj < max_dist]
    return found


def build_hypotheses_graph(traxels: Traxels, max_nearest_neighbors: int = 3, max_dist: float = 200.0,
                           with_divisions: bool = False, div_threshold: float = 0.1) -> HypothesesGraph:
    """hytra's `buildFromProbabilityGenerator` with skipLinks = 1 and the forward-backward check.

    Forward: every traxel of frame t links to its k nearest traxels of t + 1 by RegionCenter (sklearn `KDTree`),
    kept when the distance is < max_dist; when t + 1 has at most k traxels all of them are linked, whatever the
    distance. k is `max_nearest_neighbors`, raised to 2 when divisions are on and the traxel "might divide".
    Backward: every traxel of t + 1 links to its k nearest of t the same way (k never raised). A frame without
    traxels breaks the chain (no gap links; hytra itself fails on an empty frame inside the range).

    hytra's "might divide" test reads `divProb[0]`, which ilastik fills with 1 - P(dividing); so k is raised when
    1 - P(dividing) > div_threshold. That is what runs, and what we do (it only matters for k < 2).
    """
    from sklearn.neighbors import KDTree  # lazy: sklearn's import is slow

    if with_divisions and traxels.div_prob is None and max_nearest_neighbors < 2:
        raise ValueError("division probabilities are needed when divisions are on")
    frames = np.unique(traxels.frame)
    starts = {int(f): s for f, s in zip(frames, np.searchsorted(traxels.frame, frames))}
    stops = {int(f): s for f, s in zip(frames, np.searchsorted(traxels.frame, frames, side="right"))}
    successors: dict[int, list[int]] = {}

    def add(src: int, dst: int) -> None:
        out = successors.setdefault(src, [])
        if dst not in out:
            out.append(dst)

    for t in frames:
        t = int(t)
        if t + 1 not in starts:
            continue
        here = np.arange(starts[t], stops[t])
        there = np.arange(starts[t + 1], stops[t + 1])
        k_forward = np.full(len(here), max_nearest_neighbors, dtype=np.int64)
        if with_divisions and max_nearest_neighbors < 2:
            k_forward[(1.0 - traxels.div_prob[here]) > div_threshold] = 2
        tree_there = KDTree(traxels.center[there], metric="euclidean")
        for src, targets in zip(here, _neighbours(tree_there, there, traxels.center[here], k_forward, max_dist)):
            for dst in targets:
                add(int(src), dst)
        tree_here = KDTree(traxels.center[here], metric="euclidean")
        k_backward = np.full(len(there), max_nearest_neighbors, dtype=np.int64)
        for dst, sources in zip(there, _neighbours(tree_here, here, traxels.center[there], k_backward, max_dist)):
            for src in sources:
                add(src, int(dst))
    links = [(src, dst) for src in sorted(successors) for dst in successors[src]]
    graph = HypothesesGraph(traxels, np.array(links, dtype=np.int64).reshape(-1, 2))
    logger.info("hypotheses graph: %d nodes, %d links", graph.n_nodes, len(graph.links))
    return graph


@dataclass(frozen=True)
class TrackletGraph:
    """hytra's tracklet graph: chains of traxels contracted into one node each."""

    member_start: np.ndarray  # (T + 1,) int64 offsets into member
    member: np.ndarray  # (n,) int64 traxel indices, each tracklet's in time order
    links: np.ndarray  # (L', 2) int64 tracklet indices
    link_origin: np.ndarray  # (L',) int64 the traxel graph's link each one stands for (last member -> first member)

    @property
    def n_nodes(self) -> int:
        return len(self.member_start) - 1

    def members(self, tracklet: int) -> np.ndarray:
        return self.member[self.member_start[tracklet]:self.member_start[tracklet + 1]]

    @property
    def first(self) -> np.ndarray:
        return self.member[self.member_start[:-1]]

    @property
    def last(self) -> np.ndarray:
        return self.member[self.member_start[1:] - 1]


def contract_tracklets(graph: HypothesesGraph) -> TrackletGraph:
    """hytra's `generateTrackletGraph`: contract every link whose source has one outgoing and whose target has one
    incoming link (judged on the uncontracted graph), in link order, except where the contraction would leave a
    node with neither incoming nor outgoing links (judged on the graph contracted so far)."""
    n = graph.n_nodes
    out: list[dict[int, None]] = [dict() for _ in range(n)]  # ordered successor sets
    into: list[set[int]] = [set() for _ in range(n)]
    for src, dst in graph.links.tolist():
        out[src][dst] = None
        into[dst].add(src)
    candidates = [(s, d) for s, d in graph.links.tolist() if len(out[s]) == 1 and len(into[d]) == 1]
    remap = list(range(n))
    members: list[list[int] | None] = [[i] for i in range(n)]
    for src_node, dst_node in candidates:
        src, dest = remap[src_node], remap[dst_node]
        if not into[src] and not out[dest]:
            continue
        members[src].extend(members[dest])
        for target in out[dest]:
            out[src][target] = None
            into[target].discard(dest)
            into[target].add(src)
        for traxel in members[dest]:
            remap[traxel] = src
        del out[src][dest]
        into[dest].clear()
        out[dest] = {}
        members[dest] = None
    alive = [i for i in range(n) if members[i] is not None]
    index = np.full(n, -1, dtype=np.int64)
    index[alive] = np.arange(len(alive))
    sizes = np.array([len(members[i]) for i in alive], dtype=np.int64)
    member_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    member = np.array([m for i in alive for m in members[i]], dtype=np.int64)
    link_index = {(s, d): e for e, (s, d) in enumerate(graph.links.tolist())}
    pairs = [(index[i], index[target], link_index[(members[i][-1], target)]) for i in alive for target in out[i]]
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    logger.info("tracklet graph: %d nodes, %d links (before %d, %d)", len(alive), len(pairs), n, len(graph.links))
    return TrackletGraph(member_start, member, pairs[:, :2].copy(), pairs[:, 2].copy())
