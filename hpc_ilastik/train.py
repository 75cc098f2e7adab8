"""`hpc-ilastik train`: a Pixel Classification project (.ilp, readable by ilastik 1.4) from an image and a
label image, without the GUI; features chosen with `--features` (a text spec or a YAML file)."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import yaml

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.training import train_forests
from hpc_ilastik.io.inputs import Source, open_input
from hpc_ilastik.pixel.features import (
    DEFAULT_FEATURE_IDS,
    DEFAULT_SCALES,
    FEATURE_NAMES,
    GUI_MINIMUM_DERIVATIVE_SCALE,
    FeatureSelection,
    compute_features,
    plan_features,
)
from hpc_ilastik.pixel.training import LabelBlock, labelled_features
from hpc_ilastik.project.writer import write_pixel_classification_project
from hpc_ilastik.run import blocks as blk

log = logging.getLogger(__name__)

MAX_LABEL_VALUE = 99  # ilastik's label arrays use 100 as the eraser value
LABEL_BLOCK_VOXELS = 40 ** 3  # ilastik's label blocks aim at ~40³ voxels

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
