"""Output file names as ilastik makes them: placeholders, the format's extension, zero-padded slice
indices, and the check that an output never replaces an input.

Facts: ilastik-spec.md §2 (ilastik's `format_known_keys.py`, `opExportSlot.py`, `ioOperators.py` `OpStackWriter`).
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Mapping, Sequence

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import INTERNAL_AXES
from hpc_ilastik.io.export import ilastik_axes
from hpc_ilastik.io.formats import with_extension


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


def check_not_overwriting(out_path: str, input_paths: Sequence[str]) -> None:
    """UserError when the output file would be one of the input files (or the project)."""
    target = os.path.realpath(out_path)
    for path in input_paths:
        same = os.path.realpath(path) == target or (
            os.path.exists(path) and os.path.exists(out_path) and os.path.samefile(path, out_path))
        if same:
            raise UserError(f"the output {out_path} is the input {path}: writing it would destroy the input; "
                            "choose another --output_filename_format.")
