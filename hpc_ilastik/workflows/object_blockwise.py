"""ilastik's "Blockwise Object Predictions/Probabilities" (`opBlockwiseObjectClassification`): the image cut
into the project's blocks (`Blockwise Object Classification`, 512³ by default), each block grown by the
halo (64) and treated as an image of its own: objects labelled afresh (connected components, even of a
label image), their features computed and classified there, the block's inner part painted. Objects
crossing block borders are classified from what each block sees of them (ilastik-workflows-spec.md §A.7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpc_ilastik.forest.ensemble import ForestEnsemble
from hpc_ilastik.io.inputs import Source, derived_source
from hpc_ilastik.objects import extraction
from hpc_ilastik.objects.classification import classify_objects
from hpc_ilastik.objects.extraction import Segmenter
from hpc_ilastik.project.object_classification import ObjectClassificationProject
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.batch import Batch
from hpc_ilastik.workflows.blockwise import write_blocks
from hpc_ilastik.workflows.export import Target, fingerprint
from hpc_ilastik.workflows.object_measurement import MeasuredFrame, ObjectImage, measure_objects

BLOCKWISE_SOURCES = ("Blockwise Object Predictions", "Blockwise Object Probabilities")


def write_blockwise(results: Sequence[MeasuredFrame], project: ObjectClassificationProject,
                    classifier: ForestEnsemble, image: ObjectImage, targets: list[Target], batch: Batch, comm,
                    threads: int, quiet: bool) -> list[str]:
    """Write the blockwise sources (every rank takes whole blocks); `results` are the frames' objects found on
    the whole image (the segmentation input of the prediction-map variant is their mask, as ilastik's
    thresholding output is)."""
    raw = image.raw
    shape = tuple(raw.shape_tzyxc)
    block_shape = (1,) + tuple(min(b, n) for b, n in zip(project.block_shape_zyx, shape[1:4])) + (shape[4],)
    whole_grid = blk.plan_blocks(shape[:4] + (1,), block_shape[:4] + (1,))
    grid = blk.clip_blocks(whole_grid, targets[0].region)  # --cutout_subregion: ilastik's blocks, cut
    for target in targets:
        target.open(batch.export, raw, block_shape, (0.0, 1.0) if target.key == BLOCKWISE_SOURCES[1] else None, comm,
                    fingerprint(project, raw, batch.export, target.name, block_shape))
    wanted = project.selected_features

    def write(part: blk.Block) -> None:
        block = whole_grid[part.number]
        t = block.index[0]
        region = tuple(slice(max(s.start - h, 0), min(s.stop + h, n))
                       for s, h, n in zip(block.slices[1:4], project.halo_zyx, shape[1:4]))
        inner = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(part.slices[1:4], region))
        pixels = raw.read((slice(t, t + 1),) + region + (slice(0, shape[4]),))
        values = _segmentation(image, results[t], t, region)
        local = ObjectImage(_array_source(raw, pixels), _array_source(raw, values[np.newaxis, ..., np.newaxis]),
                            Segmenter(extraction.SEGMENTATION), (1,) + values.shape + (1,))
        [frame] = measure_objects(local, wanted, None, 1, True)
        classes, probabilities = classify_objects(frame.features, wanted, classifier, len(frame.objects),
                                                  len(project.label_names))
        ids = local.object_ids(local.grid[0], frame)[inner]
        for target in targets:
            painted = classes[ids][..., np.newaxis] if target.key == BLOCKWISE_SOURCES[0] else probabilities[ids]
            target.write(part, painted[np.newaxis])

    progress = Progress(len(grid), unit="blocks", quiet=quiet, label=f"{raw.nickname}: blockwise objects",
                        total_voxels=sum(part.voxels for part in grid))
    return write_blocks(grid, write, targets, comm, threads, progress, lambda block: (block.voxels,), raw.nickname)


def _segmentation(image: ObjectImage, frame: MeasuredFrame, t: int, region: tuple[slice, ...]) -> np.ndarray:
    """What a blockwise block labels (z, y, x): the found objects' mask for prediction maps (ilastik's
    thresholding output, size filter included), else the segmentation or label image itself."""
    if image.segmenter.kind != extraction.PREDICTIONS:
        return image.segmentation.read((slice(t, t + 1),) + region + (slice(0, 1),))[0, ..., 0]
    mask = np.zeros(tuple(s.stop - s.start for s in region), dtype=np.uint8)
    for block in image.grid:
        if block.index[0] != t:
            continue
        overlap = tuple(slice(max(s.start, r.start), min(s.stop, r.stop)) for s, r in zip(block.slices[1:4], region))
        if any(o.start >= o.stop for o in overlap):
            continue
        ids = image.object_ids(block, frame)
        mask[tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(overlap, region))] = \
            ids[tuple(slice(o.start - s.start, o.stop - s.start) for o, s in zip(overlap, block.slices[1:4]))] > 0
    return mask


def _array_source(like: Source, array_tzyxc: np.ndarray) -> Source:
    """An in-memory image (tzyxc) as a Source."""
    return derived_source(like, array_tzyxc.shape, array_tzyxc.dtype, lambda roi: array_tzyxc[roi])
