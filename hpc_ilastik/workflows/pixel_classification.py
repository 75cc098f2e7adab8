"""Pixel Classification headless: per block (with the features' halo), features → forests → the export
sources; classifiers trained from the project's labels when asked to or when it has none. Autocontext
is the same run with two stages (`autocontext`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.forest.training import DEFAULT_TREE_COUNT, train_forests
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.pixel.pipeline import (
    PixelStage,
    SourceRequest,
    compute_source,
    compute_sources,
    halo,
    needed_stage,
    plan_stages,
)
from hpc_ilastik.pixel.training import labelled_features
from hpc_ilastik.project.names import PIXEL_CLASSIFICATION
from hpc_ilastik.project.pixel_classification import PixelClassificationProject
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.batch import Batch, Lane, start_batch, training_image
from hpc_ilastik.workflows.blockwise import (
    block_shape_for,
    block_threads,
    fit_block_shape,
    thread_count,
    tile_shape_for,
    tiles_of,
    write_blocks,
)
from hpc_ilastik.workflows.export import check_distinct_paths, fingerprint, plan_target
from hpc_ilastik.workflows.options import HeadlessOptions, TrainingOptions
from hpc_ilastik.workflows.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = ("Raw Data", "Prediction Mask")
PER_STAGE = ("Probabilities", "Simple Segmentation", "Uncertainty", "Features", "Labels")


def run(project: PixelClassificationProject, options: HeadlessOptions,
        sources: Mapping[str, SourceRequest] | None = None) -> None:
    """Run the project over every input, as ilastik --headless does (`sources`: the workflow's export
    sources, Pixel Classification's by default)."""
    batch = start_batch(project, options, ROLES, sources or {kind: SourceRequest(kind, 0) for kind in PER_STAGE})
    ensembles = classifiers(project, options.training)

    def run_lane(lane: Lane, comm, quiet: bool) -> None:
        inputs = batch.open_lane(lane)
        run_image(project, ensembles, inputs["Raw Data"], inputs["Prediction Mask"], batch, comm, quiet)

    batch.for_each_lane(run_lane)


def run_image(project: PixelClassificationProject, ensembles: list[ForestEnsemble], source: Source,
              mask: Source | None, batch: Batch, comm, quiet: bool) -> list[str]:
    """Process one input image into one export file per export source; returns the output paths."""
    shape = tuple(source.shape_tzyxc)
    if mask is not None and tuple(mask.shape_tzyxc)[:4] != shape[:4]:
        raise UserError(f"prediction mask {mask.nickname!r} has shape {tuple(mask.shape_tzyxc)[:4]} (tzyx) "
                        f"but the raw data has {shape[:4]}")
    check_like_training(project, shape)
    stages = resolve_stages(project, ensembles, shape)
    options = batch.export
    targets = [plan_target(name, request, project, source, options,
                           shape[:4] + (output_channels(request, stages, shape[4]),),
                           source_dtype_and_drange(request.kind, source.dtype)[0])
               for name, request in options.sources]
    check_distinct_paths(targets)
    region = targets[0].region
    context = halo(stages, max(needed_stage(t.key, len(stages)) for t in targets))
    out_channels = sum(t.region_shape[4] for t in targets)
    block_shape = fit_block_shape(block_shape_for(batch.options.run, shape, context),
                                  lambda shape: block_memory(shape, context, stages, out_channels),
                                  block_threads(batch.options.run, comm, None), batch.options.run)
    grid = blk.plan_blocks(shape, block_shape, region[:4] + (slice(0, shape[4]),))
    for target in targets:
        target.open(options, source, block_shape, source_dtype_and_drange(target.key.kind, source.dtype)[1], comm,
                    fingerprint(project, source, options, target.name, block_shape))
    requests = [t.key for t in targets]
    nonfinite: list[int] = []  # per block: NaN/inf values of the input in the block (halo excluded)

    tile_shape = tile_shape_for(shape, context)

    def compute_tile(tile: blk.Block) -> list[np.ndarray]:
        """Every target's values (tzyxc) on one tile, computed from the tile and its halo."""
        read, crop = blk.read_region(tile, context, shape)
        raw = source.read(read)
        if raw.dtype.kind == "f":
            nonfinite.append(int(np.count_nonzero(~np.isfinite(raw[crop[:4]]))))
        mask_block = mask.read(read)[..., 0] if mask is not None else None
        results: list[list[np.ndarray]] = [[] for _ in targets]
        for t in range(raw.shape[0]):
            values = compute_sources(raw[t], stages, requests, None if mask_block is None else mask_block[t],
                                     crop=crop[1:4])
            for per_target, value in zip(results, values):
                per_target.append(value)
        return [np.stack(per_t) for per_t in results]

    threads = block_threads(batch.options.run, comm, grid)
    # threads a block has no use for (fewer blocks than threads: ilastik's 256³ blocks under --distributed)
    # compute its tiles, as many at a time as they allow
    tiles_per_block = math.prod(math.ceil(b / t) for b, t in zip(block_shape[:4], tile_shape[:4]))  # a whole block's
    tile_threads = min(thread_count(batch.options.run, comm is not None and comm.Get_size() > 1) // threads,
                       tiles_per_block)
    pool = ThreadPoolExecutor(tile_threads) if tile_threads > 1 else None

    def process(block: blk.Block) -> None:
        """A block (one output chunk) computed tile by tile, so that its memory is its tiles' and its outputs'."""
        tiles = tiles_of(block, tile_shape, shape)
        if len(tiles) == 1:
            values = compute_tile(block)
        else:
            values = []
            for tile, parts in zip(tiles, pool.map(compute_tile, tiles) if pool else map(compute_tile, tiles)):
                values = values or [np.empty(block.shape[:4] + p.shape[4:], p.dtype) for p in parts]
                for whole, part in zip(values, parts):
                    whole[tile.out_slices[:4]] = part
        for target, value in zip(targets, values):
            target.write(block, value)

    def read_voxels(block: blk.Block) -> tuple[int, int]:
        """What a block costs: the voxels of block and halo it reads, then its own voxels."""
        read, _ = blk.read_region(block, context, shape)
        return math.prod(s.stop - s.start for s in read[:4]), block.voxels

    if comm is None or comm.Get_rank() == 0:
        log.info("%s: %d block(s) of %s (tzyx) with a halo of %s (zyx); about %.2f GiB per block, %d at a time%s%s",
                 source.nickname, len(grid), block_shape[:4], context,
                 block_memory(block_shape, context, stages, out_channels, tile_threads) / 2**30, threads,
                 f" on each of {comm.Get_size()} ranks" if comm is not None else "",
                 f", each in {tiles_per_block} tiles, {tile_threads} at a time" if pool else "")
    progress = Progress(len(grid), unit="blocks", total_voxels=int(np.prod([s.stop - s.start for s in region[:4]])),
                        quiet=quiet, label=source.nickname)
    try:
        paths = write_blocks(grid, process, targets, comm, threads, progress, read_voxels, source.nickname)
    finally:
        if pool is not None:
            pool.shutdown()
    found = sum(nonfinite) if comm is None else comm.reduce(sum(nonfinite), root=0)
    if found:
        log.warning("%s: %d input value(s) are NaN or infinite; the features around them are NaN, and pixels with a "
                    "NaN feature get probability 0 in every class (as in ilastik)", source.nickname, found)
    return paths


def source_dtype_and_drange(kind: str, raw_dtype) -> tuple[str, tuple[float, float] | None]:
    """The pipeline dtype of an export source and the value range ilastik attaches to it."""
    if kind in ("Probabilities", "All Probabilities"):
        return "float32", (0.0, 1.0)
    if kind == "Simple Segmentation":  # ilastik copies the probabilities' metadata, drange included
        return "uint8", (0.0, 1.0)
    if kind == "Uncertainty":
        return "float32", (0.0, 1.0)
    if kind == "Features":
        return "float32", None
    if kind == "Labels":
        return "uint8", None
    return str(raw_dtype), None


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


def block_memory(block_shape: tuple[int, ...], context: tuple[int, int, int], stages: list[PixelStage],
                 out_channels: int, tiles_at_once: int = 1) -> int:
    """A generous estimate of the bytes one block needs: for each tile it is computed in at once, the read
    region's input, filter temporaries, feature stack and probabilities; for the block, its `out_channels`
    output channels twice (the values and their copy on the way to the file); all float32."""
    tile = [min(b, t) for b, t in zip(block_shape, tile_shape_for(block_shape, context))]
    read = int(np.prod([n + 2 * h for n, h in zip(tile[1:4], context)]))
    widest = max((s.plan.n_channels_out + s.n_classes for s in stages), default=0)
    return 4 * (tiles_at_once * read * (block_shape[4] + 8 + widest) + 2 * math.prod(block_shape[:4]) * out_channels)


# ---- the project's classifiers -----------------------------------------------------------------------------


def classifiers(project: PixelClassificationProject, training: TrainingOptions) -> list[ForestEnsemble]:
    """Each stage's forests: the project's own, or trained once from its stored labels when asked to
    (--retrain, --tree-count) or when the project has none. Training is seeded, so every MPI rank
    trains the same forest."""
    asked = training.retraining
    ensembles: list[ForestEnsemble] = []
    for index, stage in enumerate(project.stages):
        if stage.classifier is not None and not asked:
            ensembles.append(stage.classifier)
            continue
        why = "--retrain" if asked else "the project has no trained classifier"
        log.info("training stage %d from the project's labels (%s)", index + 1, why)
        ensembles.append(retrain_stage(project, index, training.tree_count or DEFAULT_TREE_COUNT,
                                       earlier=ensembles, seed=0))
    return ensembles


def resolve_stages(project: PixelClassificationProject, ensembles: list[ForestEnsemble],
                   shape_tzyxc: tuple[int, ...]) -> list[PixelStage]:
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


def check_like_training(project: PixelClassificationProject, shape_tzyxc: tuple[int, ...]) -> None:
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


def retrain_stage(project: PixelClassificationProject, stage_index: int, tree_count: int = DEFAULT_TREE_COUNT, *,
                  earlier: Sequence[ForestEnsemble] | None = None, seed: int | None = None) -> ForestEnsemble:
    """A new forest for stage `stage_index` from the labels stored in the project (all training lanes).

    Features are those of the stage's selection on the lane's training image (Autocontext stage 2:
    on the raw image plus stage 1's probabilities, from `earlier` ensembles or the project's own).
    """
    stage = project.stages[stage_index]
    xs, ys = [], []
    for lane_index in range(len(project.lanes)):
        label_blocks = stage.labels(lane_index)
        if not label_blocks:
            continue
        source = training_image(project, lane_index)
        shape = source.shape_tzyxc
        stages = _planned_stages(project, stage_index, shape, earlier)
        features_of = partial(compute_source, stages=stages, request=SourceRequest("Features", stage_index))
        x, y = labelled_features(source.read, shape, label_blocks, features_of, halo(stages, stage_index))
        xs.append(x)
        ys.append(y)
    if not ys or not sum(len(y) for y in ys):
        raise UserError(f"The project {project.path} has no labels to train stage {stage_index + 1} from: label some "
                        "pixels in ilastik, or make a project with `hpc-ilastik train`.")
    X, y = np.concatenate([x for x in xs if len(x)]), np.concatenate(ys)
    log.info("retraining stage %d: %d trees on %d labelled pixels", stage_index + 1, tree_count, len(y))
    return train_forests(X, y, tree_count, seed=seed)


def _planned_stages(project: PixelClassificationProject, stage_index: int, shape_tzyxc: tuple[int, ...],
                    earlier: Sequence[ForestEnsemble] | None) -> list[PixelStage]:
    """Stages 0..stage_index planned for an image; earlier stages need a classifier, the target none."""
    ensembles: list[ForestEnsemble | None] = []
    for index in range(stage_index):
        ensemble = earlier[index] if earlier is not None else project.stages[index].classifier
        if ensemble is None:
            raise UserError(f"Stage {stage_index + 1} trains on stage {index + 1}'s predictions, "
                            f"but stage {index + 1} has no classifier.")
        ensembles.append(ensemble)
    selections = [s.features for s in project.stages[:stage_index + 1]]
    return plan_stages(selections, project.class_counts(), ensembles + [None], shape_tzyxc)


WORKFLOW = Workflow(name=PIXEL_CLASSIFICATION, roles=ROLES, run=run)
