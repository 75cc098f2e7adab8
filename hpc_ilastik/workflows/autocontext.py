"""Autocontext headless: Pixel Classification with two stages, the second seeing the raw channels plus the
first stage's probabilities; every per-stage export source of ilastik, and all stages' probabilities."""

from __future__ import annotations

from hpc_ilastik.pixel.pipeline import SourceRequest
from hpc_ilastik.project.names import AUTOCONTEXT
from hpc_ilastik.project.pixel_classification import PixelClassificationProject
from hpc_ilastik.workflows import pixel_classification
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.workflow import Workflow


def export_sources() -> dict[str, SourceRequest]:
    """ilastik's Autocontext export sources, in its order (the first is the default)."""
    sources: dict[str, SourceRequest] = {}
    for stage in (2, 1):
        for kind in pixel_classification.PER_STAGE + ("Input",):
            sources[f"{kind} Stage {stage}"] = SourceRequest(kind, stage - 1)
    sources["Probabilities All Stages"] = SourceRequest("All Probabilities", 1)
    return sources


def run(project: PixelClassificationProject, options: HeadlessOptions) -> None:
    """Run the two-stage project over every input."""
    pixel_classification.run(project, options, export_sources())


WORKFLOW = Workflow(name=AUTOCONTEXT, roles=pixel_classification.ROLES, run=run)
