"""`open_writer`: the writer for every `--output_format` of ilastik (plus plain zarr).

* Whole-image formats (numpy, tiff, png, ..., multipage tiff, `<ext> sequence`) keep the image in memory
  (or, beyond `memory_limit`, in a memory-mapped file beside the output) and write it on `close()` to
  temporary names renamed into place: a failed or aborted export leaves no output file.
* HDF5 streams into `<file>.tmp-<pid>`; on `close()` that file is renamed into place, or, when the target
  file exists, the dataset is copied into it replacing only the dataset at the internal path (ilastik
  opens outputs in append mode and keeps the file's other datasets; that copy is not atomic).
* N5, zarr and OME-Zarr stream chunk-aligned blocks into the output itself (`streaming`).
* A write the operating system refuses (disk full, quota, read-only, I/O error) ends the run with one line
  naming the output and exit code 74 (`writers.reporting_write_errors`).

Facts: ilastik-spec.md §2.6 (ilastik's `opExportSlot.py` `FormatValidity`, `ioOperators.py`,
`opExportMultipageTiff.py`, `write_ome_zarr.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.formats import check_format
from hpc_ilastik.io.images import files_for
from hpc_ilastik.io.streaming import N5Writer, OmeZarrWriter, Ranks, ZarrWriter, chunk_shape
from hpc_ilastik.io.writers import MEMORY_LIMIT, HDF5Writer, WholeImageWriter, Writer, make_directory

_STREAMING = ("n5", "compressed n5", "zarr", "single-scale OME-Zarr", "multi-scale OME-Zarr")


def open_writer(fmt: str, path: str, *, internal_path: str = "exported_data", shape: Sequence[int], dtype,
                axes: str, chunks: Sequence[int] | None = None, drange: Sequence[float] | None = None,
                resolutions: Mapping[str, float] | None = None, units: Mapping[str, str] | None = None,
                offset: Sequence[int] | None = None, ranks: Ranks | None = None,
                fingerprint: Mapping[str, object] | None = None, memory_limit: int = MEMORY_LIMIT) -> Writer:
    """A writer for an export image of `shape`/`dtype` in output axis order `axes`.

    `path` is the output file (container, or template with {slice_index} for sequences); `internal_path`
    the dataset inside HDF5/N5/zarr; `chunks` the block shape (N5, zarr and OME-Zarr chunks; HDF5 chunks
    divide it; blocks must be chunk-aligned when several ranks write); `drange`, `resolutions` (pixel size per
    axis) and `units` go into the metadata; `offset` is the cut-out start (sequence indices, OME-Zarr translation);
    `ranks` the processes writing it together (streaming formats only); `fingerprint` makes the output resumable."""
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    name = check_format(fmt, dtype, shape, axes)
    offset = tuple(offset) if offset is not None else (0,) * len(shape)
    make_directory(os.path.dirname(os.path.abspath(path)))
    if name in _STREAMING:
        chunks = chunk_shape(shape, axes, chunks, dtype, 1_024_000 if "OME" in name else 512_000)
        common = dict(path=path, shape=shape, dtype=dtype, axes=axes, chunks=chunks, drange=drange,
                      resolutions=resolutions, units=units, ranks=ranks, fingerprint=fingerprint)
        if name.endswith("n5"):
            return N5Writer(internal_path=internal_path, compress=name.startswith("compressed"), **common)
        if name == "zarr":
            return ZarrWriter(internal_path=internal_path, **common)
        return OmeZarrWriter(multiscale=name.startswith("multi"), offset=offset, **common)
    if ranks is not None and ranks.size > 1:
        raise UserError(f"format {name} cannot be written by several MPI ranks; use n5, zarr or OME-Zarr.")
    if os.path.isdir(path):
        raise UserError(f"the output {path} is a folder; remove it or choose another --output_filename_format.")
    if name.endswith("hdf5"):
        return HDF5Writer(path, internal_path, shape, dtype, axes, name == "compressed hdf5", drange, resolutions,
                          units, chunks)
    return WholeImageWriter(path, shape, dtype, files_for(name, path, shape, axes, offset, resolutions, units),
                             memory_limit)
