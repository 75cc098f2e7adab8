"""The pure core: one block (with halo) of raw data → the requested export source.

Pixel Classification is one `PixelStage`; Autocontext is two, the second seeing the raw channels plus
the first stage's probabilities. Everything here is a function of numpy arrays; no files, no MPI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpc_ilastik.export import simple_segmentation, uncertainty
from hpc_ilastik.features import FeaturePlan, compute_features
from hpc_ilastik.forest import ForestEnsemble


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


def compute_source(raw_zyxc: np.ndarray, stages: list[PixelStage], request: SourceRequest,
                   mask_zyx: np.ndarray | None = None) -> np.ndarray:
    """The export source for one block+halo of raw data (one time point), as (z, y, x, channels).

    Valid on the block itself (the caller crops the halo). `mask_zyx` (Prediction Mask) zeroes the
    probabilities where it is 0, as ilastik does.
    """
    if request.kind == "Labels":
        return np.zeros(raw_zyxc.shape[:3] + (1,), dtype=np.uint8)
    current = raw_zyxc
    probs_per_stage: list[np.ndarray] = []
    last = len(stages) - 1 if request.kind == "All Probabilities" else request.stage
    for index in range(last + 1):
        current = stage_input(raw_zyxc, probs_per_stage[-1] if probs_per_stage else None)
        if index == request.stage and request.kind == "Input":
            return current
        features = compute_features(current, stages[index].plan)
        if index == request.stage and request.kind == "Features":
            return features
        probs = predict(features, stages[index])
        if mask_zyx is not None:
            probs *= (mask_zyx > 0)[..., None]
        probs_per_stage.append(probs)
    if request.kind == "All Probabilities":
        return np.concatenate(probs_per_stage, axis=-1)
    probs = probs_per_stage[request.stage]
    if request.kind == "Probabilities":
        return probs
    if request.kind == "Simple Segmentation":
        return simple_segmentation(probs)
    if request.kind == "Uncertainty":
        return uncertainty(probs)
    raise ValueError(f"unknown export source kind {request.kind!r}")
