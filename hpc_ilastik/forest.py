"""vigra RF2 random forests as ilastik stores them, flattened into arrays for a numba predictor.

Layout and prediction rules: ilastik-numerics.md §7-§8, ilastik-spec.md §3.4. One vigra forest group
holds `_options/*`, `_ext_param/*` and `Tree_<k>/{topology,parameters}`; a tree node at topology
offset n is `[type, parameter offset, child0, child1, column]` (split: child0 when x < threshold) or
`[type, parameter offset]` (leaf: parameters `[weight, p_1 .. p_C]`). We flatten every tree into
split-node arrays plus a leaf table; in numba, trees of at most 64 leaves find each row's leaf by bit
masks (QuickScorer), larger ones by walking; vigra's float32 arithmetic and ilastik's combination of
several forests are reproduced bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import h5py
import numpy as np
from numba import njit

from hpc_ilastik.errors import UserError

SPLIT_NODE = 0
LEAF_NODE = 0x40000000
FOREST_VERSION = 0.1

# What ilastik 1.4 stores as `pickled_type`: pickle protocol 0 of the classifier class (text, never unpickled).
PICKLED_TYPE = b"clazyflow.classifiers.parallelVigraRfLazyflowClassifier\nParallelVigraRfLazyflowClassifier\np0\n."
_PICKLED_CLASS = re.compile(rb"^c[\w.]+\n(\w+)\n")
_PARALLEL_TYPES = ("ParallelVigraRfLazyflowClassifier",)
_SINGLE_TYPES = ("VigraRfLazyflowClassifier", "VigraRfPixelwiseClassifier")

# vigra's RandomForestOptions as RandomForest(n) leaves them (sqrt mtry, bootstrap, min split size 1).
_DEFAULT_OPTIONS = {
    "min_split_node_size_": 1.0,
    "mtry_": 0.0,
    "mtry_func_": 0.0,
    "mtry_switch_": 6.0,
    "prepare_online_learning_": 0.0,
    "sample_with_replacement_": 1.0,
    "stratification_method_": 3.0,
    "training_set_calc_switch_": 1.0,
    "training_set_func_": 0.0,
    "training_set_proportion_": 1.0,
    "training_set_size_": 0.0,
}

_BATCH_ROWS = 1024  # rows per pass of the trees: their features (<= a few hundred KiB) stay in L2, sums in L1
_LANES = 16  # rows walked through a tree in lock step
_FEW_LEAVES = 8  # trees with at most this many leaves add their values by vectorised selects
_ALL_LEAVES_INT = (1 << 64) - 1
_DEBRUIJN_INT = 0x03F79D71B4CB0A89  # a de Bruijn sequence: (2^k · it mod 2^64) >> 58 differs for each k < 64
_DEBRUIJN = np.uint64(_DEBRUIJN_INT)


def _debruijn_positions() -> np.ndarray:
    """k for each value of (2^k · _DEBRUIJN mod 2^64) >> 58: the index of a word's only set bit."""
    table = np.zeros(64, dtype=np.int64)
    for k in range(64):
        table[((1 << k) * _DEBRUIJN_INT % (1 << 64)) >> 58] = k
    return table


_DEBRUIJN_POSITION = _debruijn_positions()


@dataclass(eq=False)
class VigraForest:
    """One vigra forest, flattened.

    Split node i tests `x[feature[i]] < threshold[i]` and goes to `children[i, 0]` if true, else
    `children[i, 1]`; a child >= 0 is a split node, a child < 0 is leaf `-1 - child`. Tree k owns split
    nodes `split_start[k]:split_start[k+1]` (the first is its root) and leaves
    `leaf_start[k]:leaf_start[k+1]`; a tree without splits is a single leaf.
    """

    feature: np.ndarray  # int32 (S,)
    threshold: np.ndarray  # float64 (S,)
    children: np.ndarray  # int32 (S, 2)
    leaf_probs: np.ndarray  # float64 (L, C), rows sum to 1
    leaf_weights: np.ndarray  # float64 (L,), in-bag samples that reached the leaf
    split_start: np.ndarray  # int64 (T + 1,)
    leaf_start: np.ndarray  # int64 (T + 1,)
    labels: np.ndarray  # uint32 (C,), class value of each probability column (ascending)
    n_features: int
    predict_weighted: bool = False
    n_samples: int = 0  # training rows (vigra's row_count_), informational
    mtry: int = 0  # features tried per split (vigra's actual_mtry_), informational

    @property
    def n_trees(self) -> int:
        return len(self.split_start) - 1

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """vigra's `RandomForest.predictProbabilities`: (n, F) → (n, C) float32, column j = class labels[j]."""
        return ForestEnsemble([self], self.labels)._columns(X, combine=False)

    def roots(self) -> np.ndarray:
        """Root of every tree in the child encoding (split index, or -1 - leaf index)."""
        has_split = self.split_start[1:] > self.split_start[:-1]
        return np.where(has_split, self.split_start[:-1], -1 - self.leaf_start[:-1]).astype(np.int32)


def _damaged(group: h5py.Group, why: str) -> UserError:
    return UserError(
        f"The random forest '{group.name}' in {group.file.filename} is damaged or not a vigra forest: {why}.")


def _scalar(group: h5py.Group, path: str) -> float:
    try:
        return float(np.ravel(group[path][()])[0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _damaged(group, f"cannot read {path}") from exc


def _flatten_tree(group: h5py.Group, topology: np.ndarray, parameters: np.ndarray, n_classes: int,
                  n_features: int) -> tuple[np.ndarray, ...]:
    """One tree's topology/parameters → (feature, threshold, children, leaf_probs, leaf_weights), root first.

    Nodes are found level by level from the root at offset 2; every offset is checked, so a damaged
    file gives a UserError and the flattened tree is always finite and acyclic.
    """
    size = len(topology)
    if size < 4 or topology[1] != n_classes:
        raise _damaged(group, "tree header does not match the class count")
    levels = []
    frontier = np.array([2], dtype=np.int64)
    visited = 0
    while frontier.size:
        if frontier.min() < 2 or frontier.max() + 1 >= size:
            raise _damaged(group, "a child offset points outside the tree")
        visited += frontier.size
        if visited > size:
            raise _damaged(group, "the tree has a cycle")
        kinds = topology[frontier]
        known = (kinds == SPLIT_NODE) | (kinds == LEAF_NODE)
        if not known.all():
            bad = int(kinds[~known][0])
            raise UserError(f"The random forest '{group.name}' uses node type {bad:#x}, which hpc-ilastik does not "
                            "support (only threshold splits and constant-probability leaves, as ilastik trains them).")
        levels.append(frontier)
        splits = frontier[kinds == SPLIT_NODE]
        if splits.size and splits.max() + 4 >= size:
            raise _damaged(group, "a split node is cut off")
        frontier = topology[np.stack([splits + 2, splits + 3], axis=1).ravel()].astype(np.int64)
    nodes = np.concatenate(levels)
    if np.unique(nodes).size != nodes.size:
        raise _damaged(group, "a node is reached twice")
    is_split = topology[nodes] == SPLIT_NODE
    splits, leaves = nodes[is_split], nodes[~is_split]

    lookup = np.zeros(size, dtype=np.int64)  # node offset → split index, or -1 - leaf index
    lookup[splits] = np.arange(splits.size)
    lookup[leaves] = -1 - np.arange(leaves.size)
    split_par = topology[splits + 1].astype(np.int64)
    leaf_par = topology[leaves + 1].astype(np.int64)
    if (split_par.size and (split_par.min() < 0 or split_par.max() + 1 >= len(parameters))) or (
        leaf_par.min() < 0 or leaf_par.max() + n_classes >= len(parameters)
    ):
        raise _damaged(group, "a parameter offset points outside the tree's parameters")
    feature = topology[splits + 4].astype(np.int32)
    if feature.size and (feature.min() < 0 or feature.max() >= n_features):
        raise _damaged(group, "a split uses a feature column beyond the forest's feature count")
    children = lookup[topology[np.stack([splits + 2, splits + 3], axis=1)]].reshape(-1, 2)
    leaf_probs = parameters[leaf_par[:, None] + 1 + np.arange(n_classes)]
    return feature, parameters[split_par + 1], children, leaf_probs, parameters[leaf_par]


def read_vigra_forest(group: h5py.Group) -> VigraForest:
    """Read one forest written by vigra's `RandomForest.writeHDF5` (an ilastik `ForestNNNN` group)."""
    n_classes = int(_scalar(group, "_ext_param/class_count_"))
    n_features = int(_scalar(group, "_ext_param/column_count_"))
    labels = np.asarray(group["_ext_param/labels"][()] if "_ext_param/labels" in group else [], dtype=np.uint32).ravel()
    if n_classes < 1 or n_features < 1 or len(labels) != n_classes:
        raise _damaged(group, "class count, feature count and labels disagree")
    tree_names = sorted((k for k in group if k.startswith("Tree_")),
                        key=lambda k: int(k[5:]) if k[5:].isdigit() else -1)
    if not tree_names or int(_scalar(group, "_options/tree_count_")) != len(tree_names):
        raise _damaged(group, "tree_count_ does not match the stored trees")
    parts = []
    for name in tree_names:
        try:
            topology = np.asarray(group[name]["topology"][()], dtype=np.int64).ravel()
            parameters = np.asarray(group[name]["parameters"][()], dtype=np.float64).ravel()
        except (KeyError, TypeError, ValueError) as exc:
            raise _damaged(group, f"{name} lacks topology/parameters") from exc
        parts.append(_flatten_tree(group, topology, parameters, n_classes, n_features))
    return _concatenate_trees(
        parts, labels=labels, n_features=n_features,
        predict_weighted=bool(_scalar(group, "_options/predict_weighted_")),
        n_samples=int(_scalar(group, "_ext_param/row_count_")) if "_ext_param/row_count_" in group else 0,
        mtry=int(_scalar(group, "_ext_param/actual_mtry_")) if "_ext_param/actual_mtry_" in group else 0,
    )


def _concatenate_trees(parts: Sequence[tuple[np.ndarray, ...]], **fields) -> VigraForest:
    """Join per-tree (feature, threshold, children, leaf_probs, leaf_weights) with tree-local indices."""
    n_splits = np.array([len(p[0]) for p in parts], dtype=np.int64)
    n_leaves = np.array([len(p[4]) for p in parts], dtype=np.int64)
    split_start = np.concatenate([[0], np.cumsum(n_splits)])
    leaf_start = np.concatenate([[0], np.cumsum(n_leaves)])
    children = [np.where(p[2] >= 0, p[2] + s, p[2] - l) for p, s, l in zip(parts, split_start, leaf_start)]
    return VigraForest(
        feature=np.concatenate([p[0] for p in parts]).astype(np.int32),
        threshold=np.concatenate([p[1] for p in parts]).astype(np.float64),
        children=np.concatenate(children).astype(np.int32).reshape(-1, 2),
        leaf_probs=np.concatenate([p[3] for p in parts]).astype(np.float64),
        leaf_weights=np.concatenate([p[4] for p in parts]).astype(np.float64),
        split_start=split_start,
        leaf_start=leaf_start,
        **fields,
    )


def write_vigra_forest(group: h5py.Group, forest: VigraForest) -> None:
    """Write `forest` into the empty `group` in vigra's `writeHDF5` layout (readable by vigra and ilastik)."""
    n_classes = len(forest.labels)
    group.attrs["vigra_random_forest_version"] = np.array([FOREST_VERSION])
    options = dict(_DEFAULT_OPTIONS, predict_weighted_=float(forest.predict_weighted),
                   tree_count_=float(forest.n_trees))
    for name, value in sorted(options.items()):
        group.create_dataset(f"_options/{name}", data=np.array([value], dtype=np.float64))
    ext = {
        "actual_msample_": forest.n_samples, "actual_mtry_": forest.mtry, "class_count_": n_classes,
        "column_count_": forest.n_features, "is_weighted_": 1, "precision_": 0, "problem_type_": 1,
        "response_size_": 1, "row_count_": forest.n_samples, "used_": 1,
    }
    for name, value in sorted(ext.items()):
        group.create_dataset(f"_ext_param/{name}", data=np.array([value], dtype=np.float64))
    group.create_dataset("_ext_param/class_weights_", data=np.ones(n_classes, dtype=np.float64))
    group.create_dataset("_ext_param/labels", data=np.asarray(forest.labels, dtype=np.uint32))
    width = len(str(max(forest.n_trees - 1, 0)))
    for k in range(forest.n_trees):
        topology, parameters = _encode_tree(forest, k)
        group.create_dataset(f"Tree_{k:0{width}d}/topology", data=topology)
        group.create_dataset(f"Tree_{k:0{width}d}/parameters", data=parameters)


def _encode_tree(forest: VigraForest, k: int) -> tuple[np.ndarray, np.ndarray]:
    """vigra topology (int32) and parameters (float64) of tree k: splits first (root at offset 2), then leaves."""
    s0, s1 = int(forest.split_start[k]), int(forest.split_start[k + 1])
    l0, l1 = int(forest.leaf_start[k]), int(forest.leaf_start[k + 1])
    ns, nl, nc = s1 - s0, l1 - l0, len(forest.labels)
    leaf_topo0 = 2 + 5 * ns

    def offset(child: np.ndarray) -> np.ndarray:
        return np.where(child >= 0, 2 + 5 * (child - s0), leaf_topo0 + 2 * (-1 - child - l0))

    split_rows = np.empty((ns, 5), dtype=np.int64)
    split_rows[:, 0] = SPLIT_NODE
    split_rows[:, 1] = 2 * np.arange(ns)
    split_rows[:, 2] = offset(forest.children[s0:s1, 0].astype(np.int64))
    split_rows[:, 3] = offset(forest.children[s0:s1, 1].astype(np.int64))
    split_rows[:, 4] = forest.feature[s0:s1]
    leaf_rows = np.empty((nl, 2), dtype=np.int64)
    leaf_rows[:, 0] = LEAF_NODE
    leaf_rows[:, 1] = 2 * ns + (1 + nc) * np.arange(nl)
    topology = np.concatenate([[forest.n_features, nc], split_rows.ravel(), leaf_rows.ravel()]).astype(np.int32)
    split_params = np.stack([np.ones(ns), forest.threshold[s0:s1]], axis=1)
    leaf_params = np.concatenate([forest.leaf_weights[l0:l1, None], forest.leaf_probs[l0:l1]], axis=1)
    return topology, np.concatenate([split_params.ravel(), leaf_params.ravel()]).astype(np.float64)


def from_sklearn(model, predict_weighted: bool = False) -> VigraForest:
    """A VigraForest predicting exactly like a fitted sklearn RandomForestClassifier or list of DecisionTreeClassifier.

    sklearn sends x left when `x <= t` (t float64); vigra when `x < t'`. With t' = nextafter(t, +inf)
    the two agree for every float64 x, so for every float32 feature. Leaf probabilities are the
    normalised leaf values (as sklearn's predict_proba divides them), leaf weights the weighted in-bag
    sample counts. Class values (`classes_`) must be positive integers: they become ilastik label values.
    """
    trees = list(getattr(model, "estimators_", model))
    if not trees:
        raise ValueError("no fitted trees given")
    classes = np.asarray(model.classes_ if hasattr(model, "estimators_") else trees[0].classes_)
    if not hasattr(model, "estimators_") and any(not np.array_equal(t.classes_, classes) for t in trees):
        raise ValueError("all decision trees must have the same classes_")
    if classes.dtype.kind not in "iuf" or np.any(classes < 1) or np.any(classes != np.round(classes)):
        raise ValueError(f"class values must be positive integers (ilastik label values), got {classes}")
    parts = []
    for tree in trees:
        t = tree.tree_
        if t.n_outputs != 1:
            raise ValueError("multi-output trees cannot become vigra forests")
        is_leaf = t.children_left < 0
        split_ids = np.cumsum(~is_leaf) - 1
        leaf_ids = np.cumsum(is_leaf) - 1

        def code(nodes: np.ndarray) -> np.ndarray:
            return np.where(is_leaf[nodes], -1 - leaf_ids[nodes], split_ids[nodes])

        splits = np.flatnonzero(~is_leaf)
        values = t.value[is_leaf, 0, :].astype(np.float64)
        sums = values.sum(axis=1, keepdims=True)
        parts.append((
            t.feature[splits],
            np.nextafter(t.threshold[splits], np.inf),
            np.stack([code(t.children_left[splits]), code(t.children_right[splits])], axis=1).reshape(-1, 2),
            values / np.where(sums == 0, 1.0, sums),
            t.weighted_n_node_samples[is_leaf],
        ))
    return _concatenate_trees(
        parts, labels=classes.astype(np.uint32), n_features=int(trees[0].n_features_in_),
        predict_weighted=predict_weighted,
        n_samples=int(round(trees[0].tree_.weighted_n_node_samples[0])), mtry=int(trees[0].max_features_),
    )


@njit(cache=True, nogil=True)
def _walk(flat, row_stride, start, m, feature, threshold, children, root, depth, n_splits, node, leaf):
    """leaf[r] for rows start..start+m-1 of the channels-first features `flat` (feature f of row i at
    f·row_stride + i): _LANES rows walk the tree in lock step for exactly its depth (leaves loop to
    themselves), a branch-free loop whose independent walks the CPU overlaps."""
    last = np.uint64(start + m - 1)
    for r0 in range(0, m, _LANES):
        for j in range(_LANES):
            node[j] = root
        for _ in range(depth):
            for j in range(_LANES):  # lanes beyond m walk the last row again; their leaves go unused
                a = node[j]
                x = flat[np.uint64(feature[a]) * np.uint64(row_stride) + min(np.uint64(start + r0 + j), last)]
                node[j] = children[np.uint64(2 * a) + np.uint64(x >= threshold[a])]
        for j in range(min(_LANES, m - r0)):
            leaf[r0 + j] = np.int64(node[j]) - n_splits


@njit(cache=True, nogil=True)
def _reachable(Xt, start, m, feature, threshold, bits, first, stop, reachable):
    """QuickScorer for rows start..start+m-1 of a tree of at most 64 leaves numbered left to right: every
    split whose test sends a row right removes its left subtree's leaves from the row's reachable set, and
    the exit leaf is the lowest bit left. Each split is one vectorised pass over a feature's row; the sets
    are `reachable`'s unsigned type (uint32 for trees of at most 32 leaves: twice the rows per vector)."""
    word = reachable.dtype.type
    everything = word(~word(0))
    reachable[:m] = everything
    for s in range(first, stop):
        row = Xt[feature[s], start:start + m]
        th = threshold[s]
        mask = word(bits[s])
        for r in range(m):
            reachable[r] &= mask if row[r] >= th else everything


@njit(cache=True, nogil=True)
def _lowest_leaves(reachable, m, leaves, leaf):
    """leaf[r] = leaves[index of the lowest set bit of reachable[r]] (de Bruijn multiplication)."""
    for r in range(m):
        lowest = reachable[r] & (~reachable[r] + np.uint64(1))
        leaf[r] = leaves[_DEBRUIJN_POSITION[(lowest * _DEBRUIJN) >> np.uint64(58)]]


@njit(cache=True, nogil=True)
def _add_leaves(leaf, m, leaf_values, acc, weight, track_weight):
    """vigra's accumulation of one tree: acc[c, r] += float32(value), weight[r] += value (if `track_weight`),
    class by class."""
    for r in range(m):
        for c in range(leaf_values.shape[1]):
            v = leaf_values[leaf[r], c]
            acc[c, r] += np.float32(v)
            if track_weight:
                weight[r] += v


@njit(cache=True, nogil=True)
def _add_exit_leaves(reachable, m, leaves, leaf_values, acc, weight, track_weight):
    """_lowest_leaves + _add_leaves for a tree of few leaves, vectorised: each leaf adds its values where it
    is the exit leaf and zeros elsewhere (x + 0 == x, so the sums are the same, bit for bit); the weights
    only if `track_weight`."""
    word = reachable.dtype.type
    one = word(1)
    for k in range(leaves.shape[0]):
        below = word((one << word(k + 1)) - one)
        exit_bit = word(one << word(k))
        for c in range(leaf_values.shape[1]):
            v = leaf_values[leaves[k], c]
            v32 = np.float32(v)
            row_acc = acc[c]
            if track_weight:  # two loops: with the test inside, LLVM keeps it there (a third slower)
                for r in range(m):
                    hit = (reachable[r] & below) == exit_bit
                    row_acc[r] += v32 if hit else np.float32(0)
                    weight[r] += v if hit else 0.0
            else:
                for r in range(m):
                    row_acc[r] += v32 if (reachable[r] & below) == exit_bit else np.float32(0)


@njit(cache=True, nogil=True)
def _predict_kernel(Xt, feature, threshold, children, roots, depths, walked, m_feature, m_threshold, m_bits, m_start,
                    m_leaves, m_leaf_start, leaf_values, forest_trees, norms, combine, out):
    """Forest probabilities into `out` (zeros, float32 (n, C)) for the C-contiguous features Xt (F, n):
    vigra's per forest, then ilastik's tree-count weighted mean of the forests if `combine` (else `out`
    is the single forest's own result). Rows go _BATCH_ROWS at a time through every tree (their features
    stay in L2); each tree finds its exit leaves by walking (`walked`, more than 64 leaves) or by masks, and
    adds their values. A forest whose `norms` entry is not NaN divides every row by it (see _constant_norm)."""
    n_features, n = Xt.shape
    n_classes = leaf_values.shape[1]
    n_splits = feature.shape[0] - leaf_values.shape[0]
    n_forests = forest_trees.shape[0] - 1
    total_trees = np.float32(forest_trees[n_forests])
    acc = np.empty((n_classes, _BATCH_ROWS), dtype=np.float32)
    weight = np.empty(_BATCH_ROWS, dtype=np.float64)
    has_nan = np.empty(_BATCH_ROWS, dtype=np.uint8)
    flat = Xt.ravel()
    node = np.empty(_LANES, dtype=np.uint32)
    leaf = np.empty(_BATCH_ROWS, dtype=np.int64)
    reachable = np.empty(_BATCH_ROWS, dtype=np.uint64)
    few = np.empty(_BATCH_ROWS, dtype=np.uint32)  # the reachable sets of trees with few leaves
    for start in range(0, n, _BATCH_ROWS):
        m = min(_BATCH_ROWS, n - start)
        has_nan[:m] = 0
        for f in range(n_features):  # also brings the rows' features into the cache for the trees
            row = Xt[f, start:start + m]
            for r in range(m):
                has_nan[r] |= row[r] != row[r]
        for f in range(n_forests):
            acc[:, :m] = 0
            weight[:m] = 0
            track_weight = np.isnan(norms[f])
            for t in range(forest_trees[f], forest_trees[f + 1]):
                leaves = m_leaves[m_leaf_start[t]:m_leaf_start[t + 1]]
                if walked[t]:
                    _walk(flat, n, start, m, feature, threshold, children, np.uint32(roots[t]), depths[t], n_splits,
                          node, leaf)
                    _add_leaves(leaf, m, leaf_values, acc, weight, track_weight)
                    continue
                if leaves.shape[0] <= _FEW_LEAVES:
                    _reachable(Xt, start, m, m_feature, m_threshold, m_bits, m_start[t], m_start[t + 1], few)
                    _add_exit_leaves(few, m, leaves, leaf_values, acc, weight, track_weight)
                else:
                    _reachable(Xt, start, m, m_feature, m_threshold, m_bits, m_start[t], m_start[t + 1], reachable)
                    _lowest_leaves(reachable, m, leaves, leaf)
                    _add_leaves(leaf, m, leaf_values, acc, weight, track_weight)
            trees_f = np.float32(forest_trees[f + 1] - forest_trees[f])
            for r in range(m):
                if not has_nan[r]:
                    norm = np.float32(weight[r]) if track_weight else norms[f]
                    for c in range(n_classes):
                        if combine:
                            out[start + r, c] += (acc[c, r] / norm) * trees_f
                        else:
                            out[start + r, c] = acc[c, r] / norm
        if combine:
            for r in range(m):
                for c in range(n_classes):
                    out[start + r, c] /= total_trees


def _constant_norm(values: np.ndarray, leaf_start: np.ndarray) -> float:
    """float32(total weight) of a row when it provably does not depend on the row, else NaN.

    vigra sums every leaf value a row meets in double (tree by tree, class by class) and divides by that
    sum rounded to float32. When each tree's leaves sum to nearly the same total (unweighted forests: 1),
    the exact sum lies in [Σ min, Σ max] over the trees, the double sum within n·2⁻⁵³·Σ|v| of it (plus
    margin); if both ends round to the same float32, so does every row's sum, and the kernel skips it."""
    n_trees = len(leaf_start) - 1
    if n_trees < 1 or not np.isfinite(values).all():
        return math.nan
    starts = leaf_start[:-1]
    sums = values.sum(axis=1)
    abs_total = float(np.maximum.reduceat(np.abs(values).sum(axis=1), starts).sum())
    slack = 4.0 * (n_trees * values.shape[1] + values.shape[1] + 4) * 2.0 ** -53 * abs_total
    lo = math.fsum(np.minimum.reduceat(sums, starts)) - slack
    hi = math.fsum(np.maximum.reduceat(sums, starts)) + slack
    return float(np.float32(lo)) if np.float32(lo) == np.float32(hi) else math.nan


def _float32_threshold(threshold: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 threshold: for float32 x, x < t exactly when x < that value."""
    t32 = threshold.astype(np.float32)
    below = t32.astype(np.float64) < threshold
    t32[below] = np.nextafter(t32[below], np.float32(np.inf))
    return t32


def _walk_arrays(forests: Sequence[VigraForest]) -> tuple[np.ndarray, ...]:
    """All forests as one node table for the kernel: split nodes (indices shifted per forest), then one node
    per leaf that loops to itself (feature 0, threshold NaN: never x >= NaN). Returns feature (int32),
    float32 threshold, children (int32, flat pairs), roots and depths (splits on the longest path) per tree."""
    split_shift = np.cumsum([0] + [len(f.feature) for f in forests])
    leaf_shift = np.cumsum([0] + [len(f.leaf_weights) for f in forests])
    n_splits, n_leaves = int(split_shift[-1]), int(leaf_shift[-1])

    def as_nodes(arrays) -> np.ndarray:  # forest-local child codes → node indices
        return np.concatenate([np.where(a >= 0, a + s, n_splits + l - 1 - a)
                               for a, s, l in zip(arrays, split_shift, leaf_shift)]).astype(np.int64)

    leaves = np.arange(n_splits, n_splits + n_leaves)
    children = np.concatenate([as_nodes([f.children for f in forests]).reshape(-1, 2),
                               np.stack([leaves, leaves], axis=1)])
    roots = as_nodes([f.roots() for f in forests])
    depth = np.zeros(n_splits + n_leaves, dtype=np.int64)
    frontier = roots[roots < n_splits]
    while frontier.size:  # level by level from the roots (trees are acyclic: read_vigra_forest checks)
        below = children[frontier].ravel()
        depth[below] = np.repeat(depth[frontier] + 1, 2)
        frontier = below[below < n_splits]
    tree_of_leaf = np.concatenate([np.repeat(np.arange(f.n_trees) + t0, np.diff(f.leaf_start))
                                   for f, t0 in zip(forests, np.cumsum([0] + [f.n_trees for f in forests]))])
    depths = np.zeros(len(roots), dtype=np.int64)
    np.maximum.at(depths, tree_of_leaf, depth[n_splits:])
    feature = np.concatenate([f.feature for f in forests] + [np.zeros(n_leaves)]).astype(np.int32)
    threshold = np.concatenate([_float32_threshold(np.concatenate([f.threshold for f in forests])),
                                np.full(n_leaves, np.nan, dtype=np.float32)])
    return feature, threshold, children.astype(np.int32).ravel(), roots, depths


def _left_to_right(children: np.ndarray, root: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    """A tree's leaves left to right (forest-local leaf indices) and, per split, the positions lo:hi of its
    left subtree's leaves in that order."""
    order: list[int] = []
    tests: list[tuple[int, int, int]] = []

    def visit(code: int) -> tuple[int, int]:
        if code < 0:
            order.append(-1 - code)
            return len(order) - 1, len(order)
        lo, mid = visit(int(children[code, 0]))
        _, hi = visit(int(children[code, 1]))
        tests.append((code, lo, mid))
        return lo, hi

    visit(root)
    return order, tests


def _mask_arrays(forests: Sequence[VigraForest]) -> tuple[np.ndarray, ...]:
    """The kernel's tables for finding exit leaves by masks: per split its feature, float32 threshold and the
    bits of the leaves that stay reachable when the row goes right; per tree whether it is walked instead
    (more than 64 leaves), its splits m_start[t]:m_start[t + 1] and its leaves left to right (global
    leaf indices, m_leaf_start[t]:m_leaf_start[t + 1])."""
    feature: list[int] = []
    threshold: list[float] = []
    bits: list[int] = []
    walked: list[bool] = []
    starts: list[int] = []
    leaves: list[int] = []
    leaf_starts: list[int] = []
    leaf_shift = 0
    for forest in forests:
        for t, root in enumerate(forest.roots()):
            starts.append(len(feature))
            leaf_starts.append(len(leaves))
            walked.append(bool(forest.leaf_start[t + 1] - forest.leaf_start[t] > 64))
            if walked[-1]:
                continue
            order, tests = _left_to_right(forest.children, int(root))
            for split, lo, hi in tests:
                feature.append(int(forest.feature[split]))
                threshold.append(float(forest.threshold[split]))
                bits.append(_ALL_LEAVES_INT & ~(((1 << (hi - lo)) - 1) << lo))
            leaves.extend(leaf_shift + leaf for leaf in order)
        leaf_shift += len(forest.leaf_weights)
    starts.append(len(feature))
    leaf_starts.append(len(leaves))
    return (np.array(walked, dtype=np.bool_), np.array(feature, dtype=np.int32),
            _float32_threshold(np.array(threshold, dtype=np.float64)), np.array(bits, dtype=np.uint64),
            np.array(starts, dtype=np.int64), np.array(leaves, dtype=np.int64), np.array(leaf_starts, dtype=np.int64))


@dataclass(eq=False)
class ForestEnsemble:
    """ilastik's ParallelVigraRfLazyflowClassifier: several vigra forests trained on the same data."""

    forests: list[VigraForest]
    known_labels: np.ndarray  # class values that had training samples, one per probability column

    def __post_init__(self) -> None:
        if not self.forests:
            raise UserError("The classifier has no forests.")
        first = self.forests[0]
        for forest in self.forests[1:]:
            if forest.n_features != first.n_features or not np.array_equal(forest.labels, first.labels):
                raise UserError("The classifier's forests disagree on their features or classes.")

    @property
    def n_features(self) -> int:
        return self.forests[0].n_features

    @property
    def n_trees(self) -> int:
        return sum(f.n_trees for f in self.forests)

    @cached_property
    def _packed(self) -> tuple[np.ndarray, ...]:
        """All forests as the kernel's arrays (see _walk_arrays), leaf values and trees per forest."""
        values = [f.leaf_probs * (f.leaf_weights[:, None] if f.predict_weighted else 1.0) for f in self.forests]
        return (
            *_walk_arrays(self.forests),
            *_mask_arrays(self.forests),
            np.ascontiguousarray(np.concatenate(values), dtype=np.float64),
            np.cumsum([0] + [f.n_trees for f in self.forests]).astype(np.int64),
            np.array([_constant_norm(v, f.leaf_start) for v, f in zip(values, self.forests)], dtype=np.float32),
        )

    def _columns(self, X: np.ndarray, combine: bool) -> np.ndarray:
        """(n, F) features → (n, n_columns) float32 from the kernel. X is best, as `compute_features` gives
        it, a view of channels-first data (read in place); other layouts are copied channels-first."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise UserError(f"The classifier expects {self.n_features} feature channels per pixel, got {X.shape[-1]}.")
        probs = np.zeros((X.shape[0], len(self.forests[0].labels)), dtype=np.float32)
        _predict_kernel(np.ascontiguousarray(X.T), *self._packed, combine, probs)
        return probs

    def predict_proba(self, X: np.ndarray, n_label_channels: int) -> np.ndarray:
        """(n, F) features → (n, n_label_channels) float32; channel k is class k+1, as ilastik computes it.

        Per forest vigra's predictProbabilities (rows with NaN → 0); forests combined as
        Σ probs_f · trees_f / total trees in float32. If the forests have fewer columns than there are
        label channels, column i goes to channel known_labels[i] - 1 and classes without training
        samples stay 0 (ilastik's scatter).
        """
        n_columns = len(self.forests[0].labels)
        if n_columns > n_label_channels:
            raise UserError(f"The classifier knows {n_columns} classes but the project has only {n_label_channels} "
                            "labels; retrain it (--retrain).")
        probs = self._columns(X, combine=True)
        if n_columns == n_label_channels:
            return probs
        known = np.asarray(self.known_labels, dtype=np.int64)
        if len(known) != n_columns or known.min() < 1 or known.max() > n_label_channels:
            raise UserError(f"The classifier's known labels {known.tolist()} do not fit its {n_columns} classes "
                            f"and the project's {n_label_channels} labels; retrain it (--retrain).")
        full = np.zeros((X.shape[0], n_label_channels), dtype=np.float32)
        full[:, known - 1] = probs
        return full


def _classifier_type(group: h5py.Group) -> str:
    """Class name in `pickled_type` (protocol-0 text, parsed, never unpickled); Parallel RF when absent."""
    if "pickled_type" not in group:
        return _PARALLEL_TYPES[0]
    raw = group["pickled_type"][()]
    text = raw.tobytes() if isinstance(raw, np.void) else raw if isinstance(raw, bytes) else str(raw).encode()
    match = _PICKLED_CLASS.match(text)
    if not match:
        raise UserError(f"The classifier type stored in {group.name} of {group.file.filename} cannot be recognised.")
    return match.group(1).decode()


def read_classifier(group: h5py.Group) -> ForestEnsemble:
    """The trained classifier in an ilastik `ClassifierForests` group."""
    kind = _classifier_type(group)
    if kind in _PARALLEL_TYPES:
        names = sorted(k for k in group if k.startswith("Forest"))
    elif kind in _SINGLE_TYPES:
        names = ["forest"] if "forest" in group else []
    elif kind == "SklearnLazyflowClassifier":
        raise UserError("The project's classifier is a scikit-learn classifier (SklearnLazyflowClassifier), which is "
                        "not supported: it is stored as a Python pickle and would need unpickling. Retrain it with "
                        "the default random forest in ilastik, or run with --retrain.")
    else:
        raise UserError(f"The project's classifier type {kind} is not supported (supported: "
                        f"{', '.join(_PARALLEL_TYPES + _SINGLE_TYPES)}).")
    if not names:
        raise UserError(f"The classifier group {group.name} in {group.file.filename} holds no forests.")
    forests = [read_vigra_forest(group[name]) for name in names]
    if "known_labels" in group:
        known = np.asarray(group["known_labels"][()], dtype=np.int64).ravel()
    else:
        known = np.arange(1, len(forests[0].labels) + 1)
    return ForestEnsemble(forests=forests, known_labels=known)


def write_classifier(group: h5py.Group, ensemble: ForestEnsemble, feature_names: list[str]) -> None:
    """Fill an empty `ClassifierForests` group as ilastik 1.4 writes a ParallelVigraRfLazyflowClassifier."""
    for index, forest in enumerate(ensemble.forests):
        write_vigra_forest(group.create_group(f"Forest{index:04d}"), forest)
    group.create_dataset("known_labels", data=np.asarray(ensemble.known_labels, dtype=np.uint32))
    names = [name.encode() for name in feature_names]
    group.create_dataset("feature_names", data=np.array(names, dtype=f"S{max([len(n) for n in names] + [1])}"))
    group.create_dataset("pickled_type", data=PICKLED_TYPE, dtype=h5py.string_dtype("ascii"))
