"""ilastik's "Contours" and "Contours-With-Head" tracking exports (2-D only), and the object contours the
Multi-Worm-Tracker export shares.

Sources: ilastik `ilastik/plugins_default/tracking_contour_export.py`, `tracking_contours_with_head_export.py`.
ilastik works on the label frame in its tracking axis order (x, y): an object's contour is the first of
`skimage.measure.find_contours(mask, 0)` on that (x, y) mask, so a point is (x, y), and it lies on the
background pixels around the object (marching squares at level 0 of a 0/1 image). We run it on the object's
bounding box grown by one pixel (clipped to the frame): the squares, their raster order and the integer
coordinates are those of the whole frame, so the contour is the same.

Contours (`<filename>.outline`): for every (frame, label) of the graph whose node has a lineage id, keyed by
lineage id and frame (two objects of one lineage in a frame, e.g. after a division: the higher label id
wins); lines sorted by lineage id, then frame: `00000000_<t:06d> <lineage:05d> 0.000 ` then the contour as
`y x` pairs, `str()` of the floats, space separated.

Contours-With-Head (`<filename>.contours`): per frame (ascending), per lineage id (in the order its first
object appears in the frame's ascending label ids; again the last object wins; objects without a lineage are
kept under the key None, printed "None"): `<t> <lineage> <head index> <n points> ` then the `y x` pairs. The
head index is the first contour point with the largest sum of raw channel 2 over the 41 × 41 window around
it (clipped to the frame), summed in the raw data's precision (float32 for float32 data) in ilastik's order.
ilastik's plugin fails on raw data with fewer than three channels; so do we, with a clear message.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import ndimage

from hpc_ilastik.errors import UserError
from hpc_ilastik.tracking.plugins.base import PluginFile, TrackingExport

HEAD_WINDOW = 20  # ilastik's CONV_WINDOW_SIZE: the window is 2 · 20 + 1 pixels wide
HEAD_CHANNEL = 2


def require_2d(data: TrackingExport, plugin: str) -> None:
    """UserError unless the data is 2-D (ilastik's contour plugins call find_contours, which is 2-D only)."""
    if data.ndim != 2:
        raise UserError(f"the tracking export plugin '{plugin}' works on 2-D data only, this data is {data.ndim}-D")


def frame_contours(frame_xy: np.ndarray, labels: list[int]) -> dict[int, np.ndarray]:
    """label → its first find_contours contour ((n, 2) float64, points (x, y)) on an (x, y) label frame."""
    from skimage.measure import find_contours

    boxes = ndimage.find_objects(frame_xy, max_label=max(labels, default=0))
    result = {}
    for label in labels:
        box = boxes[label - 1]
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, frame_xy.shape))
        mask = (frame_xy[grown] == label).astype(np.uint8)
        result[label] = find_contours(mask, 0)[0] + np.array([grown[0].start, grown[1].start], dtype=np.float64)
    return result


def frame_objects(data: TrackingExport, t: int, nodes: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """Frame t as (x, y) and the ids of its objects that are nodes of the graph, ascending."""
    frame_xy = np.asarray(data.label_frame(t)).T
    present = np.unique(frame_xy)
    return frame_xy, [label for label in present.tolist() if label in nodes]


def points_text(contour: np.ndarray) -> str:
    """The contour as ilastik writes it: `y x` pairs, str() of the floats, space separated."""
    return " ".join(f"{x_y[1]} {x_y[0]}" for x_y in contour.tolist())


def export_contours(data: TrackingExport, filename: str) -> list[PluginFile]:
    """ilastik's "Contours" plugin: `<filename>.outline`."""
    require_2d(data, "Contours")
    by_lineage: dict[int, dict[int, np.ndarray]] = {}
    for t, nodes in enumerate(data.frame_nodes()):
        frame_xy, labels = frame_objects(data, t, nodes)
        labels = [label for label in labels if data.lineage.lineage_id[nodes[label]] >= 0]
        for label, contour in frame_contours(frame_xy, labels).items():
            by_lineage.setdefault(int(data.lineage.lineage_id[nodes[label]]), {})[t] = contour
    lines = [f"00000000_{t:06d} {lineage:05d} 0.000 {points_text(by_lineage[lineage][t])}\n"
             for lineage in sorted(by_lineage) for t in sorted(by_lineage[lineage])]
    return [PluginFile(filename + ".outline", "".join(lines))]


@njit(cache=True, nogil=True)
def _window_sums(contour: np.ndarray, head: np.ndarray, out: np.ndarray) -> None:
    """Per contour point, the sum of `head` (x, y) over the window around it, accumulated in out's dtype in
    ilastik's order (window x offset outer, y inner); ilastik tests the float point, indexes int(point)."""
    size_x, size_y = head.shape
    for p in range(contour.shape[0]):
        cx, cy = contour[p, 0], contour[p, 1]
        total = out[p] * 0
        for i in range(-HEAD_WINDOW, HEAD_WINDOW + 1):
            if cx + i < 0 or cx + i >= size_x:
                continue
            for j in range(-HEAD_WINDOW, HEAD_WINDOW + 1):
                if cy + j >= 0 and cy + j < size_y:
                    total += head[int(cx) + i, int(cy) + j]
        out[p] = total


def head_index(contour: np.ndarray, head_xy: np.ndarray) -> int:
    """ilastik's head index: the first contour point whose window sum of the head channel is largest."""
    sums = np.zeros(len(contour), dtype=head_xy.dtype)
    _window_sums(np.ascontiguousarray(contour), head_xy, sums)
    return int(np.argmax(sums))


def export_contours_with_head(data: TrackingExport, filename: str) -> list[PluginFile]:
    """ilastik's "Contours-With-Head" plugin: `<filename>.contours`."""
    require_2d(data, "Contours-With-Head")
    lines = []
    for t, nodes in enumerate(data.frame_nodes()):
        frame_xy, labels = frame_objects(data, t, nodes)
        if not labels:
            continue
        raw = np.asarray(data.raw_frame(t)) if data.raw_frame is not None else None
        if raw is None or raw.ndim != 3 or raw.shape[-1] <= HEAD_CHANNEL:
            raise UserError("the tracking export plugin 'Contours-With-Head' reads the head probability from channel "
                            f"{HEAD_CHANNEL} of the raw data, which needs at least {HEAD_CHANNEL + 1} channels")
        head = raw[..., HEAD_CHANNEL].T
        head_xy = np.ascontiguousarray(head if np.issubdtype(head.dtype, np.floating) else head.astype(np.float64))
        by_lineage: dict[int | None, tuple[np.ndarray, int]] = {}
        for label, contour in frame_contours(frame_xy, labels).items():
            lineage = int(data.lineage.lineage_id[nodes[label]])
            by_lineage[lineage if lineage >= 0 else None] = (contour, head_index(contour, head_xy))
        lines += [f"{t} {lineage} {at} {len(contour)} {points_text(contour)}\n"
                  for lineage, (contour, at) in by_lineage.items()]
    return [PluginFile(filename + ".contours", "".join(lines))]
