"""Multicut heuristics (greedy additive, greedy fixation, Kernighan-Lin, decomposition) and ilastik's solver
names mapped onto them and the exact ILP (`exact_multicut`, which also holds the problem's basics).

* `greedy_additive`: nifty's multicut_greedy_additive.hxx over edge_contraction_graph.hxx: contract the most
  attractive edge while its weight is > 0, parallel edges merging by adding their weights.
* `greedy_fixation`: nifty's multicut_greedy_fixation.hxx (after andres/graph): edges by decreasing |weight|;
  an attractive one is contracted unless its clusters carry a cannot-link constraint, a repulsive one becomes
  such a constraint; merged edges add weights and keep constraints; stop when the largest |weight| is 0.
* `kernighan_lin`: nifty's kernighan_lin.hxx (after andres/graph, Keuper et al. 2015): outer iterations (at
  most 100) of two-cut moves between each pair of neighbouring clusters of which one changed, attempts to
  split a new cluster off each changed cluster, then the connected pieces of the clusters; stop when nothing
  gains more than epsilon (1e-6) or the cut repeats. As in nifty, joining two clusters wins when twice its
  gain (nifty sums the external weight from both sides) beats the best move sequence. ilastik's default
  "kernighan-lin" (elf) starts from GAEC.
* `decomposition` (elf, nifty multicut_decomposer.hxx): the components of the attractive edges separate
  exactly (edges between them are never worth joining); KL on each.

Ties are broken deterministically where nifty's heaps leave them to their internal order: among equal
priorities the edge (after merges: the parallel class) with the smallest original edge id comes first; KL
keeps clusters as ordered node lists and takes the first best move in that order. Changed-cluster flags are
kept by label (nifty indexes them by list position after compacting the list, which shifts them). Every
solver returns labels 0..k-1 by first appearance over the nodes, one per connected cluster (components of the
uncut edges), so equal cuts give equal labels; nodes without edges are singletons.
"""

import logging
from dataclasses import dataclass

import numpy as np
from numba import njit

from hpc_ilastik.errors import UserError
from hpc_ilastik.graphs.exact_multicut import (
    adjacency_matrix,
    check_problem,
    exact_multicut,
    labels_from_cut,
    multicut_energy,
)

logger = logging.getLogger(__name__)

KL_EPSILON = 1e-6
KL_OUTER_ITERATIONS = 100


def _canonical(n_nodes: int, edges: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The partition a labelling cuts, as connected clusters numbered by first appearance."""
    return labels_from_cut(n_nodes, edges, labels[edges[:, 0]] != labels[edges[:, 1]])


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, nogil=True)
def _before(key, a, b):
    """Slot a leaves the queue before slot b: smaller key, then smaller slot id."""
    return key[a] < key[b] or (key[a] == key[b] and a < b)


@njit(cache=True, nogil=True)
def _sift(heap, pos, key, i, size):
    """Restore the order of the indexed binary heap (nifty's ChangeablePriorityQueue) around position i."""
    s = heap[i]
    while i > 0 and _before(key, s, heap[(i - 1) // 2]):
        heap[i] = heap[(i - 1) // 2]
        pos[heap[i]] = i
        i = (i - 1) // 2
    while 2 * i + 1 < size:
        child = 2 * i + 1
        if child + 1 < size and _before(key, heap[child + 1], heap[child]):
            child += 1
        if not _before(key, heap[child], s):
            break
        heap[i] = heap[child]
        pos[heap[i]] = i
        i = child
    heap[i] = s
    pos[s] = i


@njit(cache=True, nogil=True)
def _heap_set(heap, pos, key, s, value, size):
    """Insert slot s with key `value`, or change its key; returns the new heap size."""
    key[s] = value
    if pos[s] < 0:
        heap[size] = s
        pos[s] = size
        size += 1
    _sift(heap, pos, key, pos[s], size)
    return size


@njit(cache=True, nogil=True)
def _heap_remove(heap, pos, key, s, size):
    """Take slot s out of the heap; returns the new heap size."""
    i = pos[s]
    pos[s] = -1
    size -= 1
    if i < size:
        heap[i] = heap[size]
        _sift(heap, pos, key, i, size)
    return size


@njit(cache=True, nogil=True)
def _home(key, mask):
    """Home position of a non-negative key in a power-of-two hash table (multiplicative hashing)."""
    h = key * -7046029254386353131  # 2**64 / golden ratio, wrapping
    return (h ^ (h >> 31)) & mask


@njit(cache=True, nogil=True)
def _position(keys, key):
    """Position of `key` in the linear-probing table `keys` (-1 = empty), or of the empty place it would take."""
    mask = len(keys) - 1
    i = _home(key, mask)
    while keys[i] != key and keys[i] >= 0:
        i = (i + 1) & mask
    return i


@njit(cache=True, nogil=True)
def _delete(keys, values, i):
    """Empty position i, moving later entries of its probe run back (deletion without tombstones)."""
    mask = len(keys) - 1
    j = i
    while keys[(j + 1) & mask] >= 0:
        j = (j + 1) & mask
        home = _home(keys[j], mask)
        if (home <= i < j) or (j < home <= i) or (i < j < home):
            keys[i], values[i] = keys[j], values[j]
            i = j
    keys[i] = -1


@njit(cache=True, nogil=True)
def _contract(n_nodes, eu, ev, weights, fixation):
    """GAEC (`fixation` False) or greedy fixation (True) on an edge-contraction graph; returns a union-find root
    per node. A cluster's neighbours are a linked list of its members' edge ends (lists are concatenated on
    contraction, stale ends resolved by union-find); the edge between two clusters is a slot (an edge id) in a
    hash map keyed by the cluster pair; a heap indexed by slot orders them, largest weight (GAEC) or largest
    |weight| (fixation) first."""
    n_edges = len(eu)
    parent = np.arange(n_nodes)
    neighbour = np.empty(2 * n_edges, np.int64)
    nxt = np.full(2 * n_edges, -1, np.int64)
    head = np.full(n_nodes, -1, np.int64)
    tail = np.full(n_nodes, -1, np.int64)
    length = np.zeros(n_nodes, np.int64)
    capacity = 1
    while capacity <= 2 * n_edges:  # the table stays at most half full
        capacity *= 2
    pair = np.full(capacity, -1, np.int64)  # hash table: cluster pair key -> slot
    slot = np.empty(capacity, np.int64)
    heap = np.empty(n_edges, np.int64)
    pos = np.full(n_edges, -1, np.int64)
    key = np.empty(n_edges)
    size = 0
    for e in range(n_edges):
        i = _position(pair, eu[e] * n_nodes + ev[e])
        pair[i], slot[i] = eu[e] * n_nodes + ev[e], e
        size = _heap_set(heap, pos, key, e, -abs(weights[e]) if fixation else -weights[e], size)
        for side in range(2):
            k = 2 * e + side
            node = eu[e] if side == 0 else ev[e]
            neighbour[k] = ev[e] if side == 0 else eu[e]
            if head[node] < 0:
                head[node] = k
            else:
                nxt[tail[node]] = k
            tail[node] = k
            length[node] += 1
    weight = weights.copy()
    fixed = np.zeros(n_edges, np.bool_)  # cannot-link constraint (greedy fixation)
    while size > 0:
        s = heap[0]
        if -key[s] <= 0.0:
            break
        size = _heap_remove(heap, pos, key, s, size)
        if fixed[s]:
            continue
        if weight[s] < 0.0:
            fixed[s] = True
            continue
        a = _find(parent, eu[s])
        b = _find(parent, ev[s])
        if length[a] < length[b]:
            a, b = b, a
        _delete(pair, slot, _position(pair, min(a, b) * n_nodes + max(a, b)))
        parent[b] = a
        k = head[b]
        while k >= 0:
            x = _find(parent, neighbour[k])
            i = _position(pair, min(b, x) * n_nodes + max(b, x))
            if x != a and pair[i] >= 0:
                sd = slot[i]
                _delete(pair, slot, i)
                alive_key = min(a, x) * n_nodes + max(a, x)
                i = _position(pair, alive_key)
                if pair[i] < 0:
                    pair[i], slot[i] = alive_key, sd
                else:  # parallel edges: one slot (the smaller id) with the summed weight
                    sa = slot[i]
                    keep, drop = min(sa, sd), max(sa, sd)
                    weight[keep] = weight[sa] + weight[sd]
                    fixed[keep] = fixed[sa] or fixed[sd]
                    slot[i] = keep
                    if pos[drop] >= 0:
                        size = _heap_remove(heap, pos, key, drop, size)
                    size = _heap_set(heap, pos, key, keep, -abs(weight[keep]) if fixation else -weight[keep], size)
            k = nxt[k]
        if head[b] >= 0:
            if head[a] < 0:
                head[a] = head[b]
            else:
                nxt[tail[a]] = head[b]
            tail[a] = tail[b]
        length[a] += length[b]
    for node in range(n_nodes):
        parent[node] = _find(parent, node)
    return parent


def _greedy(n_nodes: int, edges: np.ndarray, weights: np.ndarray, fixation: bool) -> np.ndarray:
    edges, weights = check_problem(n_nodes, edges, weights)
    if len(edges) == 0:
        return np.arange(n_nodes, dtype=np.int64)
    roots = _contract(n_nodes, edges[:, 0].copy(), edges[:, 1].copy(), weights, fixation)
    return _canonical(n_nodes, edges, roots)


def greedy_additive(n_nodes: int, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Greedy additive edge contraction (GAEC, nifty's MulticutGreedyAdditive)."""
    return _greedy(n_nodes, edges, weights, False)


def greedy_fixation(n_nodes: int, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Greedy fixation (nifty's MulticutGreedyFixation)."""
    return _greedy(n_nodes, edges, weights, True)


@njit(cache=True, nogil=True)
def _update_bipartition(clusters, la, lb, labels, indptr, adj_node, adj_edge, weights, diff, refs, moved, border,
                        move_node, scratch, epsilon):
    """nifty's two-cut step between clusters `la` and `lb` (`lb` empty: split a new cluster off `la`): the best
    prefix of greedy single-node moves across the border, or joining both; applies it if it gains more than
    epsilon and returns the gain (0 otherwise)."""
    size_a = _cluster_nodes(clusters, la, scratch, 0)
    size_b = _cluster_nodes(clusters, lb, scratch, size_a) - size_a
    if size_a == 0:
        return 0.0
    cluster_a, cluster_b = scratch[:size_a], scratch[size_a:size_a + size_b]
    join_gain = 0.0  # the external weight summed from both sides: twice joining's real gain, as in nifty
    n_border = 0
    for side in range(2):
        nodes, own, other = (cluster_a, la, lb) if side == 0 else (cluster_b, lb, la)
        for v in nodes:
            external = 0.0
            internal = 0.0
            count = 0
            for k in range(indptr[v], indptr[v + 1]):
                label = labels[adj_node[k]]
                if label == own:
                    internal += weights[adj_edge[k]]
                elif label == other:
                    external += weights[adj_edge[k]]
                    count += 1
            diff[v] = external - internal
            refs[v] = count
            moved[v] = False
            join_gain += external
            if count > 0:
                border[n_border] = v
                n_border += 1
    n_moves = 0
    cumulative = 0.0
    best_gain = -np.inf
    best_count = 0
    while True:
        v = -1
        best = -np.inf
        if len(cluster_b) == 0 and n_moves == 0:
            for a in cluster_a:
                if diff[a] > best:
                    v, best = a, diff[a]
        else:
            i = 0
            while i < n_border:
                if refs[border[i]] == 0:
                    n_border -= 1
                    border[i], border[n_border] = border[n_border], border[i]
                else:
                    if diff[border[i]] > best:
                        v, best = border[i], diff[border[i]]
                    i += 1
        if v < 0:
            break
        old = labels[v]
        new = lb if old == la else la
        for k in range(indptr[v], indptr[v + 1]):
            x = adj_node[k]
            if moved[x]:
                continue
            if labels[x] == new:
                diff[x] -= 2.0 * weights[adj_edge[k]]
                refs[x] -= 1
            elif labels[x] == old:
                diff[x] += 2.0 * weights[adj_edge[k]]
                refs[x] += 1
                if refs[x] == 1:
                    border[n_border] = x
                    n_border += 1
        labels[v] = new
        refs[v] = 0
        diff[v] = -np.inf
        moved[v] = True
        move_node[n_moves] = v
        n_moves += 1
        cumulative += best
        if cumulative > best_gain:
            best_gain, best_count = cumulative, n_moves
    if join_gain > best_gain and join_gain > epsilon:
        for v in cluster_b:
            labels[v] = la
        _set_cluster(clusters, la, scratch[:size_a + size_b])
        _set_cluster(clusters, lb, scratch[:0])
        return join_gain
    kept = best_count if best_gain > epsilon else 0
    for i in range(kept, n_moves):  # undo the moves after the best prefix
        v = move_node[i]
        moved[v] = False
        labels[v] = la if labels[v] == lb else lb
    if kept == 0:
        return 0.0
    new_a = np.empty(size_a + size_b, np.int64)
    new_b = np.empty(size_a + size_b, np.int64)
    size_a = size_b = 0
    for side in range(3):  # unmoved nodes of A, of B, then the moved ones in move order
        nodes = cluster_a if side == 0 else cluster_b if side == 1 else move_node[:kept]
        for v in nodes:
            if side < 2 and moved[v]:
                continue
            if labels[v] == la:
                new_a[size_a] = v
                size_a += 1
            else:
                new_b[size_b] = v
                size_b += 1
    _set_cluster(clusters, la, new_a[:size_a])
    _set_cluster(clusters, lb, new_b[:size_b])
    return best_gain


@njit(cache=True, nogil=True)
def _clusters_of(labels, capacity):
    """Clusters as linked lists, nodes ascending: (first node per label, next node per node, size per label)."""
    first = np.full(capacity, -1, np.int64)
    nxt = np.full(len(labels), -1, np.int64)
    size = np.zeros(capacity, np.int64)
    for v in range(len(labels) - 1, -1, -1):
        nxt[v] = first[labels[v]]
        first[labels[v]] = v
        size[labels[v]] += 1
    return first, nxt, size


@njit(cache=True, nogil=True)
def _cluster_nodes(clusters, label, out, start):
    """Write the nodes of cluster `label` to out[start:]; returns the end position."""
    first, nxt, _ = clusters
    v = first[label]
    while v >= 0:
        out[start] = v
        start += 1
        v = nxt[v]
    return start


@njit(cache=True, nogil=True)
def _set_cluster(clusters, label, nodes):
    """Make `nodes` (in this order) the node list of cluster `label`."""
    first, nxt, size = clusters
    size[label] = len(nodes)
    first[label] = nodes[0] if len(nodes) > 0 else -1
    for i in range(len(nodes)):
        nxt[nodes[i]] = nodes[i + 1] if i + 1 < len(nodes) else -1


@njit(cache=True, nogil=True)
def _stable_order_by(keys, n_keys, order):
    """`order` re-sorted stably by keys[order] (a counting sort; keys in 0..n_keys-1)."""
    start = np.zeros(n_keys + 1, np.int64)
    for k in keys:
        start[k + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    out = np.empty_like(order)
    for i in order:
        out[start[keys[i]]] = i
        start[keys[i]] += 1
    return out


@njit(cache=True, nogil=True)
def _neighbouring_clusters(labels, eu, ev, n_labels):
    """Pairs (i < j) of cluster labels joined by an edge, each once, ordered by i then j."""
    low = np.empty(len(eu), np.int64)
    high = np.empty(len(eu), np.int64)
    n_cut = 0
    for e in range(len(eu)):
        a, b = labels[eu[e]], labels[ev[e]]
        if a != b:
            low[n_cut], high[n_cut] = min(a, b), max(a, b)
            n_cut += 1
    low, high = low[:n_cut], high[:n_cut]
    order = _stable_order_by(low, n_labels, _stable_order_by(high, n_labels, np.arange(n_cut)))
    pairs = np.empty((n_cut, 2), np.int64)
    n_pairs = 0
    for i in order:
        if n_pairs == 0 or low[i] != pairs[n_pairs - 1, 0] or high[i] != pairs[n_pairs - 1, 1]:
            pairs[n_pairs, 0], pairs[n_pairs, 1] = low[i], high[i]
            n_pairs += 1
    return pairs[:n_pairs]


@njit(cache=True, nogil=True)
def _cluster_components(labels, indptr, adj_node, previous, capacity):
    """nifty's relabelling after an outer iteration: the connected pieces of each cluster, numbered in node
    order (depth-first), and which of them changed against the `previous` labelling (same DFS as nifty)."""
    n = len(labels)
    components = np.full(n, -1, np.int64)
    changed = np.zeros(capacity, np.bool_)
    stack = np.empty(n, np.int64)
    n_components = 0
    for start in range(n):
        if components[start] >= 0:
            continue
        label, old = labels[start], previous[start]
        components[start] = n_components
        stack[0] = start
        top = 1
        while top > 0:
            top -= 1
            v = stack[top]
            for k in range(indptr[v], indptr[v + 1]):
                x = adj_node[k]
                if previous[x] == old and labels[x] != label:
                    changed[n_components] = True
                if components[x] < 0 and labels[x] == label:
                    components[x] = n_components
                    stack[top] = x
                    top += 1
                    if previous[x] != old:
                        changed[n_components] = True
        n_components += 1
    return components, n_components, changed


@njit(cache=True, nogil=True)
def _kernighan_lin(labels, indptr, adj_node, adj_edge, eu, ev, weights, epsilon, max_outer):
    """nifty's KernighanLin::optimize from a labelling 0..k-1 (used as scratch); returns the last good one."""
    n = len(labels)
    n_labels = labels.max() + 1
    capacity = 2 * n + 1  # at most n labels plus n split-off clusters in one outer iteration
    clusters = _clusters_of(labels, capacity)
    size = clusters[2]
    last_good = labels.copy()
    changed = np.ones(capacity, np.bool_)  # by label
    diff = np.empty(n)
    refs = np.zeros(n, np.int64)
    moved = np.zeros(n, np.bool_)
    border = np.empty(n, np.int64)
    move_node = np.empty(n, np.int64)
    scratch = np.empty(n, np.int64)
    for _ in range(max_outer):
        decrease = 0.0
        pairs = _neighbouring_clusters(labels, eu, ev, n_labels)
        for p in range(len(pairs)):
            i, j = pairs[p, 0], pairs[p, 1]
            if size[i] > 0 and size[j] > 0 and (changed[i] or changed[j]):
                gain = _update_bipartition(clusters, i, j, labels, indptr, adj_node, adj_edge, weights, diff, refs,
                                           moved, border, move_node, scratch, epsilon)
                if gain > epsilon:
                    changed[i] = changed[j] = True
                decrease += gain
        free = n_labels
        for i in range(n_labels):  # try to split new clusters off the changed ones
            if size[i] == 0 or not changed[i]:
                continue
            while True:
                decrease += _update_bipartition(clusters, i, free, labels, indptr, adj_node, adj_edge, weights,
                                                diff, refs, moved, border, move_node, scratch, epsilon)
                if size[free] == 0:
                    break
                free += 1
        if decrease == 0.0:
            break
        labels, n_labels, changed_components = _cluster_components(labels, indptr, adj_node, last_good, capacity)
        same_cut = True
        for e in range(len(eu)):
            if (labels[eu[e]] != labels[ev[e]]) != (last_good[eu[e]] != last_good[ev[e]]):
                same_cut = False
                break
        if same_cut:
            break
        changed = changed_components
        last_good = labels.copy()
        clusters = _clusters_of(labels, capacity)
        size = clusters[2]
    return last_good


def kernighan_lin(n_nodes: int, edges: np.ndarray, weights: np.ndarray,
                  initial: np.ndarray | None = None) -> np.ndarray:
    """Kernighan-Lin for multicut (nifty's KernighanLin), started from `initial` or, by default, from GAEC."""
    edges, weights = check_problem(n_nodes, edges, weights)
    if initial is None:
        start = greedy_additive(n_nodes, edges, weights)
    else:
        initial = np.asarray(initial).reshape(-1)
        if len(initial) != n_nodes:
            raise ValueError(f"initial labelling has {len(initial)} labels for {n_nodes} nodes")
        start = np.unique(initial, return_inverse=True)[1].astype(np.int64).reshape(-1)
    if len(edges) == 0:
        return _canonical(n_nodes, edges, start)
    graph = adjacency_matrix(n_nodes, edges, np.arange(len(edges)))  # neighbours ascending, edge id + 1
    labels = _kernighan_lin(start, graph.indptr.astype(np.int64), graph.indices.astype(np.int64), graph.data - 1,
                            edges[:, 0].copy(), edges[:, 1].copy(), weights, KL_EPSILON, KL_OUTER_ITERATIONS)
    return _canonical(n_nodes, edges, labels)


def _decomposition(n_nodes: int, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """KL on each connected component of the attractive edges (edges between components stay cut)."""
    edges, weights = check_problem(n_nodes, edges, weights)
    components = labels_from_cut(n_nodes, edges, weights <= 0)
    inside = components[edges[:, 0]] == components[edges[:, 1]]
    return kernighan_lin(n_nodes, edges[inside], weights[inside])


# the algorithms we have, by elf's name (elf/segmentation/multicut.py `_solvers`)
SOLVERS = {
    "kernighan-lin": kernighan_lin,
    "greedy-additive": greedy_additive,
    "greedy-fixation": greedy_fixation,
    "decomposition": _decomposition,
    "ilp": exact_multicut,
}
# other names ilastik accepts or stored -> the nearest algorithm we have; elf's `get_available_solver_names`, and
# ilastik/applets/multicut/multicutLegacy.py (ilastik runs "Nifty_FmGreedy" as GAEC + fusion moves, rejects the rest)
SOLVER_ALIASES = {
    "fusion-moves": "kernighan-lin",  # KL then CC-fusion moves with KL sub-solver
    "blockwise-multicut": "kernighan-lin",  # blockwise reduction with KL sub-solver
    "cut-glue-cut": "kernighan-lin",  # GAEC + KL warm start, then CGC (needs QPBO)
    "rama": "kernighan-lin",  # GPU primal-dual
    "Nifty_FmGreedy": "kernighan-lin",  # GAEC then fusion moves (ilastik < 1.4 default, non-deterministic)
    "Nifty_FmCplex": "kernighan-lin",
    "Nifty_FmGurobi": "kernighan-lin",
    "Opengm_Cgc": "kernighan-lin",
    "Opengm_IntersectionBased": "kernighan-lin",
    "Nifty_ExactCplex": "ilp",
    "Nifty_ExactGurobi": "ilp",
    "Opengm_Exact": "ilp",
}
DEFAULT_SOLVER = "kernighan-lin"


@dataclass(frozen=True)
class MulticutSolution:
    """A solved multicut: labels 0..k-1 by first appearance, its energy, and the algorithm that ran."""

    labels: np.ndarray
    energy: float
    solver: str


def solve_multicut(solver_name: str, n_nodes: int, edges: np.ndarray, weights: np.ndarray) -> MulticutSolution:
    """Solve with ilastik's `SolverName` (aliases run their nearest algorithm); the energy is logged at INFO."""
    algorithm = SOLVER_ALIASES.get(solver_name, solver_name)
    if algorithm not in SOLVERS:
        known = ", ".join(list(SOLVERS) + list(SOLVER_ALIASES))
        raise UserError(f"unknown multicut solver {solver_name!r}; known solvers: {known}")
    if algorithm != solver_name:
        logger.warning("multicut solver %r is not available: running %r instead", solver_name, algorithm)
    n_nodes = int(n_nodes)  # a numpy integer would give the numba kernels another signature
    edges, weights = check_problem(n_nodes, edges, weights)
    try:
        labels = SOLVERS[algorithm](n_nodes, edges, weights)
    except ValueError as err:  # the exact solver refuses large graphs
        raise UserError(str(err)) from err
    energy = multicut_energy(edges, weights, labels)
    logger.info("multicut (%s): %d nodes, %d edges -> %d clusters, energy %.6g", algorithm, n_nodes, len(edges),
                labels.max() + 1 if n_nodes else 0, energy)
    return MulticutSolution(labels, energy, algorithm)
