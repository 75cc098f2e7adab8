"""ilastik's two-level thresholding of prediction maps (`OpThresholdTwoLevels`), pixel-wise part.

Per time frame: probabilities as float32 (rescaled from a stored value range other than [0, 1]), each
channel smoothed with vigra's Gaussian (per-axis sigmas over the non-singleton spatial axes, window 2,
reflective border, double sums rounded to float32 after each axis, x first; no smoothing at all if any
used sigma is below 0.1), then the "final" mask `channel >= low` (for hysteresis with a separate core
channel, their sum) and, for hysteresis, the "core" mask `core channel >= high`. What happens to the
connected components of these masks (size filter, hysteresis selection) is `objects.segmentation`'s
(ilastik-workflows-spec.md §A.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from hpc_ilastik.errors import UserError

SIMPLE, HYSTERESIS, GRAPH_CUT, IPHT = 0, 1, 2, 3
_METHOD_NAMES = {SIMPLE: "simple", HYSTERESIS: "hysteresis", GRAPH_CUT: "graph-cut", IPHT: "IPHT"}
WINDOW = 2.0


@dataclass(frozen=True)
class ThresholdSettings:
    """The `ThresholdTwoLevels` settings of a project."""

    method: int = SIMPLE
    min_size: int = 10
    max_size: int = 1_000_000
    low: float = 0.5
    high: float = 0.8
    sigmas_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel: int = 0
    core_channel: int = 0

    def check(self, n_channels: int) -> None:
        """UserError for what cannot run: an unsupported method, a channel the prediction maps lack."""
        if self.method not in (SIMPLE, HYSTERESIS, GRAPH_CUT):
            name = _METHOD_NAMES.get(self.method, str(self.method))
            raise UserError(f"the project thresholds with the {name} method, which hpc-ilastik does not support "
                            "(simple, hysteresis and graph-cut thresholding are supported)")
        for role, index in (("Channel", self.channel), ("CoreChannel", self.core_channel)):
            if not 0 <= index < n_channels:
                raise UserError(f"the project's threshold {role} is {index}, but the prediction maps have "
                                f"{n_channels} channel(s): give the prediction maps the project was trained with")

    @property
    def sums_channels(self) -> bool:
        """Hysteresis with a core channel of its own: the final input is the sum of both channels."""
        return self.method == HYSTERESIS and self.channel != self.core_channel


def vigra_gaussian(sigma: float, window: float = WINDOW) -> np.ndarray:
    """vigra's Kernel1D::initGaussian(sigma, 1.0, window): samples at -r..r, r = int(window·σ + 0.5) but at
    least 1, normalised to sum 1 (double)."""
    radius = max(int(window * sigma + 0.5), 1)
    sigma2 = -0.5 / sigma / sigma
    norm = 1.0 / math.sqrt(2.0 * math.pi) / sigma
    taps = np.array([norm * math.exp(float(x * x) * sigma2) for x in range(-radius, radius + 1)])
    total = 0.0
    for tap in taps:
        total += tap
    return taps * (1.0 / total)


@njit(inline="always")
def _reflect(i: int, n: int) -> int:
    """vigra's BORDER_TREATMENT_REFLECT: position i of a line of n samples mirrored into it, the edge not repeated
    (valid for -n < i < 2n - 1)."""
    if i < 0:
        return -i
    return 2 * n - 2 - i if i >= n else i


@njit(cache=True, nogil=True)
def _convolve_lines(data: np.ndarray, kernel: np.ndarray) -> None:
    """vigra's convolveLine with BORDER_TREATMENT_REFLECT along the last axis of a 2-D float32 array, in place:
    double sums over source positions in increasing order, rounded to float32. Away from the ends of a line the
    sums are made a tap at a time for all positions (vectorised; each position's additions in the same order)."""
    radius = kernel.shape[0] // 2
    n = data.shape[1]
    line = np.empty(n, dtype=np.float32)
    total = np.empty(n, dtype=np.float64)
    inner_lo = min(radius, n)
    inner_hi = max(n - radius, inner_lo)
    for row in range(data.shape[0]):
        line[:] = data[row]
        total[inner_lo:inner_hi] = 0.0
        for t in range(2 * radius + 1):  # source position x - radius + t, increasing with t
            k = kernel[2 * radius - t]
            for x in range(inner_lo, inner_hi):
                total[x] += k * np.float64(line[x - radius + t])
        for x in range(inner_lo, inner_hi):
            data[row, x] = np.float32(total[x])
        for x in range(n):
            if inner_lo <= x < inner_hi:
                continue
            near_end = 0.0
            for i in range(x - radius, x + radius + 1):
                near_end += kernel[radius + x - i] * np.float64(line[_reflect(i, n)])
            data[row, x] = np.float32(near_end)


@njit(cache=True, nogil=True)
def _convolve_axis(data: np.ndarray, kernel: np.ndarray) -> None:
    """_convolve_lines along the middle axis of a 3-D float32 array (pre, n, post), in place: each output's double
    sum over source positions in increasing order, vectorised over the contiguous last axis."""
    radius = kernel.shape[0] // 2
    n = data.shape[1]
    source = np.empty(data.shape[1:], dtype=np.float32)
    total = np.empty(data.shape[2], dtype=np.float64)
    for p in range(data.shape[0]):
        source[:] = data[p]
        for x in range(n):
            total[:] = 0.0
            for i in range(x - radius, x + radius + 1):
                k = kernel[radius + x - i]
                line = source[_reflect(i, n)]
                for q in range(total.shape[0]):
                    total[q] += k * np.float64(line[q])
            out = data[p, x]
            for q in range(total.shape[0]):
                out[q] = np.float32(total[q])


def smooth(frame_zyx: np.ndarray, sigmas_zyx: tuple[float, float, float]) -> np.ndarray:
    """vigra's gaussianSmoothing(window_size=2.0) of one channel over its non-singleton axes (float32).

    The border is the array's edge: called on a block with a halo of `smoothing_halo`, the block itself
    equals the whole frame's result."""
    axes = [a for a in range(3) if frame_zyx.shape[a] > 1]
    if any(sigmas_zyx[a] < 0.1 for a in axes):
        return frame_zyx.astype(np.float32)
    out = np.array(frame_zyx, dtype=np.float32)
    for axis in sorted(axes, reverse=True):  # vigra's axis 0 is x
        kernel = vigra_gaussian(sigmas_zyx[axis])
        if out.shape[axis] < len(kernel) // 2 + 1:  # vigra: "kernel longer than line"
            raise UserError(f"the threshold smoothing (sigma {sigmas_zyx[axis]}) needs at least "
                            f"{len(kernel) // 2 + 1} pixels along each smoothed axis, but the image has "
                            f"{out.shape[axis]}")
        if axis == 2:
            _convolve_lines(out.reshape(-1, out.shape[2]), kernel)
        else:  # along z or y without moving the axis: the contiguous axes after it are the vector
            _convolve_axis(out.reshape(math.prod(out.shape[:axis]), out.shape[axis], -1), kernel)
    return out


def smoothing_halo(settings: ThresholdSettings, shape_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
    """(z, y, x) context a block needs for exact smoothing: each kernel's radius."""
    axes = [a for a in range(3) if shape_zyx[a] > 1]
    if any(settings.sigmas_zyx[a] < 0.1 for a in axes):
        return (0, 0, 0)
    return tuple(len(vigra_gaussian(settings.sigmas_zyx[a])) // 2 if a in axes else 0 for a in range(3))


def rescaled(probabilities: np.ndarray, drange: tuple[float, float] | None) -> np.ndarray:
    """Prediction maps as float32 in [0, 1]: rescaled from a stored value range other than (0, 1)."""
    data = probabilities.astype(np.float32)
    if drange is not None and tuple(drange) != (0.0, 1.0):
        data -= np.float32(drange[0])
        data = (data / np.float32(drange[1] - drange[0])).astype(np.float32)
    return data


def threshold_masks(probabilities_zyxc: np.ndarray, settings: ThresholdSettings,
                    drange: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(final mask, core mask or None) of one frame (or block plus halo) of prediction maps."""
    data = rescaled(probabilities_zyxc, drange)
    channels = {settings.channel, settings.core_channel} if settings.method == HYSTERESIS else {settings.channel}
    smoothed = {c: smooth(data[..., c], settings.sigmas_zyx) for c in channels}
    final = smoothed[settings.channel]
    if settings.sums_channels:
        final = final + smoothed[settings.core_channel]
    final_mask = final >= np.float32(settings.low)
    if settings.method != HYSTERESIS:
        return final_mask, None
    return final_mask, smoothed[settings.core_channel] >= np.float32(settings.high)
