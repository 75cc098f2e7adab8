"""Cell Density Counting headless: per block (with the features' halo) the pixel features of Pixel
Classification, the density from the project's regressors (or from regressors trained on its labels, as
ilastik does when it cannot read the stored ones), and the count of each image summed from the blocks'
128 × 128 tiles (ilastik-workflows-spec.md §B). With --csv-export-file, one line `<nickname>,<count>`
per image, in input order, written when every image is done."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from hpc_ilastik.density import estimate, training
from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.regression import RegressionForest
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.pixel.features import FeaturePlan, compute_features, plan_features
from hpc_ilastik.pixel.training import LabelBlock, paste_labels
from hpc_ilastik.project.counting import CountingProject
from hpc_ilastik.project.names import COUNTING
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import run_blocks
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.batch import Batch, Lane, start_batch, training_image
from hpc_ilastik.workflows.blockwise import block_shape_for, block_threads, write_blocks
from hpc_ilastik.workflows.export import check_distinct_paths, fingerprint, plan_target
from hpc_ilastik.workflows.options import HeadlessOptions, TrainingOptions
from hpc_ilastik.workflows.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = ("Raw Data",)
DENSITY = "Probabilities"  # ilastik's name of the density export source (its only one)


def run(project: CountingProject, options: HeadlessOptions) -> None:
    """Estimate the density and the count of every input, as ilastik --headless does."""
    batch = start_batch(project, options, ROLES, {DENSITY: DENSITY})
    csv_path = options.export.csv_export_file or project.csv_path
    regressors = counting_regressors(project, options.training)
    counts: dict[str, tuple[str, float]] = {}  # the lane's raw input → (nickname, count)

    def run_lane(lane: Lane, comm, quiet: bool) -> None:
        source = batch.open_lane(lane)[ROLES[0]]
        count = run_image(project, regressors, source, batch, comm, quiet, with_count=csv_path is not None)
        if count is not None:
            counts[lane[ROLES[0]]] = (source.nickname, count)

    batch.for_each_lane(run_lane)
    if batch.comm is not None and batch.comm.Get_size() > 1:
        for part in batch.comm.gather(counts, root=0) or ():
            counts.update(part)
        if batch.comm.Get_rank() != 0:
            return
    if csv_path is not None:
        write_counts(csv_path, [counts[lane[ROLES[0]]] for lane in batch.lanes])
        log.info("counts of %d image(s) written to %s", len(batch.lanes), csv_path)


def counting_regressors(project: CountingProject, training_options: TrainingOptions) -> list[RegressionForest]:
    """The project's regressors, or four trained from its labels when it has none it can give (or --retrain)."""
    if training_options.tree_count is not None:
        raise UserError("--tree-count sets the trees of a pixel classifier; Cell Density Counting trains ilastik's "
                        f"{training.N_REGRESSORS} regressors of {training.N_TREES} trees (use --retrain alone)")
    if project.regressors and not training_options.retrain:
        return project.regressors
    if training_options.retrain:
        why = "--retrain"
    elif project.unreadable:
        why = f"its stored regressors cannot be read ({project.unreadable})"
    else:
        why = "it stores no trained regressors"
    log.warning("%s: %s; training the counting regressors from its labels as ilastik does (seeded, so that runs "
                "repeat; ilastik's own retraining differs from run to run)", project.path, why)
    return retrain(project)


def retrain(project: CountingProject, seed: int = 0) -> list[RegressionForest]:
    """ilastik's four regressors trained on the project's dot and brush labels and its training images."""
    xs, ys = [], []
    for lane_index in range(len(project.lanes)):
        label_blocks = project.labels(lane_index)
        if not label_blocks:
            continue
        source = training_image(project, lane_index)
        shape = check_image(source)
        plan = plan_features(project.features, shape[1:4], shape[4])
        for slices, labels in label_blocks:
            x, y = _block_samples(source, plan, slices, label_blocks, project.sigma)
            xs.append(x)
            ys.append(y)
    if not ys or not sum(len(y) for y in ys):
        raise UserError(f"the project {project.path} has no trained counting regressors and no labels to train "
                        "them from: place dots (and background strokes) in ilastik and save the project")
    X, y = np.concatenate(xs), np.concatenate(ys)
    log.info("training 4 regressors of %d trees on %d labelled pixels (σ %g)", training.N_TREES, len(y),
             project.sigma)
    return training.train_regressors(X, y, seed)


def _block_samples(source: Source, plan: FeaturePlan, slices: tuple[slice, ...],
                   label_blocks: Sequence[LabelBlock],
                   sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(features, targets) of one stored label block's training pixels: the dots smoothed with the labels
    around the block, the features with the image around it."""
    shape = tuple(source.shape_tzyxc)
    block = blk.Block(0, (0,) * 5, slices[:4] + (slice(0, shape[4]),), slices[:4] + (slice(0, shape[4]),))
    around, inner = blk.read_region(block, (0,) + (training.smoothing_halo(sigma),) * 2, shape)
    labels = np.zeros([s.stop - s.start for s in around[2:4]], dtype=np.uint8)
    for other, values in label_blocks:  # every stored block that overlaps the context
        paste_labels(labels, around[2:4], values[0, 0, ..., 0], other[2:4])
    smoothed = training.dot_density(labels, sigma)[inner[2:4]]
    indices, targets, _ = training.training_samples(labels[inner[2:4]], smoothed)
    read, crop = blk.read_region(block, plan.halo, shape)
    features = compute_features(source.read(read)[0], plan, crop=crop[1:4])[0]
    return features.reshape(-1, features.shape[-1])[indices], targets


def check_image(source: Source) -> tuple[int, ...]:
    """The image's tzyxc shape; UserError unless it is 2-D (y, x, channels), as ilastik's counting requires."""
    shape = tuple(source.shape_tzyxc)
    if shape[0] > 1 or shape[1] > 1:
        raise UserError(f"Cell Density Counting takes 2-D images (y, x and channels), but {source.nickname!r} has "
                        f"{'t=%d' % shape[0] if shape[0] > 1 else ''}{' ' if shape[0] > 1 and shape[1] > 1 else ''}"
                        f"{'z=%d' % shape[1] if shape[1] > 1 else ''} (axes {source.axes}); ilastik refuses it too. "
                        "Give one 2-D image per input (check --input_axes)")
    return shape


def run_image(project: CountingProject, regressors: Sequence[RegressionForest], source: Source, batch: Batch,
              comm, quiet: bool, with_count: bool) -> float | None:
    """Write the density of one image block by block; returns its count (rank 0; None unless `with_count`)."""
    shape = check_image(source)
    plan = plan_features(project.features, shape[1:4], shape[4])
    if plan.n_channels_out != regressors[0].n_features:
        raise UserError(f"{source.nickname!r} has {shape[4]} channel(s), giving {plan.n_channels_out} pixel features, "
                        f"but the project's regressors were trained on {regressors[0].n_features}: give images with "
                        "the training image's channels")
    options = batch.export
    targets = [plan_target(name, key, project, source, options, shape[:4] + (1,), "float32")
               for name, key in options.sources]
    check_distinct_paths(targets)
    block_shape = tile_aligned(block_shape_for(batch.options.run, shape), shape)
    region = targets[0].region
    grid = blk.plan_blocks(shape, block_shape, region[:4] + (slice(0, shape[4]),))
    for target in targets:
        target.open(options, source, block_shape, (0.0, 1.0), comm,
                    fingerprint(project, source, options, target.name, block_shape))
    sums: dict[estimate.Tile, float] = {}

    def density_of(block: blk.Block) -> np.ndarray:
        read, crop = blk.read_region(block, plan.halo, shape)
        features = compute_features(source.read(read)[0], plan, crop=crop[1:4])[0]
        values = estimate.density(features.reshape(-1, features.shape[-1]), regressors).reshape(features.shape[:2])
        sums.update(estimate.tile_sums(values, (block.slices[2].start, block.slices[3].start), shape[2:4]))
        return values

    def write(block: blk.Block) -> None:
        values = density_of(block)[np.newaxis, np.newaxis, :, :, np.newaxis]
        for target in targets:
            target.write(block, values)

    threads = block_threads(batch.options.run, comm, grid)
    progress = Progress(len(grid), unit="blocks", total_voxels=math.prod(s.stop - s.start for s in region[:4]),
                        quiet=quiet, label=source.nickname)
    write_blocks(grid, write, targets, comm, threads, progress, lambda block: (block.voxels,), source.nickname)
    if not with_count:
        return None
    known = _gathered(sums, comm)
    missing = set(estimate.all_tiles(shape[2:4])) - set(known)
    if missing:  # tiles no block of this run held whole (a resumed run, a cut-out): computed, not written
        recount = [block for block in blk.plan_blocks(shape, block_shape) if _tiles_of(block) & missing]
        sums.clear()
        run_blocks(recount, density_of, comm, threads=threads, progress=Progress(
            len(recount), unit="blocks", quiet=quiet, label=f"{source.nickname}: count"))
        known.update(_gathered(sums, comm))
    if comm is not None and comm.Get_rank() != 0:
        return None
    count = estimate.total_count(known, shape[2:4])
    log.info("%s: %s cells (the density's sum)", source.nickname, f"{count:.2f}")
    return count


def tile_aligned(block_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The block shape with y and x rounded up to whole count tiles (128), so that each tile lies in one block."""
    y, x = (n if n >= size else -(-n // estimate.TILE) * estimate.TILE for n, size in zip(block_shape[2:4], shape[2:4]))
    if (y, x) != tuple(block_shape[2:4]):
        log.info("blocks of %d × %d (y × x) instead of %d × %d: whole 128 × 128 tiles of the count in each", y, x,
                 *block_shape[2:4])
    return tuple(block_shape[:2]) + (y, x) + tuple(block_shape[4:])


def _tiles_of(block: blk.Block) -> set[estimate.Tile]:
    """The count tiles a block of an aligned grid covers."""
    ys, xs = block.slices[2], block.slices[3]
    return {(tx, ty) for ty in range(ys.start // estimate.TILE, -(-ys.stop // estimate.TILE))
            for tx in range(xs.start // estimate.TILE, -(-xs.stop // estimate.TILE))}


def _gathered(sums: dict[estimate.Tile, float], comm) -> dict[estimate.Tile, float]:
    """Every rank's tile sums, on every rank."""
    if comm is None or comm.Get_size() == 1:
        return dict(sums)
    merged: dict[estimate.Tile, float] = {}
    for part in comm.allgather(sums):
        merged.update(part)
    return merged


def write_counts(path: str, rows: Sequence[tuple[str, float]]) -> None:
    """ilastik's counts file: `<nickname>,<count>` per image, no header; written whole or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".counts-", dir=folder)
    try:
        with os.fdopen(handle, "w") as f:
            f.writelines(f"{nickname},{count!r}\n" for nickname, count in rows)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


WORKFLOW = Workflow(name=COUNTING, roles=ROLES, run=run)
