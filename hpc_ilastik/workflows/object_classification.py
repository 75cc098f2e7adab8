"""Object Classification headless, exact at any size: objects found block by block and merged, each object's
features computed on a crop around it, the objects classified with the project's forests, and the export
images written block by block. Every phase is shared over threads or MPI ranks; only small per-object
tables travel to rank 0 (ilastik-workflows-spec.md §A). The "Blockwise" export sources are ilastik's own
block-local classification (`object_blockwise`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.forest.training import DEFAULT_TREE_COUNT, train_forests
from hpc_ilastik.io.inputs import Source, derived_source
from hpc_ilastik.objects import extraction, features
from hpc_ilastik.objects.classification import classify_objects, labelled_samples
from hpc_ilastik.objects.features import feature_matrix
from hpc_ilastik.pixel.pipeline import SourceRequest, compute_sources, halo, plan_stages, simple_segmentation
from hpc_ilastik.project.object_classification import (
    FROM_BINARY,
    FROM_LABELS,
    FROM_PIXELS,
    FROM_PREDICTIONS,
    WORKFLOWS,
    ObjectClassificationProject,
)
from hpc_ilastik.project.pixel_classification import PixelClassifierStage
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import from_root
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.batch import Batch, Lane, role_option, start_batch, training_image
from hpc_ilastik.workflows.blockwise import block_shape_for, block_threads, memory_limit, write_blocks
from hpc_ilastik.workflows.export import Target, check_distinct_paths, fingerprint, plan_target
from hpc_ilastik.workflows.object_blockwise import BLOCKWISE_SOURCES, write_blockwise
from hpc_ilastik.workflows.object_measurement import MeasuredFrame, ObjectImage, measure_objects, segmented_image
from hpc_ilastik.workflows.object_table import write_object_table
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = {FROM_PREDICTIONS: ("Raw Data", "Prediction Maps"), FROM_BINARY: ("Raw Data", "Segmentation Image"),
         FROM_LABELS: ("Raw Data", "Label Image"), FROM_PIXELS: ("Raw Data",)}
PREDICTIONS, PROBABILITIES, IDENTITIES = "Object Predictions", "Object Probabilities", "Object Identities"
PIXEL_PROBABILITIES, SIMPLE_SEGMENTATION = "Pixel Probabilities", "Simple Segmentation"
SOURCES = (PREDICTIONS, PROBABILITIES) + BLOCKWISE_SOURCES + (IDENTITIES,)
_CLASSIFIED = {PREDICTIONS, PROBABILITIES} | set(BLOCKWISE_SOURCES)
_KINDS = {FROM_PREDICTIONS: extraction.PREDICTIONS, FROM_BINARY: extraction.SEGMENTATION,
          FROM_LABELS: extraction.LABELS, FROM_PIXELS: extraction.PREDICTIONS}


@dataclass(frozen=True)
class FrameResult(MeasuredFrame):
    """A measured frame and its objects' classes and class probabilities (row = object id, row 0 = background;
    zeros when no classification was asked for)."""

    classes: np.ndarray
    probabilities: np.ndarray


def export_sources(workflow_name: str) -> tuple[str, ...]:
    """The variant's export sources in ilastik's order (the first is the default)."""
    return SOURCES + ((PIXEL_PROBABILITIES, SIMPLE_SEGMENTATION) if workflow_name == FROM_PIXELS else ())


def run(project: ObjectClassificationProject, options: HeadlessOptions) -> None:
    """Classify the objects of every input, as ilastik --headless does."""
    roles = ROLES[project.workflow_name]
    batch = start_batch(project, options, roles, {name: name for name in export_sources(project.workflow_name)})
    missing = next((lane[roles[0]] for lane in batch.lanes if len(roles) > 1 and lane[roles[1]] is None), None)
    if missing is not None:
        raise UserError(f"the {project.workflow_name} project needs {role_option(roles[1])} for every input "
                        f"(none given for {missing})")
    asked = {name for name, _ in batch.export.sources}
    table = options.export.table_filename is not None or project.table is not None
    # unlike ilastik, which refuses any export then, the sources that need no object classifier work without one
    classifier = object_classifier(project, options) if asked & _CLASSIFIED or table else None

    def run_lane(lane: Lane, comm, quiet: bool) -> None:
        inputs = batch.open_lane(lane)
        raw = inputs[roles[0]]
        second = inputs[roles[1]] if len(roles) > 1 else pixel_probabilities(raw, project.pixel_stage)
        run_image(project, classifier, raw, second, batch, comm, quiet)

    batch.for_each_lane(run_lane)


def object_classifier(project: ObjectClassificationProject, options: HeadlessOptions) -> ForestEnsemble:
    """The project's trained object classifier, or one trained from its labelled objects (as ilastik does when
    the project stores none; always with --retrain / --tree-count)."""
    training = options.training
    asked = training.retraining
    if not project.label_names and (project.classifier is not None or asked):
        raise UserError(f"the object classifier of {project.path} has no label names; the project is damaged")
    if project.classifier is not None and not asked:
        return project.classifier
    labelled = sum(int(np.count_nonzero(frame)) for lane in project.object_labels for frame in lane)
    if not labelled:
        raise UserError(f"the project {project.path} has no trained object classifier and no labelled objects to "
                        f"train one: label objects in ilastik and save the project (the export sources "
                        f"'{IDENTITIES}'{' and pixel sources' if project.workflow_name == FROM_PIXELS else ''} "
                        "need no classifier)")
    why = "--retrain" if asked else "the project stores no trained object classifier"
    trees = training.tree_count or DEFAULT_TREE_COUNT
    log.info("training the object classifier from the project's %d labelled objects (%s; seeded, as ilastik's "
             "%d trees)", labelled, why, trees)
    X, y = _labelled_objects(project, options)
    return train_forests(X, y, trees, seed=0)


def _labelled_objects(project: ObjectClassificationProject, options: HeadlessOptions) -> tuple[np.ndarray, np.ndarray]:
    """(feature rows, labels) of the labelled objects of the project's training images, measured as any input."""
    roles = ROLES[project.workflow_name]
    wanted = project.selected_features
    xs, ys = [], []
    for lane_index, frames in enumerate(project.object_labels):
        if not any(np.count_nonzero(frame) for frame in frames):
            continue
        raw = training_image(project, lane_index)
        second = training_image(project, lane_index, roles[1]) if len(roles) > 1 else \
            pixel_probabilities(raw, project.pixel_stage)
        image = _object_image(project, raw, second, options)
        threads = block_threads(options.run, None, image.grid)
        measured = measure_objects(image, wanted, None, threads, True, memory_limit(threads))
        for frame, labels in zip(measured, frames):
            X, y = labelled_samples(feature_matrix(frame.features, wanted), labels)
            xs.append(X)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def pixel_probabilities(raw: Source, stage: PixelClassifierStage) -> Source:
    """The pixel stage's probabilities of `raw` as a Source: each region read is computed from the raw data
    around it (features' halo), so blocks and object crops see the whole image's values."""
    if stage.classifier is None:
        raise UserError("the project's pixel classifier is not trained; train it in ilastik first")
    shape = tuple(raw.shape_tzyxc)
    n_classes = max(len(stage.label_names), 1)
    [planned] = plan_stages([stage.features], [n_classes], [stage.classifier], shape)
    if planned.plan.n_channels_out != stage.classifier.n_features:
        raise UserError(f"the input has {shape[4]} channel(s), giving {planned.plan.n_channels_out} pixel features, "
                        f"but the project's pixel classifier was trained on {stage.classifier.n_features}")
    context = halo([planned], 0)
    request = [SourceRequest("Probabilities", 0)]

    def read(roi: tuple[slice, ...]) -> np.ndarray:
        t, *spatial, c = roi
        grown = tuple(slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(spatial, context, shape[1:4]))
        crop = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(spatial, grown))
        frames = [compute_sources(raw.read((slice(i, i + 1),) + grown + (slice(0, shape[4]),))[0], [planned],
                                  request, crop=crop)[0][..., c] for i in range(t.start, t.stop)]
        return np.stack(frames)

    return derived_source(raw, shape[:4] + (n_classes,), np.float32, read)


def run_image(project: ObjectClassificationProject, classifier: ForestEnsemble | None, raw: Source,
              segmentation: Source, batch: Batch, comm, quiet: bool) -> list[str]:
    """Find, measure and classify the objects of one image; write every export source; returns the paths."""
    image = _object_image(project, raw, segmentation, batch.options)
    wanted = project.selected_features
    threads = block_threads(batch.options.run, comm, image.grid)
    measured = measure_objects(image, wanted if classifier is not None else {}, comm, threads, quiet,
                               memory_limit(threads))
    results = from_root(comm, None if measured is None else
                        [classify(frame, wanted, classifier, len(project.label_names)) for frame in measured])
    targets = _targets(project, image, batch)
    blockwise = [t for t in targets if t.key in BLOCKWISE_SOURCES]
    paths = _write_exports(results, project, image, [t for t in targets if t not in blockwise], batch, comm, threads,
                           quiet)
    if blockwise:
        paths += write_blockwise(results, project, classifier, image, blockwise, batch, comm, threads, quiet)
    if comm is None or comm.Get_rank() == 0:
        write_object_table(results, project, raw, batch.options.export.table_filename,
                           lambda t, k, box: image.object_mask(t, results[t].objects, k, box))
    return paths


def _object_image(project: ObjectClassificationProject, raw: Source, segmentation: Source,
                  options: HeadlessOptions) -> ObjectImage:
    """An image and its segmentation input checked against each other and the project, ready to measure."""
    shape = tuple(raw.shape_tzyxc)
    image = segmented_image(raw, segmentation, _KINDS[project.workflow_name], project.threshold, options.run,
                            block_shape_for(options.run, shape))
    features.check_features(project.selected_features, shape[4], 2 if shape[1] == 1 else 3)
    return image


def classify(frame: MeasuredFrame, wanted: features.FeatureSet, classifier: ForestEnsemble | None,
             n_classes: int) -> FrameResult:
    """A measured frame with its objects' classes and class probabilities."""
    return FrameResult(frame.objects, frame.block_maps, frame.features,
                       *classify_objects(frame.features, wanted, classifier, len(frame.objects), n_classes))


def _targets(project: ObjectClassificationProject, image: ObjectImage, batch: Batch) -> list[Target]:
    """Every export source asked for, planned (path, region, dtype) but not yet opened."""
    shape = tuple(image.raw.shape_tzyxc)
    n_classes = len(project.label_names)
    # ilastik: uint32 ids, or for a label image its own type (uint16 promoted to uint32)
    identity_dtype = image.segmentation.dtype if image.segmenter.kind == extraction.LABELS else np.dtype(np.uint32)
    identity_dtype = np.dtype(np.uint32) if identity_dtype == np.uint16 else identity_dtype
    channels = {PREDICTIONS: (1, "uint8"), PROBABILITIES: (n_classes, "float32"),
                IDENTITIES: (1, np.dtype(identity_dtype).name),
                PIXEL_PROBABILITIES: (image.segmentation.shape_tzyxc[4], "float32"),
                SIMPLE_SEGMENTATION: (1, "uint8"),
                BLOCKWISE_SOURCES[0]: (1, "uint8"), BLOCKWISE_SOURCES[1]: (n_classes, "float32")}
    targets = [plan_target(name, name, project, image.raw, batch.export, shape[:4] + (channels[name][0],),
                           channels[name][1]) for name, _ in batch.export.sources]
    check_distinct_paths(targets)
    return targets


def _write_exports(results: list[FrameResult], project: ObjectClassificationProject, image: ObjectImage,
                   targets: list[Target], batch: Batch, comm, threads: int, quiet: bool) -> list[str]:
    """Each block's objects (or pixel predictions) mapped to the export sources and written (every rank)."""
    if not targets:
        return []
    raw = image.raw
    for target in targets:
        target.open(batch.export, raw, image.block_shape,
                    (0.0, 1.0) if target.key in (PROBABILITIES, PIXEL_PROBABILITIES) else None, comm,
                    fingerprint(project, raw, batch.export, target.name, image.block_shape))

    def write(block: blk.Block) -> None:
        result = results[block.index[0]]
        ids = image.export_ids(block, result)
        for target in targets:
            target.write(block, _source(target.key, ids, result, image, block)[np.newaxis])

    grid = image.export_grid(targets[0].region)
    progress = Progress(len(grid), unit="blocks", quiet=quiet, label=f"{raw.nickname}: export",
                        total_voxels=sum(block.voxels for block in grid))
    return write_blocks(grid, write, targets, comm, threads, progress, lambda block: (block.voxels,), raw.nickname)


def _source(name: str, ids: np.ndarray, result: FrameResult, image: ObjectImage, block: blk.Block) -> np.ndarray:
    """One export source of a block (object ids (z, y, x) known) → (z, y, x, channels)."""
    if name == PREDICTIONS:
        return result.classes[ids][..., np.newaxis]
    if name == PROBABILITIES:
        return result.probabilities[ids]
    if name in (PIXEL_PROBABILITIES, SIMPLE_SEGMENTATION):
        pixels = image.segmentation.read(block.slices[:4] + (slice(0, image.segmentation.shape_tzyxc[4]),))[0]
        return pixels if name == PIXEL_PROBABILITIES else simple_segmentation(pixels)
    return ids[..., np.newaxis]


WORKFLOWS_BY_NAME: Mapping[str, Workflow] = {
    name: Workflow(name=name, roles=ROLES[name], run=run) for name in WORKFLOWS}
