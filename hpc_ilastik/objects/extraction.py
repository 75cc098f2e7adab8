"""From a region of the segmentation input to what is labelled: the three ways ilastik gets objects.

* prediction maps: ilastik's thresholding (`objects.threshold`), then components of the final mask
  (size filter, hysteresis: `objects.segmentation.merge_components`);
* a binary (or any segmentation) image: components of equal non-zero values, no size filter;
* a label image: every distinct non-zero value is one object, relabelled in order of appearance.
The same rule gives an object's own pixels in a crop around it (`object_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.objects.labeling import label_components
from hpc_ilastik.objects.segmentation import (
    BlockComponents,
    ObjectTable,
    block_components,
    block_label_values,
    label_value_ids,
    local_labels,
    merge_components,
    merge_label_values,
)
from hpc_ilastik.objects.threshold import ThresholdSettings, smoothing_halo, threshold_masks

PREDICTIONS, SEGMENTATION, LABELS = "predictions", "segmentation", "labels"


@dataclass(frozen=True)
class Segmenter:
    """How the segmentation input of a project becomes objects: `kind` is PREDICTIONS (with `threshold`
    and the maps' value range `drange`), SEGMENTATION or LABELS."""

    kind: str
    threshold: ThresholdSettings | None = None
    drange: tuple[float, float] | None = None

    def check_input(self, dtype: np.dtype, n_channels: int, frame_shape: Sequence[int]) -> None:
        """UserError for an input this kind of project cannot use."""
        dtype = np.dtype(dtype)
        if self.kind == PREDICTIONS:
            self.threshold.check(n_channels)
            return
        if n_channels != 1:
            what = "label image" if self.kind == LABELS else "segmentation image"
            raise UserError(f"the {what} has {n_channels} channels; it needs one")
        if self.kind == LABELS and dtype.kind not in "iu":
            raise UserError(f"the label image has pixel type {dtype}; a label image needs integer object ids "
                            "(export it as uint8/uint16/uint32)")

    def halo(self, frame_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(z, y, x) context a block needs: the threshold's smoothing, else none."""
        return smoothing_halo(self.threshold, frame_shape) if self.kind == PREDICTIONS else (0, 0, 0)

    def values(self, region_zyxc: np.ndarray, crop: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray | None]:
        """(values to label, core mask or None) on `crop` of a region of the input read with `halo`."""
        if self.kind == PREDICTIONS:
            final, core = threshold_masks(region_zyxc, self.threshold, self.drange)
            return final[crop], None if core is None else core[crop]
        return region_zyxc[crop + (0,)], None

    def block(self, values: np.ndarray, core: np.ndarray | None, grid_index: tuple[int, int, int],
              origin: Sequence[int], frame_shape: Sequence[int], raw: np.ndarray | None = None) -> BlockComponents:
        """The block's local objects (see `objects.segmentation`); with `raw` (the block's first raw channel)
        the raw range of each."""
        if self.kind == LABELS:
            return block_label_values(values, grid_index, origin, frame_shape, raw)
        return block_components(values, grid_index, origin, frame_shape, core, raw)

    def merge(self, blocks: Sequence[BlockComponents]) -> tuple[ObjectTable, list[np.ndarray]]:
        """The frame's objects and every block's map local id → object id."""
        if self.kind == LABELS:
            return merge_label_values(blocks)
        if self.kind == PREDICTIONS:
            return merge_components(blocks, self.threshold.min_size, self.threshold.max_size)
        return merge_components(blocks)

    def local_labels(self, values: np.ndarray) -> np.ndarray:
        """A block's local labels as `block` numbered them."""
        return label_value_ids(values)[0] if self.kind == LABELS else local_labels(values)


def object_mask(values: np.ndarray, seed: Sequence[int], kind: str, value: object) -> np.ndarray:
    """An object's pixels in a crop of the labelled values that holds the whole object: the component at
    `seed` (crop coordinates), or for a label image every pixel of the object's value."""
    if kind == LABELS:
        return values == value
    labels, _ = label_components(values)
    own = labels[tuple(seed)]
    if own == 0:
        raise ValueError("the seed pixel is background")
    return labels == own
