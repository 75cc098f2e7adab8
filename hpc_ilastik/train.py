"""Training pixel classifiers without the GUI: `hpc-ilastik train`, and retraining from a project's labels.

Forests are trained with scikit-learn using vigra's defaults as far as scikit-learn has them (gini,
bootstrap of n rows, mtry = round(sqrt(F)), split while a node is impure and holds more than one sample)
and converted to vigra forests, split into sub-forests as ilastik's ParallelVigraRfLazyflowClassifier
does (ilastik-numerics.md §7). Features are computed only around the labelled pixels, block by block.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import yaml
from sklearn.ensemble import RandomForestClassifier

from hpc_ilastik import blocks as blk
from hpc_ilastik.axes import INTERNAL_AXES
from hpc_ilastik.errors import UserError
from hpc_ilastik.features import (
    DEFAULT_FEATURE_IDS,
    DEFAULT_SCALES,
    FEATURE_NAMES,
    GUI_MINIMUM_DERIVATIVE_SCALE,
    FeatureSelection,
    compute_features,
    plan_features,
)
from hpc_ilastik.forest import ForestEnsemble, from_sklearn
from hpc_ilastik.ilp_writer import LabelBlock, write_pixel_classification_project
from hpc_ilastik.inputs import Source, open_input
from hpc_ilastik.pipeline import PixelStage, SourceRequest, compute_source, halo, plan_stages
from hpc_ilastik.project import Project

log = logging.getLogger(__name__)

DEFAULT_TREE_COUNT = 100  # ilastik's ParallelVigraRfLazyflowClassifierFactory(100)
DEFAULT_FOREST_COUNT = 4
MAX_LABEL_VALUE = 99  # ilastik's label arrays use 100 as the eraser value
LABEL_BLOCK_VOXELS = 40 ** 3  # ilastik's label blocks aim at ~40³ voxels
FEATURE_TILE = {2: (1, 512, 512), 3: (32, 128, 128)}  # (z, y, x) per feature computation, 2-D / 3-D images

DEFAULT_SPEC = {
    "GaussianSmoothing": (0.7, 1.6, 3.5),
    "LaplacianOfGaussian": (1.0, 3.5),
    "GaussianGradientMagnitude": (1.6, 5.0),
    "DifferenceOfGaussians": (1.6,),
    "StructureTensorEigenvalues": (1.6, 3.5),
    "HessianOfGaussianEigenvalues": (1.6, 3.5),
}

_ALIASES = {
    "GaussianSmoothing": ("gs", "gaussian", "smoothing"),
    "LaplacianOfGaussian": ("log", "laplacian"),
    "GaussianGradientMagnitude": ("ggm", "gradient", "gradientmagnitude"),
    "DifferenceOfGaussians": ("dog", "difference"),
    "StructureTensorEigenvalues": ("ste", "structuretensor"),
    "HessianOfGaussianEigenvalues": ("hoge", "hessian", "hessianeigenvalues"),
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_FEATURE_BY_NAME = {
    alias: fid
    for fid in DEFAULT_FEATURE_IDS
    for alias in (_squash(fid), _squash(FEATURE_NAMES[fid]), *_ALIASES[fid])
}


def _feature_id(name: str) -> str:
    try:
        return _FEATURE_BY_NAME[_squash(str(name))]
    except KeyError:
        known = ", ".join(f"{fid} ({'/'.join(_ALIASES[fid])})" for fid in DEFAULT_FEATURE_IDS)
        raise UserError(f"Unknown feature {name!r}; known features: {known}.") from None


def _scale_column(value: object, feature_id: str) -> int:
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"Scale {value!r} of {feature_id} is not a number.") from None
    for column, known in enumerate(DEFAULT_SCALES):
        if math.isclose(scale, known, rel_tol=1e-6):
            if feature_id != "GaussianSmoothing" and known < GUI_MINIMUM_DERIVATIVE_SCALE:
                raise UserError(f"{feature_id} is not available at scale {known} (ilastik offers scale "
                                f"{known} for GaussianSmoothing only).")
            return column
    raise UserError(f"Scale {value} of {feature_id} is not one of ilastik's scales "
                    f"{', '.join(str(s) for s in DEFAULT_SCALES)}.")


def _selection(spec: dict[str, Sequence[object]]) -> FeatureSelection:
    """All six ilastik features × the default scales, with the spec's (feature, scale) pairs selected."""
    chosen: set[tuple[int, int]] = set()
    for name, scales in spec.items():
        fid = _feature_id(name)
        row = DEFAULT_FEATURE_IDS.index(fid)
        values = scales if isinstance(scales, (list, tuple)) else [scales]
        if not values:
            raise UserError(f"Feature {name!r} has no scales.")
        chosen.update((row, _scale_column(v, fid)) for v in values)
    if not chosen:
        raise UserError("The feature specification selects no features.")
    matrix = tuple(tuple((i, j) in chosen for j in range(len(DEFAULT_SCALES))) for i in range(len(DEFAULT_FEATURE_IDS)))
    return FeatureSelection(DEFAULT_FEATURE_IDS, DEFAULT_SCALES, matrix)


def _parse_flag(text: str) -> dict[str, list[str]]:
    spec: dict[str, list[str]] = {}
    for entry in filter(None, (part.strip() for part in re.split(r"[;\n]", text))):
        name, sep, scales = entry.partition(":")
        values = [v.strip() for v in scales.split(",") if v.strip()]
        if not sep or not name.strip() or not values:
            raise UserError(f"Cannot read feature entry {entry!r}: write FEATURE:SCALE[,SCALE...], entries separated "
                            "by ';', e.g. 'GaussianSmoothing:0.7,1.6;HessianOfGaussianEigenvalues:1.6,3.5'.")
        spec.setdefault(name.strip(), []).extend(values)
    return spec


def _read_yaml(path: str) -> dict[str, Sequence[object]]:
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except OSError as exc:
        raise UserError(f"Cannot read the feature file {path}: {exc.strerror or exc}.") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"The feature file {path} is not valid YAML: {exc}.") from exc
    if not isinstance(spec, dict):
        raise UserError(f"The feature file {path} must map feature names to lists of scales, "
                        "e.g. 'GaussianSmoothing: [0.7, 1.6]'.")
    return spec


def parse_feature_spec(text_or_yaml_path: str | None) -> FeatureSelection:
    """A feature selection from `--features`: None (a sensible default set), a YAML file mapping features to
    scales, or 'Feature:s1,s2;Feature:s3'. Features by ilastik id, display name or short alias (gs, log,
    ggm, dog, ste, hoge); scales from ilastik's grid 0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0."""
    if text_or_yaml_path is None:
        return _selection(DEFAULT_SPEC)  # type: ignore[arg-type]
    text = text_or_yaml_path.strip()
    if text.lower().endswith((".yaml", ".yml")) or os.path.isfile(text):
        return _selection(_read_yaml(text))
    return _selection(_parse_flag(text))


def training_set(features_zyxF: np.ndarray, labels_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 (n, F), y uint32 (n,)) of the labelled pixels (label > 0), in C order."""
    if features_zyxF.shape[:-1] != labels_zyx.shape:
        raise ValueError(f"features {features_zyxF.shape} and labels {labels_zyx.shape} do not match")
    mask = labels_zyx > 0
    return features_zyxF[mask].astype(np.float32), labels_zyx[mask].astype(np.uint32)


def split_trees(tree_count: int, n_forests: int) -> list[int]:
    """ilastik's split of the trees over sub-forests: as even as possible, the first ones one larger."""
    n = max(1, min(n_forests, tree_count))
    return [tree_count // n + (1 if i < tree_count % n else 0) for i in range(n)]


def train_forests(X: np.ndarray, y: np.ndarray, tree_count: int = DEFAULT_TREE_COUNT,
                  n_forests: int = DEFAULT_FOREST_COUNT, seed: int | None = None) -> ForestEnsemble:
    """Train `tree_count` trees in `n_forests` sub-forests (ilastik's Forest0000, Forest0001, …)."""
    if tree_count < 1:
        raise UserError(f"The tree count must be at least 1, got {tree_count}.")
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.uint32)
    if X.ndim != 2 or len(X) != len(y) or not len(y):
        raise ValueError(f"need matching non-empty X (n, F) and y (n,), got {X.shape} and {y.shape}")
    mtry = max(1, int(math.floor(math.sqrt(X.shape[1]) + 0.5)))  # vigra's RF_SQRT
    seeds = np.random.SeedSequence(seed).generate_state(n_forests)
    forests = []
    for trees, forest_seed in zip(split_trees(tree_count, n_forests), seeds):
        model = RandomForestClassifier(n_estimators=trees, criterion="gini", max_features=mtry, bootstrap=True,
                                       min_samples_split=2, min_samples_leaf=1, n_jobs=-1,
                                       random_state=int(forest_seed))
        model.fit(X, y)
        forests.append(from_sklearn(model))
    return ForestEnsemble(forests=forests, known_labels=np.unique(y).astype(np.uint32))


def _tiles_with_labels(label_blocks: Sequence[LabelBlock], shape_tzyxc: tuple[int, ...]) -> dict[tuple, np.ndarray]:
    """The tiles of a FEATURE_TILE grid (one time point each) that hold labels → the tile's labels (t, z, y, x).

    Label blocks are pasted into the tiles they overlap, so nearby small blocks share one feature computation.
    """
    tile = (1,) + FEATURE_TILE[2 if shape_tzyxc[1] == 1 else 3]
    tiles: dict[tuple, np.ndarray] = {}
    for slices, labels in label_blocks:
        ranges = [range(s.start // n, (s.stop - 1) // n + 1) for s, n in zip(slices[:4], tile)]
        for index in itertools.product(*ranges):
            bounds = [slice(i * n, min((i + 1) * n, size)) for i, n, size in zip(index, tile, shape_tzyxc)]
            overlap = [slice(max(b.start, s.start), min(b.stop, s.stop)) for b, s in zip(bounds, slices)]
            piece = labels[tuple(slice(o.start - s.start, o.stop - s.start) for o, s in zip(overlap, slices)) + (0,)]
            if not piece.any():
                continue
            target = tiles.setdefault(index, np.zeros([b.stop - b.start for b in bounds], dtype=np.uint8))
            view = target[tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(overlap, bounds))]
            np.copyto(view, piece, where=piece > 0)
    return tiles


def labelled_features(read: Callable[[tuple[slice, ...]], np.ndarray], shape_tzyxc: tuple[int, ...],
                      label_blocks: Sequence[LabelBlock], features_of: Callable[[np.ndarray], np.ndarray],
                      halo_zyx: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of every labelled pixel: features computed tile by tile, on tile + halo, where there are labels.

    `read` gives a tzyxc region of the image, `features_of` maps a zyxc array to (z, y, x, F) features
    valid wherever the halo is available (the image border counts as available).
    """
    xs, ys = [], []
    tile_shape = (1,) + FEATURE_TILE[2 if shape_tzyxc[1] == 1 else 3] + (shape_tzyxc[4],)
    for index, labels in sorted(_tiles_with_labels(label_blocks, shape_tzyxc).items()):
        slices = tuple(slice(i * n, i * n + size) for i, n, size in zip(index, tile_shape, labels.shape))
        tile = blk.Block(0, index + (0,), slices + (slice(0, shape_tzyxc[4]),), slices + (slice(0, shape_tzyxc[4]),))
        read_slices, crop = blk.read_region(tile, halo_zyx, shape_tzyxc)
        features = features_of(read(read_slices)[0])[crop[1:4]]
        x, y = training_set(features, labels[0])
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.uint32)
    return np.concatenate(xs), np.concatenate(ys)


# ---- the `train` command ---------------------------------------------------------------------------------


def _label_block_shape(shape_tzyxc: tuple[int, ...]) -> tuple[int, ...]:
    """~LABEL_BLOCK_VOXELS per block over the image's non-singleton spatial axes, one time point, one channel."""
    spatial = [n for n in shape_tzyxc[1:4] if n > 1]
    side = max(1, round(LABEL_BLOCK_VOXELS ** (1 / max(len(spatial), 1))))
    return (1,) + tuple(min(n, side) for n in shape_tzyxc[1:4]) + (1,)


def label_blocks_from_image(labels: Source) -> list[LabelBlock]:
    """The non-empty label blocks of a label image (bounding boxes within ilastik-sized blocks), checked."""
    shape = labels.shape_tzyxc
    if shape[4] != 1:
        raise UserError(f"The label image must have one channel; it has {shape[4]} (axes {labels.axes}).")
    kind = np.dtype(labels.dtype).kind
    if kind not in "iuf":
        raise UserError(f"The label image has pixel type {labels.dtype}; it needs integer class values.")
    found: list[LabelBlock] = []
    for block in blk.plan_blocks(shape, _label_block_shape(shape)):
        values = labels.read(block.slices)
        if kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
            raise UserError("The label image holds non-integer values; classes must be 0 (unlabelled) or 1, 2, ….")
        if values.min() < 0 or values.max() > MAX_LABEL_VALUE:
            raise UserError(f"Label values must lie in 0..{MAX_LABEL_VALUE} (0 = unlabelled; ilastik reserves 100 for "
                            f"its eraser); the label image holds {values.min()}..{values.max()}.")
        nonzero = np.nonzero(values)
        if not nonzero[0].size:
            continue
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in nonzero)
        image_box = tuple(slice(s.start + b.start, s.start + b.stop) for s, b in zip(block.slices, box))
        found.append((image_box, values[box].astype(np.uint8)))
    return found


def _labels_axes(raw_axes: str | None, labels_spec: str, raw: Source) -> str | None:
    """Axes for the label image: --input_axes as given, or without its channel when the labels lack one."""
    if raw_axes is None:
        return None
    probe = open_input(labels_spec)
    if len(probe.shape) == len(raw_axes):
        return raw_axes
    if len(probe.shape) == len(raw_axes) - 1 and "c" in raw_axes:
        return raw_axes.replace("c", "")
    raise UserError(f"The label image has shape {tuple(probe.shape)}, which does not fit the axes {raw_axes} "
                    f"of the raw image {tuple(raw.shape)}.")


def train_command(raw: str, labels: str, features: str | None, tree_count: int, output: str,
                  raw_axes: str | None, store_inside: bool, seed: int = 0) -> None:
    """`hpc-ilastik train`: features → random forest → a Pixel Classification project ilastik 1.4 can open."""
    source = open_input(raw, axes=raw_axes)
    label_source = open_input(labels, axes=_labels_axes(raw_axes, labels, source))
    shape = source.shape_tzyxc
    if label_source.shape_tzyxc[:4] != shape[:4]:
        raise UserError(f"The label image ({label_source.axes} {tuple(label_source.shape)}) does not match the raw "
                        f"image ({source.axes} {tuple(source.shape)}): they need the same t, z, y and x sizes.")
    selection = parse_feature_spec(features)
    selection = replace(selection, compute_in_2d=(shape[1] == 1,) * len(selection.scales))
    plan = plan_features(selection, shape[1:4], shape[4])

    blocks = label_blocks_from_image(label_source)
    X, y = labelled_features(source.read, shape, blocks, partial(compute_features, plan=plan), plan.halo)
    classes = np.unique(y)
    if len(classes) < 2:
        raise UserError(f"The label image needs pixels of at least two classes to train on; it has "
                        f"{'none' if not len(classes) else 'only class ' + str(int(classes[0]))}.")
    log.info("training %d trees on %d labelled pixels (%s) with %d features", tree_count, len(y),
             ", ".join(f"class {int(c)}: {int((y == c).sum())}" for c in classes), plan.n_channels_out)
    ensemble = train_forests(X, y, tree_count, seed=seed)
    write_pixel_classification_project(
        output, raw=source, store_data_inside=store_inside, raw_file_path=raw,
        labels_tzyxc=blocks, selection=selection, ensemble=ensemble,
        label_names=[f"Label {k}" for k in range(1, int(classes.max()) + 1)], feature_names=plan.names,
    )
    log.info("wrote %s", output)


# ---- retraining from a project's labels ----------------------------------------------------------------------


def retrain_stage(project: Project, stage_index: int, tree_count: int = DEFAULT_TREE_COUNT, *,
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
        source = _training_image(project, lane_index)
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


def _planned_stages(project: Project, stage_index: int, shape_tzyxc: tuple[int, ...],
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


def _training_image(project: Project, lane_index: int) -> Source:
    """The lane's training image (`Raw Data`, else its first role) opened with the axes the project records.

    A PNG-like file that ilastik recorded with an extra channel axis (yx file, `yxc` in the project) keeps
    the file's own axes; the tzyxc view is the same.
    """
    roles = project.lanes[lane_index].roles
    ref = roles.get("Raw Data") or next((r for r in roles.values() if r is not None), None)
    if ref is None:
        raise UserError(f"Lane {lane_index + 1} of {project.path} has labels but no training image to compute "
                        "features from.")
    spec = f"{project.path}/{ref.path.lstrip('/')}" if ref.location == "ProjectInternal" else ref.path
    try:
        source = open_input(spec)
        if ref.axes and ref.axes != source.axes and len(ref.axes) == len(source.shape):
            source = open_input(spec, axes=ref.axes)
    except UserError as exc:
        raise UserError(f"Training needs the image '{ref.nickname}' of lane {lane_index + 1} of {project.path}, "
                        f"which cannot be read: {exc}") from exc
    recorded = dict(zip(ref.axes, ref.shape or ()))
    if ref.shape is not None and tuple(recorded.get(key, 1) for key in INTERNAL_AXES) != source.shape_tzyxc:
        raise UserError(f"The training image {spec} ({source.axes} {tuple(source.shape)}) is not the one the project "
                        f"was trained on ({ref.axes} {tuple(ref.shape)}).")
    return source
