"""`run_headless`: open the project and hand it to the module of its workflow."""

from __future__ import annotations

from hpc_ilastik.project.reader import open_project
from hpc_ilastik.workflows import autocontext, object_classification, pixel_classification
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.workflow import Workflow

WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (pixel_classification.WORKFLOW, autocontext.WORKFLOW,
                                                      *object_classification.WORKFLOWS_BY_NAME.values())}


def run_headless(options: HeadlessOptions) -> None:
    """Run a project over its inputs, as `ilastik --headless` does."""
    project = open_project(options.project)  # refuses the workflows that none here runs
    WORKFLOWS[project.workflow_name].run(project, options)
