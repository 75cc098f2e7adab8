"""The tracking problem both solvers minimise: weighted per-state costs on a hypotheses graph, its constraints,
the energy of an assignment and a check of its feasibility.

The model is multiHypothesesTracking's conservation model (`src/segmentationhypothesis.cpp`, the "ILP" solver
ilastik offers), which dpct's flow solver approximates (`src/flowgraph.cpp`):
* every node n has a state x_n in 0..maxObj (the number of objects it holds), every link e a state y_e in 0..maxObj,
  and every node an appearance a_n and a disappearance d_n in 0..maxObj;
* Σ_in y + a_n = x_n and Σ_out y + d_n = x_n + z_n, where z_n in {0, 1} is the division of n (a division sends
  one more object out than came in);
* a division needs x_n = 1 and two outgoing links in state 1 ("requireSeparateChildrenOfDivision"), and excludes
  disappearance; appearance excludes every active incoming link and disappearance every active outgoing link
  ("allowPartialMergerAppearance" false);
* a division variable exists where the node has division features and more than one outgoing link (mht adds none
  otherwise);
* energy = Σ w_det D_n[x_n] + Σ w_trans T_e[y_e] + Σ w_div V_n[z_n] + Σ w_app A_n[a_n] + Σ w_dis R_n[d_n], with the
  weights [transWeight, detWeight, divWeight, appearanceCost, disappearanceCost] (dpct's `weightedSumOfFeatures`,
  states share weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpc_ilastik.tracking.energies import EnergyFeatures


@dataclass(frozen=True)
class TrackingProblem:
    """Weighted costs per state: column k is the cost of state k."""

    links: np.ndarray  # (L, 2) int64 node indices
    detection: np.ndarray  # (N, K) float64, K = maxObj + 1
    appearance: np.ndarray  # (N, K)
    disappearance: np.ndarray  # (N, K)
    transition: np.ndarray  # (L, K)
    division: np.ndarray  # (N, 2), NaN rows where the node has no division variable

    @property
    def n_nodes(self) -> int:
        return len(self.detection)

    @property
    def max_obj(self) -> int:
        return self.detection.shape[1] - 1

    @property
    def has_division(self) -> np.ndarray:
        return ~np.isnan(self.division[:, 0])

    def subproblem(self, nodes: np.ndarray) -> tuple[TrackingProblem, np.ndarray]:
        """The problem restricted to `nodes` (sorted indices) and the links among them, and those links' indices."""
        index = np.full(self.n_nodes, -1, dtype=np.int64)
        index[nodes] = np.arange(len(nodes))
        keep = np.flatnonzero((index[self.links[:, 0]] >= 0) & (index[self.links[:, 1]] >= 0))
        return TrackingProblem(index[self.links[keep]], self.detection[nodes], self.appearance[nodes],
                               self.disappearance[nodes], self.transition[keep], self.division[nodes]), keep


@dataclass(frozen=True)
class TrackingSolution:
    """States of every node and link, divisions, the derived appearances/disappearances and the energy."""

    nodes: np.ndarray  # (N,) int64
    links: np.ndarray  # (L,) int64
    divisions: np.ndarray  # (N,) bool
    appearances: np.ndarray  # (N,) int64
    disappearances: np.ndarray  # (N,) int64
    energy: float
    solver: str  # "ilp", "flow", or "ilp+flow" when components went to both


def energy_weights(trans_weight: float, det_weight: float, div_weight: float, appearance_cost: float,
                   disappearance_cost: float) -> np.ndarray:
    """The weight vector in hytra's order [trans, det, div, appearance, disappearance].

    ilastik's `OpConservationTracking.track` sets detWeight = 10.0 whatever it is given ("FIXME"); the structured
    learning workflow calls the same `track`, so its stored detection weight is replaced by 10 too.
    """
    return np.array([trans_weight, det_weight, div_weight, appearance_cost, disappearance_cost], dtype=np.float64)


def tracking_problem(links: np.ndarray, features: EnergyFeatures, weights: np.ndarray) -> TrackingProblem:
    """Weighted costs from (convexified) features; division variables only where a node has > 1 outgoing link."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    w_trans, w_det, w_div, w_app, w_dis = (float(w) for w in weights)
    out_degree = np.bincount(links[:, 0], minlength=len(features.detection))
    division = w_div * features.division
    division[out_degree < 2] = np.nan
    return TrackingProblem(links, w_det * features.detection, w_app * features.appearance,
                           w_dis * features.disappearance, w_trans * features.transition, division)


def _flows(problem: TrackingProblem, link_states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ incoming and Σ outgoing link states per node."""
    n = problem.n_nodes
    into = np.bincount(problem.links[:, 1], weights=link_states, minlength=n).astype(np.int64)
    out = np.bincount(problem.links[:, 0], weights=link_states, minlength=n).astype(np.int64)
    return into, out


def make_solution(problem: TrackingProblem, nodes: np.ndarray, links: np.ndarray, divisions: np.ndarray,
                  solver: str) -> TrackingSolution:
    """A solution from node/link/division states: appearances, disappearances and the energy derived."""
    nodes = np.asarray(nodes, dtype=np.int64)
    links = np.asarray(links, dtype=np.int64)
    divisions = np.asarray(divisions, dtype=bool)
    into, out = _flows(problem, links)
    appearances = nodes - into
    disappearances = nodes + divisions - out
    return TrackingSolution(nodes, links, divisions, appearances, disappearances,
                            solution_energy(problem, nodes, links, divisions), solver)


def solution_energy(problem: TrackingProblem, nodes: np.ndarray, links: np.ndarray, divisions: np.ndarray) -> float:
    """The energy of an assignment (appearances and disappearances follow from conservation); inf if a state lies
    outside 0..maxObj."""
    nodes = np.asarray(nodes, dtype=np.int64)
    links = np.asarray(links, dtype=np.int64)
    divisions = np.asarray(divisions, dtype=bool)
    into, out = _flows(problem, links)
    k = problem.max_obj
    appear, disappear = nodes - into, nodes + divisions - out
    if any(np.any((s < 0) | (s > k)) for s in (nodes, links, appear, disappear)):
        return float("inf")  # states outside 0..maxObj have no cost: infeasible
    rows = np.arange(problem.n_nodes)
    has = problem.has_division
    total = (problem.detection[rows, nodes].sum() + problem.appearance[rows, appear].sum()
             + problem.disappearance[rows, disappear].sum()
             + problem.transition[np.arange(len(links)), links].sum()
             + problem.division[has, divisions[has].astype(np.int64)].sum())
    return float(total)


def solution_violations(problem: TrackingProblem, solution: TrackingSolution) -> list[str]:
    """Every constraint the solution breaks, one line each (empty when feasible)."""
    k = problem.max_obj
    nodes, links, div = solution.nodes, solution.links, solution.divisions
    into, out = _flows(problem, links)
    appear, disappear = nodes - into, nodes + div - out
    problems = []
    for name, states in (("node", nodes), ("link", links), ("appearance", appear), ("disappearance", disappear)):
        bad = np.flatnonzero((states < 0) | (states > k))
        if len(bad):
            problems.append(f"{name} states outside 0..{k} at {bad[:10].tolist()}")
    if np.any(div & ~problem.has_division):
        problems.append(f"divisions without a division variable at {np.flatnonzero(div & ~problem.has_division)[:10]}")
    if np.any(div & (nodes != 1)):
        problems.append(f"divisions of nodes not in state 1 at {np.flatnonzero(div & (nodes != 1))[:10].tolist()}")
    if np.any(div & (disappear > 0)):
        problems.append("divisions with a disappearance")
    ones_out = np.bincount(problem.links[:, 0], weights=links == 1, minlength=problem.n_nodes)
    if np.any(div & (ones_out < 2)):
        problems.append("divisions without two outgoing links in state 1")
    active_in = np.bincount(problem.links[:, 1], weights=links > 0, minlength=problem.n_nodes)
    active_out = np.bincount(problem.links[:, 0], weights=links > 0, minlength=problem.n_nodes)
    if np.any((appear > 0) & (active_in > 0)):
        problems.append("appearance together with active incoming links")
    if np.any((disappear > 0) & (active_out > 0)):
        problems.append("disappearance together with active outgoing links")
    if not np.isclose(solution.energy, solution_energy(problem, nodes, links, div), rtol=1e-9, atol=1e-9):
        problems.append("the stated energy is not the energy of the states")
    return problems


def component_labels(problem: TrackingProblem) -> np.ndarray:
    """The weakly connected component of every node, numbered 0, 1, ..."""
    from scipy.sparse import coo_matrix  # lazy: scipy.sparse pulls in scipy.linalg
    from scipy.sparse.csgraph import connected_components

    n = problem.n_nodes
    adjacency = coo_matrix((np.ones(len(problem.links)), (problem.links[:, 0], problem.links[:, 1])), shape=(n, n))
    return connected_components(adjacency, directed=True, connection="weak")[1].astype(np.int64)
