"""The object table of an Object Classification run (CSV or HDF5), written on rank 0 after the images.

ilastik writes it only when the project stores table settings (configured in the GUI) and refuses
`--table_filename` otherwise. Here `--table_filename` without stored settings writes the table with the
features the object classifier uses (CSV, or HDF5 for a `.h5`/`.hdf5` name), and says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from hpc_ilastik.io.axes import make_axistags
from hpc_ilastik.io.inputs import Source
from hpc_ilastik.io.paths import format_known_keys
from hpc_ilastik.io.tables import write_csv_table, write_hdf5_table
from hpc_ilastik.objects.table import feature_columns, object_table
from hpc_ilastik.project.object_classification import ObjectClassificationProject

log = logging.getLogger(__name__)

MaskOf = Callable[[int, int, tuple[slice, slice, slice]], np.ndarray]  # (frame, object id, crop) → object's pixels


def write_object_table(results: Sequence, project: ObjectClassificationProject, raw: Source,
                       table_filename: str | None, mask_of: MaskOf) -> str | None:
    """Write the table of one image's classified objects where the project or the command line asks for it;
    `results` are the frames' FrameResults. Returns the file written (None: no table asked for)."""
    stored = project.table
    if table_filename is None and stored is None:
        return None
    if stored is None:
        log.info("the project stores no object-table settings (ilastik refuses --table_filename then): writing "
                 "the features its object classifier uses")
        settings, selection = {}, None
        kind = "h5" if table_filename.lower().endswith((".h5", ".hdf5")) else "csv"
    else:
        settings, selection = stored.settings, stored.selected_features
        kind = str(settings.get("file type", "csv")).lower()
    template = table_filename or str(settings.get("file path", ""))
    path = os.path.abspath(format_known_keys(os.path.expanduser(template), {
        "dataset_dir": raw.dataset_dir, "nickname": raw.nickname.replace("*", "")}))
    table = object_table([r.features for r in results], [r.classes for r in results],
                         [r.probabilities for r in results], project.label_names,
                         feature_columns(project.selected_features, selection))
    if kind == "csv":
        written = write_csv_table(path, table)
    else:
        margin = int(settings.get("margin", 0) or 0)
        images = _crops(results, raw, margin, bool(settings.get("include raw", False)), mask_of)
        compression = settings.get("compression") if isinstance(settings.get("compression"), dict) else {}
        written = write_hdf5_table(path, table, images, compression)
    log.info("%s: object table (%d objects) written to %s", raw.nickname, len(table), written)
    return written


def _crops(results: Sequence, raw: Source, margin: int, include_raw: bool,
           mask_of: MaskOf) -> Iterator[tuple[str, np.ndarray, dict]]:
    """ilastik's per-object images: `images/<row>/labeling` (the object in its bounding box grown by the
    margin, uint8) and `images/<row>/raw` (the raw data there), or the whole raw image as `images/raw`;
    axes x, y, z(, c) without the singleton ones, as ilastik orders them."""
    shape = tuple(raw.shape_tzyxc)
    row = 0
    for t, result in enumerate(results):
        objects = result.objects
        for k in range(len(objects)):
            box = tuple(slice(max(int(lo) - margin, 0), min(int(hi) + margin, n))
                        for lo, hi, n in zip(objects.low[k], objects.high[k], shape[1:4]))
            labeling = mask_of(t, k, box).astype(np.uint8)
            yield (f"images/{row}/labeling", *_xyz(labeling[..., np.newaxis], "labeling"))
            if not include_raw:
                pixels = raw.read((slice(t, t + 1),) + box + (slice(0, shape[4]),))[0]
                yield (f"images/{row}/raw", *_xyz(pixels, "image"))
            row += 1
    if include_raw:
        pixels = raw.read()
        order = [a for a, n in zip("txyzc", pixels.transpose(0, 3, 2, 1, 4).shape) if n > 1]
        yield ("images/raw", pixels.transpose(0, 3, 2, 1, 4).squeeze(), {
            "type": "image", "axistags": make_axistags("".join(order))})


def _xyz(zyxc: np.ndarray, kind: str) -> tuple[np.ndarray, dict]:
    """A (z, y, x, c) crop in ilastik's x, y, z, c order, singleton axes dropped, with its attributes."""
    xyzc = zyxc.transpose(2, 1, 0, 3)
    axes = "".join(a for a, n in zip("xyzc", xyzc.shape) if n > 1)
    return xyzc.squeeze(), {"type": kind, "axistags": make_axistags(axes)}
