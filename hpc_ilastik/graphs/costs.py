"""Edge probabilities → multicut costs, as ilastik's `compute_edge_weights` (`applets/multicut/opMulticut.py`;
ilastik-workflows-spec.md §C.3), and the probabilities of a project that trains no edge classifier."""

from __future__ import annotations

import numpy as np

TOUCHING_ZERO = -1000.0  # ilastik's cost of every edge of superpixel 0: never merged with its neighbours


def edge_costs(edges: np.ndarray, cut_probabilities: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    """Costs (positive = attractive) of edges (E, 2), smaller id first, from P(cut): clipped to [0.001, 0.999],
    rescaled so that `threshold` maps to 0.5, then ln((1 − p)/p) + ln((1 − β)/β); in the probabilities' float
    type, as ilastik computes them."""
    p = np.clip(np.asarray(cut_probabilities), 0.001, 0.999)
    p = np.where(p <= threshold, p / (2 * threshold), 0.5 + (p - threshold) / (2 * (1 - threshold)))
    costs = np.log(np.reciprocal(p) - 1) + np.log(1 / beta - 1)
    costs[np.asarray(edges)[:, 0] == 0] = TOUCHING_ZERO
    return costs


def normalized(values: np.ndarray) -> np.ndarray:
    """ilastik's `normalize1` of the mean boundary per edge: minus the minimum, then divided by the maximum."""
    shifted = values - np.min(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return shifted / np.max(shifted)
