"""vigra RF2 random forests as ilastik stores them, flattened into arrays for a numba predictor.

Layout and prediction rules: ilastik-numerics.md §7-§8, ilastik-spec.md §3.4. One vigra forest group
holds `_options/*`, `_ext_param/*` and `Tree_<k>/{topology,parameters}`; a tree node at topology
offset n is `[type, parameter offset, child0, child1, column]` (split: child0 when x < threshold) or
`[type, parameter offset]` (leaf: parameters `[weight, p_1 .. p_C]`). We flatten every tree into
split-node arrays plus a leaf table, which `forest.predict` runs in numba.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.predict import pack_forests, predict_columns

SPLIT_NODE = 0
LEAF_NODE = 0x40000000
FOREST_VERSION = 0.1

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
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise UserError(f"The forest expects {self.n_features} feature channels per pixel, got {X.shape[-1]}.")
        return predict_columns(X, pack_forests([self]), len(self.labels), combine=False)

    def roots(self) -> np.ndarray:
        """Root of every tree in the child encoding (split index, or -1 - leaf index)."""
        has_split = self.split_start[1:] > self.split_start[:-1]
        return np.where(has_split, self.split_start[:-1], -1 - self.leaf_start[:-1]).astype(np.int32)


def _damaged(group: h5py.Group, why: str) -> UserError:
    return UserError(
        f"The random forest '{group.name}' in {group.file.filename} is damaged or not a vigra forest: {why}.")


def _scalar(group: h5py.Group, path: str) -> float:
    try:
        return float(_whole_dataset(group, path, np.float64)[0])
    except (KeyError, IndexError, TypeError, ValueError, OSError) as exc:
        raise _damaged(group, f"cannot read {path}") from exc


def _flatten_trees(group: h5py.Group, topologies: Sequence[np.ndarray], parameters: Sequence[np.ndarray],
                   n_classes: int, n_features: int) -> dict[str, np.ndarray]:
    """Every tree's topology/parameters → the VigraForest arrays (feature, threshold, children, leaf_probs,
    leaf_weights, split_start, leaf_start), each tree's nodes root first in level order.

    Nodes are found level by level from the roots (offset 2 of each topology), all trees at once; every offset is
    checked against its own tree, so a damaged file gives a UserError and the flattened trees are always finite
    and acyclic."""
    sizes = np.array([len(t) for t in topologies], dtype=np.int64)
    if (sizes < 4).any() or any(t[1] != n_classes for t in topologies):
        raise _damaged(group, "tree header does not match the class count")
    n_trees = len(topologies)
    base = np.concatenate([[0], np.cumsum(sizes)])
    topo = np.concatenate(topologies)
    value_sizes = np.array([len(p) for p in parameters], dtype=np.int64)
    value_base = np.concatenate([[0], np.cumsum(value_sizes)])
    values = np.concatenate(parameters)
    frontier, tree = base[:-1] + 2, np.arange(n_trees)  # node offsets (into topo) and their trees
    levels, level_trees = [], []
    visited = np.zeros(n_trees, dtype=np.int64)
    while frontier.size:
        local = frontier - base[tree]
        if local.min() < 2 or (local + 1 >= sizes[tree]).any():
            raise _damaged(group, "a child offset points outside the tree")
        visited += np.bincount(tree, minlength=n_trees)
        if (visited > sizes).any():
            raise _damaged(group, "the tree has a cycle")
        kinds = topo[frontier]
        known = (kinds == SPLIT_NODE) | (kinds == LEAF_NODE)
        if not known.all():
            bad = int(kinds[~known][0])
            raise UserError(f"The random forest '{group.name}' uses node type {bad:#x}, which hpc-ilastik does not "
                            "support (only threshold splits and constant-probability leaves, as ilastik trains them).")
        levels.append(frontier)
        level_trees.append(tree)
        is_split = kinds == SPLIT_NODE
        splits, tree = frontier[is_split], tree[is_split]
        if splits.size and (splits - base[tree] + 4 >= sizes[tree]).any():
            raise _damaged(group, "a split node is cut off")
        tree = np.repeat(tree, 2)
        frontier = topo[np.stack([splits + 2, splits + 3], axis=1).ravel()].astype(np.int64) + base[tree]
    order = np.argsort(np.concatenate(level_trees), kind="stable")  # tree by tree, each in level order
    nodes, node_tree = np.concatenate(levels)[order], np.concatenate(level_trees)[order]
    if np.unique(nodes).size != nodes.size:
        raise _damaged(group, "a node is reached twice")
    is_split = topo[nodes] == SPLIT_NODE
    splits, leaves = nodes[is_split], nodes[~is_split]
    split_tree, leaf_tree = node_tree[is_split], node_tree[~is_split]

    lookup = np.zeros(topo.size, dtype=np.int64)  # node offset → split index, or -1 - leaf index
    lookup[splits] = np.arange(splits.size)
    lookup[leaves] = -1 - np.arange(leaves.size)
    split_par = topo[splits + 1].astype(np.int64)
    leaf_par = topo[leaves + 1].astype(np.int64)
    if (split_par.size and (split_par.min() < 0 or (split_par + 1 >= value_sizes[split_tree]).any())) or (
        leaf_par.min() < 0 or (leaf_par + n_classes >= value_sizes[leaf_tree]).any()
    ):
        raise _damaged(group, "a parameter offset points outside the tree's parameters")
    feature = topo[splits + 4].astype(np.int32)
    if feature.size and (feature.min() < 0 or feature.max() >= n_features):
        raise _damaged(group, "a split uses a feature column beyond the forest's feature count")
    split_par += value_base[split_tree]
    leaf_par += value_base[leaf_tree]
    children = lookup[topo[np.stack([splits + 2, splits + 3], axis=1)] + base[split_tree][:, None]]
    return dict(feature=feature, threshold=values[split_par + 1], children=children.astype(np.int32).reshape(-1, 2),
                leaf_probs=values[leaf_par[:, None] + 1 + np.arange(n_classes)], leaf_weights=values[leaf_par],
                split_start=np.concatenate([[0], np.cumsum(np.bincount(split_tree, minlength=n_trees))]),
                leaf_start=np.concatenate([[0], np.cumsum(np.bincount(leaf_tree, minlength=n_trees))]))


def _whole_dataset(group: h5py.Group, path: str, dtype: type) -> np.ndarray:
    """A dataset of the group, flat, converted to `dtype` by HDF5: h5py's low-level calls, as a forest holds
    hundreds of small datasets and the high-level objects cost ten times the reads."""
    dataset = h5py.h5d.open(group.id, path.encode())
    if dataset.get_type().get_class() not in (h5py.h5t.INTEGER, h5py.h5t.FLOAT):
        raise TypeError(f"{path} holds no numbers")
    values = np.empty(dataset.shape, dtype=dtype)
    dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, values)
    return values.ravel()


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
    topologies, parameters = [], []
    for name in tree_names:
        try:
            topologies.append(_whole_dataset(group, f"{name}/topology", np.int64))
            parameters.append(_whole_dataset(group, f"{name}/parameters", np.float64))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise _damaged(group, f"{name} lacks topology/parameters") from exc
    return VigraForest(
        **_flatten_trees(group, topologies, parameters, n_classes, n_features), labels=labels, n_features=n_features,
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


