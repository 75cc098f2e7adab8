"""`open_project`: any ilastik project, read by the reader of its workflow's groups."""

from __future__ import annotations

import os
from collections.abc import Callable

import h5py

from hpc_ilastik.errors import UserError
from hpc_ilastik.project.common import Project, damage_is_user_error, open_ilp, read_common
from hpc_ilastik.project.counting import COUNTING, read_counting
from hpc_ilastik.project.multicut import MULTICUT, read_multicut
from hpc_ilastik.project.object_classification import WORKFLOWS as OBJECT_CLASSIFICATION
from hpc_ilastik.project.object_classification import read_object_classification
from hpc_ilastik.project.pixel_classification import AUTOCONTEXT, PIXEL_CLASSIFICATION, read_pixel_classification
from hpc_ilastik.project.tracking import WORKFLOWS as TRACKING
from hpc_ilastik.project.tracking import read_tracking

# workflowName → the reader of that workflow's groups
_READERS: dict[str, Callable[[h5py.File, Project], Project]] = {
    PIXEL_CLASSIFICATION: read_pixel_classification,
    AUTOCONTEXT: read_pixel_classification,
    **{name: read_object_classification for name in OBJECT_CLASSIFICATION},
    COUNTING: read_counting,
    MULTICUT: read_multicut,
    **{name: read_tracking for name in TRACKING},
}
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
        reader = _READERS.get(common.workflow_name)
        if reader is None:
            raise UserError(f"The project {path} uses the ilastik workflow '{common.workflow_name}', which is not "
                            f"supported yet; supported workflows: {_SUPPORTED}.")
        return reader(f, common)
