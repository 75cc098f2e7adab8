"""Axis strings ("yxc", "tzyxc"), vigra axistags JSON and ilastik's axis rules, as pure functions."""

import json
from collections.abc import Mapping, Sequence

import numpy as np

from hpc_ilastik.errors import UserError

INTERNAL_AXES = "tzyxc"

# vigra AxisType flags (include/vigra/axistags.hxx): Channels=1, Space=2, Time=8.
_TYPE_FLAGS = {"c": 1, "x": 2, "y": 2, "z": 2, "t": 8}


def parse_axistags(json_text: str | bytes) -> str:
    """Axis keys of a vigra axistags JSON document, in order (e.g. "yxc")."""
    return "".join(entry["key"] for entry in _axistag_entries(json_text))


def axistags_resolutions(json_text: str | bytes) -> dict[str, float] | None:
    """Non-zero `resolution` values of an axistags document by axis key; None if there are none."""
    found = {e["key"]: float(e["resolution"]) for e in _axistag_entries(json_text) if e.get("resolution")}
    return found or None


def make_axistags(axes: str, resolutions: Mapping[str, float] | None = None) -> str:
    """The axistags JSON ilastik writes for `axes` (resolution 0 where unknown)."""
    entries = []
    for key in axes:
        resolution = (resolutions or {}).get(key, 0)
        if float(resolution).is_integer():
            resolution = int(resolution)
        entries.append({"key": key, "typeFlags": _TYPE_FLAGS[key], "resolution": resolution, "description": ""})
    return json.dumps({"axes": entries}, indent=2)


def default_axes(shape: Sequence[int]) -> str:
    """ilastik's guess for data without axis metadata (2D yx, 3D yxc or zyx, 4D zyxc, 5D tzyxc)."""
    ndim = len(shape)
    if ndim == 2:
        return "yx"
    if ndim == 3:
        return "yxc" if shape[-1] <= 4 else "zyx"
    if ndim == 4:
        return "zyxc"
    if ndim == 5:
        return "tzyxc"
    raise UserError(
        f"Cannot guess the axes of data with shape {tuple(shape)}: ilastik's rule covers 2 to 5 axes; "
        "give them with --input_axes (e.g. --input_axes=tzyxc)."
    )


def validate_axes(axes: str, shape: Sequence[int] | None = None) -> str:
    """Check axes (letters of xyztc, no repeats, x and y present, one per axis of `shape` if given); lower-case them."""
    keys = axes.strip().lower()
    bad = sorted(set(keys) - set(INTERNAL_AXES))
    if bad:
        raise UserError(f"Axes '{axes}' contain unknown letters {', '.join(bad)}: use only t, z, y, x and c.")
    if len(set(keys)) != len(keys):
        raise UserError(f"Axes '{axes}' name an axis more than once.")
    if "x" not in keys or "y" not in keys:
        raise UserError(f"Axes '{axes}' must contain both x and y.")
    if shape is not None and len(keys) != len(shape):
        raise UserError(
            f"Axes '{axes}' have {len(keys)} letters but the data has shape {tuple(shape)} ({len(shape)} axes)."
        )
    return keys


def to_tzyxc(array: np.ndarray, axes: str) -> np.ndarray:
    """View of `array` (axes as given) in tzyxc order, missing axes inserted with size 1."""
    order = [axes.index(key) for key in INTERNAL_AXES if key in axes]
    moved = np.transpose(array, order)
    return moved[tuple(slice(None) if key in axes else np.newaxis for key in INTERNAL_AXES)]


def from_tzyxc(array: np.ndarray, axes: str) -> np.ndarray:
    """View of a tzyxc `array` in the order `axes`; axes not named must have size 1."""
    for key, size in zip(INTERNAL_AXES, array.shape):
        if key not in axes and size != 1:
            raise UserError(
                f"Axis order '{axes}' leaves out axis '{key}' of size {size}: only axes of size 1 may be dropped."
            )
    kept = [key for key in INTERNAL_AXES if key in axes]
    squeezed = array[tuple(slice(None) if key in axes else 0 for key in INTERNAL_AXES)]
    return np.transpose(squeezed, [kept.index(key) for key in axes])


def internal_slices(slices_tzyxc: Sequence[slice], axes: str) -> tuple[slice, ...]:
    """The part of a tzyxc ROI that applies to data with axes `axes`, in that data's axis order."""
    return tuple(slices_tzyxc[INTERNAL_AXES.index(key)] for key in axes)


def _axistag_entries(json_text: str | bytes) -> list[dict]:
    try:
        return list(json.loads(json_text)["axes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"Cannot read axistags metadata {json_text!r}: {exc}.") from exc
