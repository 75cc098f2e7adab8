"""A fast approximate solution of a tracking problem in the manner of dpct's flow-based tracker
(`trackFlowBased`: chaubold/dpct `src/flowgraph.cpp`, `src/residualgraph.cpp`, `include/flowgraphbuilder.h`).

The flow graph (dpct's `FlowGraphBuilder`): a source S and a target T; every node n is an arc u_n -> v_n; S -> u_n
carries appearances, v_n -> T disappearances, v_i -> u_j the links. Each arc has capacity maxObj and the cost of
its k-th unit is the increment cost[k + 1] - cost[k] of its (convexified) cost vector. A possible division of n
is a duplicate node δ_n with an arc S -> δ_n (capacity 1, cost V[1] - V[0]) and arcs δ_n -> u_c to every child c
(capacity 1, the link's first increment): the extra object a division sends out.

Successive shortest paths: from zero flow, repeatedly find the cheapest S -> T path, or a negative cycle, in the
residual graph and push one unit along it while that lowers the energy (dpct: Bellman-Ford; here Dijkstra on
reduced costs with potentials from the previous search, label-correcting where reduced costs turn negative, the
first potentials from the acyclic zero-flow graph). With convex costs and no side constraints this is the exact
min-cost flow; the side constraints make it a heuristic. Division rules are kept, as dpct does, by enabling arcs
after every augmentation from the current flow: the division arc of n only while n carries exactly one unit that
leaves by a link; once a division is used the parent's outgoing arcs are frozen; a duplicate arc only to a child
the parent's own flow does not go to. Where dpct forbids more by arc toggling and tokens (no partial merger
appearance/disappearance; no path that uses a division while changing its parent's flow), we push the unit,
check every constraint, and if one breaks take the unit back and exclude the arc at the offending node (for a
division: the parent's node arc, as dpct) from later searches, until a successful unit changes the flow around it
(all exclusions are lifted once more before giving up). Unlike dpct's toggling this lets a unit swap an
appearance for a link, which dpct cannot; on random problems it reaches the optimum more often. Every returned
assignment is feasible; its energy is never below the exact optimum of `solver_ilp` and usually equal to it.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np
from numba import njit

from hpc_ilastik.tracking.problem import TrackingProblem, TrackingSolution, make_solution

logger = logging.getLogger(__name__)

NODE, APPEAR, DISAPPEAR, LINK, DIVISION, DUPLICATE = range(6)
TOLERANCE = 1e-9  # a path must lower the energy by more than this (dpct: 1e-8)
RELAX = 1e-12  # relative margin of a distance improvement, above rounding noise (cost c then -c)


@njit(cache=True, nogil=True)
def _summaries(flow, kind, owner, links, div_parent, n):
    """Per node: its flow, appearance, disappearance, link flow in (incl. divisions' extra), link flow out,
    and whether it divides."""
    x = np.zeros(n, dtype=np.int64)
    appear = np.zeros(n, dtype=np.int64)
    disappear = np.zeros(n, dtype=np.int64)
    into = np.zeros(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    divides = np.zeros(n, dtype=np.int64)
    for a in range(len(kind)):
        f = flow[a]
        k = kind[a]
        if k == NODE:
            x[owner[a]] = f
        elif k == APPEAR:
            appear[owner[a]] = f
        elif k == DISAPPEAR:
            disappear[owner[a]] = f
        elif k == LINK:
            out[links[owner[a], 0]] += f
            into[links[owner[a], 1]] += f
        elif k == DIVISION:
            divides[div_parent[owner[a]]] = f
        else:
            into[links[owner[a], 1]] += f
    return x, appear, disappear, into, out, divides


@njit(cache=True, nogil=True)
def _refresh(flow, kind, owner, links, div_parent, link_arc, n, enabled):
    """Enable every arc the division rules allow at the current flow (see the module docstring)."""
    x, appear, disappear, into, out, divides = _summaries(flow, kind, owner, links, div_parent, n)
    for a in range(len(kind)):
        k = kind[a]
        o = owner[a]
        if k == DISAPPEAR:
            enabled[a] = divides[o] == 0
        elif k == LINK:
            enabled[a] = divides[links[o, 0]] == 0
        elif k == DIVISION:
            p = div_parent[o]
            enabled[a] = flow[a] == 1 or (x[p] == 1 and disappear[p] == 0)
        elif k == DUPLICATE:
            enabled[a] = flow[a] > 0 or flow[link_arc[o]] == 0
        else:
            enabled[a] = True


@njit(cache=True, nogil=True)
def _violation(flow, kind, owner, links, div_parent, link_arc, n, path_arc, length) -> int:
    """The first arc of the path (from the source end) at a node whose constraints the flow breaks; -1 if none."""
    x, appear, disappear, into, out, divides = _summaries(flow, kind, owner, links, div_parent, n)
    bad = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        bad[i] = ((appear[i] > 0 and into[i] > 0) or (disappear[i] > 0 and (out[i] > 0 or divides[i] > 0))
                  or (divides[i] > 0 and x[i] != 1))
    for a in range(len(kind)):
        if kind[a] == DUPLICATE and flow[a] > 0 and flow[link_arc[owner[a]]] > 0:
            bad[links[owner[a], 0]] = True
            bad[links[owner[a], 1]] = True
    for i in range(length - 1, -1, -1):
        a = path_arc[i]
        k, o = kind[a], owner[a]
        if k == LINK or k == DUPLICATE:
            hit = bad[links[o, 0]] or bad[links[o, 1]]
        elif k == DIVISION:
            hit = bad[div_parent[o]]
        else:
            hit = bad[o]
        if hit:
            return a
    for i in range(n):
        if bad[i]:
            return path_arc[length - 1]
    return -1


@njit(cache=True, nogil=True)
def _predecessor_cycle(pred_arc, pred_dir, tail, head, n_vertices) -> int:
    """A vertex on a cycle of the predecessor graph, or -1 (colouring walk, O(V))."""
    state = np.zeros(n_vertices, dtype=np.int64)  # 0 unseen, walk id + 1 while on the current walk, -1 done
    for begin in range(n_vertices):
        v = begin
        while v >= 0 and state[v] == 0:
            state[v] = begin + 1
            a = pred_arc[v]
            v = -1 if a < 0 else (tail[a] if pred_dir[v] > 0 else head[a])
        if v >= 0 and state[v] == begin + 1:
            return v
        v = begin
        while v >= 0 and state[v] == begin + 1:
            state[v] = -1
            a = pred_arc[v]
            v = -1 if a < 0 else (tail[a] if pred_dir[v] > 0 else head[a])
    return -1


@njit(cache=True, nogil=True)
def _initial_potential(n_vertices, tail, head, cap, cost, usable, out_start, out_arcs, source):
    """Distances from the source at zero flow, where the residual graph is the acyclic flow graph itself
    (topological order by Kahn's algorithm); unreachable vertices get the largest distance."""
    indegree = np.zeros(n_vertices, dtype=np.int64)
    for a in range(len(tail)):
        if usable[a] and cap[a] > 0:
            indegree[head[a]] += 1
    dist = np.full(n_vertices, np.inf)
    dist[source] = 0.0
    stack = [v for v in range(n_vertices) if indegree[v] == 0]
    while stack:
        u = stack.pop()
        for p in range(out_start[u], out_start[u + 1]):
            a = out_arcs[p]
            if usable[a] and cap[a] > 0:
                v = head[a]
                if dist[u] + cost[a, 0] < dist[v]:
                    dist[v] = dist[u] + cost[a, 0]
                indegree[v] -= 1
                if indegree[v] == 0:
                    stack.append(v)
    largest = 0.0
    for v in range(n_vertices):
        if dist[v] < np.inf:
            largest = max(largest, dist[v])
    for v in range(n_vertices):
        if dist[v] == np.inf:
            dist[v] = largest
    return dist


@njit(cache=True, nogil=True)
def _search(n_vertices, tail, head, cap, cost, flow, usable, potential, out_start, out_arcs, in_start, in_arcs,
            source, target, path_arc, path_dir):
    """Shortest path from the source over the residual graph: Dijkstra on reduced costs c + π(tail) - π(head),
    label-correcting (a vertex is taken again when its distance drops) because enabling arcs or cancelling a
    cycle can leave a few reduced costs negative; after every |V| improvements a cycle among the predecessors
    is a negative cycle. Returns (length, cost) of the cheapest path to the target written to path_arc/path_dir
    (target first), or of a negative cycle; length 0 if neither lowers the energy. On convergence the potentials
    are updated (π += distance) so the next search starts with non-negative reduced costs again."""
    dist = np.full(n_vertices, np.inf)
    pred_arc = np.full(n_vertices, -1, dtype=np.int64)
    pred_dir = np.zeros(n_vertices, dtype=np.int64)
    dist[source] = 0.0
    heap = [(0.0, source)]
    improvements, check_at, cycle = 0, n_vertices, -1
    while heap and cycle < 0:
        du, u = heapq.heappop(heap)
        if du > dist[u]:
            continue
        for side in range(2):
            start, stop = (out_start[u], out_start[u + 1]) if side == 0 else (in_start[u], in_start[u + 1])
            for p in range(start, stop):
                a = out_arcs[p] if side == 0 else in_arcs[p]
                if not usable[a]:
                    continue
                if side == 0:
                    if flow[a] >= cap[a]:
                        continue
                    v, c, direction = head[a], cost[a, flow[a]], 1
                else:
                    if flow[a] <= 0:
                        continue
                    v, c, direction = tail[a], -cost[a, flow[a] - 1], -1
                d = du + c + potential[u] - potential[v]
                if d < dist[v] - RELAX * (1.0 + abs(d)):
                    dist[v], pred_arc[v], pred_dir[v] = d, a, direction
                    heapq.heappush(heap, (d, v))
                    improvements += 1
        if improvements >= check_at:
            check_at = improvements + n_vertices
            cycle = _predecessor_cycle(pred_arc, pred_dir, tail, head, n_vertices)
    if cycle < 0:  # converged: new potentials, and the shortest path if it gains anything
        gain = dist[target] + potential[target] - potential[source]
        largest = 0.0
        for v in range(n_vertices):
            if dist[v] < np.inf:
                largest = max(largest, dist[v])
        for v in range(n_vertices):
            potential[v] += dist[v] if dist[v] < np.inf else largest
        if not gain < -TOLERANCE:
            return 0, 0.0
        length, v = 0, target
        while v != source and length < n_vertices:
            path_arc[length], path_dir[length] = pred_arc[v], pred_dir[v]
            v = tail[pred_arc[v]] if pred_dir[v] > 0 else head[pred_arc[v]]
            length += 1
        return (length, gain) if v == source else (0, 0.0)
    v, length, total = cycle, 0, 0.0
    seen = np.zeros(len(tail), dtype=np.bool_)
    while True:
        a, direction = pred_arc[v], pred_dir[v]
        if seen[a]:  # pushes and pulls one arc (only with non-convex costs): no real improvement
            return 0, 0.0
        seen[a] = True
        path_arc[length], path_dir[length] = a, direction
        total += cost[a, flow[a]] if direction > 0 else -cost[a, flow[a] - 1]
        length += 1
        v = tail[a] if direction > 0 else head[a]
        if v == cycle or length >= n_vertices:
            break
    return (length, total) if v == cycle and total < -TOLERANCE else (0, 0.0)


@njit(cache=True, nogil=True)
def _successive_paths(n, n_vertices, tail, head, cap, cost, kind, owner, links, div_parent, link_arc,
                      out_start, out_arcs, in_start, in_arcs, max_iterations):
    n_arcs = len(tail)
    flow = np.zeros(n_arcs, dtype=np.int64)
    enabled = np.ones(n_arcs, dtype=np.bool_)
    _refresh(flow, kind, owner, links, div_parent, link_arc, n, enabled)
    excluded = np.zeros(n_arcs, dtype=np.bool_)
    path_arc = np.empty(n_vertices + 1, dtype=np.int64)
    path_dir = np.empty(n_vertices + 1, dtype=np.int64)
    touched = np.zeros(n_vertices, dtype=np.bool_)
    potential = _initial_potential(n_vertices, tail, head, cap, cost, enabled, out_start, out_arcs, 0)
    iterations, rejected, gains = 0, 0, 0
    while iterations < max_iterations:
        iterations += 1
        usable = enabled & ~excluded
        length, _ = _search(n_vertices, tail, head, cap, cost, flow, usable, potential, out_start, out_arcs,
                            in_start, in_arcs, 0, 1, path_arc, path_dir)
        if length == 0:
            if gains and excluded.any():  # arcs excluded long ago may help now: one more look with all of them
                excluded[:] = False
                gains = 0
                continue
            break
        for i in range(length):
            flow[path_arc[i]] += path_dir[i]
        culprit = _violation(flow, kind, owner, links, div_parent, link_arc, n, path_arc, length)
        if culprit < 0:
            gains += 1
            touched[:] = False
            for i in range(length):
                touched[tail[path_arc[i]]] = touched[head[path_arc[i]]] = True
            touched[0] = touched[1] = False
            for a in np.flatnonzero(excluded):  # readmit the excluded arcs around the nodes this unit changed
                if kind[a] == DIVISION:
                    near = touched[2 + 2 * div_parent[owner[a]]] or touched[3 + 2 * div_parent[owner[a]]]
                else:
                    near = touched[tail[a]] or touched[head[a]]
                if near:
                    excluded[a] = False
            _refresh(flow, kind, owner, links, div_parent, link_arc, n, enabled)
            continue
        for i in range(length):  # take the unit back and keep the offending arc out of the next searches
            flow[path_arc[i]] -= path_dir[i]
        rejected += 1
        if kind[culprit] == DIVISION:  # as dpct: rather keep the parent's flow than forgo the division
            parent_arc = div_parent[owner[culprit]]
            for i in range(length):
                if path_arc[i] == parent_arc:
                    culprit = parent_arc
        excluded[culprit] = True
    return flow, iterations, rejected


def _flow_graph(problem: TrackingProblem):
    """dpct's flow graph as arrays: vertices 0 = S, 1 = T, 2 + 2n = u_n, 3 + 2n = v_n, then one per division."""
    n, n_links, m = problem.n_nodes, len(problem.links), problem.max_obj
    div_parent = np.flatnonzero(problem.has_division)
    src, dst = problem.links[:, 0], problem.links[:, 1]
    u, v = 2 + 2 * np.arange(n), 3 + 2 * np.arange(n)
    duplicate = 2 + 2 * n + np.arange(len(div_parent))
    slot = np.full(n, -1, dtype=np.int64)
    slot[div_parent] = np.arange(len(div_parent))
    dup_links = np.flatnonzero(slot[src] >= 0)

    def increments(costs: np.ndarray) -> np.ndarray:
        return np.diff(costs, axis=1)

    def padded(values: np.ndarray) -> np.ndarray:
        out = np.full((len(values), m), np.inf)
        out[:, :values.shape[1]] = values
        return out

    division = problem.division[div_parent]
    parts = [  # (tail, head, capacity, unit costs, kind, owner)
        (u, v, m, increments(problem.detection), NODE, np.arange(n)),
        (np.zeros(n, np.int64), u, m, increments(problem.appearance), APPEAR, np.arange(n)),
        (v, np.ones(n, np.int64), m, increments(problem.disappearance), DISAPPEAR, np.arange(n)),
        (v[src], u[dst], m, increments(problem.transition), LINK, np.arange(n_links)),
        (np.zeros(len(div_parent), np.int64), duplicate, 1, increments(division), DIVISION,
         np.arange(len(div_parent))),
        (duplicate[slot[src[dup_links]]], u[dst[dup_links]], 1, increments(problem.transition)[dup_links, :1],
         DUPLICATE, dup_links),
    ]
    tail = np.concatenate([p[0] for p in parts]).astype(np.int64)
    head = np.concatenate([p[1] for p in parts]).astype(np.int64)
    cap = np.concatenate([np.full(len(p[0]), p[2]) for p in parts]).astype(np.int64)
    cost = np.concatenate([padded(p[3]) for p in parts])
    kind = np.concatenate([np.full(len(p[0]), p[4]) for p in parts]).astype(np.int64)
    owner = np.concatenate([p[5] for p in parts]).astype(np.int64)
    link_arc = 3 * n + np.arange(n_links)
    n_vertices = 2 + 2 * n + len(div_parent)

    def csr(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arcs = np.argsort(index, kind="stable").astype(np.int64)
        start = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=n_vertices))]).astype(np.int64)
        return start, arcs

    return (n_vertices, tail, head, cap, cost, kind, owner, div_parent, link_arc, *csr(tail), *csr(head))


def solve_flow(problem: TrackingProblem, max_iterations: int | None = None) -> TrackingSolution:
    """A feasible low-energy assignment by dpct-style successive shortest paths (see the module docstring)."""
    n, n_links = problem.n_nodes, len(problem.links)
    (n_vertices, tail, head, cap, cost, kind, owner, div_parent, link_arc,
     out_start, out_arcs, in_start, in_arcs) = _flow_graph(problem)
    if max_iterations is None:
        max_iterations = 20 * (int(cap.sum()) + 10)
    flow, iterations, rejected = _successive_paths(
        n, n_vertices, tail, head, cap, cost, kind, owner, np.ascontiguousarray(problem.links), div_parent,
        link_arc, out_start, out_arcs, in_start, in_arcs, max_iterations)
    if iterations >= max_iterations:
        logger.warning("flow tracking stopped after %d iterations", iterations)
    nodes = flow[:n]
    links = flow[3 * n:3 * n + n_links].copy()
    duplicates = kind == DUPLICATE
    np.add.at(links, owner[duplicates], flow[duplicates])
    divisions = np.zeros(n, dtype=bool)
    divisions[div_parent] = flow[kind == DIVISION] > 0
    logger.debug("flow tracking: %d augmentations, %d rejected", iterations, rejected)
    return make_solution(problem, nodes, links, divisions, "flow")
