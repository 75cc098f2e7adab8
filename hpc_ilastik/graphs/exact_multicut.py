"""The multicut problem's basics (validation, energy, the partition a cut induces) and its exact solution: an
integer linear program solved with scipy's bundled HiGHS (`scipy.optimize.milp`), cycle inequalities added lazily.

The problem is nifty's (include/nifty/graph/opt/multicut/multicut_objective.hxx): minimise the summed weight
of the cut edges, positive weights attractive. The ILP follows nifty's `multicut_ilp.hxx` (after Andres et
al., "Globally optimal closed-surface segmentation for connectomics", ECCV 2012): one binary x_e per edge
(1 = cut), objective Σ w_e x_e, and for every cut edge whose endpoints are still joined by uncut edges the
cycle inequality x_e <= Σ_{f on the path} x_f over a shortest such path (breadth-first, so the cycles are
short); re-solve until no cut edge is violated. nifty separates on the rounded solution the same way.
Meant for graphs of a few thousand edges (`MAX_EXACT_EDGES`). The heuristics and ilastik's solver names are
in `hpc_ilastik.graphs.multicut`. scipy is imported inside the functions: scipy.sparse and scipy.optimize import
scipy.linalg, 0.3 s that every run would pay at start-up.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import LinearConstraint
    from scipy.sparse import csr_matrix

logger = logging.getLogger(__name__)

MAX_EXACT_EDGES = 5000


def multicut_energy(edges: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> float:
    """Sum of the weights of the cut edges (those whose endpoints carry different labels)."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(labels)
    cut = labels[edges[:, 0]] != labels[edges[:, 1]]
    return float(np.sum(np.asarray(weights, dtype=np.float64)[cut]))


def check_problem(n_nodes: int, edges: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges as (E, 2) int64 and the weights as float64; ValueError unless u < v < n, unique and sorted."""
    edges = np.ascontiguousarray(edges, dtype=np.int64).reshape(-1, 2)
    weights = np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
    if len(weights) != len(edges):
        raise ValueError(f"{len(edges)} edges but {len(weights)} weights")
    if len(edges) and (edges.min() < 0 or edges.max() >= n_nodes or np.any(edges[:, 0] >= edges[:, 1])):
        raise ValueError(f"edges must be pairs u < v of nodes 0..{n_nodes - 1}")
    if len(edges) > 1:
        first, second = edges[:-1], edges[1:]
        if not np.all((first[:, 0] < second[:, 0]) | ((first[:, 0] == second[:, 0]) & (first[:, 1] < second[:, 1]))):
            raise ValueError("edges must be unique and sorted")
    if not np.all(np.isfinite(weights)):
        raise ValueError("edge weights must be finite")
    return edges, weights


def labels_from_cut(n_nodes: int, edges: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Connected components of the uncut edges, numbered 0..k-1 in order of first appearance over the nodes."""
    from scipy.sparse.csgraph import connected_components  # lazy, see above
    keep = ~np.asarray(cut, dtype=bool)
    graph = adjacency_matrix(n_nodes, edges[keep])
    _, components = connected_components(graph, directed=False)
    _, first = np.unique(components, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[components]


def adjacency_matrix(n_nodes: int, edges: np.ndarray, edge_ids: np.ndarray | None = None) -> csr_matrix:
    """Symmetric sparse adjacency with sorted column indices; stored value = edge id + 1 (1 when not given)."""
    from scipy.sparse import coo_matrix  # lazy, see above
    data = np.ones(len(edges), np.int64) if edge_ids is None else np.asarray(edge_ids, np.int64) + 1
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    matrix = coo_matrix((np.concatenate([data, data]), (rows, cols)), shape=(n_nodes, n_nodes)).tocsr()
    matrix.sort_indices()
    return matrix


def _violated_cycles(n_nodes: int, edges: np.ndarray, cut: np.ndarray) -> list[np.ndarray]:
    """For each cut edge inside a component of uncut edges: the edge ids of its shortest closing path."""
    from scipy.sparse.csgraph import breadth_first_order  # lazy, see above
    labels = labels_from_cut(n_nodes, edges, cut)
    violated = np.flatnonzero(cut & (labels[edges[:, 0]] == labels[edges[:, 1]]))
    if len(violated) == 0:
        return []
    uncut = np.flatnonzero(~cut)
    edge_of = adjacency_matrix(n_nodes, edges[uncut], uncut)
    cycles = []
    predecessors, source = None, -1
    for e in violated:  # edges are sorted, so those sharing a source are consecutive: one BFS each
        u, v = edges[e]
        if u != source:
            source = u
            _, predecessors = breadth_first_order(edge_of, u, directed=False, return_predecessors=True)
        path = [e]
        node = v
        while node != u:
            prev = predecessors[node]
            path.append(int(edge_of[prev, node]) - 1)
            node = prev
        cycles.append(np.asarray(path, dtype=np.int64))
    return cycles


def exact_multicut(n_nodes: int, edges: np.ndarray, weights: np.ndarray, time_limit: float = 300.0) -> np.ndarray:
    """The optimal multicut (consecutive labels by first appearance); ValueError above `MAX_EXACT_EDGES` edges.

    If `time_limit` seconds run out before the optimum is proven, a warning is logged and the partition of the
    last solution found is returned (its uncut edges' components: a valid, possibly worse, multicut).
    """
    from scipy.optimize import Bounds, milp  # lazy, see above
    edges, weights = check_problem(n_nodes, edges, weights)
    n_edges = len(edges)
    if n_edges > MAX_EXACT_EDGES:
        raise ValueError(f"the exact multicut solver handles at most {MAX_EXACT_EDGES} edges; this graph has "
                         f"{n_edges}: choose a heuristic solver such as kernighan-lin")
    if n_edges == 0:
        return np.arange(n_nodes, dtype=np.int64)
    deadline = time.monotonic() + time_limit
    rows: list[np.ndarray] = []
    cut = weights < 0  # the optimum without cycle inequalities
    while cycles := _violated_cycles(n_nodes, edges, cut):
        rows.extend(cycles)
        remaining = deadline - time.monotonic()
        result = None
        if remaining > 0:
            result = milp(weights, integrality=np.ones(n_edges), bounds=Bounds(0, 1),
                          constraints=_cycle_constraints(rows, n_edges), options={"time_limit": remaining})
            if result.x is not None:
                cut = result.x > 0.5
        if result is None or result.status != 0:
            logger.warning("exact multicut stopped (%s, time limit %g s) with %d cycle inequalities; returning the "
                           "partition of the last solution, not proven optimal",
                           "time limit reached" if result is None else result.message, time_limit, len(rows))
            break
    logger.debug("exact multicut: %d cycle inequalities", len(rows))
    return labels_from_cut(n_nodes, edges, cut)


def _cycle_constraints(cycles: list[np.ndarray], n_edges: int) -> LinearConstraint:
    """Rows x_e - Σ_{f on the path} x_f <= 0; each cycle lists its cut edge e first."""
    from scipy.optimize import LinearConstraint  # lazy, see above
    from scipy.sparse import csr_matrix
    row_ids = np.repeat(np.arange(len(cycles)), [len(c) for c in cycles])
    cols = np.concatenate(cycles)
    data = -np.ones(len(cols))
    data[np.cumsum([0] + [len(c) for c in cycles[:-1]])] = 1.0
    matrix = csr_matrix((data, (row_ids, cols)), shape=(len(cycles), n_edges))
    return LinearConstraint(matrix, -np.inf, 0.0)
