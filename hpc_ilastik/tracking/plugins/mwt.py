"""ilastik's "Multi-Worm-Tracker" tracking export (2-D only): `<filename>.summary` and `<filename>.blobs`.

Source: ilastik `ilastik/plugins_default/tracking_mwt_export.py` (format: Rex Kerr's MWT users' guide). Every
object of a frame that is a node of the graph counts, with or without a lineage id. Features are ilastik's
"Standard Object Features" (float32): RegionCenter, Count, RegionRadii, RegionAxes (flattened row-major).

`.summary`, one line per frame with objects: `t+1 t n n 0.0 0.0 0.0 L L W W A A 0.0` with L, W, A the mean
of radius 0, radius 1 and radius 0 / radius 1 (each summed in float32, the sum then divided by n in float64,
as the reference files ilastik's test compares with were made: numpy's legacy promotion of float32 / int).

`.blobs`, per label id (ascending) that is an object of at least one frame: `% <id>`, then per such frame
(ascending) `<k> <t> <x> <y> <area> <axes[0]·r0> <axes[1]·r0> <mean(r0, r1)> <r0> <r1> %% <x0> <y0> <m+1> <code>`
with k counting from 1, numbers in float32 arithmetic printed as the float64 repr of the float32 value,
(x0, y0) the contour's first point and <code> the contour's steps packed by ilastik's rules: each step to a
4-neighbour is two bits (x −1 "00", x +1 "01", y −1 "10", y +1 "11"; a diagonal step x bits then y bits), m
counts them; six bits make one character chr(48 + bits); at the last point two leftover bits are padded with
"00001" (seven bits), four with "00"; other leftovers are dropped.
"""

from __future__ import annotations

import numpy as np

from hpc_ilastik.tracking.plugins.base import STANDARD_CATEGORY, PluginFile, TrackingExport, feature_values
from hpc_ilastik.tracking.plugins.contours import frame_contours, frame_objects, require_2d

_STEP_BITS = {(-1.0, 0.0): "00", (1.0, 0.0): "01", (0.0, -1.0): "10", (0.0, 1.0): "11",
              (-1.0, -1.0): "0010", (-1.0, 1.0): "0011", (1.0, -1.0): "0110", (1.0, 1.0): "0111"}


def chain_code(contour: np.ndarray) -> tuple[int, str]:
    """(number of two-bit steps, packed characters) of a contour, by ilastik's MWT rules (module docstring)."""
    points = contour.tolist()
    steps, bits, chars = 0, "", []
    for i, point in enumerate(points):
        if i:
            step = _STEP_BITS.get((point[0] - points[i - 1][0], point[1] - points[i - 1][1]), "")
            bits += step
            steps += len(step) // 2
        if len(bits) >= 6:
            chars.append(chr(int(bits[:6], 2) + ord("0")))
            bits = bits[6:]
        elif i == len(points) - 1 and len(bits) in (2, 4):
            bits += "00001" if len(bits) == 2 else "00"
            chars.append(chr(int(bits, 2) + ord("0")))
    return steps, "".join(chars)


def _text(value: float) -> str:
    """A float32 feature value as ilastik prints it ("{}".format of a numpy float32: the float64 repr)."""
    return str(float(value))


def export_mwt(data: TrackingExport, filename: str) -> list[PluginFile]:
    """ilastik's "Multi-Worm-Tracker" plugin: `<filename>.summary` and `<filename>.blobs`."""
    require_2d(data, "Multi-Worm-Tracker")
    summary = []
    blobs: dict[int, list[str]] = {}
    for t, nodes in enumerate(data.frame_nodes()):
        frame_xy, labels = frame_objects(data, t, nodes)
        if not labels:
            continue
        standard = data.features(t)[STANDARD_CATEGORY]
        center, count, radii, axes = (feature_values(STANDARD_CATEGORY, standard[name])
                                      for name in ("RegionCenter", "Count", "RegionRadii", "RegionAxes"))
        r0, r1 = radii[labels, 0], radii[labels, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = r0 / r1
        means = [float(_float32_sum(values)) / len(labels) for values in (r0, r1, ratio)]
        summary.append(f"{t + 1} {t} {len(labels)} {len(labels)} 0.0 0.0 0.0 "
                       + " ".join(f"{m} {m}" for m in means) + " 0.0\n")
        for label, contour in frame_contours(frame_xy, labels).items():
            length, width = radii[label, 0], radii[label, 1]
            values = (center[label, 0], center[label, 1], count[label, 0], axes[label, 0] * length,
                      axes[label, 1] * length, np.mean(np.array([length, width], dtype=np.float32)), length, width)
            steps, code = chain_code(contour)
            entries = blobs.setdefault(label, [])
            entries.append(f"{len(entries) + 1} {t} {' '.join(_text(v) for v in values)} %% "
                           f"{contour[0, 0]} {contour[0, 1]} {steps + 1} {code}\n")
    lines = [line for label in sorted(blobs) for line in [f"% {label}\n"] + blobs[label]]
    return [PluginFile(filename + ".summary", "".join(summary)), PluginFile(filename + ".blobs", "".join(lines))]


def _float32_sum(values: np.ndarray) -> np.float32:
    """Left-to-right float32 sum (ilastik adds the objects one at a time)."""
    total = np.float32(0)
    for value in values:
        total = np.float32(total + value)
    return total
