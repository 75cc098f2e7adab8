"""The solved traxel graph and ilastik's lineage and track ids.

Sources: hytra `hytra/core/hypothesesgraph.py` (`insertSolution`: every traxel of a tracklet takes the tracklet's
value, so do the links inside it, the division flag goes to its last traxel; `computeLineage(firstTrackId=2,
firstLineageId=2)`), ilastik `opConservationTracking.track` (allowLengthOneTracks = True) and the CSV plugin
`ilastik/plugins_default/tracking_csv_export.py` (no track/lineage -> -1, no parent -> 0).

`computeLineage`, as hytra runs it: in node order, every node with a value > 0 and no incoming objects starts a
track with the next lineage and track id (both from 2). Then a stack (last in, first out) hands ids down active
links: a dividing node gives each active child (in link order) a new track id, same lineage, and becomes its
parent; any other node passes its ids on; a node reached a second time (an unresolved merger) keeps the first ids.
Nodes never reached have no ids (ilastik draws their lineage as 1, "false detection").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpc_ilastik.tracking.hypotheses import HypothesesGraph, TrackletGraph
from hpc_ilastik.tracking.problem import TrackingSolution

FIRST_TRACK_ID = 2
FIRST_LINEAGE_ID = 2


@dataclass(frozen=True)
class TrackGraph:
    """The traxel graph with a solution, in hytra's networkx order: nodes in insertion order (merger resolution
    removes the mergers and appends the objects it splits them into), links grouped by source node in that order,
    each source's links in the order they were added (which decides the track ids of a division's children)."""

    frame: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64 object id in the frame (new ids for split mergers)
    center: np.ndarray  # (n, 3) float64 x, y, z
    value: np.ndarray  # (n,) int64 number of objects
    division: np.ndarray  # (n,) bool
    merger_label: np.ndarray  # (n,) int64 the merger an object was split from, 0 if none
    links: np.ndarray  # (L, 2) int64 node indices
    link_value: np.ndarray  # (L,) int64

    def node_index(self) -> dict[tuple[int, int], int]:
        """(frame, label) -> node index."""
        return {(int(t), int(i)): n for n, (t, i) in enumerate(zip(self.frame, self.label))}


def solved_graph(graph: HypothesesGraph, tracklets: TrackletGraph | None, solution: TrackingSolution) -> TrackGraph:
    """hytra's `insertSolution`: the solution of the traxel or tracklet graph written onto the traxel graph."""
    traxels = graph.traxels
    n = graph.n_nodes
    value = np.zeros(n, dtype=np.int64)
    division = np.zeros(n, dtype=bool)
    link_value = np.zeros(len(graph.links), dtype=np.int64)
    if tracklets is None:
        value[:] = solution.nodes
        division[:] = solution.divisions
        link_value[:] = solution.links
    else:
        owner = np.repeat(np.arange(tracklets.n_nodes), np.diff(tracklets.member_start))
        value[tracklets.member] = solution.nodes[owner]
        division[tracklets.last] = solution.divisions
        link_value[tracklets.link_origin] = solution.links
        link_index = {(s, d): e for e, (s, d) in enumerate(graph.links.tolist())}
        inside = np.flatnonzero(np.diff(owner) == 0)
        for i in inside:
            link_value[link_index[(int(tracklets.member[i]), int(tracklets.member[i + 1]))]] = \
                solution.nodes[owner[i]]
    return TrackGraph(traxels.frame.copy(), traxels.label.copy(), traxels.center.copy(), value, division,
                      np.zeros(n, dtype=np.int64), graph.links.copy(), link_value)


@dataclass(frozen=True)
class Lineage:
    """Per node of a TrackGraph: ids as ilastik's CSV export writes them."""

    track_id: np.ndarray  # (n,) int64, -1 where none
    lineage_id: np.ndarray  # (n,) int64, -1 where none
    parent_track_id: np.ndarray  # (n,) int64 track id of the dividing parent for a division's child, else 0


def compute_lineage(tracks: TrackGraph, first_track_id: int = FIRST_TRACK_ID,
                    first_lineage_id: int = FIRST_LINEAGE_ID) -> Lineage:
    """hytra's `computeLineage` (see the module docstring)."""
    n = len(tracks.frame)
    active = tracks.link_value > 0
    incoming = np.bincount(tracks.links[:, 1], weights=tracks.link_value, minlength=n)
    out_start = np.concatenate([[0], np.cumsum(np.bincount(tracks.links[active, 0], minlength=n))])
    out_links = np.flatnonzero(active)[np.argsort(tracks.links[active, 0], kind="stable")]
    track = np.full(n, -1, dtype=np.int64)
    lineage = np.full(n, -1, dtype=np.int64)
    parent = np.full(n, -1, dtype=np.int64)
    stack = []
    next_lineage, next_track = first_lineage_id, first_track_id
    for node in np.flatnonzero((incoming == 0) & (tracks.value > 0)):
        stack.append((int(node), next_lineage, next_track))
        next_lineage += 1
        next_track += 1
    while stack:
        node, lineage_id, track_id = stack.pop()
        if track[node] >= 0:
            continue  # several tracks merge here: the first to arrive keeps the node
        track[node], lineage[node] = track_id, lineage_id
        children = tracks.links[out_links[out_start[node]:out_start[node + 1]], 1]
        if tracks.division[node]:
            for child in children:
                parent[child] = node
                stack.append((int(child), lineage_id, next_track))
                next_track += 1
        else:
            stack.extend((int(child), lineage_id, track_id) for child in children)
    parent_track = np.where(parent >= 0, track[np.maximum(parent, 0)], 0)
    return Lineage(track, lineage, parent_track)
