"""ilastik's graph-cut thresholding of prediction maps (`OpLabeledThreshold._execute_GRAPHCUT` and
`_OpGraphCut.segmentGC`, ilastik-workflows-spec.md §A.1), solved exactly with PyMaxflow (Boykov-Kolmogorov
max-flow) where ilastik uses OpenGM's graph cut.

Per frame, on the whole frame: the smoothed final channel is remapped so that the low threshold lands on
0.5 (x·0.5/t below it, 0.5 + (x − t)/(1 − t) from it on, float32), and each pixel takes label 1 (object) at
cost 1 − p or label 0 at cost p, with a Potts term β between 4-neighbours (2-D) or 6-neighbours (3-D); the
labelling of least total cost is the mask. β is ilastik's 0.2 (the project does not store it). Both solvers
find the optimum; where several labellings tie they may pick different ones.
"""

from __future__ import annotations

import numpy as np

from hpc_ilastik.objects.threshold import ThresholdSettings, rescaled, smooth

BETA = 0.2
BYTES_PER_PIXEL = 160  # PyMaxflow's graph (node and its grid edges) plus the frame's arrays, measured generously


def potentials(final_zyx: np.ndarray, low: float) -> np.ndarray:
    """ilastik's remapping of the smoothed final channel (float32) so that `low` becomes 0.5."""
    data = np.array(final_zyx, dtype=np.float32)
    above = data >= low
    data[~above] *= 0.5 / low
    data[above] = 0.5 + (data[above] - low) / (1 - low)
    return data


def graph_cut(potential_zyx: np.ndarray, beta: float = BETA) -> np.ndarray:
    """The least-cost binary labelling (True = object) of `segmentGC`'s Potts model on a 4/6-neighbourhood."""
    import maxflow  # PyMaxflow; imported here: only graph-cut projects need it

    shape = tuple(n for n in potential_zyx.shape if n > 1) or (1,)
    p = np.asarray(potential_zyx, dtype=np.float64).reshape(shape)
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(shape)
    graph.add_grid_edges(nodes, weights=beta, symmetric=True)  # von Neumann neighbourhood: 4 in 2-D, 6 in 3-D
    graph.add_grid_tedges(nodes, 1.0 - p, p)  # sink side = label 1: pays its source capacity 1 - p
    graph.maxflow()
    return graph.get_grid_segments(nodes).reshape(potential_zyx.shape)


def graph_cut_mask(probabilities_zyxc: np.ndarray, settings: ThresholdSettings,
                   drange: tuple[float, float] | None = None) -> np.ndarray:
    """The objects' mask of one whole frame of prediction maps: rescaled, smoothed, remapped, cut."""
    final = smooth(rescaled(probabilities_zyxc[..., settings.channel], drange), settings.sigmas_zyx)
    return graph_cut(potentials(final, settings.low))
