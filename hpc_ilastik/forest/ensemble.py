"""ilastik's pixel and object classifiers: a `ParallelVigraRfLazyflowClassifier` is several vigra forests
trained on the same data, stored in a `ClassifierForests` group (ilastik-spec.md §3.4). The stored
`pickled_type` is read as text, never unpickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.predict import pack_forests, predict_columns
from hpc_ilastik.forest.vigra import VigraForest, read_vigra_forest, write_vigra_forest

# What ilastik 1.4 stores as `pickled_type`: pickle protocol 0 of the classifier class (text, never unpickled).
PICKLED_TYPE = b"clazyflow.classifiers.parallelVigraRfLazyflowClassifier\nParallelVigraRfLazyflowClassifier\np0\n."
_PICKLED_CLASS = re.compile(rb"^c[\w.]+\n(\w+)\n")
_PARALLEL_TYPES = ("ParallelVigraRfLazyflowClassifier",)
_SINGLE_TYPES = ("VigraRfLazyflowClassifier", "VigraRfPixelwiseClassifier")


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
        return pack_forests(self.forests)

    def _columns(self, X: np.ndarray) -> np.ndarray:
        """(n, F) features → (n, n_columns) float32, the forests combined as ilastik combines them."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise UserError(f"The classifier expects {self.n_features} feature channels per pixel, got {X.shape[-1]}.")
        return predict_columns(X, self._packed, len(self.forests[0].labels), combine=True)

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
        probs = self._columns(X)
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
