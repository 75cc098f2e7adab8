"""The conservation-tracking energies: hytra's `insertEnergies` with ilastik's probability functions, the
field-of-view border rule, and `convexify`.

Sources: hytra `hytra/core/hypothesesgraph.py` (`insertEnergies`: tracklets sum their traxels' detection energies
and the transitions between them; division from the last traxel, appearance from the first, disappearance from the
last), `hytra/core/ilastikhypothesesgraph.py` (`getTransitionFeaturesDist`, `getDivisionFeatures`, the division
threshold test, `getBoundaryCostMultiplier`), `hytra/core/fieldofview.py` (`spatial_distance_to_border`),
`hytra/core/jsongraph.py` (`negLog`, `convexify`) and ilastik's `opConservationTracking._createHypothesesGraph`
(the field of view: 0 .. scale * (range_upper - 1) per axis; time range [t0, t_last + 1)).

Features are unweighted, one value per state as hytra stores them ([[f0], [f1], ...] flattened). The weights
come in `problem.tracking_problem`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hpc_ilastik import libm
from hpc_ilastik.tracking.hypotheses import HypothesesGraph, TrackletGraph

NEG_LOG_FLOOR = 0.0000000001  # jsongraph.negLog clamps probabilities below this
CONVEXIFY_EPSILON = 0.000001  # JsonTrackingGraph.convexifyCosts' default, the value ilastik uses
TRANSITION_PARAMETER = 5.0  # IlastikHypothesesGraph's default; ilastik does not pass another


def neg_log(p: np.ndarray) -> np.ndarray:
    """hytra's `negLog`: -ln(max(p, 1e-10)), elementwise."""
    p = np.array(p, dtype=np.float64)
    p[p < NEG_LOG_FLOOR] = NEG_LOG_FLOOR
    return libm.log(p) * -1.0


@njit(cache=True, nogil=True)
def _convexify_rows(costs: np.ndarray, eps: float) -> None:
    for row in range(costs.shape[0]):
        f = costs[row]
        best = int(np.argmin(f))  # the first minimum, as numpy's argmin
        for direction in (-1, 1):
            pos = best + direction
            previous = 0.0
            while 0 <= pos < f.shape[0]:
                gradient = f[pos] - f[pos - direction]
                if abs(gradient - previous) < eps or gradient < previous:
                    previous += eps
                    f[pos] = f[pos - direction] + previous
                else:
                    previous = gradient
                pos += direction


def convexify(costs: np.ndarray, eps: float = CONVEXIFY_EPSILON) -> np.ndarray:
    """hytra's `convexify` on every row of `costs` (one cost vector per row; a 1-D vector is one row).

    From the cheapest state outwards (left, then right) every step must rise by more than the previous one:
    a step within eps of the previous slope, or flatter, is replaced by the previous slope + eps.
    """
    out = np.array(costs, dtype=np.float64)
    rows = out.reshape(-1, out.shape[-1]) if out.ndim else out.reshape(1, 1)
    _convexify_rows(rows, float(eps))
    return out


def field_of_view(x_range: tuple[float, float], y_range: tuple[float, float], z_range: tuple[float, float],
                  scales: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """ilastik's field of view (`constructFov`): lower (0, 0, 0), upper scale * (range_upper - 1) per axis x, y, z."""
    upper = np.array([s * (r[1] - 1) for s, r in zip(scales, (x_range, y_range, z_range))], dtype=np.float64)
    return np.zeros(3), upper


def border_distance(center: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """hytra's `spatial_distance_to_border` (absolute): the distance of each x, y, z to the nearest face of the
    field-of-view box; only the x and y faces when the box is flat in z (2-D). Points outside count positive."""
    center = np.asarray(center, dtype=np.float64).reshape(-1, 3)
    axes = 3 if upper[2] - lower[2] > 0 else 2
    faces = [np.abs(center[:, a] - bound[a]) for a in range(axes) for bound in (lower, upper)]
    return np.min(np.stack(faces, axis=1), axis=1)


def boundary_multiplier(frame: np.ndarray, center: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                        border_width: float, t0: int, t_last: int, appearance: bool) -> np.ndarray:
    """`getBoundaryCostMultiplier`: 0 for appearance in the first / disappearance in the last frame of the time
    range, else min(1, distance to the border / border_width) (1 when the width is 0)."""
    frame = np.asarray(frame, dtype=np.int64).reshape(-1)
    dist = border_distance(center, lower, upper)
    multiplier = np.where(dist > border_width, 1.0, dist / border_width) if border_width > 0 else np.ones(len(frame))
    free = frame <= t0 if appearance else frame >= t_last
    return np.where(free, 0.0, multiplier)


def transition_probability(center_a: np.ndarray, center_b: np.ndarray,
                           transition_parameter: float = TRANSITION_PARAMETER) -> np.ndarray:
    """`getTransitionFeaturesDist`'s p = exp(-‖a - b‖ / transitionParameter), rowwise over x, y, z."""
    dist = np.linalg.norm(np.asarray(center_a) - np.asarray(center_b), axis=-1)
    return libm.exp(-dist / transition_parameter)


def transition_features(p: np.ndarray, max_obj: int) -> np.ndarray:
    """negLog([1 - p, p, ..., p]) with maxObj copies of p, one row per link."""
    p = np.asarray(p, dtype=np.float64).reshape(-1, 1)
    return neg_log(np.concatenate([1.0 - p, np.repeat(p, max_obj, axis=1)], axis=1))


@dataclass(frozen=True)
class EnergyFeatures:
    """hytra's per-state features of the graph that is solved (the tracklet graph when tracklets are on)."""

    detection: np.ndarray  # (N, K) with K = maxObj + 1
    division: np.ndarray  # (N, 2), NaN rows where the node has no division hypothesis
    appearance: np.ndarray  # (N, K)
    disappearance: np.ndarray  # (N, K)
    transition: np.ndarray  # (L, K)

    def convexified(self, eps: float = CONVEXIFY_EPSILON) -> EnergyFeatures:
        """`convexifyCosts`: every cost vector convexified except division's (two values are always convex)."""
        return EnergyFeatures(convexify(self.detection, eps), self.division.copy(), convexify(self.appearance, eps),
                              convexify(self.disappearance, eps), convexify(self.transition, eps))


def insert_energies(graph: HypothesesGraph, tracklets: TrackletGraph | None, time_range: tuple[int, int],
                    fov: tuple[np.ndarray, np.ndarray], border_width: float = 0.0, with_divisions: bool = False,
                    div_threshold: float = 0.1,
                    transition_parameter: float = TRANSITION_PARAMETER) -> EnergyFeatures:
    """`IlastikHypothesesGraph.insertEnergies` for the traxel graph, or its tracklet graph when given.

    `time_range` is (first, last) frame of the tracked range; `fov` the (lower, upper) box of `field_of_view`.
    Division: only where divisions are on and P(dividing) > div_threshold, features negLog([1 - p, p]) computed as
    hytra does from ilastik's stored divProb[0] = 1 - p (so the "dividing" value is 1 - (1 - p)).
    """
    traxels = graph.traxels
    k = traxels.max_obj
    if tracklets is None:
        starts = np.arange(graph.n_nodes + 1, dtype=np.int64)
        member = np.arange(graph.n_nodes, dtype=np.int64)
        links, origin = graph.links, np.arange(len(graph.links), dtype=np.int64)
    else:
        starts, member, links, origin = tracklets.member_start, tracklets.member, tracklets.links, tracklets.link_origin
    n = len(starts) - 1
    first, last = member[starts[:-1]], member[starts[1:] - 1]

    detection_per_traxel = neg_log(traxels.det_prob[:, :k + 1])
    detection = np.zeros((n, k + 1))
    length = np.diff(starts)
    for position in range(int(length.max(initial=0))):  # hytra's order: det_0, det_1, trans_01, det_2, trans_12...
        longer = np.flatnonzero(length > position)
        at = member[starts[longer] + position]
        detection[longer] += detection_per_traxel[at]
        if position:
            before = member[starts[longer] + position - 1]
            p = transition_probability(traxels.center[before], traxels.center[at], transition_parameter)
            detection[longer] += transition_features(p, k)

    division = np.full((n, 2), np.nan)
    if with_divisions and traxels.div_prob is not None:
        no_division = 1.0 - traxels.div_prob[last]  # ilastik's divProb[0], what hytra reads
        dividing = 1.0 - no_division
        might = dividing > div_threshold
        division[might] = neg_log(np.stack([no_division[might], dividing[might]], axis=1))

    lower, upper = fov
    t0, t_last = time_range
    appear = boundary_multiplier(traxels.frame[first], traxels.center[first], lower, upper, border_width, t0, t_last,
                                 True)
    disappear = boundary_multiplier(traxels.frame[last], traxels.center[last], lower, upper, border_width, t0, t_last,
                                    False)
    states = np.concatenate([[0.0], np.ones(k)])
    p = transition_probability(traxels.center[graph.links[origin, 0]], traxels.center[graph.links[origin, 1]],
                               transition_parameter)
    return EnergyFeatures(detection, division, appear[:, None] * states, disappear[:, None] * states,
                          transition_features(p, k).reshape(len(links), k + 1))
