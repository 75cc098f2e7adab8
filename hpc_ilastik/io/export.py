"""What ilastik's data export does to an array before it is written, as pure functions.

The list-string options (`--cutout_subregion`, the dranges), renormalisation and dtype conversion, the
cut-out region and the output axis order. Facts: ilastik-spec.md §1.4 and §2 (ilastik's
`opFormattedDataExport.py`, `opExportSlot.py`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import INTERNAL_AXES, from_tzyxc, internal_slices
from hpc_ilastik.io.formats import describe_shape

log = logging.getLogger(__name__)

Range = tuple[float, float]


# ---- list-string options ---------------------------------------------------------------------------


def parse_list_string(text: str) -> list:
    """ilastik's convertStringToList: `(`→`[`, `)`→`]`, `None`→`null`, then JSON; must give a list."""
    converted = text.replace("(", "[").replace(")", "]").replace("None", "null")
    try:
        value = json.loads(converted)
    except ValueError as exc:
        raise UserError(f"{text!r} is not a list such as [(0,0),(10,10)] or (0,255): {exc}.") from exc
    if not isinstance(value, list):
        raise UserError(f"{text!r} is not a list such as [(0,0),(10,10)] or (0,255).")
    return value


def parse_range(value: str | Sequence[float], option: str) -> Range:
    """A (min, max) pair from a list-string (or a sequence already parsed), as Python numbers."""
    items = parse_list_string(value) if isinstance(value, str) else list(value)
    if len(items) != 2 or not all(_is_number(v) for v in items):
        raise UserError(f"{option} needs two numbers (min,max), e.g. (0,255); got {value!r}.")
    return tuple(np.asarray(v).item() for v in items)  # type: ignore[return-value]


class StoredRanges(Protocol):
    """The renormalisation ranges a project stores (project.ExportSettings); None where unset."""

    input_min: float | None
    input_max: float | None
    export_min: float | None
    export_max: float | None


def resolve_normalization(
    pipeline_drange: str | Sequence[float] | None,
    export_drange: str | Sequence[float] | None,
    stored: StoredRanges | None = None,
) -> tuple[Range, Range] | tuple[None, None]:
    """(input range, export range) to renormalise with, or (None, None) for a plain cast.

    ilastik's rule: the command-line pair wins when both are given; `--export_drange` alone is an error;
    `--pipeline_result_drange` alone is ignored (warning). Otherwise the project's stored ranges apply
    when all four values are stored."""
    if export_drange is not None and pipeline_drange is None:
        raise UserError("Cannot renormalize to custom export_drange without a specified pipeline_result_drange.")
    if export_drange is not None:
        return parse_range(pipeline_drange, "--pipeline_result_drange"), parse_range(export_drange, "--export_drange")
    if pipeline_drange is not None:
        log.warning("--pipeline_result_drange is ignored without --export_drange (as in ilastik)")
    if stored is None:
        return None, None
    values = (stored.input_min, stored.input_max, stored.export_min, stored.export_max)
    if any(v is None for v in values):
        return None, None
    return (parse_range(values[:2], "the project's stored input range"),
            parse_range(values[2:], "the project's stored export range"))


# ---- values ----------------------------------------------------------------------------------------


def normalize(x: np.ndarray, input_range: Sequence[float], export_range: Sequence[float], dtype) -> np.ndarray:
    """ilastik ≥ 1.4.2 renormalisation: c + (x − a)·ratio, ratio = float32((d−c)/(b−a)) computed in float64
    (0 when b ≈ a); float data going to an integer dtype is rounded half-to-even first; no clipping.

    The arithmetic follows ilastik's numpy 1 types: the range values act as Python scalars, so float32
    data stays float32 and integer data minus an integer start stays in the (value-promoted) integer type."""
    a, b = (np.asarray(v).item() for v in input_range)
    c, d = (np.asarray(v).item() for v in export_range)
    dtype = np.dtype(dtype)
    spread_in = np.float64(b) - np.float64(a)
    ratio = np.float32(0.0) if np.isclose(spread_in, 0.0) else np.float32((np.float64(d) - np.float64(c)) / spread_in)
    floating = np.issubdtype(x.dtype, np.floating)
    if not floating and isinstance(a, int):
        x = x.astype(np.result_type(x.dtype, np.min_scalar_type(a)), copy=False)
    values = c + (x - a) * ratio
    if floating and np.issubdtype(dtype, np.integer):
        values = np.rint(values)
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype)


def convert_dtype(x: np.ndarray, dtype) -> np.ndarray:
    """ilastik's conversion without renormalisation: a plain numpy cast (floats truncate toward zero)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(x).astype(np.dtype(dtype), copy=False)


# ---- regions and axes ------------------------------------------------------------------------------


def ilastik_axes(shape: Sequence[int], axes: str = INTERNAL_AXES) -> str:
    """ilastik's internal axis order for an image: singleton axes other than y, x, c dropped (yxc, zyxc, tyxc, tzyxc)."""
    return "".join(a for a, n in zip(axes, shape) if a in "yxc" or n > 1)


def parse_cutout(text: str, shape: Sequence[int], axes: str = INTERNAL_AXES) -> tuple[slice, ...]:
    """`--cutout_subregion` as one slice per axis of `axes` for an export image of `shape` (in `axes` order).

    The text is `[(start,...),(stop,...)]`, each tuple in ilastik's internal order of the image
    (`ilastik_axes`, e.g. yxc for a 2-D image, zyxc for 3-D) or in the full `axes` order (tzyxc)."""
    bounds = parse_list_string(text)
    if len(bounds) != 2 or not all(isinstance(b, list) for b in bounds) or len(bounds[0]) != len(bounds[1]):
        raise UserError(f"--cutout_subregion needs exactly two tuples of equal length [(start,...),(stop,...)]; got {text!r}.")
    return cutout_slices(bounds[0], bounds[1], shape, axes)


def cutout_slices(start: Sequence[int | None], stop: Sequence[int | None], shape: Sequence[int],
                  axes: str = INTERNAL_AXES) -> tuple[slice, ...]:
    """Cut-out bounds (None or 0: start 0 / stop at the end) → one slice per axis of `axes`; out of range is a UserError."""
    short = ilastik_axes(shape, axes)
    if len(start) == len(axes):
        given = axes
    elif len(start) == len(short):
        given = short
    else:
        raise UserError(
            f"the cut-out has {len(start)} values per tuple, but this image needs {len(short)} (axes {short}) "
            f"or {len(axes)} (axes {axes}); the image has {describe_shape(shape, axes)}.")
    bounds = dict(zip(given, zip(start, stop)))
    slices = []
    for axis, extent in zip(axes, shape):
        first, last = bounds.get(axis, (None, None))
        for value in (first, last):
            if value is not None and (not _is_int(value) or value < 0):
                raise UserError(f"cut-out value {value!r} on axis {axis} is not a non-negative integer or None.")
        first, last = first or 0, last or extent
        if last > extent:
            raise UserError(f"the cut-out stops at {last} on axis {axis}, beyond the image ({describe_shape(shape, axes)}).")
        if first >= last:
            raise UserError(f"the cut-out on axis {axis} is empty ({first}:{last}); the image is {describe_shape(shape, axes)}.")
        slices.append(slice(first, last))
    return tuple(slices)


def output_axes(default_axes: str, requested: str | None, shape_tzyxc: Sequence[int]) -> str:
    """The export's axis order: `--output_axis_order` (validated), else the raw input's own order + c."""
    if requested is None:
        order = default_axes.lower() + ("" if "c" in default_axes.lower() else "c")
    else:
        order = requested.strip().lower()
        if not order or set(order) - set("txyzc"):
            raise UserError(f"Invalid axes specified output_axis_order: {requested!r} (use letters of txyzc).")
        if len(set(order)) != len(order):
            raise UserError(f"--output_axis_order {requested!r} names an axis more than once.")
    reorder_shape(shape_tzyxc, order)
    return order


def reorder_shape(shape_tzyxc: Sequence[int], axes: str) -> tuple[int, ...]:
    """A tzyxc shape in the order `axes`; leaving out an axis longer than 1 is a UserError."""
    for axis, size in zip(INTERNAL_AXES, shape_tzyxc):
        if axis not in axes and size != 1:
            raise UserError(f"the output axis order '{axes}' leaves out axis '{axis}' of size {size}: "
                            "only axes of size 1 may be dropped.")
    return tuple(int(shape_tzyxc[INTERNAL_AXES.index(a)]) for a in axes)


reorder = from_tzyxc  # (x_tzyxc, axes) -> view in the output order
reorder_slices = internal_slices  # (slices_tzyxc, axes) -> slices in the output order


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
