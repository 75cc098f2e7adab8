"""What a workflow module provides to the command line: its name, its input roles and its headless run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hpc_ilastik.project.common import Project
from hpc_ilastik.workflows.options import HeadlessOptions


@dataclass(frozen=True)
class Workflow:
    """One headless workflow. `roles` are ilastik's input roles in its order (the first names the outputs;
    `--raw_data` style options are their names in lower case with underscores); `run` processes every
    input of a project of this workflow."""

    name: str
    roles: tuple[str, ...]
    run: Callable[[Project, HeadlessOptions], None]
