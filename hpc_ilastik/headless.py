"""The headless run: project → inputs → blocks → pipeline → export → writer, on one rank or many."""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from hpc_ilastik import blocks as blk
from hpc_ilastik import export
from hpc_ilastik.distributed import get_comm, run_blocks, share_files
from hpc_ilastik.errors import UserError
from hpc_ilastik.forest import ForestEnsemble
from hpc_ilastik.inputs import Source, open_input, resolve_files
from hpc_ilastik.pipeline import PixelStage, SourceRequest, compute_sources, halo, needed_stage, plan_stages
from hpc_ilastik.progress import Progress
from hpc_ilastik.project import Project, open_project
from hpc_ilastik.workflows import export_sources, source_dtype_and_drange
from hpc_ilastik.writers import check_format, check_not_overwriting, open_writer

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{dataset_dir}/{nickname}_{result_type}"
DEFAULT_FORMAT = "compressed hdf5"


@dataclass(frozen=True)
class ExportOptions:
    """The export settings in force: the project's stored ones overridden by the command line."""

    sources: tuple[tuple[str, SourceRequest], ...]  # (ilastik's name, what to compute); several: hpc-ilastik's extension
    output_format: str
    filename_template: str
    template_from_cli: bool
    internal_path: str
    export_dtype: str | None
    axis_order: str | None
    pipeline_drange: tuple[float, float] | None
    export_drange: tuple[float, float] | None
    cutout: str | None


def export_options(project: Project, args: argparse.Namespace) -> ExportOptions:
    """Merge the project's `Prediction Export` settings with the command line, ilastik's way."""
    stored = project.export_settings
    sources = export_sources(project.workflow_name)
    names = ([export.resolve_export_source(n.strip(), list(sources)) for n in args.export_source.split(",")]
             if args.export_source else [next(iter(sources))])
    if len(set(names)) != len(names):
        raise UserError(f"--export_source names a source twice: {args.export_source}")
    template = args.output_filename_format or stored.output_filename_format or DEFAULT_TEMPLATE
    if len(names) > 1 and "{result_type}" not in template:
        raise UserError("several export sources need {result_type} in --output_filename_format, so that each gets its own file")
    pipeline_drange, export_drange = export.resolve_normalization(
        args.pipeline_result_drange, args.export_drange, stored)
    cutout = args.cutout_subregion
    if cutout is None and stored.region_start is not None:
        cutout = str([tuple(None if v == -1 else v for v in stored.region_start),
                      tuple(None if v == -1 else v for v in stored.region_stop)])
    return ExportOptions(
        sources=tuple((name, sources[name]) for name in names),
        output_format=(args.output_format or stored.output_format or DEFAULT_FORMAT).strip(),
        filename_template=template,
        template_from_cli=args.output_filename_format is not None,
        internal_path=args.output_internal_path or stored.output_internal_path or "exported_data",
        export_dtype=args.export_dtype or stored.export_dtype,
        axis_order=args.output_axis_order or stored.output_axis_order,
        pipeline_drange=pipeline_drange,
        export_drange=export_drange,
        cutout=cutout,
    )


def classifiers(project: Project, retrain: bool, tree_count: int | None) -> list[ForestEnsemble]:
    """Each stage's forests: the project's own, or trained once from its stored labels when asked to
    (--retrain, --tree-count) or when the project has none. Training is seeded, so every MPI rank
    trains the same forest."""
    ensembles: list[ForestEnsemble] = []
    for index, stage in enumerate(project.stages):
        if stage.classifier is not None and not retrain and tree_count is None:
            ensembles.append(stage.classifier)
            continue
        from hpc_ilastik.train import retrain_stage

        why = "--retrain" if retrain or tree_count is not None else "the project has no trained classifier"
        log.info("training stage %d from the project's labels (%s)", index + 1, why)
        ensembles.append(retrain_stage(project, index, tree_count or 100, earlier=ensembles, seed=0))
    return ensembles


def resolve_stages(project: Project, ensembles: list[ForestEnsemble], shape_tzyxc: tuple[int, ...]) -> list[PixelStage]:
    """The project's classifier stages planned for an image of this shape."""
    stages = plan_stages([s.features for s in project.stages], project.class_counts(), ensembles, shape_tzyxc)
    for index, stage in enumerate(stages):
        if stage.ensemble.n_features != stage.plan.n_channels_out:
            trained = project.lanes[0].roles.get("Raw Data") if project.lanes else None
            raise UserError(
                f"the input has {shape_tzyxc[4]} channel(s) and shape {_describe_tzyxc(shape_tzyxc)}, giving "
                f"{stage.plan.n_channels_out} feature channels for stage {index + 1}, but the project's classifier "
                f"was trained on {stage.ensemble.n_features}"
                + (f" (training image {trained.nickname!r}, axes {trained.axes})" if trained else "")
                + ": the input must have the training image's channels and spatial dimensions")
    return stages


def _describe_tzyxc(shape: tuple[int, ...]) -> str:
    return " ".join(f"{a}={n}" for a, n in zip("tzyxc", shape) if n > 1 or a in "yx")


def check_like_training(project: Project, shape_tzyxc: tuple[int, ...]) -> None:
    """ilastik's batch constraint: the input has the training image's spatial axes (t aside) and channel
    count; a 2D project given a 3D volume is refused, even when its features are computed in 2D."""
    trained = next((ref for lane in project.lanes if (ref := lane.roles.get("Raw Data")) is not None), None)
    if trained is None or not trained.shape or len(trained.shape) != len(trained.axes):
        return  # ilastik < 1.3 does not record the training shape; the feature count is still checked
    sizes = dict(zip(trained.axes, trained.shape))
    want = [sizes.get(a, 1) > 1 or a in "yx" for a in "zyx"] + [sizes.get("c", 1)]
    got = [n > 1 or a in "yx" for a, n in zip("zyx", shape_tzyxc[1:4])] + [shape_tzyxc[4]]
    if want != got:
        raise UserError(
            f"the input is {sum(got[:3])}D with {got[3]} channel(s) ({_describe_tzyxc(shape_tzyxc)}) but the project "
            f"was trained on {sum(want[:3])}D images with {want[3]} channel(s) (training image {trained.nickname!r}, "
            f"axes {trained.axes}, shape {tuple(trained.shape)}); ilastik refuses such inputs too: give data with the "
            "training image's spatial axes and channels (check --input_axes), or use a project trained on such data")


def output_channels(request: SourceRequest, stages: list[PixelStage], raw_channels: int) -> int:
    """How many channels the export source has."""
    kind, stage = request.kind, request.stage
    if kind == "Probabilities":
        return stages[stage].n_classes
    if kind == "All Probabilities":
        return sum(s.n_classes for s in stages)
    if kind == "Features":
        return stages[stage].plan.n_channels_out
    if kind == "Input":
        return raw_channels + (stages[stage - 1].n_classes if stage else 0)
    return 1


def block_shape_for(args: argparse.Namespace, shape_tzyxc: tuple[int, ...]) -> tuple[int, ...]:
    """The block grid's block shape: --distributed_block_roi, else memory-friendly defaults."""
    if args.distributed_block_roi:
        return blk.parse_block_roi(args.distributed_block_roi, shape_tzyxc)
    if args.distributed:
        return blk.parse_block_roi(None, shape_tzyxc)
    t, z, y, x, c = shape_tzyxc
    if z == 1:
        return (1, 1, min(y, 1024), min(x, 1024), c)
    # 96³: the filter passes' arrays stay near the caches (measured on W1 of bench/: 10 % less CPU and half
    # the memory of 128³; 64³ pays more in halos)
    return (1, min(z, 96), min(y, 96), min(x, 96), c)


def _inputs(args: argparse.Namespace) -> tuple[list[str], list[str | None]]:
    if args.raw_data and args.inputs:
        raise UserError("give the input files either as positional arguments or after --raw_data, not both")
    raws = list(args.raw_data or args.inputs)
    if not raws:
        raise UserError("no input files: name them at the end of the command or after --raw_data")
    masks = list(args.prediction_mask or [])
    if masks and len(masks) != len(raws):
        raise UserError(f"{len(masks)} --prediction_mask file(s) for {len(raws)} raw input(s): give one mask per input")
    return raws, masks or [None] * len(raws)


def _role_axes(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if not args.input_axes:
        return None, None
    parts = [None if p.strip() in ("", "None") else p.strip().lower() for p in args.input_axes.split(",")]
    if len(parts) > 2:
        raise UserError(f"--input_axes has {len(parts)} values but the workflow has 2 roles (Raw Data, Prediction Mask)")
    return parts[0], parts[1] if len(parts) > 1 else parts[0]


def run_headless(args: argparse.Namespace) -> None:
    """Run the project over every input, as ilastik --headless does."""
    project = open_project(args.project)
    options = export_options(project, args)
    raws, masks = _inputs(args)
    raw_axes, mask_axes = _role_axes(args)
    check_format(options.output_format)
    for spec in raws + [m for m in masks if m]:  # every input exists before any work starts (cheap: no reads)
        resolve_files(spec)
    comm = get_comm(args.distributed)
    ensembles = classifiers(project, args.retrain, args.tree_count)

    def run_lane(lane: tuple[str, str | None], comm_for_blocks, quiet: bool) -> None:
        raw_spec, mask_spec = lane
        source = open_input(raw_spec, raw_axes, args.stack_along)
        mask = open_input(mask_spec, mask_axes, args.stack_along) if mask_spec else None
        run_image(project, ensembles, source, mask, options, args, comm_for_blocks, quiet)

    lanes = list(zip(raws, masks))
    if comm is not None and not args.distributed:  # many files under mpiexec: one file per rank at a time
        share_files(lanes, lambda lane: run_lane(lane, None, True), comm,
                    progress=Progress(len(lanes), unit="files", quiet=args.quiet),
                    describe=lambda lane: f"file {lane[0]}")
        return
    for lane in lanes:
        run_lane(lane, comm, args.quiet)


@dataclass
class _Target:
    """One export source of one image: what it holds and where it goes."""

    name: str
    request: SourceRequest
    region: tuple[slice, ...]        # tzyxc, the channel slice picks from the source's channels
    out_axes: str
    out_dtype: np.dtype
    normalization: tuple | None
    path: str
    writer: object = None

    def output_slices(self, block: blk.Block) -> tuple[slice, ...]:
        channels = self.region[4].stop - self.region[4].start
        return export.reorder_slices(block.out_slices[:4] + (slice(0, channels),), self.out_axes)

    def write(self, block: blk.Block, values: np.ndarray) -> None:
        if self.normalization:
            values = export.normalize(values, self.normalization[0], self.normalization[1], self.out_dtype)
        else:
            values = export.convert_dtype(values, self.out_dtype)
        self.writer.write(self.output_slices(block), export.reorder(values[..., self.region[4]], self.out_axes))


def _target(name: str, request: SourceRequest, project: Project, source: Source, stages: list[PixelStage],
            options: ExportOptions, shape: tuple[int, ...]) -> _Target:
    channels = output_channels(request, stages, shape[4])
    export_shape = shape[:4] + (channels,)
    region = export.parse_cutout(options.cutout, export_shape) if options.cutout else tuple(slice(0, n) for n in export_shape)
    region_shape = tuple(s.stop - s.start for s in region)  # the cut-out may select channels too
    pipeline_dtype, _ = source_dtype_and_drange(request.kind, source.dtype)
    path = export.output_path(
        options.filename_template, options.output_format,
        dataset_dir=source.dataset_dir, nickname=source.nickname, result_type=name, region=region,
        base_dir=os.getcwd() if options.template_from_cli else os.path.dirname(os.path.abspath(project.path)))
    check_not_overwriting(path, list(source.paths) + [os.path.abspath(project.path)])
    return _Target(name=name, request=request, region=region,
                   out_axes=export.output_axes(source.axes, options.axis_order, region_shape),
                   out_dtype=np.dtype(options.export_dtype or pipeline_dtype),
                   normalization=(options.pipeline_drange, options.export_drange) if options.export_drange else None,
                   path=path)


def run_image(project: Project, ensembles: list[ForestEnsemble], source: Source, mask: Source | None,
              options: ExportOptions, args: argparse.Namespace, comm, quiet: bool) -> list[str]:
    """Process one input image into one export file per export source; returns the output paths."""
    shape = tuple(source.shape_tzyxc)
    if mask is not None and tuple(mask.shape_tzyxc)[:4] != shape[:4]:
        raise UserError(f"prediction mask {mask.nickname!r} has shape {tuple(mask.shape_tzyxc)[:4]} (tzyx) "
                        f"but the raw data has {shape[:4]}")
    check_like_training(project, shape)
    stages = resolve_stages(project, ensembles, shape)
    targets = [_target(name, request, project, source, stages, options, shape) for name, request in options.sources]
    if len({t.path for t in targets}) != len(targets):
        raise UserError("two export sources would be written to the same file: put {result_type} in the file name")
    region = targets[0].region
    block_shape = block_shape_for(args, shape)
    grid = blk.plan_blocks(shape, block_shape, region[:4] + (slice(0, shape[4]),))
    context = halo(stages, max(needed_stage(t.request, len(stages)) for t in targets))
    for target in targets:
        region_shape = tuple(s.stop - s.start for s in target.region)
        _, drange = source_dtype_and_drange(target.request.kind, source.dtype)
        target.writer = open_writer(
            options.output_format, target.path, internal_path=export.format_known_keys(options.internal_path, {  # as ilastik
                "dataset_dir": source.dataset_dir, "nickname": source.nickname.replace("*", ""),
                "result_type": target.name}),
            shape=export.reorder_shape(region_shape, target.out_axes), dtype=target.out_dtype, axes=target.out_axes,
            chunks=export.reorder_shape(tuple(block_shape[:4]) + region_shape[4:], target.out_axes),
            drange=options.export_drange if target.normalization else drange,
            resolutions=source.resolutions, units=source.units, comm=comm,
            offset=tuple(s.start for s in export.reorder_slices(target.region, target.out_axes)),
            fingerprint=_fingerprint(project, source, options, target.name, block_shape))
    requests = [t.request for t in targets]

    def process(block: blk.Block) -> None:
        read, crop = blk.read_region(block, context, shape)
        raw = source.read(read)
        mask_block = mask.read(read)[..., 0] if mask is not None else None
        results: list[list[np.ndarray]] = [[] for _ in targets]
        for t in range(raw.shape[0]):
            values = compute_sources(raw[t], stages, requests, None if mask_block is None else mask_block[t],
                                     crop=crop[1:4])
            for per_target, value in zip(results, values):
                per_target.append(value)
        for target, per_t in zip(targets, results):
            target.write(block, np.stack(per_t))

    def read_voxels(block: blk.Block) -> tuple[int, int]:
        """What a block costs: the voxels of block and halo it reads, then its own voxels."""
        read, _ = blk.read_region(block, context, shape)
        return math.prod(s.stop - s.start for s in read[:4]), block.voxels

    threads = 1 if comm is not None else min(_threads(args), len(grid))
    if comm is None or comm.Get_rank() == 0:
        log.info("%s: %d block(s) of %s (tzyx) with a halo of %s (zyx); about %.2f GiB per block, %d at a time%s",
                 source.nickname, len(grid), block_shape[:4], context, block_memory(block_shape, context, stages) / 2**30,
                 threads, f" on each of {comm.Get_size()} ranks" if comm is not None else "")
    progress = Progress(len(grid), unit="blocks", total_voxels=int(np.prod([s.stop - s.start for s in region[:4]])),
                        quiet=quiet, label=source.nickname)
    try:
        run_blocks(grid, process, comm=comm, threads=threads, progress=progress, cost=read_voxels,
                   is_done=lambda block: all(t.writer.block_done(t.output_slices(block)) for t in targets))
    except BaseException:
        for target in targets:
            target.writer.abort()
        raise
    for target in targets:
        target.writer.close()
        if comm is None or comm.Get_rank() == 0:
            log.info("%s: %s written to %s", source.nickname, target.name, target.path)
    return [t.path for t in targets]


def block_memory(block_shape: tuple[int, ...], context: tuple[int, int, int], stages: list[PixelStage]) -> int:
    """A generous estimate of the bytes one block needs: the read region's input, filter temporaries,
    feature stack and probabilities, all float32."""
    read = int(np.prod([n + 2 * h for n, h in zip(block_shape[1:4], context)]))
    widest = max((s.plan.n_channels_out + s.n_classes for s in stages), default=0)
    return 4 * (read * (block_shape[4] + 8) + read * widest)


def _threads(args: argparse.Namespace) -> int:
    """Worker threads for blocks in a single-process run."""
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, not {args.threads}")
        return args.threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _fingerprint(project: Project, source: Source, options: ExportOptions, source_name: str, block_shape) -> dict:
    """What makes an existing streaming output resumable by this command (and nothing else)."""
    st = os.stat(project.path)
    return {
        "project": os.path.abspath(project.path), "project_size": st.st_size, "project_mtime": int(st.st_mtime),
        "input": [os.path.abspath(p) for p in source.paths], "input_shape": list(source.shape_tzyxc),
        "export_source": source_name, "block_shape": list(block_shape),
        "dtype": options.export_dtype, "drange": [options.pipeline_drange, options.export_drange],
    }

