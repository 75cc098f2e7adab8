"""Tracking headless (conservation and structured learning, from binary or prediction images), as ilastik's
`ConservationTrackingWorkflow` / `StructuredTrackingWorkflow.prepare_lane_for_export` run it: objects found and
measured frame by frame (shared over threads or MPI ranks, blockwise within a frame), the object-count and division
classifiers, the traxel filter, the hypotheses graph and its energies, the solver, merger resolution and lineage ids
on rank 0 (a small graph), then the export images written block by block across ranks, or an export plugin
(ilastik-workflows-spec.md §D)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.forest.training import DEFAULT_TREE_COUNT, train_forests
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.objects import extraction
from hpc_ilastik.objects.classification import labelled_samples
from hpc_ilastik.objects.features import DEFAULT_PLUGIN, FeatureSet, feature_matrix
from hpc_ilastik.project.tracking import (
    CONSERVATION_BINARY,
    CONSERVATION_PREDICTION,
    STRUCTURED_BINARY,
    STRUCTURED_PREDICTION,
    WORKFLOWS,
    ObjectClassifier,
    TrackingProject,
)
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import from_root, map_items
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.tracking import features as tracking_features
from hpc_ilastik.tracking.annotations import annotation_agreement
from hpc_ilastik.tracking.hypotheses import filter_traxels, make_traxels
from hpc_ilastik.tracking.lineage import Lineage, TrackGraph, compute_lineage
from hpc_ilastik.tracking.mergers import mergers_to_resolve, resolve_mergers
from hpc_ilastik.tracking.plugins import TrackingExport
from hpc_ilastik.tracking.solve import TrackingParameters, track
from hpc_ilastik.workflows.batch import Batch, Lane, role_option, start_batch, training_image
from hpc_ilastik.workflows.blockwise import block_shape_for, block_threads, memory_limit, write_blocks
from hpc_ilastik.workflows.export import Target, check_distinct_paths, fingerprint, plan_target
from hpc_ilastik.workflows.object_measurement import MeasuredFrame, ObjectImage, measure_objects, segmented_image
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.tracking_plugins import (
    PLUGIN,
    check_plugin_options,
    plugin_filename,
    relabelled_features,
    write_plugin,
)
from hpc_ilastik.workflows.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = {CONSERVATION_BINARY: ("Raw Data", "Segmentation Image"), CONSERVATION_PREDICTION: ("Raw Data", "Prediction Maps"),
         STRUCTURED_BINARY: ("Raw Data", "Binary Image"), STRUCTURED_PREDICTION: ("Raw Data", "Prediction Maps")}
TRACKING_RESULT, MERGER_RESULT, IDENTITIES = "Tracking-Result", "Merger-Result", "Object-Identities"
SOURCES = (TRACKING_RESULT, MERGER_RESULT, IDENTITIES, PLUGIN)
FALSE_DETECTION = 1  # `_labelLineageIds`: an object the solver did not use is drawn as lineage 1


@dataclass(frozen=True)
class Classifiers:
    """The forests a tracking run uses: object count (always) and division (when the project tracks divisions)."""

    count: ForestEnsemble
    count_features: FeatureSet
    n_count_classes: int
    division: ForestEnsemble | None
    division_features: FeatureSet


@dataclass(frozen=True)
class ResolvedMerger:
    """A merger split by merger resolution: its frame and id, and the new id of each of its pixels, the pixels
    given by their flat index in the frame's x-major (x, y, z) order, ascending (as ilastik lists them)."""

    frame: int
    label: int
    keys: np.ndarray  # (P,) int64 ascending
    pixel_ids: np.ndarray  # (P,) int64

    def relabel(self, ids: np.ndarray, origin_zyx: tuple[int, ...], frame_shape: tuple[int, int, int]) -> None:
        """`updateLabelImage` on a block's object ids (z, y, x) at `origin_zyx`: this merger's pixels take the
        id of the Gaussian they belong to (in place)."""
        inside = np.nonzero(ids == self.label)
        if len(inside[0]):
            z, y, x = (i + o for i, o in zip(inside, origin_zyx))
            key = np.ravel_multi_index((x, y, z), frame_shape[::-1])
            ids[inside] = self.pixel_ids[np.searchsorted(self.keys, key)]


@dataclass(frozen=True)
class TrackingOutcome:
    """The solved tracking of one image (rank 0's, sent to every rank): the traxel graph after merger resolution,
    its lineage and track ids, the resolved mergers and the solver's energy."""

    tracks: TrackGraph
    lineage: Lineage
    mergers: list[ResolvedMerger]
    energy: float

    def max_ids(self, measured: list[MeasuredFrame]) -> list[int]:
        """Per frame the largest object id after merger resolution."""
        return [max([len(frame.objects)] + [int(label) for label in self.tracks.label[self.tracks.frame == t]])
                for t, frame in enumerate(measured)]

    def relabelled(self, ids: np.ndarray, t: int, origin_zyx: tuple[int, ...],
                   frame_shape: tuple[int, int, int]) -> np.ndarray:
        """A block of frame t's object ids with the resolved mergers' pixels relabelled (ilastik's RelabeledImage)."""
        mergers = [m for m in self.mergers if m.frame == t]
        if mergers:
            ids = ids.copy()
            for merger in mergers:
                merger.relabel(ids, origin_zyx, frame_shape)
        return ids

    def lineage_maps(self, max_ids: list[int], mergers_only: bool = False) -> list[np.ndarray]:
        """Per frame: object id → lineage id (Tracking-Result) or, `mergers_only`, the same for the objects a
        merger was split into (or, without resolved mergers, for objects the solver gave several objects)."""
        maps = [np.zeros(n + 1, dtype=np.uint32) for n in max_ids]
        lineage = np.where(self.lineage.lineage_id > 0, self.lineage.lineage_id, FALSE_DETECTION)
        if mergers_only:
            shown = self.tracks.merger_label > 0 if self.mergers else self.tracks.value > 1
        else:
            shown = np.ones(len(lineage), dtype=bool)
        for t, label, value in zip(self.tracks.frame[shown], self.tracks.label[shown], lineage[shown]):
            maps[t][label] = value
        return maps


def run(project: TrackingProject, options: HeadlessOptions) -> None:
    """Track the objects of every input time series, as ilastik --headless does."""
    roles = ROLES[project.workflow_name]
    batch = start_batch(project, options, roles, {name: name for name in SOURCES})
    missing = next((lane[roles[0]] for lane in batch.lanes if lane[roles[1]] is None), None)
    if missing is not None:
        raise UserError(f"the {project.workflow_name} project needs {role_option(roles[1])} for every input "
                        f"(none given for {missing})")
    plugin = check_plugin_options(batch.export, options.export)
    classifiers = tracking_classifiers(project, options)

    def run_lane(lane: Lane, comm, quiet: bool) -> None:
        inputs = batch.open_lane(lane)
        run_image(project, classifiers, inputs[roles[0]], inputs[roles[1]], batch, plugin, comm, quiet)

    batch.for_each_lane(run_lane)


def tracking_parameters(project: TrackingProject, shape_tzyxc: tuple[int, ...]) -> TrackingParameters:
    """`prepare_lane_for_export`'s call of `track`: the whole image (every frame, the full field of view), the
    stored parameters; structured learning leaves max_nearest_neighbors at track()'s default 3; the detection
    weight is always 10 (`OpConservationTracking.track`)."""
    p = project.parameters
    n_frames, z, y, x = shape_tzyxc[:4]
    return TrackingParameters(
        time_range=(0, n_frames - 1), x_range=(0, x), y_range=(0, y), z_range=(0, z),
        scales=tuple(float(s) for s in p["scales"][:3]), max_dist=float(p["maxDist"]), max_obj=int(p["maxObj"]),
        div_threshold=float(p["divThreshold"]), with_divisions=bool(p["withDivisions"]),
        with_tracklets=bool(p["withTracklets"]), border_aware_width=float(p["borderAwareWidth"]),
        max_nearest_neighbors=3 if project.structured else int(p["max_nearest_neighbors"]),
        trans_weight=float(p["transWeight"]), div_weight=float(p["divWeight"]),
        appearance_cost=float(p["appearanceCost"]), disappearance_cost=float(p["disappearanceCost"]))


def tracking_classifiers(project: TrackingProject, options: HeadlessOptions) -> Classifiers:
    """The project's object-count and division forests, or ones trained from its labelled objects when it stores
    none (always with --retrain / --tree-count), as ilastik's object classification applets do."""
    p = project.parameters
    if not p["withClassifierPrior"]:
        raise UserError(f"the project {project.path} tracks without the object-count classifier (withClassifierPrior "
                        "off), which ilastik's headless tracking cannot run either: train the object count "
                        "classifier and enable it in the tracking applet")
    division_group = project.division_classifier
    train_division = bool(p["withDivisions"]) and division_group is not None and (
        division_group.forest is None or options.training.retraining)
    measured: dict[int, list[dict]] = {}  # the project's images, measured once for both classifiers

    def lane_tables(lane_index: int) -> list[dict]:
        """The feature tables of the project's image `lane_index` (with the division features when the division
        classifier is trained)."""
        if lane_index not in measured:
            roles = ROLES[project.workflow_name]
            image = object_image(project, training_image(project, lane_index),
                                 training_image(project, lane_index, roles[1]), options)
            measured[lane_index] = measure_time_series(image, train_division, None,
                                                       block_threads(options.run, None, image.grid), True)[1]
        return measured[lane_index]

    count = _classifier(project, options, project.count_classifier, "object count", int(p["maxObj"]) + 1,
                        lane_tables)
    division = None
    if p["withDivisions"]:
        division = _classifier(project, options, division_group, "division", 2, lane_tables)
    return Classifiers(count, project.count_classifier.selected_features, len(project.count_classifier.label_names),
                       division, project.division_classifier.selected_features if division is not None else {})


def _classifier(project: TrackingProject, options: HeadlessOptions, group: ObjectClassifier | None, what: str,
                n_classes: int, lane_tables: Callable[[int], list[dict]]) -> ForestEnsemble:
    """One of the two forests, checked against the classes tracking needs (`lane_tables`: the feature tables of
    the project's images, for training)."""
    if group is None or (group.forest is None and not group.trainable):
        raise UserError(f"the project {project.path} has no trained {what} classifier and no labelled objects to train "
                        f"one: train the {what} classifier in ilastik and save the project")
    if len(group.label_names) < n_classes:
        raise UserError(f"the {what} classifier of {project.path} has {len(group.label_names)} classes "
                        f"({', '.join(group.label_names) or 'none'}) but tracking needs {n_classes}: give it one label "
                        "per number of objects up to the maximum number of objects (maxObj)")
    training = options.training
    asked = training.retraining
    if group.forest is not None and not asked:
        return group.forest
    trees = training.tree_count or DEFAULT_TREE_COUNT
    log.info("training the %s classifier from the project's labelled objects (%s; seeded, %d trees)", what,
             "--retrain" if asked else "the project stores no trained forest", trees)
    X, y = _labelled_objects(group, lane_tables, what == "division")
    if not len(y):
        raise UserError(f"the {what} classifier of {project.path} has no labelled objects to train from")
    return train_forests(X, y, trees, seed=0)


def _labelled_objects(group: ObjectClassifier, lane_tables: Callable[[int], list[dict]],
                      divisions: bool) -> tuple[np.ndarray, np.ndarray]:
    """(feature rows, classes) of the labelled objects of the project's own images, measured as any input; the
    object count classifier sees the tables without the division features, as when it was trained."""
    xs, ys = [], []
    for lane_index, frames in enumerate(group.object_labels):
        if not any(np.count_nonzero(frame) for frame in frames):
            continue
        tables = lane_tables(lane_index)
        if not divisions:
            tables = [{k: v for k, v in table.items() if k != tracking_features.DIVISION_PLUGIN} for table in tables]
        for table, labels in zip(tables, frames):
            X, y = labelled_samples(feature_matrix(table, tracking_features.computed_selection(group.selected_features,
                                                                                               table)), labels)
            xs.append(X)
            ys.append(y)
    if not xs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.uint32)
    return np.concatenate(xs), np.concatenate(ys)


def object_image(project: TrackingProject, raw: Source, segmentation: Source, options: HeadlessOptions) -> ObjectImage:
    """A time series and its binary image or prediction maps, checked against each other and the project."""
    shape = tuple(raw.shape_tzyxc)
    image = segmented_image(raw, segmentation, extraction.PREDICTIONS if project.from_predictions else
                            extraction.SEGMENTATION, project.threshold, options.run,
                            (1,) + tuple(block_shape_for(options.run, shape)[1:]))
    if shape[0] < 2:
        raise UserError(f"{raw.nickname!r} has {shape[0]} time frame; tracking needs a time series of at least 2 "
                        "frames (check --input_axes: is the time axis read as z?)")
    return image


def _wanted(image: ObjectImage) -> FeatureSet:
    """What to measure per object: ilastik's tracking feature set (a classifier's selected feature outside it is
    dropped, as `make_feature_array` drops features that were not computed)."""
    return tracking_features.tracking_feature_set(2 if image.frame_shape[0] == 1 else 3)


def frame_labels(image: ObjectImage, frame: MeasuredFrame, t: int) -> np.ndarray:
    """Frame t's object ids (z, y, x) uint32, assembled from its blocks."""
    labels = np.zeros(image.frame_shape, dtype=np.uint32)
    for block in image.grid:
        if block.index[0] == t:
            labels[block.slices[1:4]] = image.object_ids(block, frame)
    return labels


def _division_tables(image: ObjectImage, measured: list[MeasuredFrame], comm, threads: int,
                     quiet: bool) -> list[dict] | None:
    """Every frame's feature table with ilastik's "Cell Division Features" added (from frame t + 1; ilastik gives
    the last two frames the defaults, see `has_successor_features`), frames shared over threads or ranks (every
    rank needs `measured`); rank 0 gets the tables, the others None."""
    ndim = 2 if image.frame_shape[0] == 1 else 3

    def division(t: int) -> dict[str, np.ndarray]:
        following = labels = None
        if tracking_features.has_successor_features(t, len(measured)):
            following, labels = measured[t + 1].features, frame_labels(image, measured[t + 1], t + 1)
        return tracking_features.division_features(measured[t].features, following, labels, ndim)

    progress = Progress(len(measured), unit="frames", quiet=quiet, label=f"{image.raw.nickname}: division features")
    computed = map_items(list(range(len(measured))), division, comm, threads=threads, progress=progress,
                         unit="frames", describe=lambda t: f"frame {t}")
    if computed is None:
        return None
    return [{**frame.features, tracking_features.DIVISION_PLUGIN: own} for frame, own in zip(measured, computed)]


def run_image(project: TrackingProject, classifiers: Classifiers, raw: Source, segmentation: Source, batch: Batch,
              plugin: str | None, comm, quiet: bool) -> list[str]:
    """Find, measure and track the objects of one time series; write the export source or plugin."""
    image = object_image(project, raw, segmentation, batch.options)
    threads = block_threads(batch.options.run, comm, image.grid)
    measured, tables = measure_time_series(image, classifiers.division is not None, comm, threads, quiet)
    if measured is not None:  # rank 0
        outcome = solve_image(project, classifiers, image, measured, tables)
        if plugin is not None:
            paths = write_plugin(plugin, plugin_export(image, measured, outcome, tables, batch),
                                 plugin_filename(project, image, batch, plugin), raw.nickname)
    if plugin is not None:
        return from_root(comm, paths if measured is not None else None)
    measured, outcome = from_root(comm, (measured, outcome) if measured is not None else None)
    return _write_images(project, image, measured, outcome, batch, comm, threads, quiet)


def measure_time_series(image: ObjectImage, divisions: bool, comm, threads: int,
                        quiet: bool) -> tuple[list[MeasuredFrame] | None, list[dict] | None]:
    """Every frame's objects and tracking features (blocks and objects shared over threads or ranks); with
    `divisions` the division features too. Rank 0 gets (frames, feature tables), the others (None, None)."""
    measured = measure_objects(image, _wanted(image), comm, threads, quiet, memory_limit(threads))
    if divisions:
        measured = from_root(comm, measured)
        tables = _division_tables(image, measured, comm, threads, quiet)
        return (measured, tables) if tables is not None else (None, None)
    return measured, None if measured is None else [frame.features for frame in measured]


def solve_image(project: TrackingProject, classifiers: Classifiers, image: ObjectImage, measured: list[MeasuredFrame],
                tables: list[dict], solver: str = "auto") -> TrackingOutcome:
    """Classifiers, traxels, tracking, merger resolution and lineage of one measured time series (rank 0);
    `tables` are the frames' features (with the division features when the project tracks divisions); `solver`
    as `tracking.solve.solve_tracking` takes it."""
    parameters = tracking_parameters(project, tuple(image.raw.shape_tzyxc))
    max_obj = parameters.max_obj
    frames, labels, centers, det, div, keep = [], [], [], [], [], []
    size_range = tuple(float(v) for v in project.parameters["size_range"][:2])
    for t, table in enumerate(tables):
        default = table[DEFAULT_PLUGIN]
        n = len(default["Count"]) - 1
        if not n:
            continue
        _check_width(project, classifiers.count, classifiers.count_features, table, "object count")
        count_p = tracking_features.object_probabilities(table, classifiers.count_features, classifiers.count,
                                                         classifiers.n_count_classes)
        frames.append(np.full(n, t))
        labels.append(np.arange(1, n + 1))
        centers.append(default["RegionCenter"][1:])
        det.append(count_p[1:])
        if classifiers.division is not None:
            _check_width(project, classifiers.division, classifiers.division_features, table, "division")
            div.append(tracking_features.object_probabilities(table, classifiers.division_features,
                                                              classifiers.division, 2)[1:, 1])
        keep.append(filter_traxels(default["Count"][1:, 0], default["Coord<Minimum>"][1:],
                                   default["Coord<Maximum>"][1:], size_range, parameters.x_range,
                                   parameters.y_range, parameters.z_range, max_obj))
    if not frames:
        raise UserError(f"{image.raw.nickname!r} has no objects in any frame: nothing to track")
    keep = np.concatenate(keep)
    traxels = make_traxels(np.concatenate(frames)[keep], np.concatenate(labels)[keep],
                           np.concatenate(centers)[keep], np.concatenate(det)[keep],
                           np.concatenate(div)[keep] if div else None, max_obj=max_obj)
    log.info("%s: %d objects in %d frames, %d kept by the traxel filter", image.raw.nickname, len(keep),
             len(measured), len(traxels))
    result = track(traxels, parameters, solver)
    log.info("%s: tracking energy %.6g (%s)", image.raw.nickname, result.solution.energy, result.solution.solver)
    if project.annotations is not None:
        if _is_project_image(project, image.raw):
            agreement = annotation_agreement(result.tracks, project.annotations.labels, project.annotations.divisions)
            log.info("%s: %s", image.raw.nickname, agreement.summary())
        else:
            log.info("%s: the project's track annotations were made on another image; not compared",
                     image.raw.nickname)
    tracks, mergers = result.tracks, []
    if project.parameters["withMergerResolution"]:
        tracks, mergers = _resolve_mergers(image, measured, tracks)
    lineage = compute_lineage(tracks)
    return TrackingOutcome(tracks, lineage, mergers, float(result.solution.energy))


def _is_project_image(project: TrackingProject, raw: Source) -> bool:
    """Whether `raw` is the project's first image (where its annotations were made): the same t, z, y, x extents
    where the project records them, else the same file."""
    ref = project.lanes[0].roles.get("Raw Data") if project.lanes else None
    if ref is None:
        return False
    if ref.shape is not None:
        stored = dict(zip(ref.axes, ref.shape))
        return all(stored.get(axis, 1) == n for axis, n in zip("tzyx", raw.shape_tzyxc[:4]))
    stored_path = os.path.realpath(ref.path)
    return any(stored_path.startswith(os.path.realpath(path) + os.sep) or stored_path == os.path.realpath(path)
               for path in raw.paths)


def _check_width(project: TrackingProject, forest: ForestEnsemble, selected: FeatureSet, table: dict,
                 what: str) -> None:
    """A forest trained on features this run does not compute (e.g. ilastik 1.2.0's convex-hull features) is
    refused with the names it lacks, and the way out."""
    restricted = tracking_features.computed_selection(selected, table)
    width = feature_matrix(table, restricted).shape[1] if any(restricted.values()) else 0
    if width == forest.n_features:
        return
    missing = [f"{plugin}/{name}" for plugin, names in selected.items() for name in names
               if name not in restricted.get(plugin, {})]
    raise UserError(f"the {what} classifier of {project.path} was trained on {forest.n_features} feature columns, but "
                    f"of the features it selects hpc-ilastik computes {width} columns (not computed: "
                    f"{', '.join(missing) or 'none'}; ilastik {project.ilastik_version}'s feature names); run with "
                    "--retrain to train it anew from the project's labelled objects")


def _resolve_mergers(image: ObjectImage, measured: list[MeasuredFrame],
                     tracks: TrackGraph) -> tuple[TrackGraph, list[ResolvedMerger]]:
    """Merger resolution with each merger's pixel coordinates as ilastik gives them: (x, y, z), x-major order."""
    nodes = mergers_to_resolve(tracks)
    coordinates, keys = {}, {}
    shape_xyz = image.frame_shape[::-1]
    for t in sorted(set(tracks.frame[nodes].tolist())):
        labels_xyz = frame_labels(image, measured[t], t).transpose(2, 1, 0)
        for node in nodes[tracks.frame[nodes] == t]:
            found = np.argwhere(labels_xyz == tracks.label[node])
            coordinates[int(node)] = found.astype(np.float64)
            keys[(t, int(tracks.label[node]))] = np.ravel_multi_index(found.T, shape_xyz)
    max_label = {t: len(frame.objects) for t, frame in enumerate(measured)}
    resolved, splits = resolve_mergers(tracks, coordinates, max_label)
    return resolved, [ResolvedMerger(s.frame, s.label, keys[(s.frame, s.label)], s.pixel_ids) for s in splits]


def plugin_export(image: ObjectImage, measured: list[MeasuredFrame], outcome: TrackingOutcome, tables: list[dict],
                  batch: Batch) -> TrackingExport:
    """What the plugins see (`_create_plugin_export_context`): with resolved mergers the relabelled label image and
    its objects' standard features, else the label image and every computed feature; frames read when asked for."""
    frame_shape = image.frame_shape
    ndim = 2 if frame_shape[0] == 1 else 3
    cache: dict[int, np.ndarray] = {}

    def label_frame(t: int) -> np.ndarray:
        if t not in cache:
            cache.clear()  # plugins walk the frames in order: keep one
            labels = outcome.relabelled(frame_labels(image, measured[t], t), t, (0, 0, 0), frame_shape)
            cache[t] = labels[0] if ndim == 2 else labels
        return cache[t]

    def frame_features(t: int) -> dict[str, dict[str, np.ndarray]]:
        if not outcome.mergers:
            return tables[t]
        new_ids = sorted(int(i) for i in outcome.tracks.label[(outcome.tracks.frame == t)
                                                               & (outcome.tracks.merger_label > 0)])
        return relabelled_features(image, tables[t], label_frame(t), t, new_ids)

    def raw_frame(t: int) -> np.ndarray:
        shape = tuple(image.raw.shape_tzyxc)
        pixels = image.raw.read((slice(t, t + 1),) + tuple(slice(0, n) for n in shape[1:]))[0]
        return pixels[0] if ndim == 2 else pixels

    return TrackingExport(tracks=outcome.tracks, lineage=outcome.lineage, n_frames=len(measured), ndim=ndim,
                          label_frame=label_frame, features=frame_features, raw_frame=raw_frame,
                          bdv_xml=batch.options.export.big_data_viewer_xml_file)


def _targets(image: ObjectImage, batch: Batch, project: TrackingProject) -> list[Target]:
    shape = tuple(image.raw.shape_tzyxc)
    targets = [plan_target(name, name, project, image.raw, batch.export, shape[:4] + (1,), "uint32")
               for name, _ in batch.export.sources]
    check_distinct_paths(targets)
    return targets


def _write_images(project: TrackingProject, image: ObjectImage, measured: list[MeasuredFrame],
                  outcome: TrackingOutcome, batch: Batch, comm, threads: int, quiet: bool) -> list[str]:
    """Tracking-Result, Merger-Result or Object-Identities, block by block (every rank)."""
    targets = _targets(image, batch, project)
    raw = image.raw
    for target in targets:
        target.open(batch.export, raw, image.block_shape, None, comm,
                    fingerprint(project, raw, batch.export, target.name, image.block_shape))
    max_ids = outcome.max_ids(measured)
    maps = {TRACKING_RESULT: outcome.lineage_maps(max_ids), MERGER_RESULT: outcome.lineage_maps(max_ids, True)}

    def write(block: blk.Block) -> None:
        t = block.index[0]
        ids = outcome.relabelled(image.export_ids(block, measured[t]), t, tuple(s.start for s in block.slices[1:4]),
                                 image.frame_shape)
        for target in targets:
            values = ids if target.key == IDENTITIES else maps[target.key][t][ids]
            target.write(block, values[np.newaxis, ..., np.newaxis])

    grid = image.export_grid(targets[0].region)
    progress = Progress(len(grid), unit="blocks", quiet=quiet, label=f"{raw.nickname}: export",
                        total_voxels=sum(block.voxels for block in grid))
    return write_blocks(grid, write, targets, comm, threads, progress, lambda block: (block.voxels,), raw.nickname)


WORKFLOWS_BY_NAME = {name: Workflow(name=name, roles=ROLES[name], run=run) for name in WORKFLOWS}
