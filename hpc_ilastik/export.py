"""What ilastik does between "the pipeline produced an array" and "a file is written", as pure functions.

Export sources of a probability block, the list-string options (`--cutout_subregion`, the dranges),
renormalisation and dtype conversion, the output axis order, and the output file name (placeholders,
extension). Facts: ilastik-spec.md §1.4 and §2 (ilastik's `opFormattedDataExport.py`, `opExportSlot.py`,
`format_known_keys.py`, `ioOperators.py` `OpStackWriter`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import string
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from hpc_ilastik.axes import INTERNAL_AXES, from_tzyxc, internal_slices
from hpc_ilastik.errors import UserError

log = logging.getLogger(__name__)

Range = tuple[float, float]

_IMAGE_EXTENSIONS = ("bmp", "gif", "hdr", "jpeg", "jpg", "pbm", "pgm", "png", "pnm", "ppm", "ras", "tif", "tiff")
_EXTENSIONS = {
    **{ext: ext for ext in _IMAGE_EXTENSIONS},
    **{f"{ext} sequence": ext for ext in _IMAGE_EXTENSIONS},
    "multipage tiff": "tiff",
    "multipage tiff sequence": "tiff",
    "hdf5": "h5",
    "compressed hdf5": "h5",
    "n5": "n5",
    "compressed n5": "n5",
    "single-scale OME-Zarr": "zarr",
    "multi-scale OME-Zarr": "zarr",
    "numpy": "npy",
    "dvid": "",
    "blockwise hdf5": "json",
    "zarr": "zarr",
}
# `--output_format` choices in ilastik's order (its 2-D list is vigra's extensions), then our own `zarr`.
OUTPUT_FORMATS: tuple[str, ...] = tuple(_EXTENSIONS)
UNSUPPORTED_FORMATS = {
    "dvid": "dvid export is not supported by hpc-ilastik (it needs a DVID server); use n5, zarr or hdf5",
    "blockwise hdf5": "'blockwise hdf5' export is not supported (ilastik does not implement it either); use hdf5 or n5",
}
_MISSPELLED_SOURCES = {"propabilities all stages": "probabilities all stages"}  # the manual's spelling


# ---- export sources --------------------------------------------------------------------------------


def simple_segmentation(probabilities: np.ndarray) -> np.ndarray:
    """ilastik's Simple Segmentation: argmax over the channel axis + 1, uint8, one channel."""
    return (np.argmax(probabilities, axis=-1) + 1).astype(np.uint8)[..., np.newaxis]


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """ilastik's Uncertainty: 1 − (highest − second-highest probability), float32, one channel; 0 for one class."""
    if probabilities.shape[-1] < 2:
        return np.zeros(probabilities.shape[:-1] + (1,), dtype=np.float32)
    top2 = np.partition(probabilities.astype(np.float32, copy=False), -2, axis=-1)[..., -2:]
    return (np.float32(1) - (top2[..., 1:] - top2[..., :1])).astype(np.float32)


def resolve_export_source(name: str, valid: Sequence[str]) -> str:
    """The export source `name` spells, matched case-insensitively against the workflow's `valid` names."""
    wanted = " ".join(name.split()).lower()
    wanted = _MISSPELLED_SOURCES.get(wanted, wanted)
    for candidate in valid:
        if candidate.lower() == wanted:
            return candidate
    raise UserError(f"Invalid option for --export_source: {name!r}. Valid options are: {', '.join(valid)}.")


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


# ---- file names ------------------------------------------------------------------------------------


def format_known_keys(template: str, values: Mapping[str, object]) -> str:
    """ilastik's partial formatting: known placeholders formatted (specs honoured), unknown ones left as
    written; a malformed template is returned unchanged. Like ilastik, `{{`/`}}` become `{`/`}`."""
    formatter = string.Formatter()
    try:
        parts = list(formatter.parse(template))
    except ValueError:
        return template
    pieces = []
    for literal, name, spec, conversion in parts:
        pieces.append(literal)
        if name is None:
            continue
        if name in values:
            try:
                pieces.append(format(values[name], spec or ""))
            except (ValueError, TypeError) as exc:
                raise UserError(f"placeholder {{{name}:{spec}}} in {template!r} cannot be formatted: {exc}.") from exc
        else:
            pieces.append("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(pieces)


def format_path(template: str, *, dataset_dir: str, nickname: str, result_type: str,
                region: Sequence[slice], roi_axes: str | None = None, slice_index: int | None = None) -> str:
    """ilastik's two formatting rounds: {dataset_dir} {nickname} {result_type}, then {roi} and
    {<axis>_start}/{<axis>_stop} (absolute coordinates of the exported tzyxc `region`; {roi} lists
    (starts),(stops) in ilastik's internal order `roi_axes`, default from the region). `~` is expanded.
    {slice_index} is filled only when given (sequence writers fill it per slice)."""
    names = {"dataset_dir": dataset_dir, "nickname": nickname.replace("*", ""), "result_type": result_type}
    text = format_known_keys(os.path.expanduser(template), names)
    starts = {a: int(s.start) for a, s in zip(INTERNAL_AXES, region)}
    stops = {a: int(s.stop) for a, s in zip(INTERNAL_AXES, region)}
    roi_axes = roi_axes or ilastik_axes([stops[a] - starts[a] for a in INTERNAL_AXES])
    coordinates: dict[str, object] = {"roi": [tuple(starts[a] for a in roi_axes), tuple(stops[a] for a in roi_axes)]}
    for axis in INTERNAL_AXES:
        coordinates[f"{axis}_start"], coordinates[f"{axis}_stop"] = starts[axis], stops[axis]
    if slice_index is not None:
        coordinates["slice_index"] = slice_index
    return format_known_keys(text, coordinates)


def canonical_format(fmt: str) -> str:
    """The `--output_format` name as listed in OUTPUT_FORMATS (matched ignoring case and extra spaces)."""
    wanted = " ".join(fmt.split()).lower()
    for name in OUTPUT_FORMATS:
        if name.lower() == wanted:
            return name
    raise UserError(f"Unknown output format {fmt!r}; choose one of: {', '.join(OUTPUT_FORMATS)}.")


def format_extension(fmt: str) -> str:
    """The file extension ilastik gives a format (h5, n5, zarr, npy, tiff, png, ...)."""
    name = canonical_format(fmt)
    if name in UNSUPPORTED_FORMATS:
        raise UserError(UNSUPPORTED_FORMATS[name] + ".")
    return _EXTENSIONS[name]


def with_extension(path: str, fmt: str) -> str:
    """ilastik's extension rule: the text after the last dot of the file name is replaced by the format's extension."""
    return os.path.splitext(path)[0] + "." + format_extension(fmt)


def output_path(template: str, fmt: str, *, dataset_dir: str, nickname: str, result_type: str,
                region: Sequence[slice], base_dir: str, roi_axes: str | None = None) -> str:
    """The export file (or container/template) path: placeholders, the format's extension, and a relative
    result taken relative to `base_dir` (ilastik: the project's folder, or the current directory when
    the template was given on the command line)."""
    formatted = format_path(template, dataset_dir=dataset_dir, nickname=nickname, result_type=result_type,
                            region=region, roi_axes=roi_axes)
    return os.path.normpath(os.path.join(base_dir, with_extension(formatted, fmt)))


def slice_index_digits(offset: int, n_slices: int) -> int:
    """ilastik's zero padding for a bare {slice_index}: ceil(log10(offset + n_slices + 1)) digits."""
    return int(math.ceil(math.log10(offset + n_slices + 1)))


def pad_slice_index(template: str, offset: int, n_slices: int) -> str:
    """A sequence template with a bare {slice_index} given ilastik's zero padding (explicit specs are kept);
    UserError when the template has no {slice_index} at all."""
    if "123456789" not in format_known_keys(template, {"slice_index": 123456789}):
        raise UserError(f"Output filepath pattern must contain the '{{slice_index}}' field for sequence formats "
                        f"(e.g. --output_filename_format={{dataset_dir}}/{{nickname}}_z{{slice_index}}.png); got {template!r}.")
    digits = slice_index_digits(offset, n_slices)
    return template.replace("{slice_index}", "{slice_index:0%dd}" % digits)


def describe_shape(shape: Sequence[int], axes: str) -> str:
    """A shape with its axes, as error messages name it."""
    return f"shape {tuple(int(n) for n in shape)} in axes {axes}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
