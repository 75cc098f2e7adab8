"""`open_project`: any ilastik project, read by the reader of its workflow's groups (its module imported then)."""

from __future__ import annotations

import importlib
import os

import h5py

from hpc_ilastik.errors import UserError
from hpc_ilastik.project.common import Project, damage_is_user_error, open_ilp, read_common
from hpc_ilastik.project.names import AUTOCONTEXT, COUNTING, MULTICUT, PIXEL_CLASSIFICATION, READERS

_SUPPORTED = (f"{PIXEL_CLASSIFICATION}, Autocontext ({AUTOCONTEXT}), Object Classification (every variant), {COUNTING}, "
              f"Multicut ({MULTICUT}), Tracking (conservation and structured learning, from binary or prediction images)")


def open_project(path: str) -> Project:
    """Read an ilastik project; a missing, foreign, damaged or unsupported file raises UserError."""
    if not os.path.exists(path):
        raise UserError(f"The project file {path} does not exist.")
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an ilastik project (.ilp): it is not an HDF5 file.")
    path = os.path.abspath(path)
    with damage_is_user_error(path), open_ilp(path) as f:
        common = read_common(f, path)
        if common.workflow_name not in READERS:
            raise UserError(f"The project {path} uses the ilastik workflow '{common.workflow_name}', which is not "
                            f"supported yet; supported workflows: {_SUPPORTED}.")
        module, reader = READERS[common.workflow_name]
        return getattr(importlib.import_module(f"hpc_ilastik.project.{module}"), reader)(f, common)
