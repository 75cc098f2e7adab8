"""Edge labels for training an edge classifier: the labelled superpixel pairs a project stores, found among a
graph's edges, and the labels ilastik derives from a groundtruth segmentation (ilastikrag's
`edge_decisions_from_groundtruth` and `util.label_vol_mapping`)."""

from __future__ import annotations

import numpy as np

MERGE, SPLIT = 1, 2  # ilastik's edge labels: the two superpixels belong together / apart


def labelled_edges(edges: np.ndarray, pairs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows into `edges`, their labels) of the stored labelled pairs (n, 2) with label 1 or 2; pairs that
    are no edge of the graph (other superpixels) are left out."""
    pairs = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    keep = (labels == MERGE) | (labels == SPLIT)
    pairs, labels = pairs[keep], labels[keep]
    edges = np.asarray(edges, dtype=np.int64)
    width = int(max(edges.max(initial=0), pairs.max(initial=0))) + 1
    edge_keys, pair_keys = edges[:, 0] * width + edges[:, 1], pairs[:, 0] * width + pairs[:, 1]
    rows = np.searchsorted(edge_keys, pair_keys)  # the edges are sorted by (sp1, sp2)
    found = (rows < len(edges)) & (edge_keys[np.minimum(rows, len(edges) - 1)] == pair_keys) if len(edges) else \
        np.zeros(len(pairs), dtype=bool)
    return rows[found], labels[found]


def groundtruth_edge_labels(superpixels: np.ndarray, groundtruth: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each edge's label from a groundtruth segmentation of the same shape: every superpixel takes the
    groundtruth id it overlaps most (the smallest on a tie); an edge inside one id is MERGE, else SPLIT."""
    sp = np.asarray(superpixels, dtype=np.int64).ravel()
    gt = np.asarray(groundtruth, dtype=np.int64).ravel()
    gt_ids, gt_index = np.unique(gt, return_inverse=True)
    pairs, overlap = np.unique(sp * len(gt_ids) + gt_index, return_counts=True)
    owner_sp, owner_gt = pairs // len(gt_ids), pairs % len(gt_ids)
    order = np.lexsort((owner_gt, -overlap, owner_sp))  # per superpixel: largest overlap, then smallest id
    first = np.ones(len(order), dtype=bool)
    first[1:] = owner_sp[order][1:] != owner_sp[order][:-1]
    mapping = np.zeros(int(sp.max(initial=0)) + 1, dtype=np.int64)
    mapping[owner_sp[order][first]] = gt_ids[owner_gt[order][first]]
    edges = np.asarray(edges, dtype=np.int64)
    return np.where(mapping[edges[:, 0]] == mapping[edges[:, 1]], MERGE, SPLIT)
