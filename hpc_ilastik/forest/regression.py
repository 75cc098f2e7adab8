"""scikit-learn regression forests (`RandomForestRegressor`, one output), as ilastik's Cell Density Counting
stores them: read from a pickle's inert values (never unpickled), trained with scikit-learn, and predicted
by our own numba walker with scikit-learn's arithmetic (float32 features against float64 thresholds, the
trees' values summed in float64 in tree order, then divided by the tree count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from hpc_ilastik.io.pickles import Call, is_global, numpy_array

_FOREST_MODULES = {"sklearn.ensemble._forest", "sklearn.ensemble.forest"}  # 0.22+ and older scikit-learn
_TREE_MODULES = {"sklearn.tree._classes", "sklearn.tree.tree"}
_LEAF = -1  # scikit-learn's TREE_LEAF


@dataclass(frozen=True)
class RegressionForest:
    """The trees of one forest in flat node arrays: tree t's nodes are `roots[t]:roots[t + 1]`, children as
    indices into the flat arrays (-1 at leaves)."""

    left: np.ndarray         # int64
    right: np.ndarray        # int64
    feature: np.ndarray      # int64
    threshold: np.ndarray    # float64
    missing_left: np.ndarray  # bool: where a NaN goes (scikit-learn >= 1.3; else right)
    value: np.ndarray        # float64, the node's prediction
    roots: np.ndarray        # int64, n_trees + 1 offsets
    n_features: int

    @property
    def n_trees(self) -> int:
        return len(self.roots) - 1

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, F) features → (n,) float64, as scikit-learn's `predict` (features taken as float32)."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"the forest takes {self.n_features} features, got an array of shape {X.shape}")
        columns = np.ascontiguousarray(np.asarray(X, dtype=np.float32).T)
        out = np.empty(X.shape[0], dtype=np.float64)
        _predict(columns, self.left, self.right, self.feature, self.threshold, self.missing_left, self.value,
                 self.roots, out)
        return out


@njit(cache=True, nogil=True)
def _predict(columns, left, right, feature, threshold, missing_left, value, roots, out):
    n_trees = len(roots) - 1
    for i in range(columns.shape[1]):
        total = 0.0
        for t in range(n_trees):
            node = roots[t]
            while left[node] != _LEAF:
                x = columns[feature[node], i]
                if np.isnan(x):
                    node = left[node] if missing_left[node] else right[node]
                elif x <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            total += value[node]
        out[i] = total / n_trees


def _join(trees: list[dict[str, np.ndarray]], n_features: int) -> RegressionForest:
    """One forest from per-tree node arrays (children local to each tree)."""
    if not trees:
        raise ValueError("a forest without trees")
    sizes = [len(t["left"]) for t in trees]
    roots = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def children(key: str) -> np.ndarray:
        return np.concatenate([np.where(t[key] == _LEAF, _LEAF, t[key] + start)
                               for t, start in zip(trees, roots[:-1])]).astype(np.int64)

    feature = np.concatenate([t["feature"] for t in trees]).astype(np.int64)
    left, right = children("left"), children("right")
    inner = left != _LEAF
    if (np.any((left >= roots[-1]) | (right >= roots[-1]) | (inner & (right == _LEAF)))
            or np.any(inner & ((feature < 0) | (feature >= n_features)))):
        raise ValueError("a tree with children or features out of range")
    for start, stop in zip(roots[:-1], roots[1:]):  # children come after their parents: every walk ends
        local = np.arange(start, stop)
        if np.any(inner[start:stop] & ((left[start:stop] <= local) | (right[start:stop] <= local)
                                       | (right[start:stop] >= stop) | (left[start:stop] >= stop))):
            raise ValueError("a tree whose nodes do not form a tree")
    return RegressionForest(left=left, right=right, feature=feature,
                            threshold=np.concatenate([t["threshold"] for t in trees]).astype(np.float64),
                            missing_left=np.concatenate([t["missing_left"] for t in trees]).astype(bool),
                            value=np.concatenate([t["value"] for t in trees]).astype(np.float64),
                            roots=roots, n_features=n_features)


def from_pickled(value: Any, what: str) -> RegressionForest:
    """The forest of a pickled `RandomForestRegressor` (inert values from `io.pickles.read_pickle`).
    ValueError naming `what` for anything else (another class, more than one output, a damaged tree)."""
    if not (isinstance(value, Call) and is_global(value.function, _FOREST_MODULES, "RandomForestRegressor")
            and isinstance(value.state, dict)):
        raise ValueError(f"{what} is not a scikit-learn RandomForestRegressor ({_describe(value)})")
    state = value.state
    n_features, n_outputs = state.get("n_features_in_", state.get("n_features_")), state.get("n_outputs_")
    estimators = state.get("estimators_")
    if not isinstance(n_features, int) or n_outputs != 1 or not isinstance(estimators, list):
        raise ValueError(f"{what}: a RandomForestRegressor with {n_outputs} outputs and {n_features} features")
    return _join([_pickled_tree(tree, f"{what}, tree {k}") for k, tree in enumerate(estimators)], n_features)


def _pickled_tree(value: Any, what: str) -> dict[str, np.ndarray]:
    if not (isinstance(value, Call) and is_global(value.function, _TREE_MODULES, "DecisionTreeRegressor")
            and isinstance(value.state, dict)):
        raise ValueError(f"{what} is not a DecisionTreeRegressor ({_describe(value)})")
    tree = value.state.get("tree_")
    if not (isinstance(tree, Call) and is_global(tree.function, "sklearn.tree._tree", "Tree")
            and isinstance(tree.state, dict)):
        raise ValueError(f"{what} has no tree ({_describe(tree)})")
    nodes = numpy_array(tree.state.get("nodes"), f"{what}: nodes")
    values = numpy_array(tree.state.get("values"), f"{what}: values")
    count = tree.state.get("node_count")
    names = set(nodes.dtype.names or ())
    if not {"left_child", "right_child", "feature", "threshold"} <= names or nodes.ndim != 1:
        raise ValueError(f"{what}: a node table without children, features or thresholds")
    if count != len(nodes) or values.shape[0] != len(nodes) or values.size != len(nodes):
        raise ValueError(f"{what}: {count} nodes, a node table of {len(nodes)} and values of shape {values.shape}")
    missing = nodes["missing_go_to_left"] if "missing_go_to_left" in names else np.zeros(len(nodes), bool)
    return {"left": nodes["left_child"], "right": nodes["right_child"], "feature": nodes["feature"],
            "threshold": nodes["threshold"], "missing_left": missing != 0, "value": values.reshape(-1)}


def _describe(value: Any) -> str:
    if isinstance(value, Call):
        return f"a pickled call of {value.function}"
    return f"a {type(value).__name__}"


def from_sklearn(model: Any) -> RegressionForest:
    """A fitted scikit-learn RandomForestRegressor with one output."""
    trees = []
    for estimator in model.estimators_:
        tree = estimator.tree_
        missing = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, np.uint8))
        trees.append({"left": tree.children_left, "right": tree.children_right, "feature": tree.feature,
                      "threshold": tree.threshold, "missing_left": np.asarray(missing) != 0,
                      "value": tree.value.reshape(-1)})
    return _join(trees, int(model.n_features_in_))


def train_regression_forest(X: np.ndarray, y: np.ndarray, n_trees: int, max_depth: int | None,
                            seed: int) -> RegressionForest:
    """A scikit-learn RandomForestRegressor (its defaults otherwise) fitted to (X, y), seeded."""
    from sklearn.ensemble import RandomForestRegressor  # lazy: sklearn's import costs every run ~0.5 s

    model = RandomForestRegressor(n_estimators=n_trees, max_depth=max_depth, random_state=seed, n_jobs=1)
    return from_sklearn(model.fit(X, y))
