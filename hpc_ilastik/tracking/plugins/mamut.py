"""ilastik's "Fiji-MaMuT" tracking export: `<filename>_mamut.xml`, a TrackMate/MaMuT model that points at the
BigDataViewer XML of the raw data (`--big_data_viewer_xml_file`).

Sources: ilastik `ilastik/plugins_default/tracking_mamut_export.py` (what goes in: features, spots, links,
colours) and the `mamutexport.mamutxmlbuilder.MamutXmlBuilder` it calls (the XML layout; its current source is
not available here, an older version of the builder and MaMuT's TrackMate format were the models).

Content, as ilastik's plugin fills it: spot features declared from the features of the first object's frame
(every category, every key in dict order, a 2-D feature as `<name>_<k>` except "Histogram"; names with "<"
→ "_", ">" and spaces dropped; short names by ilastik's `getShortname` rule), then "LabelimageId" and
"Track_color", and "Track_color" as a track feature. One spot per node with a value > 0, ID = node index,
name `track-<track id>`, POSITION_X/Y/Z = RegionCenter (Z 0.0 in 2-D), RADIUS = 2 · RegionRadii[0], every
feature value of its label (a label beyond a 2-D feature's rows: 9999.0 for SquaredDistances, else 0.0),
LabelimageId and its track's colour. One Edge per active link, in the Track of the source's track id;
tracks with at least one edge get a Track_color and a FilteredTracks entry.

Differences: ilastik draws the colours with `np.random.random()` (unseeded); we draw them from a generator
seeded with 0, in ascending track id order, so the file is reproducible. A feature declared twice by ilastik
(a feature in both "Default features" and "Standard Object Features") is declared once.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.tracking.plugins.base import STANDARD_CATEGORY, PluginFile, TrackingExport, feature_values

TRACKMATE_VERSION = "3.3.0"
_SPOT_FEATURES = (("QUALITY", "Quality", "Quality", "QUALITY", "false"), ("POSITION_X", "X", "X", "POSITION", "false"),
                  ("POSITION_Y", "Y", "Y", "POSITION", "false"), ("POSITION_Z", "Z", "Z", "POSITION", "false"),
                  ("POSITION_T", "T", "T", "TIME", "false"), ("FRAME", "Frame", "Frame", "NONE", "true"),
                  ("RADIUS", "Radius", "R", "LENGTH", "false"), ("VISIBILITY", "Visibility", "Visibility", "NONE",
                                                                  "true"))
_EDGE_FEATURES = (("SPOT_SOURCE_ID", "Source spot ID", "Source ID", "NONE", "true"),
                  ("SPOT_TARGET_ID", "Target spot ID", "Target ID", "NONE", "true"),
                  ("LINK_COST", "Link cost", "Cost", "NONE", "false"),
                  ("VELOCITY", "Velocity", "V", "VELOCITY", "false"),
                  ("DISPLACEMENT", "Displacement", "D", "LENGTH", "false"))
_TRACK_FEATURES = (("TRACK_INDEX", "Track index", "Index", "NONE", "true"),
                   ("TRACK_ID", "Track ID", "ID", "NONE", "true"),
                   ("Track_color", "Track_color", "trackcol", "NONE", "false"))


def key_name(key: str) -> str:
    """ilastik's `convertKeyName`: "<" → "_", ">" and spaces dropped."""
    return key.replace("<", "_").replace(">", "").replace(" ", "")


def short_name(name: str) -> str:
    """ilastik's MaMuT short name of a feature name (`getShortname`, applied to names over 15 characters)."""
    if len(name) <= 15:
        return name.replace("_", "")
    short = name[0:2]
    for i, char in enumerate(name):
        try:
            if char == "_":
                for k in (1, 2, 3):
                    short += name[i + k]
            if short == "WeReg":
                for k in (7, 8, 9):
                    short += name[i + k]
        except IndexError:
            break
    return short.strip().replace("_", "")


def feature_declarations(features: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, str, str]]:
    """(feature, name, short name) of the spot features ilastik declares, in its order, each once."""
    declared: dict[str, tuple[str, str, str]] = {}
    for values in features.values():
        for key, value in values.items():
            name, short, array = key_name(key), short_name(key_name(key)), np.asarray(value)
            if array.ndim == 2:
                if key != "Histogram":
                    for k in range(array.shape[1]):
                        declared.setdefault(f"{name}_{k}", (f"{name}_{k}", name, f"{short}_{k}"))
            else:
                declared.setdefault(name, (name, name, short))
    for name, short in (("LabelimageId", "labelid"), ("Track_color", "trackcol")):
        declared.setdefault(name, (name, name, short))
    return list(declared.values())


def spot_features(features: dict[str, dict[str, np.ndarray]], label: int) -> dict[str, str]:
    """The feature attributes of one spot (str of numpy's value, NaN and ±inf as numpy's nan_to_num)."""
    result = {}
    for category, values in features.items():
        for key, value in values.items():
            if key == "Histogram":
                continue
            name, array = key_name(key), feature_values(category, value)
            if array.ndim == 0:
                result[name] = array[()]
            elif array.ndim == 1:
                result[name] = array[label]
            elif label >= len(array):
                default = 9999.0 if "SquaredDistances" in key else 0.0
                result.update({f"{name}_{k}": default for k in range(array.shape[1])})
            else:
                result.update({f"{name}_{k}": array[label, k] for k in range(array.shape[1])})
    return {name: str(np.nan_to_num(value)) for name, value in result.items()}


def _declare(parent: ET.Element, rows: list[tuple[str, ...]]) -> None:
    for feature, name, short, dimension, is_int in rows:
        ET.SubElement(parent, "Feature", feature=feature, name=name, shortname=short, dimension=dimension,
                      isint=is_int)


def export_mamut(data: TrackingExport, filename: str) -> list[PluginFile]:
    """ilastik's "Fiji-MaMuT" plugin: `<filename>_mamut.xml`."""
    if not data.bdv_xml:
        raise UserError("the tracking export plugin 'Fiji-MaMuT' needs the BigDataViewer XML file of the raw data "
                        "(--big_data_viewer_xml_file)")
    tracks, track_id = data.tracks, data.lineage.track_id
    spots = np.flatnonzero(tracks.value > 0)
    frames = sorted(set(tracks.frame[spots].tolist()))
    features = {t: data.features(t) for t in frames}
    root = ET.Element("TrackMate", version=TRACKMATE_VERSION)
    model = ET.SubElement(root, "Model", spatialunits="pixels", timeunits="frames")
    declarations = ET.SubElement(model, "FeatureDeclarations")
    spot_declarations = ET.SubElement(declarations, "SpotFeatures")
    _declare(spot_declarations, list(_SPOT_FEATURES))
    if len(spots):
        _declare(spot_declarations, [row + ("NONE", "false") for row in
                                     feature_declarations(features[int(tracks.frame[spots[0]])])])
    _declare(ET.SubElement(declarations, "EdgeFeatures"), list(_EDGE_FEATURES))
    _declare(ET.SubElement(declarations, "TrackFeatures"), list(_TRACK_FEATURES))

    active = np.flatnonzero(tracks.link_value > 0)
    linked_tracks = sorted(set(track_id[tracks.links[active, 0]].tolist()))
    rng = np.random.default_rng(0)
    colors = {track: rng.random() for track in linked_tracks}
    all_spots = ET.SubElement(model, "AllSpots", nspots=str(len(spots)))
    in_frame: dict[int, ET.Element] = {}
    for node in spots.tolist():
        t, label, track = int(tracks.frame[node]), int(tracks.label[node]), int(track_id[node])
        standard = features[t][STANDARD_CATEGORY]
        center = feature_values(STANDARD_CATEGORY, standard["RegionCenter"])[label]
        radius = float(2 * feature_values(STANDARD_CATEGORY, standard["RegionRadii"])[label, 0])
        if t not in in_frame:
            in_frame[t] = ET.SubElement(all_spots, "SpotsInFrame", frame=str(t))
        attributes = {"ID": str(node), "name": f"track-{track}", "VISIBILITY": "1", "POSITION_T": str(float(t)),
                      "POSITION_Z": str(center[2] if len(center) > 2 else 0.0), "POSITION_Y": str(center[1]),
                      "RADIUS": str(radius), "FRAME": str(t),
                      "POSITION_X": str(center[0]), "QUALITY": "3.0"}
        attributes.update(spot_features(features[t], label))
        attributes["Track_color"] = str(colors[track] if track in colors else rng.random())
        attributes["LabelimageId"] = str(label)
        ET.SubElement(in_frame[t], "Spot", attributes)

    all_tracks = ET.SubElement(model, "AllTracks")
    track_elements = {track: ET.SubElement(all_tracks, "Track", TRACK_ID=str(track), name=f"Track_{track}",
                                           TRACK_INDEX=str(track), Track_color=str(colors[track]))
                      for track in linked_tracks}
    for source, target in tracks.links[active].tolist():
        ET.SubElement(track_elements[int(track_id[source])], "Edge", SPOT_SOURCE_ID=str(source),
                      SPOT_TARGET_ID=str(target), LINK_COST="0.0", VELOCITY="0.0", DISPLACEMENT="0.0")
    filtered = ET.SubElement(model, "FilteredTracks")
    for track in linked_tracks:
        ET.SubElement(filtered, "TrackID", TRACK_ID=str(track))
    settings = ET.SubElement(root, "Settings")
    ET.SubElement(settings, "ImageData", filename=os.path.basename(data.bdv_xml),
                  folder=os.path.dirname(data.bdv_xml), height="0", nframes="0", nslices="0", pixelheight="1.0",
                  pixelwidth="1.0", timeinterval="1.0", voxeldepth="1.0", width="0")
    ET.indent(root, space="  ")
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    return [PluginFile(filename + "_mamut.xml", text)]
