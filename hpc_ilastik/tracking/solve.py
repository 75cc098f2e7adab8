"""Solving a tracking problem (exact where the size allows, else the flow heuristic, per connected component),
and the whole chain of ilastik's `OpConservationTracking.track` up to merger resolution on arrays.

The chain (`track`): hypotheses graph -> tracklets (if `withTracklets`) -> `insertEnergies` -> `convexifyCosts`
-> weights [transWeight, detWeight = 10, divWeight, appearanceCost, disappearanceCost] -> solve -> `insertSolution`.
ilastik solves with dpct's flow solver ("Flow-based") headless; `solver="auto"` solves every component whose
integer program has at most `MAX_EXACT_VARIABLES` binaries exactly (scipy's HiGHS) and larger ones with the flow
heuristic, `solver="ilp"`/`"flow"` force one. Merger resolution (`mergers.resolve_mergers`) and lineage
(`lineage.compute_lineage`) follow, once the caller has the mergers' pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.tracking.energies import TRANSITION_PARAMETER, field_of_view, insert_energies
from hpc_ilastik.tracking.hypotheses import (
    HypothesesGraph,
    TrackletGraph,
    Traxels,
    build_hypotheses_graph,
    contract_tracklets,
)
from hpc_ilastik.tracking.lineage import TrackGraph, solved_graph
from hpc_ilastik.tracking.problem import (
    TrackingProblem,
    TrackingSolution,
    component_labels,
    energy_weights,
    make_solution,
    tracking_problem,
)
from hpc_ilastik.tracking.solver_flow import solve_flow
from hpc_ilastik.tracking.solver_ilp import solve_ilp

logger = logging.getLogger(__name__)

MAX_EXACT_VARIABLES = 40000  # binaries per integer program; HiGHS needs a few seconds for this many
SOLVERS = ("auto", "ilp", "flow")
CONSERVATION_DET_WEIGHT = 10.0  # hard-coded in OpConservationTracking.track


def _groups(problem: TrackingProblem, solver: str, limit: int) -> list[tuple[np.ndarray, bool]]:
    """(nodes, exact) per solve: components for the integer program packed into batches of at most `limit`
    binaries (a larger component alone), the others one component each for the flow solver."""
    labels = component_labels(problem)
    count = int(labels.max(initial=-1)) + 1
    k = problem.max_obj + 1
    size = ((3 * np.bincount(labels, minlength=count) + np.bincount(labels[problem.links[:, 0]], minlength=count)) * k
            + np.bincount(labels[problem.has_division], minlength=count))
    exact = np.full(count, solver == "ilp") | ((size <= limit) & (solver == "auto"))
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(np.bincount(labels, minlength=count))[:-1])
    groups = [(members[c], False) for c in np.flatnonzero(~exact)]
    batch, total = [], 0
    for c in np.flatnonzero(exact)[np.argsort(size[exact], kind="stable")]:
        if batch and total + size[c] > limit:
            groups.append((np.sort(np.concatenate(batch)), True))
            batch, total = [], 0
        batch.append(members[c])
        total += size[c]
    if batch:
        groups.append((np.sort(np.concatenate(batch)), True))
    return groups


def solve_tracking(problem: TrackingProblem, solver: str = "auto", max_exact: int = MAX_EXACT_VARIABLES,
                   time_limit: float | None = None) -> TrackingSolution:
    """The assignment of every node, link and division (see the module docstring for `solver`)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, not {solver!r}")
    nodes = np.zeros(problem.n_nodes, dtype=np.int64)
    links = np.zeros(len(problem.links), dtype=np.int64)
    divisions = np.zeros(problem.n_nodes, dtype=bool)
    used = set()
    for group, exact in _groups(problem, solver, max_exact):
        part, link_index = problem.subproblem(group)
        result = solve_ilp(part, time_limit) if exact else solve_flow(part)
        used.add(result.solver)
        nodes[group], links[link_index], divisions[group] = result.nodes, result.links, result.divisions
    solution = make_solution(problem, nodes, links, divisions, "+".join(sorted(used)) or solver)
    logger.info("tracking: %d nodes, %d links solved by %s, energy %.6g", problem.n_nodes, len(problem.links),
                solution.solver, solution.energy)
    return solution


@dataclass(frozen=True)
class TrackingParameters:
    """ilastik's tracking parameters (the `Parameters` of a tracking project), as `track` uses them."""

    time_range: tuple[int, int]  # first and last frame
    x_range: tuple[float, float]  # the field of view (and traxel filter) per axis, [lo, hi)
    y_range: tuple[float, float]
    z_range: tuple[float, float] = (0, 1)
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    max_dist: float = 30.0
    max_obj: int = 2
    div_threshold: float = 0.5
    with_divisions: bool = True
    with_tracklets: bool = False
    border_aware_width: float = 0.0
    max_nearest_neighbors: int = 3
    trans_weight: float = 10.0
    div_weight: float = 10.0
    appearance_cost: float = 500.0
    disappearance_cost: float = 500.0
    det_weight: float = CONSERVATION_DET_WEIGHT
    transition_parameter: float = TRANSITION_PARAMETER


@dataclass(frozen=True)
class TrackingRun:
    """Everything `track` built: the graphs, the problem solved, its solution and the solved traxel graph."""

    graph: HypothesesGraph
    tracklets: TrackletGraph | None
    problem: TrackingProblem
    solution: TrackingSolution
    tracks: TrackGraph


def track(traxels: Traxels, parameters: TrackingParameters, solver: str = "auto",
          max_exact: int = MAX_EXACT_VARIABLES) -> TrackingRun:
    """`OpConservationTracking.track` up to `insertSolution`, on already filtered traxels."""
    p = parameters
    graph = build_hypotheses_graph(traxels, p.max_nearest_neighbors, p.max_dist, p.with_divisions, p.div_threshold)
    tracklets = contract_tracklets(graph) if p.with_tracklets else None
    features = insert_energies(graph, tracklets, p.time_range, field_of_view(p.x_range, p.y_range, p.z_range,
                                                                             p.scales),
                               p.border_aware_width, p.with_divisions, p.div_threshold, p.transition_parameter)
    weights = energy_weights(p.trans_weight, p.det_weight, p.div_weight, p.appearance_cost, p.disappearance_cost)
    links = graph.links if tracklets is None else tracklets.links
    problem = tracking_problem(links, features.convexified(), weights)
    solution = solve_tracking(problem, solver, max_exact)
    return TrackingRun(graph, tracklets, problem, solution, solved_graph(graph, tracklets, solution))
