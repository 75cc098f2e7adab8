"""The pure core: one block (with halo) of raw data → the requested export source.

Pixel Classification is one `PixelStage`; Autocontext is two, the second seeing the raw channels plus
the first stage's probabilities. Everything here is a function of numpy arrays; no files, no MPI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.pixel.features import FeaturePlan, FeatureSelection, compute_features, plan_features
from hpc_ilastik.pixel.filters import full_region, grow_region, region_slices, relative_region


@dataclass(frozen=True)
class PixelStage:
    """One trained pixel classifier resolved for an image: feature plan, forests, class count."""

    plan: FeaturePlan
    ensemble: ForestEnsemble | None
    n_classes: int


@dataclass(frozen=True)
class SourceRequest:
    """What to export: `kind` is Probabilities, Simple Segmentation, Uncertainty, Features, Labels,
    Input or All Probabilities; `stage` indexes the stages (0-based)."""

    kind: str
    stage: int


def plan_stages(selections: list[FeatureSelection], class_counts: list[int],
                ensembles: list[ForestEnsemble | None], shape_tzyxc: tuple[int, ...]) -> list[PixelStage]:
    """Stages planned for an image of this shape: stage k sees the raw channels plus the class channels
    of stage k-1 (Autocontext)."""
    stages: list[PixelStage] = []
    n_channels = shape_tzyxc[4]
    for selection, n_classes, ensemble in zip(selections, class_counts, ensembles):
        stages.append(PixelStage(plan_features(selection, tuple(shape_tzyxc[1:4]), n_channels), ensemble, n_classes))
        n_channels = shape_tzyxc[4] + n_classes
    return stages


def halo(stages: list[PixelStage], last_stage: int) -> tuple[int, int, int]:
    """(z, y, x) context a block needs so that stages 0..last_stage are exact on it."""
    total = np.zeros(3, dtype=int)
    for stage in stages[: last_stage + 1]:
        total += np.asarray(stage.plan.halo)
    return tuple(int(v) for v in total)  # type: ignore[return-value]


def predict(features_zyxf: np.ndarray, stage: PixelStage) -> np.ndarray:
    """Per-pixel class probabilities (z, y, x, n_classes) float32 from a feature block."""
    if stage.ensemble is None:
        raise ValueError("stage has no classifier")
    z, y, x, f = features_zyxf.shape
    probs = stage.ensemble.predict_proba(features_zyxf.reshape(-1, f), stage.n_classes)
    return probs.reshape(z, y, x, stage.n_classes)


def stage_input(raw_zyxc: np.ndarray, previous_probs: np.ndarray | None) -> np.ndarray:
    """Input of a stage: the raw channels, plus the previous stage's probabilities in the raw dtype.

    ilastik's Autocontext (`DtypeConvertFunction`) converts probabilities to the raw dtype: integer
    types become `((max - min)·p - min)` in float32, truncated (255·p for uint8); float types keep p.
    """
    if previous_probs is None:
        return raw_zyxc
    dtype = raw_zyxc.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        scaled = np.float32(int(info.max) - int(info.min)) * previous_probs - np.float32(info.min)
        converted = scaled.astype(dtype)
    else:
        converted = previous_probs.astype(dtype)
    return np.concatenate([raw_zyxc, converted], axis=-1)


def needed_stage(request: SourceRequest, n_stages: int) -> int:
    """The last stage a request needs (-1: none)."""
    if request.kind == "Labels":
        return -1
    return n_stages - 1 if request.kind == "All Probabilities" else request.stage


def compute_sources(raw_zyxc: np.ndarray, stages: list[PixelStage], requests: list[SourceRequest],
                    mask_zyx: np.ndarray | None = None, crop: tuple[slice, ...] | None = None) -> list[np.ndarray]:
    """Several export sources for one block+halo of raw data (one time point), each (z, y, x, channels),
    from one computation: every stage's features and probabilities are computed at most once.

    Valid on the block itself: with `crop` (slices of the block's z, y, x) only that part is computed and
    returned, each stage only where the crop and the later stages need it (the forests never see the
    halo); without, the whole array (the caller crops the halo). `mask_zyx` (Prediction Mask) zeroes the
    probabilities where it is 0, as ilastik does.
    """
    last = max((needed_stage(r, len(stages)) for r in requests), default=-1)
    shape = raw_zyxc.shape[:3]
    target = full_region(shape) if crop is None else tuple(s.indices(n)[:2] for s, n in zip(crop, shape))
    regions = [grow_region(target, halo(stages[index + 1:], last - index - 1), shape) for index in range(last + 1)]
    inputs: list[np.ndarray] = []
    features: dict[int, np.ndarray] = {}
    probs: list[np.ndarray] = []
    covered = [full_region(shape)] + regions  # what stage i's input covers
    for index in range(last + 1):
        inputs.append(stage_input(raw_zyxc[region_slices(covered[index])], probs[-1] if probs else None))
        wanted = {r.kind for r in requests if needed_stage(r, len(stages)) == index}
        if index == last and wanted <= {"Input"}:
            break
        stage_features = compute_features(inputs[-1], stages[index].plan,
                                          region_slices(relative_region(regions[index], covered[index])))
        if "Features" in wanted:
            features[index] = stage_features[region_slices(relative_region(target, regions[index]))]
        if index == last and wanted <= {"Input", "Features"}:
            break
        stage_probs = predict(stage_features, stages[index])
        if mask_zyx is not None:
            stage_probs *= (mask_zyx[region_slices(regions[index])] > 0)[..., None]
        probs.append(stage_probs)
    inputs = [x[region_slices(relative_region(target, c))] for x, c in zip(inputs, covered)]
    probs = [p[region_slices(relative_region(target, r))] for p, r in zip(probs, regions)]
    return [_derive(request, tuple(hi - lo for lo, hi in target), inputs, features, probs) for request in requests]


def compute_source(raw_zyxc: np.ndarray, stages: list[PixelStage], request: SourceRequest,
                   mask_zyx: np.ndarray | None = None) -> np.ndarray:
    """One export source for one block+halo of raw data (see `compute_sources`)."""
    return compute_sources(raw_zyxc, stages, [request], mask_zyx)[0]


def _derive(request: SourceRequest, shape_zyx: tuple[int, ...], inputs: list[np.ndarray],
            features: dict[int, np.ndarray], probs: list[np.ndarray]) -> np.ndarray:
    kind, stage = request.kind, request.stage
    if kind == "Labels":
        return np.zeros(tuple(shape_zyx) + (1,), dtype=np.uint8)
    if kind == "Input":
        return inputs[stage]
    if kind == "Features":
        return features[stage]
    if kind == "All Probabilities":
        return np.concatenate(probs, axis=-1)
    if kind == "Probabilities":
        return probs[stage]
    if kind == "Simple Segmentation":
        return simple_segmentation(probs[stage])
    if kind == "Uncertainty":
        return uncertainty(probs[stage])
    raise ValueError(f"unknown export source kind {kind!r}")


def simple_segmentation(probabilities: np.ndarray) -> np.ndarray:
    """ilastik's Simple Segmentation: argmax over the channel axis + 1, uint8, one channel."""
    return (np.argmax(probabilities, axis=-1) + 1).astype(np.uint8)[..., np.newaxis]


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """ilastik's Uncertainty: 1 − (highest − second-highest probability), float32, one channel; 0 for one class."""
    if probabilities.shape[-1] < 2:
        return np.zeros(probabilities.shape[:-1] + (1,), dtype=np.float32)
    top2 = np.partition(probabilities.astype(np.float32, copy=False), -2, axis=-1)[..., -2:]
    return (np.float32(1) - (top2[..., 1:] - top2[..., :1])).astype(np.float32)
