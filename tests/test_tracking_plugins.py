"""ilastik's tracking export plugins (hpc_ilastik.tracking.plugins): Contours and Multi-Worm-Tracker byte for byte
against ilastik's reference exports of smallVideo (tracking rebuilt from the reference files themselves),
Contours-With-Head against a direct window sum, CSV-Table and CellTrackingChallenge on a hand-made case with a
division, a resolved merger and a false detection, the CTC format rules, MaMuT XML and the JSON round trip."""

import json
import os
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
from skimage.draw import polygon

from hpc_ilastik.errors import UserError
from hpc_ilastik.objects import standard
from hpc_ilastik.objects.labeling import label_components
from hpc_ilastik.tracking.lineage import TrackGraph, compute_lineage
from hpc_ilastik.tracking.plugins import PLUGINS, TrackingExport
from hpc_ilastik.tracking.plugins.contours import HEAD_WINDOW, export_contours_with_head, frame_contours
from hpc_ilastik.tracking.plugins.ctc import export_ctc
from hpc_ilastik.tracking.plugins.mamut import short_name
from hpc_ilastik.tracking.plugins.mwt import chain_code
from tests.conftest import FIXTURES

INPUT = FIXTURES / "inputdata"
REFERENCES = {"outline": "smallVideo_Contours_reference.outline",
              "summary": "smallVideo_Multi-Worm-Tracker_reference.summary",
              "blobs": "smallVideo_Multi-Worm-Tracker_reference.blobs"}
STANDARD_NAMES = ["Count", "Mean", "RegionAxes", "RegionCenter", "RegionRadii"]


def _reference(kind: str) -> str:
    return (INPUT / REFERENCES[kind]).read_text()


def _object_features(labels: np.ndarray, raw: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """vigra's region features (x first) of every label id of a (y, x) frame, rows by id, float32."""
    rows = {name: [np.zeros(k)] for name, k in zip(STANDARD_NAMES, (1, 1, 4, 2, 2))}
    for label in range(1, int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == label)
        if not len(ys):  # a merger's id after its pixels went to the new ids
            for name in STANDARD_NAMES:
                rows[name].append(np.zeros_like(rows[name][0]))
            continue
        values = standard.region_features(raw[ys, xs][:, None].astype(np.float32), np.stack([xs, ys], 1),
                                          STANDARD_NAMES, None)
        for name in STANDARD_NAMES:
            rows[name].append(np.asarray(values[name], dtype=np.float64))
    return {"Standard Object Features": {name: np.array(rows[name], dtype=np.float32) for name in STANDARD_NAMES}}


def _interior(contour_xy: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """The (y, x) pixels strictly inside a level-0 contour (which runs over the background pixels around them)."""
    inside = np.zeros(shape_yx[::-1], dtype=bool)
    rows, cols = polygon(contour_xy[:, 0], contour_xy[:, 1], inside.shape)
    inside[rows, cols] = True
    inside[contour_xy[:, 0].astype(int), contour_xy[:, 1].astype(int)] = False
    return inside.T


@pytest.fixture(scope="module")
def small_video() -> dict:
    """ilastik's smallVideo tracking, rebuilt from the reference exports: 4-connected components of the binary
    segmentation per frame; each outline line gives an object's lineage and contour; an outline object that is
    only part of a component is a piece of a resolved merger, its new id is the .blobs label whose contour starts
    at the same point. Frames 5 and 6 hold the two children of lineage 2's division: the outline keeps the higher
    id (label 2), so label 1 is the other child. Links join a lineage's objects in consecutive frames."""
    seg = h5py.File(INPUT / "smallVideoSimpleSegmentation.h5", "r")["exported_data"][..., 0]
    raw = h5py.File(INPUT / "smallVideo.h5", "r")["data"][..., 0]
    outline = {}
    for line in _reference("outline").splitlines():
        words = line.split()
        outline[int(words[0].split("_")[1]), int(words[1])] = np.array(words[3:], dtype=float).reshape(-1, 2)[:, ::-1]
    starts, label = {}, None
    for line in _reference("blobs").splitlines():
        if line.startswith("% "):
            label = int(line[2:])
            continue
        words = line.split()
        at = words.index("%%")
        starts[int(words[1]), label] = (float(words[at + 1]), float(words[at + 2]))
    frames, components, lineage_of, merger_of = [], [], {}, {}
    for t in range(len(seg)):
        original = label_components(seg[t])[0].astype(np.uint32)
        labels = original.copy()
        for (frame, lineage_id), contour in outline.items():
            if frame != t:
                continue
            inside = _interior(contour, labels.shape)
            (old,) = np.unique(original[inside]).tolist()
            if inside.sum() < (original == old).sum():
                (new,) = [k for (f, k), start in starts.items() if f == t and start == tuple(contour[0])]
                labels[inside], merger_of[t, new] = new, old
                old = new
            lineage_of[t, old] = lineage_id
        frames.append(labels)
        components.append(original)
    for t in (5, 6):
        lineage_of[t, 1] = 2
    features = [_object_features(frames[t], raw[t]) for t in range(len(seg))]
    keys = [(t, k) for t in range(len(seg)) for k in np.unique(frames[t]).tolist() if k and (t, k) not in merger_of]
    keys += sorted(merger_of)  # hytra appends the objects split from mergers
    assert sorted(keys) == sorted(lineage_of)
    centers = {key: features[key[0]]["Standard Object Features"]["RegionCenter"][key[1]] for key in keys}
    links = []
    for t, k in keys:
        same = [key for key in keys if key[0] == t and lineage_of[key] == lineage_of[t, k]]
        nxt = [key for key in keys if key[0] == t + 1 and lineage_of[key] == lineage_of[t, k]]
        if len(same) == len(nxt) > 1:
            nxt = [min(nxt, key=lambda key: float(np.sum((centers[key] - centers[t, k]) ** 2)))]
        links += [(keys.index((t, k)), keys.index(key)) for key in nxt]
    links = np.array(sorted(links))
    n = len(keys)
    graph = TrackGraph(np.array([t for t, _ in keys]), np.array([k for _, k in keys]),
                       np.array([list(centers[key]) + [0.0] for key in keys]), np.ones(n, dtype=np.int64),
                       np.bincount(links[:, 0], minlength=n) == 2, np.array([merger_of.get(key, 0) for key in keys]),
                       links, np.ones(len(links), dtype=np.int64))
    lineage = compute_lineage(graph)
    assert all(lineage.lineage_id[keys.index(key)] == lineage_of[key] for key in keys)
    data = TrackingExport(graph, lineage, len(seg), 2, lambda t: frames[t], lambda t: features[t],
                          lambda t: np.repeat(raw[t][..., None], 3, axis=-1), str(INPUT / "smallVideoBdv.xml"))
    return {"data": data, "frames": frames, "components": components, "raw": raw, "outline": outline}


# ------------------------------------------------------------------------------------- byte-identical exports

def test_contours_match_ilastik_reference(small_video, record_property):
    (outline,) = PLUGINS["Contours"](small_video["data"], "/out/smallVideo-data_Contours")
    assert outline.path == "/out/smallVideo-data_Contours.outline"
    assert outline.content == _reference("outline")
    record_property("figures", f"outline: {len(outline.content)} bytes identical to ilastik's reference")


def test_mwt_matches_ilastik_reference(small_video, record_property):
    summary, blobs = PLUGINS["Multi-Worm-Tracker"](small_video["data"], "out/smallVideo-data_Multi-Worm-Tracker")
    assert (summary.path, blobs.path) == ("out/smallVideo-data_Multi-Worm-Tracker.summary",
                                          "out/smallVideo-data_Multi-Worm-Tracker.blobs")
    assert summary.content == _reference("summary")
    assert blobs.content == _reference("blobs")
    record_property("figures", f"summary {len(summary.content)} B, blobs {len(blobs.content)} B identical")


def test_references_were_made_from_the_merger_relabelled_image(small_video):
    """The blobs' areas of the split objects are no component's size: ilastik exported the relabelled image, whose
    pieces tile each merger exactly (frames 1 and 2), and features recomputed on it."""
    frames, components = small_video["frames"], small_video["components"]
    areas = {float(line.split()[4]) for line in _reference("blobs").splitlines() if not line.startswith("%")}
    for t, merger, pieces in ((1, 1, (3, 4)), (2, 2, (3, 4))):
        sizes = np.bincount(components[t].ravel())[1:]
        assert np.array_equal(np.isin(frames[t], pieces), components[t] == merger)
        for piece in pieces:
            area = float(np.count_nonzero(frames[t] == piece))
            assert area in areas and area not in sizes
    assert all(np.array_equal(f, c) for f, c in zip(frames[:1] + frames[3:], components[:1] + components[3:]))


def test_contours_on_crops_equal_whole_frame_contours():
    """frame_contours runs find_contours on each object's box grown by one pixel: the same first contour as on the
    whole frame, also for objects on the frame's edge (open contours), with holes, or in several pieces."""
    from skimage.measure import find_contours

    frame = np.zeros((9, 11), dtype=np.uint32)
    frame[0:3, 0:4] = 1  # a corner
    frame[3:8, 4:9] = 2
    frame[5, 6] = 0  # a hole
    frame[8, 0:3], frame[6, 0] = 3, 3  # two pieces on the edge
    frame[2:5, 10] = 4  # the right edge
    contours = frame_contours(frame, [1, 2, 3, 4])
    for label in (1, 2, 3, 4):
        assert np.array_equal(contours[label], find_contours((frame == label).astype(np.uint8), 0)[0])


def test_chain_code_padding_rules():
    """ilastik's MWT packing: 2 leftover bits padded to 7 bits, 4 to 6, more than 6 emitted and the rest dropped."""
    one = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert chain_code(one) == (1, chr(0b0100001 + 48))
    assert chain_code(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])) == (2, chr(0b011100 + 48))
    four = np.array([[float(x), 0.0] for x in range(5)])
    assert chain_code(four) == (4, chr(0b010101 + 48) + chr(0b0100001 + 48))
    assert chain_code(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])) == (4, chr(0b010101 + 48))
    assert chain_code(np.array([[0.0, 0.0], [-1.0, -1.0], [0.0, 0.0]])) == (4, chr(0b001001 + 48))


# ------------------------------------------------------------------------------------------ Contours-With-Head

def test_contours_with_head(small_video):
    """Same contours as the outline (the last object of a lineage in a frame wins), lineages per frame in the
    order of their first object, and the head index the argmax of the channel-2 window sums."""
    data, raw = small_video["data"], small_video["raw"]
    (out,) = export_contours_with_head(data, "x")
    assert out.path == "x.contours"
    lines = out.content.splitlines()
    assert len(lines) == len(small_video["outline"]) == 21
    order = [(int(line.split()[0]), int(line.split()[1])) for line in lines]
    assert order[3:6] == [(1, 3), (1, 4), (1, 2)]  # frame 1: ids 2 (lineage 3), 3 (lineage 4), 4 (lineage 2)
    for line in lines:
        words = line.split()
        t, lineage_id, head, n = (int(w) for w in words[:4])
        pairs = np.array(words[4:], dtype=float).reshape(-1, 2)
        contour = pairs[:, ::-1]
        assert n == len(contour) and np.array_equal(contour, small_video["outline"][t, lineage_id])
        head_xy = raw[t].T
        window = [(slice(max(int(x) - HEAD_WINDOW, 0), int(x) + HEAD_WINDOW + 1),
                   slice(max(int(y) - HEAD_WINDOW, 0), int(y) + HEAD_WINDOW + 1)) for x, y in contour]
        sums = [head_xy[box].sum(dtype=np.float64) for box in window]
        assert head == int(np.argmax(sums))
        assert " ".join(words[4:]) == " ".join(f"{y} {x}" for x, y in contour.tolist())


def test_contour_plugins_refuse_what_ilastik_cannot_do(small_video):
    data = small_video["data"]
    one_channel = TrackingExport(data.tracks, data.lineage, data.n_frames, 2, data.label_frame, data.features,
                                 lambda t: small_video["raw"][t][..., None])
    with pytest.raises(UserError, match="channel 2"):
        export_contours_with_head(one_channel, "x")
    volume = TrackingExport(data.tracks, data.lineage, data.n_frames, 3, data.label_frame, data.features)
    for name in ("Contours", "Contours-With-Head", "Multi-Worm-Tracker"):
        with pytest.raises(UserError, match="2-D"):
            PLUGINS[name](volume, "x")
    with pytest.raises(UserError, match="big_data_viewer_xml_file"):
        PLUGINS["Fiji-MaMuT"](volume, "x")


# ---------------------------------------------------------------- hand-made case: division, merger, false object

def _hand_made() -> TrackingExport:
    """Frame 0: A (1), B (2), C (3). Frame 1: A divides into 1 and 2; B and C merged into object 3, resolved into
    the new ids 4 (B) and 5 (C); 6 is a false detection. Frame 2: 1, 2, B = 3, C = 4. Frame 3: one object that is
    no node (ilastik's CTC keeps such a frame's ids). Features: Default, Standard and division features, the
    division features not recomputed for the merger's new ids."""
    frames = np.zeros((4, 12, 12), dtype=np.uint32)
    frames[0, 1:3, 1:3], frames[0, 5:8, 5:8], frames[0, 9:11, 1:4] = 1, 2, 3
    frames[1, 0:2, 0:2], frames[1, 3:5, 0:2], frames[1, 5:8, 5:7], frames[1, 9:11, 1:4] = 1, 2, 4, 5
    frames[1, 10, 10] = 6
    frames[2, 0:2, 1:3], frames[2, 3:5, 1:3], frames[2, 5:8, 6:8], frames[2, 9:11, 2:5] = 1, 2, 3, 4
    frames[3, 4:6, 4:6] = 1
    keys = [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 6), (2, 1), (2, 2), (2, 3), (2, 4), (1, 4), (1, 5)]
    index = {key: n for n, key in enumerate(keys)}
    links = [((0, 1), (1, 1)), ((0, 1), (1, 2)), ((0, 2), (1, 4)), ((0, 3), (1, 5)), ((1, 1), (2, 1)),
             ((1, 2), (2, 2)), ((1, 4), (2, 3)), ((1, 5), (2, 4)), ((0, 3), (1, 6))]
    link_array = np.array([(index[a], index[b]) for a, b in links])
    order = np.argsort(link_array[:, 0], kind="stable")
    value = np.array([0 if key == (1, 6) else 1 for key in keys])
    graph = TrackGraph(np.array([t for t, _ in keys]), np.array([k for _, k in keys]), np.zeros((len(keys), 3)),
                       value, np.array([key == (0, 1) for key in keys]),
                       np.array([3 if key in ((1, 4), (1, 5)) else 0 for key in keys]), link_array[order],
                       np.array([0 if b == (1, 6) else 1 for _, b in links])[order])

    def features(t: int) -> dict[str, dict[str, np.ndarray]]:
        labels = frames[t]
        ys, xs = np.indices(labels.shape)
        ids = np.arange(labels.max() + 1)
        count = np.bincount(labels.ravel(), minlength=len(ids)).astype(np.float32)
        center = np.stack([np.bincount(labels.ravel(), w.ravel(), len(ids)) for w in (xs, ys)], 1) / np.maximum(
            count, 1)[:, None]
        boxes = [(xs[labels == i], ys[labels == i]) for i in ids]
        lo = np.array([[x.min(), y.min()] if len(x) else [0, 0] for x, y in boxes], np.float32)
        hi = np.array([[x.max() + 1, y.max() + 1] if len(x) else [0, 0] for x, y in boxes])
        default = {"Coord<Maximum>": hi.astype(np.float32), "Coord<Minimum>": lo, "Count": count[:, None],
                   "RegionCenter": center.astype(np.float32)}
        standard_features = {"Count": count[:, None], "Histogram": np.ones((len(ids), 64), np.float32),
                             "Mean": (ids[:, None] * 0.5).astype(np.float32), "RegionCenter": default["RegionCenter"],
                             "RegionRadii": np.full((len(ids), 2), 1.25, np.float32)}
        old = 4 if t == 1 else len(ids)  # the division features know only the segmentation's ids 0..3 in frame 1
        division = {"SquaredDistances_0": np.full((old, 1), 2.5, np.float32),
                    "ChildrenRatio_Count": np.full((old, 1), 0.75, np.float32)}
        return {"Default features": default, "Standard Object Features": standard_features,
                "Cell Division Features": division}

    return TrackingExport(graph, compute_lineage(graph), 4, 2, lambda t: frames[t], features)


CSV_HEADER = ("frame,labelimageId,trackId,lineageId,parentTrackId,mergerLabelId,Bounding_Box_Maximum_0,"
              "Bounding_Box_Maximum_1,Bounding_Box_Minimum_0,Bounding_Box_Minimum_1,Size_in_pixels_0,"
              "Center_of_the_object_0,Center_of_the_object_1,Mean_Intensity_0,Radii_of_the_object_0,"
              "Radii_of_the_object_1,ChildrenRatio_Count_0,SquaredDistances_0_0")


def test_csv_table_layout_and_rows():
    data = _hand_made()
    (table,) = PLUGINS["CSV-Table"](data, "dir/video_CSV-Table")
    assert table.path == "dir/video_CSV-Table.csv"
    lines = table.content.splitlines()
    assert lines[0] == CSV_HEADER and len(lines) == 1 + 12
    rows = [line.split(",") for line in lines[1:]]
    assert [(int(r[0]), int(r[1])) for r in rows] == sorted((int(r[0]), int(r[1])) for r in rows)
    by_key = {(int(r[0]), int(r[1])): r for r in rows}
    # A = track 2; its children tracks 5, 6 (parent 2); the merger's pieces carry mergerLabelId 3; the false
    # detection has no track; centres truncate ("%d"), sizes are "%f"; division features beyond their rows
    # read 9999 (SquaredDistances) or 0.
    assert by_key[0, 1][:6] == ["0", "1", "2", "2", "0", "0"]
    assert by_key[1, 1][2:6] == ["5", "2", "2", "0"]  # the division's children in link order
    assert by_key[1, 6][2:6] == ["-1", "-1", "0", "0"]
    assert ",".join(by_key[1, 4]) == "1,4,3,3,0,3,7,8,5,5,6.000000,5,6,2.000000,1.250000,1.250000,0.000000,9999.000000"
    assert ",".join(by_key[1, 2]) == "1,2,6,2,2,0,2,5,0,3,4.000000,0,3,1.000000,1.250000,1.250000,0.750000,2.500000"
    parsed = np.genfromtxt(table.content.splitlines(), delimiter=",", names=True)
    assert len(parsed) == 12 and np.count_nonzero(parsed["parentTrackId"]) == 2
    assert len({(f, m) for f, m in zip(parsed["frame"], parsed["mergerLabelId"]) if m}) == 1


def _check_ctc(text: str, masks: dict[int, np.ndarray], nodes_frames: set[int]) -> dict[int, tuple[int, int, int]]:
    """The CTC format rules: 'L B E P' integers, L unique, B <= E, the parent a listed track that ends before the
    child begins; every mask id of a frame with nodes a track alive in that frame, and every track's frames."""
    tracks = {}
    for line in text.splitlines():
        label, begin, end, parent = (int(w) for w in line.split())
        assert label not in tracks and 0 <= begin <= end
        tracks[label] = (begin, end, parent)
    for label, (begin, _, parent) in tracks.items():
        assert parent == 0 or (parent in tracks and tracks[parent][1] < begin)
    for t, mask in masks.items():
        if t not in nodes_frames:
            continue
        ids = set(np.unique(mask).tolist()) - {0}
        assert ids == {label for label, (b, e, _) in tracks.items() if b <= t <= e}
    return tracks


def test_ctc_export_hand_made():
    data = _hand_made()
    files = export_ctc(data, "out/video_CTC")
    assert [f.path for f in files] == [os.path.join("out/video_CTC", name) for name in
                                       ("res_track.txt", "mask000.tif", "mask001.tif", "mask002.tif", "mask003.tif")]
    masks = {t: f.content for t, f in enumerate(files[1:])}
    assert all(m.dtype == np.uint16 and m.shape == (12, 12) for m in masks.values())
    tracks = _check_ctc(files[0].content, masks, {0, 1, 2})
    assert sorted(tracks.items()) == [(1, (0, 0, 0)), (2, (0, 2, 0)), (3, (0, 2, 0)), (4, (1, 2, 1)), (5, (1, 2, 1))]
    frame1 = data.label_frame(1)
    track_id = dict(zip(zip(data.tracks.frame.tolist(), data.tracks.label.tolist()), data.lineage.track_id.tolist()))
    for k in (1, 2, 4, 5):
        assert np.all(masks[1][frame1 == k] == track_id[1, k] - 1)
    assert np.all(masks[1][frame1 == 6] == 0)  # the false detection
    assert np.array_equal(masks[3], data.label_frame(3))  # a frame without nodes keeps its ids


def test_ctc_masks_3d_axis_order():
    """ilastik hands tifffile a 3-D mask in x, y, z order; the ids are the track ids − 1."""
    labels = np.zeros((2, 3, 4), dtype=np.uint32)
    labels[0, 1, 2], labels[1, 2, 3] = 1, 2
    graph = TrackGraph(np.array([0, 0]), np.array([1, 2]), np.zeros((2, 3)), np.array([1, 1]), np.zeros(2, bool),
                       np.zeros(2, np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    data = TrackingExport(graph, compute_lineage(graph), 1, 3, lambda t: labels, lambda t: {})
    mask = export_ctc(data, "c")[1].content
    assert mask.shape == (4, 3, 2) and mask.dtype == np.uint16
    assert mask[2, 1, 0] == 1 and mask[3, 2, 1] == 2 and np.count_nonzero(mask) == 2


def test_ctc_export_small_video(small_video):
    files = PLUGINS["CellTrackingChallenge"](small_video["data"], "smallVideo-data_CellTrackingChallenge")
    masks = {t: f.content for t, f in enumerate(files[1:])}
    tracks = _check_ctc(files[0].content, masks, set(range(7)))
    assert sorted(tracks) == [1, 2, 3, 4, 5] and sorted(t[2] for t in tracks.values()) == [0, 0, 0, 1, 1]
    assert set(np.unique(masks[0]).tolist()) == {0, 1, 2, 3}  # ilastik's test: consecutive ids in frame 0


# ------------------------------------------------------------------------------------------------- MaMuT, JSON

def test_mamut_xml(small_video):
    data = small_video["data"]
    (out,) = PLUGINS["Fiji-MaMuT"](data, "dir/smallVideo-data_Fiji-MaMuT")
    assert out.path == "dir/smallVideo-data_Fiji-MaMuT_mamut.xml"
    root = ET.fromstring(out.content)
    model = root.find("Model")
    spots = model.findall("AllSpots/SpotsInFrame/Spot")
    assert len(spots) == int(model.find("AllSpots").get("nspots")) == len(data.tracks.frame) == 23
    tracks = data.tracks
    for spot in spots:
        node = int(spot.get("ID"))
        assert int(spot.get("FRAME")) == tracks.frame[node] and int(spot.get("LabelimageId")) == tracks.label[node]
        assert spot.get("name") == f"track-{data.lineage.track_id[node]}"
        assert np.float32(spot.get("POSITION_X")) == np.float32(tracks.center[node, 0])
    edges = model.findall("AllTracks/Track/Edge")
    assert sorted((int(e.get("SPOT_SOURCE_ID")), int(e.get("SPOT_TARGET_ID"))) for e in edges) == \
        sorted(map(tuple, tracks.links.tolist()))
    declared = {f.get("feature") for f in model.findall("FeatureDeclarations/SpotFeatures/Feature")}
    assert {"RegionCenter_0", "RegionRadii_1", "LabelimageId", "Track_color", "POSITION_X"} <= declared
    image = root.find("Settings/ImageData")
    assert (image.get("filename"), image.get("folder")) == ("smallVideoBdv.xml", str(INPUT))
    assert short_name("Coord_Principal_Kurtosis") == "CoPriKur" and short_name("Weighted_RegionCenter") == "WeRegCen"
    assert short_name("RegionCenter") == "RegionCenter"


@pytest.mark.parametrize("case", ["small_video", "hand_made"])
def test_json_round_trip(case, small_video):
    data = small_video["data"] if case == "small_video" else _hand_made()
    (out,) = PLUGINS["JSON"](data, "v")
    assert out.path == "v.json"
    document = json.loads(out.content)
    tracks, lineage = data.tracks, data.lineage
    nodes = document["nodes"]
    columns = {name: np.array([node[name] for node in nodes]) for name in nodes[0]}
    assert np.array_equal(columns["frame"], tracks.frame) and np.array_equal(columns["label"], tracks.label)
    assert np.array_equal(columns["track_id"], lineage.track_id)
    assert np.array_equal(columns["lineage_id"], lineage.lineage_id)
    assert np.array_equal(columns["parent_track_id"], lineage.parent_track_id)
    assert np.array_equal(columns["merger_label"], tracks.merger_label)
    assert np.array_equal(columns["value"], tracks.value) and np.array_equal(columns["center"], tracks.center)
    index = tracks.node_index()
    active = tracks.links[tracks.link_value > 0].tolist()
    assert [[index[tuple(link["from"])], index[tuple(link["to"])]] for link in document["links"]] == active
    parents = [index[tuple(d["parent"])] for d in document["divisions"]]
    assert parents == np.flatnonzero(tracks.division).tolist()
    ctc = export_ctc(data, "c")[0].content.splitlines()
    assert [(t["track_id"] - 1, t["first_frame"], t["last_frame"], max(0, t["parent_track_id"] - 1))
            for t in document["tracks"]] == sorted(tuple(int(w) for w in line.split()) for line in ctc)
    assert document["meta"]["n_nodes"] == len(nodes) and document["meta"]["n_tracks"] == len(ctc)


def test_plugin_registry():
    assert set(PLUGINS) == {"CSV-Table", "CellTrackingChallenge", "Contours", "Contours-With-Head",
                            "Multi-Worm-Tracker", "Fiji-MaMuT", "JSON"}
