"""Object Classification headless, exact at any size: objects found block by block and merged, each object's
features computed on a crop around it, the objects classified with the project's forests, and the export
images written block by block. Every phase is shared over threads or MPI ranks; only small per-object
tables travel to rank 0 (ilastik-workflows-spec.md §A)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.objects import extraction, features
from hpc_ilastik.objects.extraction import Segmenter
from hpc_ilastik.project.object_classification import (
    FROM_BINARY,
    FROM_LABELS,
    FROM_PIXELS,
    FROM_PREDICTIONS,
    WORKFLOWS,
    ObjectClassificationProject,
)
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import from_root
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.batch import Batch, Lane, role_option, start_batch
from hpc_ilastik.workflows.blockwise import block_shape_for, thread_count, write_blocks
from hpc_ilastik.workflows.export import check_distinct_paths, fingerprint, plan_target
from hpc_ilastik.workflows.object_measurement import MeasuredFrame, ObjectImage, measure_objects
from hpc_ilastik.workflows.object_table import write_object_table
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = {FROM_PREDICTIONS: ("Raw Data", "Prediction Maps"), FROM_BINARY: ("Raw Data", "Segmentation Image"),
         FROM_LABELS: ("Raw Data", "Label Image"), FROM_PIXELS: ("Raw Data",)}
PREDICTIONS, PROBABILITIES, IDENTITIES = "Object Predictions", "Object Probabilities", "Object Identities"
SOURCES = (PREDICTIONS, PROBABILITIES, "Blockwise Object Predictions", "Blockwise Object Probabilities", IDENTITIES)
_KINDS = {FROM_PREDICTIONS: extraction.PREDICTIONS, FROM_BINARY: extraction.SEGMENTATION,
          FROM_LABELS: extraction.LABELS}


@dataclass(frozen=True)
class FrameResult(MeasuredFrame):
    """A measured frame and its objects' classes and class probabilities (row = object id, row 0 = background)."""

    classes: np.ndarray
    probabilities: np.ndarray


def run(project: ObjectClassificationProject, options: HeadlessOptions) -> None:
    """Classify the objects of every input, as ilastik --headless does."""
    if project.workflow_name == FROM_PIXELS:
        raise UserError("Object Classification projects of the deprecated 'from pixel classification' variant are "
                        "not supported yet: run the Pixel Classification project, then an Object Classification "
                        "project from prediction maps")
    roles = ROLES[project.workflow_name]
    batch = start_batch(project, options, roles, {name: name for name in SOURCES})
    blockwise = [name for name, _ in batch.export.sources if name.startswith("Blockwise")]
    if blockwise:
        raise UserError(f"the export source '{blockwise[0]}' is not supported yet; '{PREDICTIONS}' and "
                        f"'{PROBABILITIES}' are exact at any image size")
    missing = next((lane[roles[0]] for lane in batch.lanes if lane[roles[1]] is None), None)
    if missing is not None:
        raise UserError(f"the {project.workflow_name} project needs {role_option(roles[1])} for every input "
                        f"(none given for {missing})")
    classifier = _classifier(project)

    def run_lane(lane: Lane, comm, quiet: bool) -> None:
        inputs = batch.open_lane(lane)
        run_image(project, classifier, inputs[roles[0]], inputs[roles[1]], batch, comm, quiet)

    batch.for_each_lane(run_lane)


def _classifier(project: ObjectClassificationProject) -> ForestEnsemble:
    """The project's trained object classifier; UserError when there is none."""
    if project.classifier is not None:
        if not project.label_names:
            raise UserError(f"the object classifier of {project.path} has no label names; the project is damaged")
        return project.classifier
    labelled = sum(int(np.count_nonzero(frame)) for lane in project.object_labels for frame in lane)
    if not labelled:
        raise UserError(f"the project {project.path} has no trained object classifier and no labelled objects to "
                        "train one: label objects in ilastik and save the project")
    raise UserError(f"the project {project.path} has no trained object classifier ({labelled} labelled objects); "
                    "train it in ilastik (open the project and save it after 'Live Update'), then run again")


def run_image(project: ObjectClassificationProject, classifier: ForestEnsemble, raw: Source, segmentation: Source,
              batch: Batch, comm, quiet: bool) -> list[str]:
    """Find, measure and classify the objects of one image; write every export source; returns the paths."""
    shape = tuple(raw.shape_tzyxc)
    seg_shape = tuple(segmentation.shape_tzyxc)
    if seg_shape[:4] != shape[:4]:
        raise UserError(f"{segmentation.nickname!r} has shape {seg_shape[:4]} (tzyx) but the raw data "
                        f"{raw.nickname!r} has {shape[:4]}: they must be the same size")
    segmenter = Segmenter(_KINDS[project.workflow_name], project.threshold)
    segmenter.check_input(segmentation.dtype, seg_shape[4], shape[1:4])
    wanted = project.selected_features
    features.check_features(wanted, shape[4], 2 if shape[1] == 1 else 3)
    run = batch.options.run
    image = ObjectImage(raw, segmentation, segmenter, block_shape_for(run, shape))
    threads = 1 if comm is not None else min(thread_count(run), len(image.grid))
    measured = measure_objects(image, wanted, comm, threads, quiet)
    results = from_root(comm, None if measured is None else
                        [classify(frame, wanted, classifier, len(project.label_names)) for frame in measured])
    paths = _write_exports(results, project, image, batch, comm, threads, quiet)
    if comm is None or comm.Get_rank() == 0:
        write_object_table(results, project, raw, batch.options.export.table_filename,
                           lambda t, k, box: image.object_mask(t, results[t].objects, k, box))
    return paths


def classify(frame: MeasuredFrame, wanted: features.FeatureSet, classifier: ForestEnsemble,
             n_classes: int) -> FrameResult:
    """A frame's objects' class probabilities and classes (row 0: the background)."""
    probabilities = np.zeros((len(frame.objects) + 1, n_classes), dtype=np.float32)
    if len(frame.objects):
        matrix = features.feature_matrix(frame.features, wanted)
        if matrix.shape[1] != classifier.n_features:
            raise UserError(f"the objects have {matrix.shape[1]} feature columns but the project's object classifier "
                            f"was trained on {classifier.n_features}: give inputs like the training images")
        probabilities[1:] = classifier.predict_proba(matrix[1:], n_classes)
    classes = np.zeros(len(frame.objects) + 1, dtype=np.uint8)
    classes[1:] = np.argmax(probabilities[1:], axis=1) + 1
    return FrameResult(frame.objects, frame.block_maps, frame.features, classes, probabilities)


def _write_exports(results: list[FrameResult], project: ObjectClassificationProject, image: ObjectImage,
                   batch: Batch, comm, threads: int, quiet: bool) -> list[str]:
    """Each block's objects mapped to the export sources and written (every rank)."""
    raw = image.raw
    shape = tuple(raw.shape_tzyxc)
    options = batch.export
    identity_dtype = (np.promote_types(image.segmentation.dtype, np.uint32)
                      if image.segmenter.kind == extraction.LABELS else np.uint32)
    channels = {PREDICTIONS: (1, "uint8"), PROBABILITIES: (len(project.label_names), "float32"),
                IDENTITIES: (1, np.dtype(identity_dtype).name)}
    targets = [plan_target(name, name, project, raw, options, shape[:4] + (channels[name][0],), channels[name][1])
               for name, _ in options.sources]
    check_distinct_paths(targets)
    for target in targets:
        target.open(options, raw, image.block_shape, (0.0, 1.0) if target.key == PROBABILITIES else None, comm,
                    fingerprint(project, raw, options, target.name, image.block_shape))

    def write(block: blk.Block) -> None:
        result = results[block.index[0]]
        ids = image.object_ids(block, result)
        for target in targets:
            target.write(block, _source(target.key, ids, result)[np.newaxis])

    progress = Progress(len(image.grid), unit="blocks", quiet=quiet, label=f"{raw.nickname}: export",
                        total_voxels=math.prod(shape[:4]))
    return write_blocks(image.grid, write, targets, comm, threads, progress, lambda block: (block.voxels,),
                        raw.nickname)


def _source(name: str, ids: np.ndarray, result: FrameResult) -> np.ndarray:
    """One export source of a block of object ids (z, y, x) → (z, y, x, channels)."""
    if name == PREDICTIONS:
        return result.classes[ids][..., np.newaxis]
    if name == PROBABILITIES:
        return result.probabilities[ids]
    return ids[..., np.newaxis]


WORKFLOWS_BY_NAME: Mapping[str, Workflow] = {
    name: Workflow(name=name, roles=ROLES[name], run=run) for name in WORKFLOWS}
