"""`run_headless`: open the project and hand it to the module of its workflow (imported then, as the project's
reader is: each workflow brings its own libraries and kernels, e.g. scipy.ndimage for objects, which a pixel run
never loads)."""

from __future__ import annotations

import importlib

from hpc_ilastik.errors import UserError
from hpc_ilastik.project.names import (
    AUTOCONTEXT,
    COUNTING,
    MULTICUT,
    OBJECT_CLASSIFICATION,
    PIXEL_CLASSIFICATION,
    TRACKING,
)
from hpc_ilastik.project.reader import open_project
from hpc_ilastik.workflows.options import HeadlessOptions
from hpc_ilastik.workflows.workflow import Workflow

# workflowName → the module of hpc_ilastik.workflows that runs it
MODULES: dict[str, str] = {
    PIXEL_CLASSIFICATION: "pixel_classification", AUTOCONTEXT: "autocontext", COUNTING: "counting",
    MULTICUT: "multicut", **{name: "object_classification" for name in OBJECT_CLASSIFICATION},
    **{name: "tracking" for name in TRACKING}}
# export options of one kind of workflow: option → (its spelling, the workflows that take it)
_SPECIFIC = {
    "table_filename": ("--table_filename", set(OBJECT_CLASSIFICATION), "Object Classification"),
    "csv_export_file": ("--csv-export-file", {COUNTING}, COUNTING),
    "export_plugin": ("--export_plugin", set(TRACKING), "Tracking"),
    "big_data_viewer_xml_file": ("--big_data_viewer_xml_file", set(TRACKING), "Tracking"),
}


def workflow(name: str) -> Workflow:
    """The workflow a project names (its module imported now)."""
    module = importlib.import_module(f"hpc_ilastik.workflows.{MODULES[name]}")
    return getattr(module, "WORKFLOWS_BY_NAME", {}).get(name) or module.WORKFLOW


def run_headless(options: HeadlessOptions) -> None:
    """Run a project over its inputs, as `ilastik --headless` does."""
    project = open_project(options.project)  # refuses the workflows that none here runs
    for field_name, (flag, workflows, kind) in _SPECIFIC.items():
        if getattr(options.export, field_name) is not None and project.workflow_name not in workflows:
            raise UserError(f"{flag} applies to {kind} projects; {project.path} is a {project.workflow_name} project")
    workflow(project.workflow_name).run(project, options)
