"""Objects classified as ilastik's OpObjectPredict does: the feature matrix of every object through the
project's forests, class = 1 + argmax of the probabilities (first maximum on ties), row 0 the background."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.objects.features import FeatureSet, feature_matrix


def classify_objects(feature_table: Mapping[str, Mapping[str, np.ndarray]], wanted: FeatureSet,
                     classifier: ForestEnsemble | None, n_objects: int,
                     n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes uint8, probabilities float32 (n_classes columns)), one row per object id, row 0 the background;
    all zeros without a classifier. `feature_table` holds (n_objects + 1, k) values per feature."""
    probabilities = np.zeros((n_objects + 1, n_classes), dtype=np.float32)
    classes = np.zeros(n_objects + 1, dtype=np.uint8)
    if classifier is None or not n_objects:
        return classes, probabilities
    matrix = feature_matrix(feature_table, wanted)
    if matrix.shape[1] != classifier.n_features:
        raise UserError(f"the objects have {matrix.shape[1]} feature columns but the project's object classifier "
                        f"was trained on {classifier.n_features}: give inputs like the training images")
    probabilities[1:] = classifier.predict_proba(matrix[1:], n_classes)
    classes[1:] = np.argmax(probabilities[1:], axis=1) + 1
    return classes, probabilities


def labelled_samples(matrix: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training rows of one frame: the rows of its feature matrix (row = object id, row 0 the background) whose
    object the project labels (`LabelInputs`: the class of each object id, 0 unlabelled), and their classes."""
    rows = np.flatnonzero(labels[:len(matrix)])
    rows = rows[rows > 0]
    return matrix[rows], labels[rows].astype(np.uint32)
