"""How far a solved tracking agrees with the tracks a user annotated in ilastik (`TrackingAnnotations`).

The comparison follows ilastik's own check of a structured-learning result (`structuredTrackingWorkflow`
`prepare_lane_for_export` with `testFullAnnotations`, `OpStructuredTracking.insertAnnotationsToHypothesesGraph`):
an annotated object carries as many objects as it has track ids (none when one of them is −1, a false detection),
two annotated objects of consecutive frames that share track ids are linked by that many objects, and an annotated
division links the parent track's object in its last frame to each child track's object in the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hpc_ilastik.tracking.lineage import TrackGraph

MISDETECTION = -1


@dataclass(frozen=True)
class Agreement:
    """Counts of annotated objects and links the solution reproduces, and active links between annotated objects
    that the annotations do not have."""

    objects: int
    objects_annotated: int
    links: int
    links_annotated: int
    extra_links: int

    def summary(self) -> str:
        return (f"agreement with the project's track annotations: {self.objects}/{self.objects_annotated} annotated "
                f"objects and {self.links}/{self.links_annotated} annotated links as annotated, {self.extra_links} "
                "link(s) between annotated objects that the annotations do not have")


def annotation_agreement(tracks: TrackGraph, labels: Mapping[int, Mapping[int, frozenset[int]]],
                         divisions: Mapping[int, tuple[int, int, int]]) -> Agreement:
    """Compare a solved traxel graph (before merger resolution) with annotations: frame → object id → track ids,
    and parent track → (child track, child track, the parent's last frame)."""
    node = tracks.node_index()
    value = {key: int(tracks.value[n]) for key, n in node.items()}
    link_value = {(tuple(map(int, (tracks.frame[a], tracks.label[a]))), tuple(map(int, (tracks.frame[b], tracks.label[b])))):
                  int(v) for (a, b), v in zip(tracks.links.tolist(), tracks.link_value.tolist())}
    objects = annotated = 0
    for t, frame in labels.items():
        for obj, track_ids in frame.items():
            annotated += 1
            expected = 0 if MISDETECTION in track_ids else len(track_ids)
            objects += value.get((t, obj), 0) == expected
    links = links_annotated = 0
    expected_links = {}
    for t in sorted(labels):
        if t + 1 not in labels:
            continue
        for a, tracks_a in labels[t].items():
            for b, tracks_b in labels[t + 1].items():
                if MISDETECTION in tracks_a or MISDETECTION in tracks_b:
                    continue
                shared = len(tracks_a & tracks_b)
                if shared:
                    expected_links[((t, a), (t + 1, b))] = shared
    for parent, (first, second, t) in divisions.items():
        for a, tracks_a in labels.get(t, {}).items():
            if parent not in tracks_a:
                continue
            for b, tracks_b in labels.get(t + 1, {}).items():
                if {first, second} & tracks_b:
                    expected_links[((t, a), (t + 1, b))] = 1
    for key, shared in expected_links.items():
        links_annotated += 1
        links += link_value.get(key, 0) == shared
    annotated_objects = {(t, obj) for t, frame in labels.items() for obj in frame}
    extra = sum(1 for (a, b), v in link_value.items()
                if v > 0 and a in annotated_objects and b in annotated_objects and (a, b) not in expected_links)
    return Agreement(int(objects), annotated, int(links), links_annotated, extra)

