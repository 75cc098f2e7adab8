"""`run_headless`: open the project and hand it to the module of its workflow."""

from __future__ import annotations

from hpc_ilastik.errors import UserError
from hpc_ilastik.project.reader import open_project
from hpc_ilastik.workflows import autocontext, counting, multicut, object_classification, pixel_classification
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.workflow import Workflow

WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (
    pixel_classification.WORKFLOW, autocontext.WORKFLOW, counting.WORKFLOW, multicut.WORKFLOW,
    *object_classification.WORKFLOWS_BY_NAME.values())}
# export options of one kind of workflow: option → (its spelling, the workflows that take it)
_SPECIFIC = {
    "table_filename": ("--table_filename", set(object_classification.WORKFLOWS_BY_NAME), "Object Classification"),
    "csv_export_file": ("--csv-export-file", {counting.WORKFLOW.name}, counting.WORKFLOW.name),
}


def run_headless(options: HeadlessOptions) -> None:
    """Run a project over its inputs, as `ilastik --headless` does."""
    project = open_project(options.project)  # refuses the workflows that none here runs
    for field_name, (flag, workflows, kind) in _SPECIFIC.items():
        if getattr(options.export, field_name) is not None and project.workflow_name not in workflows:
            raise UserError(f"{flag} applies to {kind} projects; {project.path} is a {project.workflow_name} project")
    WORKFLOWS[project.workflow_name].run(project, options)
