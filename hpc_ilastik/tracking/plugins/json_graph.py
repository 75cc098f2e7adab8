"""Our "JSON" tracking export (ilastik has no such plugin): the solved tracking graph as one JSON file,
`<filename>.json`.

Layout (ids are those of the exported label images and of the CSV table: `label` is the object's id in the
(merger-relabelled) label image of its frame, track and lineage ids are hytra's, from 2):

    {"meta": {"format": "hpc-ilastik-tracking", "version": 1, "n_frames": T, "ndim": 2 | 3,
              "n_nodes": N, "n_links": L, "n_divisions": D, "n_tracks": K},
     "nodes": [{"frame", "label", "track_id", "lineage_id", "parent_track_id", "merger_label", "value",
                "center": [x, y, z]}, ...],            # every traxel, in the graph's node order
     "links": [{"from": [frame, label], "to": [frame, label], "value"}, ...],   # the active links (value > 0)
     "divisions": [{"parent": [frame, label], "children": [[frame, label], [frame, label]]}, ...],
     "tracks": [{"track_id", "lineage_id", "first_frame", "last_frame", "parent_track_id"}, ...]}

`track_id` / `lineage_id` are −1 for objects outside every track (false detections: lineage 1 in the
Tracking-Result image), `parent_track_id` is the track id of the dividing parent for the first object of a
division's child track and 0 otherwise (as in the CSV); a track's `parent_track_id` is that of its first
object. `merger_label` is the id of the merger an object was split from (0 if none); `value` the number of
objects the solution assigns. Tracks are sorted by track id, divisions by the parent's node order; a division's
children in link order.
"""

from __future__ import annotations

import json

import numpy as np

from hpc_ilastik.tracking.plugins.base import PluginFile, TrackingExport

FORMAT, VERSION = "hpc-ilastik-tracking", 1


def graph_document(data: TrackingExport) -> dict:
    """The JSON document as Python objects."""
    tracks, lineage = data.tracks, data.lineage
    key = [[int(t), int(label)] for t, label in zip(tracks.frame.tolist(), tracks.label.tolist())]
    nodes = [{"frame": key[n][0], "label": key[n][1], "track_id": int(lineage.track_id[n]),
              "lineage_id": int(lineage.lineage_id[n]), "parent_track_id": int(lineage.parent_track_id[n]),
              "merger_label": int(tracks.merger_label[n]), "value": int(tracks.value[n]),
              "center": [float(c) for c in tracks.center[n]]} for n in range(len(key))]
    active = np.flatnonzero(tracks.link_value > 0)
    links = [{"from": key[s], "to": key[d], "value": int(v)}
             for (s, d), v in zip(tracks.links[active].tolist(), tracks.link_value[active].tolist())]
    children: dict[int, list[list[int]]] = {}
    for s, d in tracks.links[active].tolist():
        if tracks.division[s]:
            children.setdefault(s, []).append(key[d])
    divisions = [{"parent": key[s], "children": children[s]} for s in sorted(children)]
    spans: dict[int, dict] = {}
    for n, track in enumerate(lineage.track_id.tolist()):
        if track < 0:
            continue
        t = key[n][0]
        span = spans.setdefault(track, {"track_id": track, "lineage_id": int(lineage.lineage_id[n]),
                                        "first_frame": t, "last_frame": t, "parent_track_id": 0})
        if t < span["first_frame"]:
            span["first_frame"] = t
        span["last_frame"] = max(span["last_frame"], t)
        if lineage.parent_track_id[n] > 0:
            span["parent_track_id"] = int(lineage.parent_track_id[n])
    meta = {"format": FORMAT, "version": VERSION, "n_frames": int(data.n_frames), "ndim": int(data.ndim),
            "n_nodes": len(nodes), "n_links": len(links), "n_divisions": len(divisions), "n_tracks": len(spans)}
    return {"meta": meta, "nodes": nodes, "links": links, "divisions": divisions,
            "tracks": [spans[track] for track in sorted(spans)]}


def export_json(data: TrackingExport, filename: str) -> list[PluginFile]:
    """Our "JSON" plugin: `<filename>.json` (layout in the module docstring; one node, link, division or track a
    line)."""
    document = graph_document(data)
    parts = [f'"meta": {json.dumps(document["meta"])}']
    for key in ("nodes", "links", "divisions", "tracks"):
        items = ",\n".join("  " + json.dumps(item) for item in document[key])
        parts.append(f'"{key}": [\n{items}\n ]' if items else f'"{key}": []')
    return [PluginFile(filename + ".json", "{" + ",\n ".join(parts) + "}\n")]
