"""The exact solution of a tracking problem: an integer linear program solved with scipy's bundled HiGHS
(`scipy.optimize.milp`).

Encoding as opengm/multiHypothesesTracking's ILP (`src/segmentationhypothesis.cpp`): every multi-state variable
(node, appearance, disappearance, link) is one binary indicator per state with Σ = 1, so any cost vector (convex
or not) is linear in the indicators; a division is one binary. Constraints, in indicator form:
* conservation: Σ_in Σ_k k·y_ek + Σ_k k·a_nk = Σ_k k·x_nk and Σ_out Σ_k k·y_ek + Σ_k k·d_nk = Σ_k k·x_nk + z_n;
* division: z_n <= x_n1 (state exactly 1), 2·z_n <= Σ_out y_e1 (two separate children), z_n <= d_n0;
* exclusions: a_n0 + y_e0 >= 1 for every incoming e, d_n0 + y_e0 >= 1 for every outgoing e.
The optimality gap is 0: the answer is a global optimum of the energy in `problem.py`. Meant for components of
up to a few thousand hypotheses (`solve.MAX_EXACT_VARIABLES`). scipy is imported inside the function (scipy.optimize
pulls in scipy.linalg, which every run would otherwise pay at start-up).
"""

from __future__ import annotations

import logging

import numpy as np

from hpc_ilastik.tracking.problem import TrackingProblem, TrackingSolution, make_solution

logger = logging.getLogger(__name__)


def ilp_size(problem: TrackingProblem) -> int:
    """The number of binary variables of the program."""
    k = problem.max_obj + 1
    return (3 * problem.n_nodes + len(problem.links)) * k + int(problem.has_division.sum())


def solve_ilp(problem: TrackingProblem, time_limit: float | None = None) -> TrackingSolution:
    """The minimum-energy assignment; RuntimeError if HiGHS finds no solution (e.g. within `time_limit` seconds)."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # lazy, see above
    from scipy.sparse import coo_matrix

    n, n_links, k = problem.n_nodes, len(problem.links), problem.max_obj + 1
    src, dst = problem.links[:, 0], problem.links[:, 1]
    div_nodes = np.flatnonzero(problem.has_division)
    x0, a0, d0, y0 = 0, n * k, 2 * n * k, 3 * n * k
    z0 = y0 + n_links * k
    n_vars = z0 + len(div_nodes)
    states = np.arange(k)

    def var(block: int, owner: np.ndarray, state) -> np.ndarray:
        return block + np.asarray(owner) * k + state

    rows, cols, vals, lower, upper = [], [], [], [], []
    row = 0

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray | float) -> None:
        rows.append(np.asarray(r, dtype=np.int64).ravel())
        cols.append(np.asarray(c, dtype=np.int64).ravel())
        vals.append(np.broadcast_to(np.asarray(v, dtype=np.float64), np.shape(c)).ravel())

    def bounds(count: int, lo: float, hi: float) -> np.ndarray:
        nonlocal row
        lower.append(np.full(count, lo))
        upper.append(np.full(count, hi))
        row += count
        return np.arange(row - count, row)

    for block, owners in ((x0, n), (a0, n), (d0, n), (y0, n_links)):  # one state per variable
        r = bounds(owners, 1, 1)
        add(np.repeat(r, k), var(block, np.repeat(np.arange(owners), k), np.tile(states, owners)), 1.0)

    node_states = np.tile(states, n)
    nodes_rep = np.repeat(np.arange(n), k)
    link_states = np.tile(states, n_links)
    links_rep = np.repeat(np.arange(n_links), k)
    r_in = bounds(n, 0, 0)  # Σ_in y + a - x = 0
    add(r_in[nodes_rep], var(a0, nodes_rep, node_states), node_states)
    add(r_in[nodes_rep], var(x0, nodes_rep, node_states), -node_states)
    add(r_in[dst[links_rep]], var(y0, links_rep, link_states), link_states)
    r_out = bounds(n, 0, 0)  # Σ_out y + d - x - z = 0
    add(r_out[nodes_rep], var(d0, nodes_rep, node_states), node_states)
    add(r_out[nodes_rep], var(x0, nodes_rep, node_states), -node_states)
    add(r_out[src[links_rep]], var(y0, links_rep, link_states), link_states)
    z = z0 + np.arange(len(div_nodes))
    add(r_out[div_nodes], z, -1.0)

    if len(div_nodes):
        r = bounds(len(div_nodes), -np.inf, 0)  # z <= x_1
        add(r, z, 1.0)
        add(r, var(x0, div_nodes, 1), -1.0)
        r = bounds(len(div_nodes), -np.inf, 0)  # z <= d_0
        add(r, z, 1.0)
        add(r, var(d0, div_nodes, 0), -1.0)
        r = bounds(len(div_nodes), -np.inf, 0)  # 2 z <= Σ_out y_1
        add(r, z, 2.0)
        slot = np.full(n, -1, dtype=np.int64)
        slot[div_nodes] = np.arange(len(div_nodes))
        out_of_div = np.flatnonzero(slot[src] >= 0)
        add(r[slot[src[out_of_div]]], var(y0, out_of_div, 1), -1.0)

    every_link = np.arange(n_links)
    r = bounds(n_links, 1, np.inf)  # a_dst,0 + y_0 >= 1
    add(r, var(a0, dst, 0), 1.0)
    add(r, var(y0, every_link, 0), 1.0)
    r = bounds(n_links, 1, np.inf)  # d_src,0 + y_0 >= 1
    add(r, var(d0, src, 0), 1.0)
    add(r, var(y0, every_link, 0), 1.0)

    matrix = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(row, n_vars)).tocsr()
    division = problem.division[div_nodes]
    cost = np.concatenate([problem.detection.ravel(), problem.appearance.ravel(), problem.disappearance.ravel(),
                           problem.transition.ravel(), division[:, 1] - division[:, 0]])
    options = {"mip_rel_gap": 0.0}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    result = milp(cost, constraints=LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
                  integrality=np.ones(n_vars), bounds=Bounds(0, 1), options=options)
    if result.x is None:
        raise RuntimeError(f"the tracking ILP found no solution: {result.message}")
    if result.status != 0:
        logger.warning("tracking ILP stopped early (%s); using the best solution found", result.message)
    chosen = np.round(result.x).astype(np.int64)
    nodes = chosen[x0:a0].reshape(n, k).argmax(axis=1)
    links = chosen[y0:z0].reshape(n_links, k).argmax(axis=1) if n_links else np.zeros(0, dtype=np.int64)
    divisions = np.zeros(n, dtype=bool)
    divisions[div_nodes] = chosen[z0:] > 0
    logger.debug("tracking ILP: %d binaries, %d rows, %s", n_vars, row, result.message)
    return make_solution(problem, nodes, links, divisions, "ilp")
