"""ilastik's "CellTrackingChallenge" tracking export: a folder `<filename>/` with `res_track.txt` and one mask
per frame, `mask000.tif`, `mask001.tif`, ... (`f"mask{t:03}.tif"`).

Source: ilastik `ilastik/plugins_default/tracking_ctc_export.py`.

`res_track.txt`: one line `L B E P` per track id, in the order the track ids first occur among the nodes:
L = track id − 1, B / E = the first / last frame of the track's nodes, P = max(0, parent's track id − 1) (the
parent is the dividing node of a division's child). Nodes without a track id are left out.

Masks: the frame's label image with every object that is a node with a track id set to track id − 1 and every
other pixel 0, cast to uint16 (wrapping above 65535, `astype("uint16")`); a frame without any node keeps its
label ids. How to write them (what ilastik hands to its TIFF writers, after its own axis swaps):

* 2-D data: the returned array is (y, x) uint16; ilastik writes it with `vigra.impex.writeImage` (checked:
  vigra takes a plain (x, y) array as width x, height y): one page, y rows of x pixels, LZW-compressed (vigra's
  TIFF default; tifffile needs `imagecodecs` for LZW). Write it with `tifffile.imwrite(path, array)` (default
  options: uncompressed, no ImageJ/OME metadata): the same page, dtype and pixels, other bytes.
* 3-D data: the returned array is (x, y, z) uint16 — ilastik's `_save_frame_to_tif` turns the (z, y, x) frame
  into x, y, z (`np.transpose(np.swapaxes(frame, 0, 1), [2, 0, 1])`) before `tifffile.imwrite(filename,
  array)` with default options, so the file holds x pages of y × z pixels. Write it exactly that way.
"""

from __future__ import annotations

import os

import numpy as np

from hpc_ilastik.tracking.plugins.base import PluginFile, TrackingExport

TRACKS_FILE = "res_track.txt"


def mask_name(t: int) -> str:
    """The mask file of frame t."""
    return f"mask{t:03}.tif"


def track_lines(data: TrackingExport) -> str:
    """The text of res_track.txt."""
    track_id, parent = data.lineage.track_id, data.lineage.parent_track_id
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    parents: dict[int, int] = {}
    for node, (t, track) in enumerate(zip(data.tracks.frame.tolist(), track_id.tolist())):
        if track < 0:
            continue
        first[track] = min(first.get(track, t), t)
        last[track] = max(last.get(track, t), t)
        if parent[node] > 0:
            parents[track] = int(parent[node])
    return "".join(f"{track - 1} {first[track]} {last[track]} {max(0, parents.get(track, 0) - 1)}\n"
                   for track in first)


def ctc_mask(labels: np.ndarray, mapping: dict[int, int] | None) -> np.ndarray:
    """A frame's mask: label → track id − 1 for the mapped labels, 0 elsewhere (labels kept without a mapping),
    in ilastik's axis order for the file (module docstring), uint16."""
    if mapping is not None:
        lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
        for label, track in mapping.items():
            if label < len(lut):
                lut[label] = track - 1
        labels = lut[labels]
    if labels.ndim == 3:
        labels = np.transpose(labels, (2, 1, 0))
    return np.ascontiguousarray(labels.astype(np.uint16))


def export_ctc(data: TrackingExport, filename: str) -> list[PluginFile]:
    """ilastik's "CellTrackingChallenge" plugin: the folder `<filename>` (see the module docstring)."""
    track_id = data.lineage.track_id
    files = [PluginFile(os.path.join(filename, TRACKS_FILE), track_lines(data))]
    for t, nodes in enumerate(data.frame_nodes()):
        mapping = {label: int(track_id[node]) for label, node in nodes.items() if track_id[node] >= 0}
        labels = np.asarray(data.label_frame(t))
        files.append(PluginFile(os.path.join(filename, mask_name(t)), ctc_mask(labels, mapping if nodes else None)))
    return files
