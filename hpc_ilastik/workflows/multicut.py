"""Edge Training With Multicut headless ("Boundary-based Segmentation with Multicut"; ilastik-workflows-spec.md
§C): per image, superpixels (the project's distance-transform watershed of the boundary channels, or
--superpixels as given), the region adjacency graph and ilastikrag's edge features, P(cut) of every edge
from the project's edge forest (or the normalised mean boundary when the project trains none), ilastik's
costs, a multicut by the project's solver, and the superpixels relabelled by it as "Multicut Segmentation"."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.forest.training import DEFAULT_TREE_COUNT, train_forests
from hpc_ilastik.graphs.costs import edge_costs, normalized
from hpc_ilastik.graphs.edge_features import edge_feature_matrix
from hpc_ilastik.graphs.multicut import MulticutSolution, solve_multicut
from hpc_ilastik.graphs.training import MERGE, SPLIT, labelled_edges
from hpc_ilastik.graphs.watershed import boundary_map, distance_transform_watershed, wsdt_superpixels
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.project.multicut import MulticutProject
from hpc_ilastik.project.names import MULTICUT
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import from_root
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows import multicut_blockwise
from hpc_ilastik.workflows.batch import Batch, Lane, start_batch, training_image
from hpc_ilastik.workflows.blockwise import block_shape_for, block_threads, memory_limit, write_blocks
from hpc_ilastik.workflows.export import Target, check_distinct_paths, fingerprint, plan_target
from hpc_ilastik.workflows.options import HeadlessOptions, RunOptions, TrainingOptions
from hpc_ilastik.workflows.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = ("Raw Data", "Probabilities", "Superpixels", "Groundtruth")
SEGMENTATION = "Multicut Segmentation"
BOUNDARY_CHANNEL = "wsdt boundary channel"  # ilastik's name of the watershed's input among the voxel channels
MEAN = "standard_edge_mean"                 # the edge feature that stands in for P(cut) without a forest

EdgeClassifier = tuple[ForestEnsemble, list[str]]  # the forest and the feature columns it was trained on


def run(project: MulticutProject, options: HeadlessOptions) -> None:
    """Segment every input as ilastik --headless does."""
    batch = start_batch(project, options, ROLES, {SEGMENTATION: SEGMENTATION})
    missing = [lane[ROLES[0]] for lane in batch.lanes if lane["Probabilities"] is None]
    if missing:
        raise UserError(f"the Multicut workflow segments a boundary probability map: give --probabilities with one "
                        f"map per --raw_data input (none for {missing[0]})")
    classifier = edge_classifier(project, options.training, options.run)

    def run_lane(lane: Lane, comm, quiet: bool) -> None:
        inputs = batch.open_lane(lane)
        if options.run.distributed or whole_image_bytes(inputs) > memory_limit(1):
            run_image_blockwise(project, classifier, inputs, batch, comm, quiet)
        else:
            run_image(project, classifier, inputs, batch, quiet)

    batch.for_each_lane(run_lane)


def whole_image_bytes(inputs: Mapping[str, Source | None]) -> int:
    """About what `run_image` holds at once: the raw and probability channels, the boundary and superpixels, and
    the watershed's float32 temporaries (distance, smoothed maps, heights, labels)."""
    shape = inputs["Raw Data"].shape_tzyxc
    channels = shape[4] + inputs["Probabilities"].shape_tzyxc[4] + 8
    return 4 * channels * int(np.prod(shape[:4]))


def edge_classifier(project: MulticutProject, training: TrainingOptions, run: RunOptions) -> EdgeClassifier | None:
    """The edge forest and its feature columns: the project's, or trained (seeded) on its stored edge labels
    when it has none or with --retrain; None when the project trains no forest."""
    if not project.train_forest:
        return None
    asked = training.retraining
    if project.classifier is not None and not asked:
        return project.classifier, project.classifier_features
    X, y, columns = _training_rows(project, run)
    if not len(y):
        raise UserError(f"the project {project.path} has neither a trained edge classifier nor edge labels to train "
                        "one: label edges (or untick 'Train edge classifier') in ilastik and save the project")
    log.info("training the edge classifier (%s) on %d labelled edges", "--retrain" if asked else
             "the project has none", len(y))
    return train_forests(X, y, training.tree_count or DEFAULT_TREE_COUNT, seed=0), columns


def _training_rows(project: MulticutProject, run: RunOptions) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features, labels, column names) of every training lane's labelled edges, on the superpixels the labels
    name: ilastik's cached ones, else the lane's own superpixel image, else the project's watershed."""
    xs, ys, columns = [], [], []
    for lane_index, (pairs, labels) in enumerate(project.edge_labels):
        if not np.count_nonzero(labels):
            continue
        raw = training_image(project, lane_index, "Raw Data").read()[0].astype(np.float32, copy=False)
        probs = training_image(project, lane_index, "Probabilities").read()[0].astype(np.float32, copy=False)
        superpixels = project.cached_superpixels(lane_index)
        if superpixels is None and project.lanes[lane_index].roles.get("Superpixels") is not None:
            superpixels = training_image(project, lane_index, "Superpixels").read()[..., 0]
        superpixels = superpixels[0] if superpixels is not None else \
            watershed_superpixels(project, probs, block_threads(run, None, None))
        edges, matrix, columns = edge_features(project, superpixels, voxel_channels(raw, probs, boundary_map(
            probs, project.watershed.channels)))
        rows, y = labelled_edges(edges, pairs, labels)
        if len(rows) < np.count_nonzero(labels):
            log.warning("%s: %d of the %d edge labels of lane %d name no edge of its superpixels; they are left out",
                        project.path, np.count_nonzero(labels) - len(rows), np.count_nonzero(labels), lane_index + 1)
        xs.append(matrix[rows])
        ys.append(y)
    if not ys:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), columns
    return np.concatenate(xs), np.concatenate(ys), columns


def run_image(project: MulticutProject, classifier: EdgeClassifier | None, inputs: Mapping[str, Source | None],
              batch: Batch, quiet: bool) -> list[str]:
    """Segment one image and write it; returns the output paths."""
    raw, probabilities, given = inputs["Raw Data"], inputs["Probabilities"], inputs["Superpixels"]
    shape = _checked_shape(project, inputs)
    raw_zyxc = raw.read()[0].astype(np.float32, copy=False)
    probs_zyxc = probabilities.read()[0].astype(np.float32, copy=False)
    if given is not None:
        superpixels = given.read()[0][..., 0].astype(np.uint32)
    else:
        superpixels = watershed_superpixels(project, probs_zyxc, block_threads(batch.options.run, None, None))
    boundary = boundary_map(probs_zyxc, project.watershed.channels)
    solution = segment(project, classifier, superpixels, voxel_channels(raw_zyxc, probs_zyxc, boundary))
    present = np.unique(superpixels)
    log.info("%s: %d superpixels → %d segments (multicut energy %.6g, %s)", raw.nickname, len(present),
             len(np.unique(solution.labels[present])), solution.energy, solution.solver)
    segmentation = solution.labels.astype(np.uint32)[superpixels][np.newaxis, ..., np.newaxis]
    return _write(project, raw, segmentation, shape, batch, quiet)


def run_image_blockwise(project: MulticutProject, classifier: EdgeClassifier | None,
                        inputs: Mapping[str, Source | None], batch: Batch, comm, quiet: bool) -> list[str]:
    """`run_image` block by block, across the ranks of `comm` (--distributed) or in one process when the whole
    image would not fit in its memory (`multicut_blockwise`): the same segmentation, with only tables on rank 0
    (and the whole image there when the project's watershed is not blockwise)."""
    raw, probabilities, given = inputs["Raw Data"], inputs["Probabilities"], inputs["Superpixels"]
    shape = _checked_shape(project, inputs)
    targets = _targets(project, raw, shape, batch)
    threads = block_threads(batch.options.run, comm, None)
    scratch = multicut_blockwise.scratch_folder(targets[0].path, comm)
    try:
        ws = project.watershed
        superpixels = multicut_blockwise.superpixel_reader(
            project, raw, probabilities, given, scratch, comm, threads,
            lambda pmap: distance_transform_watershed(pmap, ws.threshold, ws.sigma, ws.sigma, ws.min_size, ws.alpha,
                                                      list(ws.pixel_pitch) or None)[0])
        image = multicut_blockwise.ImageBlocks(raw, probabilities, ws.channels, superpixels, voxel_channels)
        block_shape, whole, grid = multicut_blockwise.image_grid(image, batch, targets[0].region)
        if classifier is not None:
            _check_channels(project, [name for name, _ in image.channels((slice(0, 1),) * len(image.shape))])
        found = multicut_blockwise.blockwise_features(image, wanted_features(project, classifier),
                                             [multicut_blockwise.region_of(image, b) for b in whole], comm, threads)
        node_labels = None
        if found is not None:
            edges, matrix, columns, max_id = found
            solution = solve(project, edges, cut_probabilities(classifier, edges, matrix, columns), max_id + 1)
            log.info("%s: %d superpixel ids → %d segments (multicut energy %.6g, %s)", raw.nickname, max_id,
                     int(solution.labels.max()) + 1, solution.energy, solution.solver)
            node_labels = solution.labels.astype(np.uint32)
        node_labels = from_root(comm, node_labels)

        def write(block: blk.Block) -> None:
            values = node_labels[superpixels(multicut_blockwise.region_of(image, block))].reshape(
                [s.stop - s.start for s in block.slices[:4]] + [1])
            for target in targets:
                target.write(block, values)

        for target in targets:
            target.open(batch.export, raw, block_shape, None, comm,
                        fingerprint(project, raw, batch.export, target.name, block_shape))
        return write_blocks(grid, write, targets, comm, threads, Progress(len(grid), unit="blocks", quiet=quiet,
                            label=f"{raw.nickname}: export"), lambda block: (block.voxels,), raw.nickname)
    finally:
        multicut_blockwise.remove_scratch(scratch, comm)


def watershed_superpixels(project: MulticutProject, probs_zyxc: np.ndarray, threads: int) -> np.ndarray:
    """The project's DT watershed of a probability image (zyx uint32; z == 1 for 2-D)."""
    ws = project.watershed
    return wsdt_superpixels(probs_zyxc, ws.channels, ws.threshold, ws.min_size, ws.sigma, ws.alpha, ws.pixel_pitch,
                            ws.blockwise, n_threads=threads)


def _checked_shape(project: MulticutProject, inputs: Mapping[str, Source | None]) -> tuple[int, ...]:
    """The raw image's tzyxc shape; UserError for a time series, an input of another size, or probabilities
    without the channels the project's watershed uses."""
    raw, probabilities = inputs["Raw Data"], inputs["Probabilities"]
    shape = tuple(raw.shape_tzyxc)
    if shape[0] > 1:
        raise UserError(f"{raw.nickname!r} has {shape[0]} time points; the Multicut workflow takes one 2-D or 3-D "
                        "image per input (zyx or yx, with channels), as ilastik does")
    for other in (source for role, source in inputs.items() if role != "Raw Data" and source is not None):
        if tuple(other.shape_tzyxc)[:4] != shape[:4]:
            raise UserError(f"{other.nickname!r} has shape {tuple(other.shape_tzyxc)[:4]} (tzyx) but the raw data "
                            f"{raw.nickname!r} has {shape[:4]}: every input of an image must have its size")
    if max(project.watershed.channels) >= probabilities.shape_tzyxc[4]:
        raise UserError(f"the project's watershed uses probability channel(s) {list(project.watershed.channels)}, "
                        f"but {probabilities.nickname!r} has {probabilities.shape_tzyxc[4]} channel(s)")
    return shape


def voxel_channels(raw_zyxc: np.ndarray, probs_zyxc: np.ndarray, boundary_zyx: np.ndarray
                   ) -> list[tuple[str, np.ndarray]]:
    """ilastik's stacked voxel channels with their names: the raw channels, the probability channels, then the
    watershed's input ("Raw Data", or "Raw Data-0", "Raw Data-1", ... for several channels)."""
    channels = []
    for role, image in (("Raw Data", raw_zyxc), ("Probabilities", probs_zyxc)):
        n = image.shape[-1]
        channels += [(role if n == 1 else f"{role}-{k}", image[..., k]) for k in range(n)]
    return channels + [(BOUNDARY_CHANNEL, boundary_zyx)]


def _planes(superpixels_zyx: np.ndarray, channels: list[tuple[str, np.ndarray]]
            ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """A 2-D image (z == 1) as the yx arrays ilastikrag takes."""
    if superpixels_zyx.shape[0] != 1:
        return superpixels_zyx, channels
    return superpixels_zyx[0], [(name, array[0]) for name, array in channels]


def _check_channels(project: MulticutProject, names: list[str]) -> None:
    unknown = sorted(set(project.feature_names) - set(names))
    if unknown:
        raise UserError(f"the project computes edge features of the voxel channel(s) {unknown}, which these inputs do "
                        f"not have (theirs: {', '.join(names)}): give raw data and probabilities with the training "
                        "images' channels")


def edge_features(project: MulticutProject, superpixels_zyx: np.ndarray, channels: list[tuple[str, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(edges, features, column names) of the project's feature selection on these voxel channels."""
    _check_channels(project, [name for name, _ in channels])
    return edge_feature_matrix(*_planes(superpixels_zyx, channels), project.feature_names)


def wanted_features(project: MulticutProject, classifier: EdgeClassifier | None) -> dict[str, list[str]]:
    """The edge features to compute: the forest's, or the mean boundary that stands in for P(cut) without one."""
    return project.feature_names if classifier is not None else {BOUNDARY_CHANNEL: [MEAN]}


def cut_probabilities(classifier: EdgeClassifier | None, edges: np.ndarray, matrix: np.ndarray,
                      columns: list[str]) -> np.ndarray:
    """P(cut) per edge: the forest's, or (no forest) ilastik's min-max normalised mean of the watershed's input."""
    if classifier is None:
        return normalized(matrix[:, columns.index(f"{BOUNDARY_CHANNEL} {MEAN}")])
    return _forest_probabilities(classifier, edges, matrix, columns)


def solve(project: MulticutProject, edges: np.ndarray, cut: np.ndarray, n_nodes: int) -> MulticutSolution:
    """ilastik's costs of the edges and the project's multicut of them (node labels for ids 0..n_nodes-1)."""
    costs = edge_costs(edges, cut, project.beta, project.probability_threshold)
    return solve_multicut(project.solver_name, n_nodes, edges.astype(np.int64), costs.astype(np.float64))


def segment(project: MulticutProject, classifier: EdgeClassifier | None, superpixels_zyx: np.ndarray,
            channels: list[tuple[str, np.ndarray]]) -> MulticutSolution:
    """The multicut of a superpixel image (z may be 1): its node labels, one per superpixel id 0..max."""
    features = wanted_features(project, classifier)
    if classifier is not None:
        _check_channels(project, [name for name, _ in channels])
    edges, matrix, columns = edge_feature_matrix(*_planes(superpixels_zyx, channels), features)
    n_nodes = int(superpixels_zyx.max()) + 1 if superpixels_zyx.size else 1
    return solve(project, edges, cut_probabilities(classifier, edges, matrix, columns), n_nodes)


def _forest_probabilities(classifier: EdgeClassifier, edges: np.ndarray, matrix: np.ndarray,
                          columns: list[str]) -> np.ndarray:
    """P(cut) from the edge forest, its features taken in the columns it was trained on."""
    forest, wanted = classifier
    wanted = wanted or columns
    missing = [name for name in wanted if name not in columns]
    if missing or len(wanted) != forest.n_features:
        raise UserError(f"the project's edge classifier was trained on {forest.n_features} features "
                        f"({', '.join(wanted[:3])}, ...) that its feature selection does not give "
                        f"({', '.join(missing[:3]) or 'a different count'}); retrain it (--retrain)")
    known = {int(k) for k in np.asarray(forest.known_labels).ravel()}
    if known == {MERGE, SPLIT}:
        X = matrix[:, [columns.index(name) for name in wanted]]
        return forest.predict_proba(X, 2)[:, 1]
    if known <= {MERGE}:  # only "merge" labels (or none): nothing is cut
        return np.zeros(len(edges), dtype=np.float32)
    if known == {SPLIT}:
        return np.ones(len(edges), dtype=np.float32)
    raise UserError(f"the project's edge classifier knows the labels {sorted(known)}; ilastik's edge labels are 1 "
                    "(merge) and 2 (split)")


def _targets(project: MulticutProject, raw: Source, shape: tuple[int, ...], batch: Batch) -> list[Target]:
    targets = [plan_target(name, key, project, raw, batch.export, shape[:4] + (1,), "uint32")
               for name, key in batch.export.sources]
    check_distinct_paths(targets)
    return targets


def _write(project: MulticutProject, raw: Source, segmentation: np.ndarray, shape: tuple[int, ...], batch: Batch,
           quiet: bool) -> list[str]:
    """The segmentation (tzyxc, uint32) written block by block into every export target."""
    options = batch.export
    targets = _targets(project, raw, shape, batch)
    block_shape = block_shape_for(batch.options.run, shape[:4] + (1,))
    grid = blk.plan_blocks(shape[:4] + (1,), block_shape, targets[0].region[:4] + (slice(0, 1),))
    for target in targets:
        target.open(options, raw, block_shape, None, None, fingerprint(project, raw, options, target.name, block_shape))

    def write(block: blk.Block) -> None:
        for target in targets:
            target.write(block, segmentation[block.slices[:4]])

    progress = Progress(len(grid), unit="blocks", quiet=quiet, label=f"{raw.nickname}: export")
    return write_blocks(grid, write, targets, None, block_threads(batch.options.run, None, grid), progress,
                        lambda block: (block.voxels,), raw.nickname)


WORKFLOW = Workflow(name=MULTICUT, roles=ROLES, run=run)
