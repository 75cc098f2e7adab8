"""ilastik 1.4's pixel feature bank with fastfilters' numerics (ilastik-numerics.md §1-§5).

A `FeatureSelection` is what a project stores; `plan_features` resolves it for one image (2-D/3-D
per scale, channel order and names, halo); `compute_features` fills the feature stack of one
block. For every selected scale s each input channel is presmoothed once with
sqrt(s² - 1) (s > 1) or s (s <= 1), window 3.5, rounded to float32; every feature of that scale
is then taken from it at sigma_f = min(s, 1) with window 2.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from hpc_ilastik.errors import UserError
from hpc_ilastik.pixel.filters import (
    Region,
    derivative_bank,
    eigenvalues,
    full_region,
    gaussian_smoothing,
    gradient,
    gradient_orders,
    grow_region,
    hessian_orders,
    relative_region,
    sum_x_first,
)
from hpc_ilastik.pixel.kernels import FEATURE_WINDOW, PRESMOOTH_WINDOW, kernel_radius

logger = logging.getLogger(__name__)

FEATURE_NAMES = {
    "GaussianSmoothing": "Gaussian Smoothing",
    "LaplacianOfGaussian": "Laplacian of Gaussian",
    "GaussianGradientMagnitude": "Gaussian Gradient Magnitude",
    "DifferenceOfGaussians": "Difference of Gaussians",
    "StructureTensorEigenvalues": "Structure Tensor Eigenvalues",
    "HessianOfGaussianEigenvalues": "Hessian of Gaussian Eigenvalues",
}
DEFAULT_FEATURE_IDS = tuple(FEATURE_NAMES)
DEFAULT_SCALES = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
EIGENVALUE_FEATURES = frozenset({"StructureTensorEigenvalues", "HessianOfGaussianEigenvalues"})
DOG_RATIO = 0.66  # DoG = GS(sigma_f) - GS(0.66 sigma_f)
GUI_MINIMUM_DERIVATIVE_SCALE = 0.7  # ilastik's GUI offers 0.3 only for Gaussian Smoothing


@dataclass(frozen=True)
class FeatureSelection:
    """The `FeatureSelections` group of a project: rows = feature_ids, columns = scales."""

    feature_ids: tuple[str, ...]
    scales: tuple[float, ...]
    matrix: tuple[tuple[bool, ...], ...]
    compute_in_2d: tuple[bool, ...] | None = None  # None (or empty) = absent in the file

    def __post_init__(self) -> None:
        unknown = [f for f in self.feature_ids if f not in FEATURE_NAMES]
        if unknown:
            raise UserError(f"Unknown pixel feature {unknown[0]!r}; known features: {', '.join(FEATURE_NAMES)}.")
        if len(self.matrix) != len(self.feature_ids) or any(len(row) != len(self.scales) for row in self.matrix):
            raise UserError(
                f"The feature selection matrix must have {len(self.feature_ids)} rows (features) and "
                f"{len(self.scales)} columns (scales)."
            )
        if self.compute_in_2d and len(self.compute_in_2d) != len(self.scales):
            raise UserError(f"ComputeIn2d must have one entry per scale ({len(self.scales)}).")
        if not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise UserError(f"Feature scales must be positive numbers, got {list(self.scales)}.")

    @classmethod
    def from_arrays(
        cls, feature_ids: ArrayLike, scales: ArrayLike, matrix: ArrayLike, compute_in_2d: ArrayLike | None = None
    ) -> "FeatureSelection":
        """Build from what HDF5 gives (bytes ids, numpy arrays)."""
        ids = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in np.ravel(feature_ids))
        in_2d = None if compute_in_2d is None else tuple(bool(v) for v in np.ravel(compute_in_2d))
        return cls(
            feature_ids=ids,
            scales=tuple(float(s) for s in np.ravel(scales)),
            matrix=tuple(tuple(bool(v) for v in np.ravel(row)) for row in np.asarray(matrix)),
            compute_in_2d=in_2d or None,
        )

    @classmethod
    def default(cls, compute_in_2d: tuple[bool, ...] | None = None) -> "FeatureSelection":
        """Every feature at every default scale the GUI offers (derivatives from sigma 0.7 on)."""
        matrix = tuple(
            tuple(fid == "GaussianSmoothing" or s >= GUI_MINIMUM_DERIVATIVE_SCALE for s in DEFAULT_SCALES)
            for fid in DEFAULT_FEATURE_IDS
        )
        return cls(DEFAULT_FEATURE_IDS, DEFAULT_SCALES, matrix, compute_in_2d)

    def resolved_in_2d(self, z_size: int) -> tuple[bool, ...]:
        """ComputeIn2d per scale; when absent: all True for a 2-D image (z == 1), else all False."""
        if self.compute_in_2d:
            return self.compute_in_2d
        return (z_size == 1,) * len(self.scales)

    def selected_columns(self) -> list[int]:
        """Indices of the scales with at least one selected feature."""
        return [j for j in range(len(self.scales)) if any(row[j] for row in self.matrix)]


@dataclass(frozen=True)
class ScaleStep:
    """How one selected scale column is computed; axes index the (z, y, x) block."""

    column: int
    scale: float
    presmooth_sigma: float
    feature_sigma: float
    presmooth_axes: tuple[int, ...]
    feature_axes: tuple[int, ...]


@dataclass(frozen=True)
class FeatureOutput:
    """One selected (feature, scale): channels first_channel + c·n_channels + k for input channel c."""

    feature_id: str
    column: int
    first_channel: int
    n_channels: int


@dataclass(frozen=True)
class FeaturePlan:
    """A selection resolved for one image shape and channel count."""

    image_shape_zyx: tuple[int, int, int]
    n_input_channels: int
    steps: tuple[ScaleStep, ...]
    outputs: tuple[FeatureOutput, ...]
    n_channels_out: int
    halo: tuple[int, int, int]
    names: list[str]


def presmoothing_sigma(scale: float) -> float:
    """Sigma of the presmoothing for an ilastik scale."""
    return math.sqrt(scale * scale - 1.0) if scale > 1.0 else scale


def feature_sigma(scale: float) -> float:
    """Sigma of the feature filters applied to the presmoothed image."""
    return min(scale, 1.0)


def invalid_scales(sel: FeatureSelection, image_shape_zyx: tuple[int, int, int]) -> tuple[list[float], list[float]]:
    """ilastik's getInvalidScales: selected scales too large for y/x, and for z where computed in 3-D."""
    z, y, x = image_shape_zyx
    in_2d = sel.resolved_in_2d(z)
    too_big, too_big_z = [], []
    for j in sel.selected_columns():
        minimum = math.ceil(sel.scales[j] * PRESMOOTH_WINDOW) + 1
        if minimum > x or minimum > y:
            too_big.append(sel.scales[j])
        elif minimum > z and not in_2d[j]:
            too_big_z.append(sel.scales[j])
    return too_big, too_big_z


def check_scales(sel: FeatureSelection, image_shape_zyx: tuple[int, int, int]) -> None:
    """Raise UserError, as ilastik does, when a selected scale does not fit the image."""
    too_big, too_big_z = invalid_scales(sel, image_shape_zyx)
    z, y, x = image_shape_zyx
    if too_big:
        raise UserError(
            f"Feature scales {too_big} are too large for an image of {y} x {x} pixels (y, x): a scale s needs at "
            "least ceil(3.5·s)+1 pixels along y and x. Reduce or remove these scales, or use a larger image."
        )
    if too_big_z:
        raise UserError(
            f"Feature scales {too_big_z} are too large for the z size {z} of the image: a scale s computed in 3D "
            "needs at least ceil(3.5·s)+1 slices. Reduce, remove or switch these scales to 2D computation."
        )


def _feature_reach(feature_id: str, sigma: float) -> int:
    """How far (pixels) a feature filter at sigma_f looks into the presmoothed image."""
    r = kernel_radius(sigma, FEATURE_WINDOW)
    if feature_id == "StructureTensorEigenvalues":
        return kernel_radius(sigma / 2, FEATURE_WINDOW) + r
    if feature_id == "DifferenceOfGaussians":
        return max(r, kernel_radius(DOG_RATIO * sigma, FEATURE_WINDOW))
    return r


def _step_reach(step: ScaleStep, outputs: tuple[FeatureOutput, ...] | list[FeatureOutput]) -> int:
    """How far the features of one scale look into its presmoothed image (along the feature axes)."""
    return max(_feature_reach(o.feature_id, step.feature_sigma) for o in outputs if o.column == step.column)


def _derivative_sigma(feature_id: str, sigma: float) -> float | None:
    """Sigma of the derivative kernels a feature uses (None for the smoothing-only features)."""
    if feature_id == "StructureTensorEigenvalues":
        return sigma / 2
    if feature_id in ("LaplacianOfGaussian", "GaussianGradientMagnitude", "HessianOfGaussianEigenvalues"):
        return sigma
    return None


def _non_singleton(axes: tuple[int, ...], shape: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(a for a in axes if shape[a] > 1)


def plan_features(
    sel: FeatureSelection,
    image_shape_zyx: tuple[int, int, int],
    n_input_channels: int,
    *,
    check: bool = True,
) -> FeaturePlan:
    """Resolve a selection for one image: 2-D/3-D per scale, channel order (§5), names, halo.

    check=False skips ilastik's scale-size check (getInvalidScales) and computes what its filters
    would compute anyway (the only way to reach the small-z rule below with z > 1).
    """
    shape = tuple(int(s) for s in image_shape_zyx)
    z = shape[0]
    if check:
        check_scales(sel, shape)
    in_2d = sel.resolved_in_2d(z)
    steps = []
    for j in sel.selected_columns():
        s = sel.scales[j]
        sf = feature_sigma(s)
        # fastfilters' feature filters run per z-slice when z is too small for sigma_f (whole image's z),
        # although the presmoothing stays 3-D.
        feature_in_2d = in_2d[j] or z == 1 or math.ceil(2 * sf) + 1 > z
        if feature_in_2d and not in_2d[j] and z > 1:
            logger.warning("filtering scale %s in 2D: z size %d too small", s, z)
        steps.append(
            ScaleStep(
                column=j,
                scale=s,
                presmooth_sigma=presmoothing_sigma(s),
                feature_sigma=sf,
                presmooth_axes=_non_singleton((1, 2) if in_2d[j] else (0, 1, 2), shape),
                feature_axes=_non_singleton((1, 2) if feature_in_2d else (0, 1, 2), shape),
            )
        )
    step_of = {st.column: st for st in steps}

    outputs, names = [], []
    channel = 0
    for i, fid in enumerate(sel.feature_ids):
        for j, s in enumerate(sel.scales):
            if not sel.matrix[i][j]:
                continue
            st = step_of[j]
            derivative_sigma = _derivative_sigma(fid, st.feature_sigma)
            if derivative_sigma is not None and kernel_radius(derivative_sigma, FEATURE_WINDOW) == 0:
                logger.warning("%s at scale %s has a zero-width derivative kernel: the feature is NaN", fid, s)
            n = len(st.feature_axes) if fid in EIGENVALUE_FEATURES else 1
            outputs.append(FeatureOutput(fid, j, channel, n))
            base = f"{FEATURE_NAMES[fid]} (σ={s})" + (" in 2D" if in_2d[j] else "")
            total = n * n_input_channels
            names.extend([base] if total == 1 else [f"{base} [{k}]" for k in range(total)])
            channel += total

    halo = [0, 0, 0]
    for st in steps:
        reach = _step_reach(st, outputs)
        pre = kernel_radius(st.presmooth_sigma, PRESMOOTH_WINDOW)
        for a in range(3):
            h = (pre if a in st.presmooth_axes else 0) + (reach if a in st.feature_axes else 0)
            halo[a] = max(halo[a], h)
    return FeaturePlan(
        image_shape_zyx=shape,
        n_input_channels=n_input_channels,
        steps=tuple(steps),
        outputs=tuple(outputs),
        n_channels_out=channel,
        halo=(halo[0], halo[1], halo[2]),
        names=names,
    )


def _along(axes: tuple[int, ...], by: int) -> tuple[int, int, int]:
    return tuple(by if a in axes else 0 for a in range(3))  # type: ignore[return-value]


def _scale_features(
    pre: np.ndarray, sigma: float, axes: tuple[int, ...], targets: dict[str, np.ndarray], region: Region
) -> None:
    """Write the features of one presmoothed channel at sigma_f on `region` of pre into targets[id],
    each (n, z, y, x) of the region's shape."""
    n = len(axes)
    zero = (0,) * n
    grad_o = gradient_orders(n)
    hess_o = hessian_orders(n)
    diag_o = [o for o in hess_o if 2 in o]  # second derivatives along each axis
    needed = set()
    if targets.keys() & {"GaussianSmoothing", "DifferenceOfGaussians"}:
        needed.add(zero)
    if "LaplacianOfGaussian" in targets:
        needed.update(diag_o)
    if "GaussianGradientMagnitude" in targets:
        needed.update(grad_o)
    if "HessianOfGaussianEigenvalues" in targets:
        needed.update(hess_o)
    if "StructureTensorEigenvalues" in targets:  # first: its arrays are freed before the bank's are made
        # fastfilters swaps ilastik's two scales: gradient at sigma_f/2, tensor smoothed at sigma_f
        around = grow_region(region, _along(axes, kernel_radius(sigma, FEATURE_WINDOW)), pre.shape)
        g = gradient(pre, sigma / 2, FEATURE_WINDOW, axes, around)
        inner = relative_region(region, around)
        tensor = [gaussian_smoothing(g[i] * g[j], sigma, FEATURE_WINDOW, axes, inner)
                  for i in range(n) for j in range(i, n)]
        del g
        eigenvalues(tensor, out=targets["StructureTensorEigenvalues"])
        del tensor
    bank = derivative_bank(pre, sigma, FEATURE_WINDOW, axes, needed, region)

    for fid, target in targets.items():
        if fid == "GaussianSmoothing":
            target[0] = bank[zero]
        elif fid == "LaplacianOfGaussian":
            sum_x_first([bank[o] for o in diag_o], target[0])
        elif fid == "GaussianGradientMagnitude":
            sum_x_first([bank[o] for o in grad_o], target[0], squared=True, root=True)
        elif fid == "DifferenceOfGaussians":
            smaller = gaussian_smoothing(pre, DOG_RATIO * sigma, FEATURE_WINDOW, axes, region)
            with np.errstate(invalid="ignore"):  # inf − inf of an infinite input is NaN, as in ilastik
                np.subtract(bank[zero], smaller, out=target[0])
        elif fid == "HessianOfGaussianEigenvalues":
            eigenvalues([bank[o] for o in hess_o], out=target)


def compute_features(block_zyxc: np.ndarray, plan: FeaturePlan, crop: Sequence[slice] | None = None) -> np.ndarray:
    """Feature stack (z, y, x, F) float32 of a block whose array edges are the image border (mirror).

    With `crop` (one slice per z, y, x axis of the block) only that part is computed and returned:
    every filter pass computes just what the later passes need, so a block's halo costs little. The
    result is a channels-last view of a channels-first array (each channel contiguous), which
    `ForestEnsemble.predict_proba` reads without a copy.
    """
    block = np.asarray(block_zyxc)
    if block.ndim != 4 or block.shape[3] != plan.n_input_channels:
        raise ValueError(f"expected a (z, y, x, {plan.n_input_channels}) block, got shape {block.shape}")
    shape = block.shape[:3]
    wanted = full_region(shape) if crop is None else tuple(s.indices(n)[:2] for s, n in zip(crop, shape))
    stack = np.empty((plan.n_channels_out,) + tuple(hi - lo for lo, hi in wanted), np.float32)
    for c in range(plan.n_input_channels):
        channel = np.ascontiguousarray(block[..., c], dtype=np.float32)
        for st in plan.steps:
            around = grow_region(wanted, _along(st.feature_axes, _step_reach(st, plan.outputs)), shape)
            pre = gaussian_smoothing(channel, st.presmooth_sigma, PRESMOOTH_WINDOW, st.presmooth_axes, around)
            targets = {
                o.feature_id: stack[o.first_channel + c * o.n_channels:o.first_channel + (c + 1) * o.n_channels]
                for o in plan.outputs
                if o.column == st.column
            }
            _scale_features(pre, st.feature_sigma, st.feature_axes, targets, relative_region(wanted, around))
    return np.moveaxis(stack, 0, -1)
