"""The measure and the references of ilastik's multicut GUI test (testEdgeTrainingWithMulticutGui.py), shared by the
watershed and multicut tests."""

import io
import zipfile

import h5py
import numpy as np
from scipy.optimize import linear_sum_assignment

from tests.conftest import FIXTURES

REFERENCE_ZIP = FIXTURES / "outputdata" / "testEdgeTrainingWithMulticutReference.zip"


def gui_reference(name: str) -> np.ndarray:
    """A zyx label image of the reference zip (its `exported_data`, zyxc with one channel)."""
    with zipfile.ZipFile(REFERENCE_ZIP) as archive:
        with h5py.File(io.BytesIO(archive.read(name)), "r") as f:
            dataset = f["exported_data"]
            assert [d.decode() if isinstance(d, bytes) else d for d in dataset.attrs["DIMENSION_LABELS"]] == list("zyxc")
            return dataset[()][..., 0]


def mean_segmentation_accuracy(segmentation: np.ndarray, groundtruth: np.ndarray, ignore_label: int = 0) -> float:
    """elf.evaluation.mean_segmentation_accuracy (what ilastik's GUI test asserts): IoU of every pair of objects,
    for each threshold 0.5, 0.55, .., 0.95 an optimal matching (scores >= threshold first, IoU breaking ties),
    accuracy tp / (tp + fp + fn), averaged; the ignore label's row and column are dropped after the IoU."""
    pairs, counts = np.unique(np.stack([segmentation.ravel(), groundtruth.ravel()]), axis=1, return_counts=True)
    ids_a, rows = np.unique(pairs[0], return_inverse=True)
    ids_b, cols = np.unique(pairs[1], return_inverse=True)
    overlap = np.zeros((ids_a.size, ids_b.size))
    overlap[rows, cols] = counts
    union = overlap.sum(axis=0, keepdims=True) + overlap.sum(axis=1, keepdims=True) - overlap
    scores = overlap / np.maximum(union, 1e-7)
    scores = np.delete(np.delete(scores, np.flatnonzero(ids_a == ignore_label), 0), np.flatnonzero(ids_b == ignore_label), 1)
    n_pred, n_true = scores.shape
    n_matched = min(n_pred, n_true)
    accuracies = []
    for threshold in np.arange(0.5, 1.0, 0.05):
        tp = 0
        if n_matched > 0 and np.any(scores >= threshold):
            pred, true = linear_sum_assignment(-(scores >= threshold).astype(float) - scores / (2 * n_matched))
            tp = int(np.count_nonzero(scores[pred, true] >= threshold))
        accuracies.append(tp / (tp + (n_pred - tp) + (n_true - tp)) if tp > 0 else 0.0)
    return float(np.mean(accuracies))


