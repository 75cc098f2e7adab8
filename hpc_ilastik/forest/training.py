"""Training vigra-style classification forests with scikit-learn: vigra's defaults as far as scikit-learn has
them (gini, bootstrap of n rows, mtry = round(sqrt(F)), split while a node is impure and holds more than one
sample), converted to vigra forests and split into sub-forests as ilastik's ParallelVigraRfLazyflowClassifier
does (ilastik-numerics.md §7). Pixel and object classifiers are trained here.
"""

from __future__ import annotations

import math

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.forest.vigra import from_sklearn

DEFAULT_TREE_COUNT = 100  # ilastik's ParallelVigraRfLazyflowClassifierFactory(100)
DEFAULT_FOREST_COUNT = 4


def split_trees(tree_count: int, n_forests: int) -> list[int]:
    """ilastik's split of the trees over sub-forests: as even as possible, the first ones one larger."""
    n = max(1, min(n_forests, tree_count))
    return [tree_count // n + (1 if i < tree_count % n else 0) for i in range(n)]


def train_forests(X: np.ndarray, y: np.ndarray, tree_count: int = DEFAULT_TREE_COUNT,
                  n_forests: int = DEFAULT_FOREST_COUNT, seed: int | None = None) -> ForestEnsemble:
    """Train `tree_count` trees in `n_forests` sub-forests (ilastik's Forest0000, Forest0001, …)."""
    if tree_count < 1:
        raise UserError(f"The tree count must be at least 1, got {tree_count}.")
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.uint32)
    if X.ndim != 2 or len(X) != len(y) or not len(y):
        raise ValueError(f"need matching non-empty X (n, F) and y (n,), got {X.shape} and {y.shape}")
    from sklearn.ensemble import RandomForestClassifier  # lazy here: sklearn's import costs every run ~0.5 s

    mtry = max(1, int(math.floor(math.sqrt(X.shape[1]) + 0.5)))  # vigra's RF_SQRT
    seeds = np.random.SeedSequence(seed).generate_state(n_forests)
    forests = []
    for trees, forest_seed in zip(split_trees(tree_count, n_forests), seeds):
        model = RandomForestClassifier(n_estimators=trees, criterion="gini", max_features=mtry, bootstrap=True,
                                       min_samples_split=2, min_samples_leaf=1, n_jobs=-1,
                                       random_state=int(forest_seed))
        model.fit(X, y)
        forests.append(from_sklearn(model))
    return ForestEnsemble(forests=forests, known_labels=np.unique(y).astype(np.uint32))
