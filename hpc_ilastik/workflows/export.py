"""The export of every workflow: the settings in force (the project's stored ones overridden by the command
line, ilastik's way), and one `Target` per export source of an image: its region, dtype, axis order,
value range, file and writer, and the fingerprint that makes a streaming output resumable."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io import export as convert
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.io.output import open_writer
from hpc_ilastik.io.paths import check_not_overwriting, format_known_keys, output_path
from hpc_ilastik.io.writers import Writer
from hpc_ilastik.project.common import Project
from hpc_ilastik.run.blocks import Block
from hpc_ilastik.run.distributed import RankGroup
from hpc_ilastik.workflows.options import ExportRequest

DEFAULT_TEMPLATE = "{dataset_dir}/{nickname}_{result_type}"
DEFAULT_FORMAT = "compressed hdf5"
_MISSPELLED_SOURCES = {"propabilities all stages": "probabilities all stages"}  # the manual's spelling


@dataclass(frozen=True)
class ExportOptions:
    """The export settings in force: the project's stored ones overridden by the command line."""

    sources: tuple[tuple[str, Any], ...]  # (ilastik's name, the workflow's key for it); several: our extension
    output_format: str
    filename_template: str
    template_from_cli: bool
    internal_path: str
    export_dtype: str | None
    axis_order: str | None
    pipeline_drange: tuple[float, float] | None
    export_drange: tuple[float, float] | None
    cutout: str | None

    def base_dir(self, project_path: str) -> str:
        """Where a relative export path is taken from: the working directory when the template was given on the
        command line, else the project's folder (ilastik's rule)."""
        return os.getcwd() if self.template_from_cli else os.path.dirname(os.path.abspath(project_path))


def export_options(project: Project, request: ExportRequest, sources: Mapping[str, Any],
                   distributed: bool = False) -> ExportOptions:
    """Merge the project's export settings with the command line's, ilastik's way; `sources` are the
    workflow's export sources in ilastik's order (the first is the default). A `distributed` run without
    --output_format writes N5, as ilastik's does (which writes N5 whatever the format)."""
    stored = project.export_settings
    names = ([resolve_export_source(n.strip(), list(sources)) for n in request.sources]
             if request.sources else [next(iter(sources))])
    if len(set(names)) != len(names):
        raise UserError(f"--export_source names a source twice: {','.join(request.sources)}")
    template = request.filename_template or stored.output_filename_format or DEFAULT_TEMPLATE
    if len(names) > 1 and "{result_type}" not in template:
        raise UserError("several export sources need {result_type} in --output_filename_format, so that each gets its own file")
    pipeline_drange, export_drange = convert.resolve_normalization(request.pipeline_drange, request.export_drange, stored)
    cutout = request.cutout
    if cutout is None and stored.region_start is not None:
        cutout = str([tuple(None if v == -1 else v for v in stored.region_start),
                      tuple(None if v == -1 else v for v in stored.region_stop)])
    return ExportOptions(
        sources=tuple((name, sources[name]) for name in names),
        output_format=(request.output_format or ("n5" if distributed else stored.output_format)
                       or DEFAULT_FORMAT).strip(),
        filename_template=template,
        template_from_cli=request.filename_template is not None,
        internal_path=request.internal_path or stored.output_internal_path or "exported_data",
        export_dtype=request.export_dtype or stored.export_dtype,
        axis_order=request.axis_order or stored.output_axis_order,
        pipeline_drange=pipeline_drange,
        export_drange=export_drange,
        cutout=cutout,
    )


def resolve_export_source(name: str, valid: Sequence[str]) -> str:
    """The export source `name` spells, matched case-insensitively against the workflow's `valid` names."""
    wanted = " ".join(name.split()).lower()
    wanted = _MISSPELLED_SOURCES.get(wanted, wanted)
    for candidate in valid:
        if candidate.lower() == wanted:
            return candidate
    raise UserError(f"Invalid option for --export_source: {name!r}. Valid options are: {', '.join(valid)}.")


@dataclass
class Target:
    """One export source of one image: what it holds and where it goes."""

    name: str
    key: Any                         # the workflow's key of the source
    region: tuple[slice, ...]        # tzyxc, the channel slice picks from the source's channels
    out_axes: str
    out_dtype: np.dtype
    normalization: tuple | None
    path: str
    writer: Writer | None = None

    @property
    def region_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.region)

    def output_slices(self, block: Block) -> tuple[slice, ...]:
        """Where a block of the grid over the region lands in the output (output axis order)."""
        channels = self.region[4].stop - self.region[4].start
        return convert.reorder_slices(block.out_slices[:4] + (slice(0, channels),), self.out_axes)

    def write(self, block: Block, values: np.ndarray) -> None:
        """Write a block's values (tzyxc, every channel of the source): channels cut, converted, reordered."""
        if self.normalization:
            values = convert.normalize(values, self.normalization[0], self.normalization[1], self.out_dtype)
        else:
            values = convert.convert_dtype(values, self.out_dtype)
        self.writer.write(self.output_slices(block), convert.reorder(values[..., self.region[4]], self.out_axes))

    def open(self, options: ExportOptions, source: Source, block_shape: Sequence[int],
             drange: tuple[float, float] | None, comm: Any | None, fingerprint: Mapping[str, object]) -> None:
        """Create the output file (`drange`: the source's own value range, for its metadata)."""
        region_shape = self.region_shape
        self.writer = open_writer(
            options.output_format, self.path, internal_path=format_known_keys(options.internal_path, {  # as ilastik
                "dataset_dir": source.dataset_dir, "nickname": source.nickname.replace("*", ""),
                "result_type": self.name}),
            shape=convert.reorder_shape(region_shape, self.out_axes), dtype=self.out_dtype, axes=self.out_axes,
            chunks=convert.reorder_shape(tuple(block_shape[:4]) + region_shape[4:], self.out_axes),
            drange=options.export_drange if self.normalization else drange,
            resolutions=source.resolutions, units=source.units, ranks=None if comm is None else RankGroup(comm),
            offset=tuple(s.start for s in convert.reorder_slices(self.region, self.out_axes)),
            fingerprint=fingerprint)


def _target_path(project: Project, options: ExportOptions, name: str, nickname: str, dataset_dir: str,
                 region: Sequence[slice]) -> str:
    return output_path(
        options.filename_template, options.output_format, dataset_dir=dataset_dir, nickname=nickname,
        result_type=name, region=region,
        base_dir=options.base_dir(project.path))


def planned_paths(project: Project, options: ExportOptions, nickname: str, dataset_dir: str) -> list[str] | None:
    """The output path of every export source of an input named so, known before it is opened; None when the
    template names the exported region ({roi}, {x_start}, ...), which only the image's shape gives."""
    one, other = (tuple(slice(0, n) for n in (1, 1, 1, 1, 1)), tuple(slice(0, n) for n in (2, 3, 4, 5, 6)))
    paths = [_target_path(project, options, name, nickname, dataset_dir, one) for name, _ in options.sources]
    if paths != [_target_path(project, options, name, nickname, dataset_dir, other) for name, _ in options.sources]:
        return None
    return paths


def plan_target(name: str, key: Any, project: Project, source: Source, options: ExportOptions,
                shape_tzyxc: Sequence[int], pipeline_dtype: str) -> Target:
    """The target of one export source of `shape_tzyxc` (its own channel count) computed from `source`."""
    shape = tuple(shape_tzyxc)
    region = convert.parse_cutout(options.cutout, shape) if options.cutout else tuple(slice(0, n) for n in shape)
    region_shape = tuple(s.stop - s.start for s in region)  # the cut-out may select channels too
    path = _target_path(project, options, name, source.nickname, source.dataset_dir, region)
    check_not_overwriting(path, list(source.paths) + [os.path.abspath(project.path)])
    return Target(name=name, key=key, region=region,
                  out_axes=convert.output_axes(source.axes, options.axis_order, region_shape),
                  out_dtype=np.dtype(options.export_dtype or pipeline_dtype),
                  normalization=(options.pipeline_drange, options.export_drange) if options.export_drange else None,
                  path=path)


def check_distinct_paths(targets: Sequence[Target]) -> None:
    """Several export sources need several files."""
    if len({t.path for t in targets}) != len(targets):
        raise UserError("two export sources would be written to the same file: put {result_type} in the file name")


def fingerprint(project: Project, source: Source, options: ExportOptions, source_name: str,
                block_shape: Sequence[int]) -> dict:
    """What makes an existing streaming output resumable by this command (and nothing else)."""
    st = os.stat(project.path)
    return {
        "project": os.path.abspath(project.path), "project_size": st.st_size, "project_mtime": int(st.st_mtime),
        "input": [os.path.abspath(p) for p in source.paths], "input_shape": list(source.shape_tzyxc),
        "export_source": source_name, "block_shape": list(block_shape),
        "dtype": options.export_dtype, "drange": [options.pipeline_drange, options.export_drange],
    }
