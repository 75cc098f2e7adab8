"""What each supported workflow offers: its export sources and how each maps onto the pipeline."""

from __future__ import annotations

from hpc_ilastik.errors import UserError
from hpc_ilastik.pipeline import SourceRequest

PIXEL_CLASSIFICATION = "Pixel Classification"
AUTOCONTEXT = "AutocontextTwoStage"

_PER_STAGE = ["Probabilities", "Simple Segmentation", "Uncertainty", "Features", "Labels"]


def export_sources(workflow_name: str) -> dict[str, SourceRequest]:
    """The workflow's export source names, in ilastik's order (the first is the default)."""
    if workflow_name == PIXEL_CLASSIFICATION:
        return {kind: SourceRequest(kind, 0) for kind in _PER_STAGE}
    if workflow_name == AUTOCONTEXT:
        sources: dict[str, SourceRequest] = {}
        for stage in (2, 1):
            for kind in _PER_STAGE + ["Input"]:
                sources[f"{kind} Stage {stage}"] = SourceRequest(kind, stage - 1)
        sources["Probabilities All Stages"] = SourceRequest("All Probabilities", 1)
        return sources
    raise UserError(f"workflow {workflow_name!r} is not supported yet (supported: {PIXEL_CLASSIFICATION}, Autocontext)")


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
