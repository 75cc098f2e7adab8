"""The groups of a Cell Density Counting project: its pixel features (`FeatureSelections`), the `Counting`
group (label names, dot and brush labels, σ, the regressors) and the export settings (`Density Export`).

The regressors are Python pickles of ilastik's `SVR` wrapper around scikit-learn forests
(ilastik-workflows-spec.md §B). They are read with `io.pickles` (never unpickled): a pickle that cannot be
read at all (ilastik 1.3's are truncated) leaves the project without regressors, as ilastik then
retrains; a readable pickle of anything but ilastik's random-forest `SVR` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.regression import RegressionForest, from_pickled
from hpc_ilastik.io.axes import parse_axistags
from hpc_ilastik.io.pickles import Call, is_global, read_pickle
from hpc_ilastik.pixel.features import FeatureSelection
from hpc_ilastik.project.common import (
    DatasetRef,
    Project,
    damage_is_user_error,
    open_ilp,
    read_export_settings,
    read_list,
    read_text,
)
from hpc_ilastik.project.pixel_classification import read_features, read_label_block

DEFAULT_SIGMA = 2.5  # ilastik's SVR() default, used when the project stores no Sigma
_EXPORT_GROUP = "Density Export"
_SVR = ("ilastik.applets.counting.countingsvr", "SVR")
# ilastik's allowed internal orders (countingWorkflow.py): the first that holds an image's non-singleton axes
_ORDERS = ("xyc", "xzc", "yxc", "yzc", "zxc", "zyc")

LabelBlock = tuple[tuple[slice, ...], np.ndarray]  # (tzyxc slices in the image, uint8 tzyxc labels)


@dataclass(frozen=True)
class CountingProject(Project):
    """A Cell Density Counting project."""

    features: FeatureSelection
    label_names: list[str]
    sigma: float
    regressors: list[RegressionForest]  # the stored ones in wrapper order; empty: retrain from the labels
    unreadable: str | None              # why stored regressors could not be read (None: read, or none stored)
    csv_path: str | None                # the counts file stored in the export settings
    label_axes: tuple[str | None, ...] = field(default=(), repr=False)  # each lane's stored label order

    def labels(self, lane_index: int) -> list[LabelBlock]:
        """The lane's stored dot (1) and brush (2) labels, read on demand."""
        with damage_is_user_error(self.path), open_ilp(self.path) as f:
            group = f.get(f"Counting/LabelSets/labels{lane_index}")
            if group is None or self.label_axes[lane_index] is None:
                return []
            return [read_label_block(group[k], _block_axes(group[k], self.label_axes[lane_index]), self.path)
                    for k in sorted(group)]


def internal_order(axes: str, shape: tuple[int, ...] | None) -> str | None:
    """ilastik's internal axis order of a counting image (None: no allowed order holds it, e.g. 3-D)."""
    sizes = dict(zip(axes, shape)) if shape is not None and len(shape) == len(axes) else {}
    required = {a for a in axes if a != "c" and sizes.get(a, 2) > 1}
    return next((order for order in _ORDERS if required <= set(order)), None)


def read_counting(f: h5py.File, common: Project) -> CountingProject:
    """The counting groups of an open project."""
    group = f.get("Counting")
    if group is None:
        raise UserError(f"The project {common.path} has no Counting group; it is incomplete.")
    export = f.get(_EXPORT_GROUP)
    common = replace(common, export_settings=read_export_settings(export))
    regressors, unreadable = _regressors(group.get("CountingWrappers"), common.path)
    sigma = float(np.ravel(group["Sigma"][()])[0]) if "Sigma" in group else DEFAULT_SIGMA
    return CountingProject(
        **{slot.name: getattr(common, slot.name) for slot in fields(common)},
        features=read_features(f.get("FeatureSelections")),
        label_names=[str(name) for name in read_list(group, "LabelNames") or []],
        sigma=sigma, regressors=regressors, unreadable=unreadable,
        csv_path=read_text(export["CsvFilepath"]) or None if export is not None and "CsvFilepath" in export else None,
        label_axes=tuple(_lane_order(lane.roles.get("Raw Data")) for lane in common.lanes),
    )


def _lane_order(ref: DatasetRef | None) -> str | None:
    return None if ref is None else internal_order(ref.axes, ref.shape)


def _block_axes(block: h5py.Dataset, lane_order: str) -> str:
    """A label block's axis order: its own axistags where stored, else the lane's internal order."""
    return parse_axistags(block.attrs["axistags"]) if "axistags" in block.attrs else lane_order


def _regressors(group: h5py.Group | None, path: str) -> tuple[list[RegressionForest], str | None]:
    """The stored regressors, one per wrapper; ([], why) when a wrapper cannot be read (ilastik retrains)."""
    if group is None or not len(group):
        return [], None
    forests = []
    for name in sorted(group):
        what = f"the counting regressor {name} of {path}"
        data = np.asarray(group[name][()]).ravel()
        raw = data[0].tobytes() if data.size else b""
        try:
            value = read_pickle(raw, what)
        except UserError:
            return [], f"{name} is a truncated or damaged pickle of {len(raw)} bytes"
        forests.append(_svr_forest(value, what))
    return forests, None


def _svr_forest(value: object, what: str) -> RegressionForest:
    """The scikit-learn forest inside ilastik's pickled `SVR` wrapper; UserError for anything else."""
    if not (isinstance(value, Call) and is_global(value.function, *_SVR) and isinstance(value.state, dict)):
        kind = f"a pickled {value.function}" if isinstance(value, Call) else f"a pickled {type(value).__name__}"
        raise UserError(f"{what} is {kind}, not ilastik's counting regressor ({'.'.join(_SVR)}); refusing the "
                        "project (a project file is never unpickled)")
    method = value.state.get("_method")
    if method != "RandomForest":
        raise UserError(f"{what} uses the method {method!r}; hpc-ilastik runs ilastik's default 'RandomForest' only "
                        "(the 'svrBoxed-gurobi' regressor needs the commercial Gurobi solver)")
    inner = value.state.get("_regressor")
    if not isinstance(inner, list) or len(inner) != 1 or inner[0] is None:
        raise UserError(f"{what} holds {len(inner) if isinstance(inner, list) else 'no'} trained forest(s) where "
                        "ilastik stores one; retrain the project in ilastik")
    try:
        return from_pickled(inner[0], what)
    except ValueError as exc:
        raise UserError(f"{exc}; the project is damaged or was not written by ilastik") from None
