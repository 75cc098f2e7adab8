"""Every `--output_format` of ilastik (plus plain zarr): a writer takes blocks in any order, then commits.

* Whole-image formats (numpy, tiff, png, ..., multipage tiff, `<ext> sequence`) keep the image in memory
  (or, beyond `memory_limit`, in a memory-mapped file beside the output) and write it on `close()` to
  temporary names renamed into place: a failed or aborted export leaves no output file.
* HDF5 streams into `<file>.tmp-<pid>`; on `close()` that file is renamed into place, or, when the target
  file exists, the dataset is copied into it replacing only the dataset at the internal path (ilastik
  opens outputs in append mode and keeps the file's other datasets; that copy is not atomic).
* N5, zarr and OME-Zarr stream chunk-aligned blocks into the output itself (several MPI ranks may write
  one output; rank 0 creates it). `abort()` removes what was created, unless a `fingerprint` makes the
  run resumable: then the output records it, written chunks are kept, and `block_done` tells which
  blocks a rerun of the same command may skip.

Facts: ilastik-spec.md §2.6 (ilastik's `opExportSlot.py` `FormatValidity`, `ioOperators.py`,
`opExportMultipageTiff.py`, `write_ome_zarr.py`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import posixpath
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from hpc_ilastik import __version__
from hpc_ilastik.axes import make_axistags
from hpc_ilastik.distributed import COMPLETE_KEY, check_resume, on_root, run_attributes
from hpc_ilastik.errors import UserError
from hpc_ilastik.export import (UNSUPPORTED_FORMATS, canonical_format, describe_shape, format_known_keys,
                                pad_slice_index)
from hpc_ilastik.n5 import N5Dataset, create_n5_dataset, open_n5_dataset, read_n5_attributes

if TYPE_CHECKING:
    import zarr

MEMORY_LIMIT = 1 << 30  # whole-image formats buffer up to this many bytes in memory, more in a memmap
_ALL_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
# ilastik's FormatValidity: base format -> (dtypes, channel counts (empty: any), non-channel axes (min, max))
_VALIDITY = {
    "jpg": (("uint8",), (1,), (2, 2)),
    "png": (("uint8", "uint16"), (1, 3), (2, 2)),
    "gif": (("uint8",), (1, 3), (2, 2)),
    "hdr": (("float32",), (3,), (2, 2)),
    "bmp": (("uint8",), (1, 3), (2, 2)),
    "tiff": (("uint8", "uint16", "uint32", "uint64", "float32", "float64"), (), (2, 5)),
    "ras": (("uint8",), (1, 3), (2, 2)),
    "pnm": (("uint8", "uint16"), (1, 3), (2, 2)),
    "ppm": (("uint8", "uint16"), (1, 3), (2, 2)),
    "pgm": (("uint8", "uint16"), (1,), (2, 2)),
    "pbm": (("uint8", "uint16"), (1,), (2, 2)),
}
_BASE = {"jpeg": "jpg", "tif": "tiff"}
_STREAMING = ("n5", "compressed n5", "zarr", "single-scale OME-Zarr", "multi-scale OME-Zarr")
_OME_AXES = "tczyx"
_VIGRA_ORDER = "xyzt"  # vigra writes 2-D images with the earlier of these axes as columns
_OME_TIFF_UNITS = {"micrometer": "µm", "micron": "µm", "um": "µm", "µm": "µm", "nanometer": "nm", "nm": "nm",
                   "millimeter": "mm", "mm": "mm", "second": "s", "s": "s", "millisecond": "ms", "ms": "ms"}


# ---- checks ----------------------------------------------------------------------------------------


def check_format(fmt: str, dtype=None, shape: Sequence[int] | None = None, axes: str | None = None) -> str:
    """The canonical format name; UserError for an unknown/unsupported format or, given the export image
    (`shape` in `axes` order, `dtype`), for what the format cannot hold (ilastik's FormatValidity)."""
    name = canonical_format(fmt)
    if name in UNSUPPORTED_FORMATS:
        raise UserError(UNSUPPORTED_FORMATS[name] + ".")
    if shape is None or axes is None or dtype is None:
        return name
    dtype = np.dtype(dtype)
    if dtype.name not in _ALL_DTYPES:
        raise UserError(f"format {name} cannot hold {dtype} data.")
    words = name.split()
    if name.endswith("sequence"):
        step = _step_axis(shape, axes)
        if step is None:
            raise UserError(f"format {name} needs an image to slice, but the export is {describe_shape(shape, axes)}.")
        k = axes.index(step)
        shape, axes = tuple(shape[:k]) + tuple(shape[k + 1:]), axes.replace(step, "")
        words = words[:-1]
    base = _BASE.get(words[-1], words[-1])
    if base not in _VALIDITY:
        return name
    dtypes, channels, (low, high) = _VALIDITY[base]
    spatial = sum(1 for a, n in zip(axes, shape) if a != "c" and n > 1)
    n_channels = shape[axes.index("c")] if "c" in axes else 1
    if words[0] == "multipage":
        spatial -= 1
        if axes.startswith("c"):  # pages (or files) split across channels: one channel each
            spatial, n_channels = spatial + 1, 1
    elif base == "tiff":  # one 2-D tiff image (ilastik's 2-D export refuses more)
        high = 2
    if dtype.name not in dtypes:
        raise UserError(f"format {name} cannot hold {dtype} data (it takes {', '.join(dtypes)}); "
                        "choose another --export_dtype or --output_format.")
    if not low <= spatial <= high:
        need = f"exactly {low}" if low == high else f"{low} to {high}"
        page = "each file's image" if name.endswith("sequence") else "the export image"
        raise UserError(f"format {name} needs {need} non-singleton spatial/time axes in {page}, but the export is "
                        f"{describe_shape(shape, axes)}; choose another --output_format (e.g. hdf5, or a sequence).")
    if channels and n_channels not in channels:
        raise UserError(f"format {name} cannot hold {n_channels} channel(s) (it takes {' or '.join(map(str, channels))}); "
                        "choose another --output_format (tiff, hdf5 and n5 take any number).")
    return name


def check_not_overwriting(out_path: str, input_paths: Sequence[str]) -> None:
    """UserError when the output file would be one of the input files (or the project)."""
    target = os.path.realpath(out_path)
    for path in input_paths:
        same = os.path.realpath(path) == target or (
            os.path.exists(path) and os.path.exists(out_path) and os.path.samefile(path, out_path))
        if same:
            raise UserError(f"the output {out_path} is the input {path}: writing it would destroy the input; "
                            "choose another --output_filename_format.")


# ---- writers ---------------------------------------------------------------------------------------


class Writer:
    """Where an export image goes: `write` blocks (output axis order) in any order, then `close` to commit
    or `abort` to discard. As a context manager, an exception inside aborts."""

    path: str

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        raise NotImplementedError

    def block_done(self, slices: Sequence[slice]) -> bool:
        """True when a resumed output already holds this region (only streaming formats resume)."""
        return False

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_writer(fmt: str, path: str, *, internal_path: str = "exported_data", shape: Sequence[int], dtype,
                axes: str, chunks: Sequence[int] | None = None, drange: Sequence[float] | None = None,
                resolutions: Mapping[str, float] | None = None, units: Mapping[str, str] | None = None,
                offset: Sequence[int] | None = None, comm: Any | None = None,
                fingerprint: Mapping[str, object] | None = None, memory_limit: int = MEMORY_LIMIT) -> Writer:
    """A writer for an export image of `shape`/`dtype` in output axis order `axes`.

    `path` is the output file (container, or template with {slice_index} for sequences); `internal_path`
    the dataset inside HDF5/N5/zarr; `chunks` the block shape for N5/zarr/OME-Zarr (blocks must be
    chunk-aligned when several ranks write); `drange`, `resolutions` (pixel size per axis) and `units`
    go into the metadata; `offset` is the cut-out start (sequence indices, OME-Zarr translation);
    `comm` an MPI communicator (streaming formats only); `fingerprint` makes the output resumable."""
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    name = check_format(fmt, dtype, shape, axes)
    offset = tuple(offset) if offset is not None else (0,) * len(shape)
    _make_directory(os.path.dirname(os.path.abspath(path)))
    if name in _STREAMING:
        chunks = _chunk_shape(shape, axes, chunks, dtype, 1_024_000 if "OME" in name else 512_000)
        common = dict(path=path, shape=shape, dtype=dtype, axes=axes, chunks=chunks, drange=drange,
                      resolutions=resolutions, units=units, comm=comm, fingerprint=fingerprint)
        try:
            if name.endswith("n5"):
                return _N5Writer(internal_path=internal_path, compress=name.startswith("compressed"), **common)
            if name == "zarr":
                return _ZarrWriter(internal_path=internal_path, **common)
            return _OmeZarrWriter(multiscale=name.startswith("multi"), offset=offset, **common)
        except OSError as exc:  # e.g. a file where the container's folder should be
            raise UserError(f"cannot create the output {path}: {exc.strerror or exc}.") from exc
    if comm is not None and comm.Get_size() > 1:
        raise UserError(f"format {name} cannot be written by several MPI ranks; use n5, zarr or OME-Zarr.")
    if os.path.isdir(path):
        raise UserError(f"the output {path} is a folder; remove it or choose another --output_filename_format.")
    if name.endswith("hdf5"):
        return _HDF5Writer(path, internal_path, shape, dtype, axes, name == "compressed hdf5", drange, resolutions, units)
    return _WholeImageWriter(path, shape, dtype, _files_for(name, path, shape, axes, offset, resolutions, units),
                             memory_limit)


class _WholeImageWriter(Writer):
    """Buffers the image; on close writes every file of the format to a temporary name, then renames them all."""

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype,
                 files: Callable[[np.ndarray], Iterator[tuple[str, Callable[[str], None]]]], memory_limit: int) -> None:
        self.path = path
        self._files = files
        self._spill: str | None = None
        if math.prod(shape) * dtype.itemsize <= memory_limit:
            self._buffer = np.zeros(shape, dtype)
        else:
            handle, self._spill = tempfile.mkstemp(prefix=".hpc-ilastik-buffer-", dir=os.path.dirname(os.path.abspath(path)))
            os.close(handle)
            self._buffer = np.memmap(self._spill, dtype=dtype, mode="w+", shape=shape)

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        self._buffer[tuple(slices)] = data

    def close(self) -> None:
        staged: list[tuple[str, str]] = []
        try:
            for final, save in self._files(self._buffer):
                staged.append((_temp_name(final), final))
                save(staged[-1][0])
            for temp, final in staged:
                os.replace(temp, final)
        except BaseException as exc:
            for temp, _ in staged:
                _remove(temp)
            self._release()
            if isinstance(exc, OSError):
                raise UserError(f"cannot write the output {staged[-1][1] if staged else self.path}: "
                                f"{exc.strerror or exc}.") from exc
            raise
        self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        self._buffer = None
        if self._spill is not None:
            _remove(self._spill)
            self._spill = None


class _HDF5Writer(Writer):
    """Streams into `<file>.tmp-<pid>`; close renames it, or copies the dataset into an existing file."""

    def __init__(self, path: str, internal_path: str, shape: tuple[int, ...], dtype: np.dtype, axes: str,
                 compress: bool, drange: Sequence[float] | None, resolutions: Mapping[str, float] | None,
                 units: Mapping[str, str] | None) -> None:
        self.path = path
        self._internal = internal_path.strip("/")
        if not self._internal:
            raise UserError("HDF5 output needs a dataset name: give --output_internal_path (e.g. exported_data).")
        if os.path.exists(path) and not h5py.is_hdf5(path):  # found before computing, not when adding to it
            raise UserError(f"the output goes into the existing file {path}, which is not an HDF5 file; remove it "
                            "or choose another --output_filename_format.")
        self._temp = _temp_name(path)
        self._file = h5py.File(self._temp, "w")
        try:
            options = {"compression": "gzip", "compression_opts": 1} if compress else {}
            self._dataset = self._file.create_dataset(
                self._internal, shape=shape, dtype=dtype, chunks=_ilastik_chunks(shape, axes, dtype, 512_000), **options)
            _describe_hdf5(self._dataset, axes, drange, resolutions, units)
        except BaseException:
            self.abort()
            raise

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        self._dataset[tuple(slices)] = data

    def close(self) -> None:
        self._file.close()
        if not os.path.exists(self.path):
            os.replace(self._temp, self.path)
            return
        try:
            _copy_dataset(self._temp, self.path, self._internal)
        finally:
            _remove(self._temp)

    def abort(self) -> None:
        self._file.close()
        _remove(self._temp)


def _describe_hdf5(dataset: h5py.Dataset, axes: str, drange, resolutions, units) -> None:
    """ilastik's dataset metadata: axistags JSON, dimension labels, axis_units, drange."""
    dataset.attrs["axistags"] = make_axistags(axes, resolutions)
    for index, axis in enumerate(axes):
        dataset.dims[index].label = axis
    if units:
        dataset.attrs["axis_units"] = json.dumps(dict(units))
    if drange is not None:
        dataset.attrs["drange"] = np.asarray(drange)


def _copy_dataset(source_file: str, target_file: str, internal: str) -> None:
    """Put the dataset `internal` of `source_file` into the existing `target_file`, replacing what is there."""
    try:
        target = h5py.File(target_file, "a")
    except OSError as exc:
        raise UserError(f"cannot add the dataset '{internal}' to the existing file {target_file} "
                        f"(not a writable HDF5 file?): {exc}") from exc
    with target, h5py.File(source_file, "r") as source:
        if internal in target:
            del target[internal]
        parent = posixpath.dirname(internal)
        group = target.require_group(parent) if parent else target
        source.copy(source[internal], group, name=posixpath.basename(internal))


# ---- streaming formats -----------------------------------------------------------------------------


class _StreamingWriter(Writer):
    """Blocks go straight into the output. Rank 0 creates it (or, with the same fingerprint, resumes it);
    the other ranks open it. Subclasses say how to create, open, write, test chunks and finish."""

    def __init__(self, *, path: str, shape: tuple[int, ...], dtype: np.dtype, axes: str, chunks: tuple[int, ...],
                 drange, resolutions, units, comm, fingerprint) -> None:
        self.path = path
        self._shape, self._dtype, self._axes, self._chunks = shape, dtype, axes, chunks
        self._drange, self._resolutions, self._units = drange, resolutions, dict(units or {})
        self._comm, self._fingerprint = comm, fingerprint
        self._root = comm is None or comm.Get_rank() == 0
        self._created: list[str] = []
        on_root(comm, self._start)
        if not self._root:
            self._open()

    def _start(self) -> None:
        """Rank 0: start the output, or resume it when it records the same fingerprint."""
        existing = self._existing_attributes()
        resume = self._fingerprint is not None and check_resume(existing, self._fingerprint, self.path)
        if existing is not None and not resume:
            self._remove_existing()
        self._create(resume)
        if self._fingerprint is not None:
            self._set_attributes(run_attributes(self._fingerprint, complete=False))

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        self._write(tuple(slices), data)

    def block_done(self, slices: Sequence[slice]) -> bool:
        region = self._storage_slices(tuple(slices))
        return all(self._chunk_exists(index) for index in _grid_indices(region, self._chunks))

    def close(self) -> None:
        if self._comm is not None:
            self._comm.barrier()
        if self._root:
            self._finish()
            if self._fingerprint is not None:
                self._set_attributes({COMPLETE_KEY: True})

    def abort(self) -> None:
        if self._fingerprint is None and self._root:
            for path in reversed(self._created):
                shutil.rmtree(path, ignore_errors=True)

    def _track(self, path: str) -> None:
        """Remember `path` for abort when this writer is about to create it."""
        if not os.path.exists(path):
            self._created.append(path)

    def _storage_slices(self, slices: tuple[slice, ...]) -> tuple[slice, ...]:
        return slices

    def _finish(self) -> None:
        """Work left for rank 0 once every block is written."""

    def _existing_attributes(self) -> dict | None:
        """The existing output's attributes; None when there is none."""
        raise NotImplementedError

    def _remove_existing(self) -> None:
        raise NotImplementedError

    def _create(self, resume: bool) -> None:
        """Rank 0: create the output (or reopen it to resume)."""
        raise NotImplementedError

    def _open(self) -> None:
        """Ranks 1..N-1: open the output rank 0 created."""
        raise NotImplementedError

    def _write(self, slices: tuple[slice, ...], data: np.ndarray) -> None:
        raise NotImplementedError

    def _chunk_exists(self, index: tuple[int, ...]) -> bool:
        raise NotImplementedError

    def _set_attributes(self, attributes: dict) -> None:
        raise NotImplementedError

    def _metadata(self, axes: str) -> dict:
        """ilastik's dataset attributes: axistags, and axis_units/drange where known."""
        attributes: dict[str, object] = {"axistags": make_axistags(axes, self._resolutions)}
        if self._units:
            attributes["axis_units"] = json.dumps(self._units)
        if self._drange is not None:
            attributes["drange"] = [np.asarray(v).item() for v in self._drange]
        return attributes


class _N5Writer(_StreamingWriter):
    """ilastik's N5 export: `axistags`, `axes` (reversed string) and `drange` attributes; gzip level 1 or raw."""

    def __init__(self, *, internal_path: str, compress: bool, **common) -> None:
        self._internal = internal_path.strip("/")
        self._compression = "gzip" if compress else "raw"
        self._dataset: N5Dataset | None = None
        super().__init__(**common)

    def _dataset_dir(self) -> str:
        return os.path.join(self.path, *self._internal.split("/"))

    def _existing_attributes(self) -> dict | None:
        attributes = read_n5_attributes(self._dataset_dir())
        return attributes if "dimensions" in attributes else None

    def _remove_existing(self) -> None:
        shutil.rmtree(self._dataset_dir())

    def _create(self, resume: bool) -> None:
        self._track(self.path)
        self._track(self._dataset_dir())
        attributes = {**self._metadata(self._axes), "axes": list(self._axes[::-1])}  # a list, as ilastik's distributed export and tensorstore expect
        self._dataset = create_n5_dataset(self.path, self._internal, self._shape, self._chunks, self._dtype,
                                          compression=self._compression, attributes=attributes, exist_ok=resume)

    def _open(self) -> None:
        self._dataset = open_n5_dataset(self.path, self._internal)

    def _write(self, slices: tuple[slice, ...], data: np.ndarray) -> None:
        self._dataset.write(slices, np.asarray(data, dtype=self._dtype))

    def _chunk_exists(self, index: tuple[int, ...]) -> bool:
        return self._dataset.chunk_exists(index)

    def _set_attributes(self, attributes: dict) -> None:
        self._dataset.set_attributes(attributes)


class _ZarrArrayWriter(_StreamingWriter):
    """Shared by zarr and OME-Zarr: chunk existence from the store's files."""

    _array: zarr.Array

    def _chunk_exists(self, index: tuple[int, ...]) -> bool:
        key = self._array.metadata.encode_chunk_key(index)
        return os.path.isfile(os.path.join(self.path, *self._array.path.split("/"), *key.split("/")))

    def _write(self, slices: tuple[slice, ...], data: np.ndarray) -> None:
        self._array[slices] = data


class _ZarrWriter(_ZarrArrayWriter):
    """Plain zarr (v3): the array at the internal path of a group, `axistags`/`drange` attributes and dimension names."""

    def __init__(self, *, internal_path: str, **common) -> None:
        self._internal = internal_path.strip("/")
        if not self._internal:
            raise UserError("zarr output needs an array name: give --output_internal_path (e.g. exported_data).")
        super().__init__(**common)

    def _group(self) -> zarr.Group:
        import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
        return zarr.open_group(self.path, mode="a", zarr_format=3)

    def _existing_attributes(self) -> dict | None:
        if not os.path.exists(os.path.join(self.path, "zarr.json")):
            return None
        try:
            node = self._group()[self._internal]
        except KeyError:
            return None
        return dict(node.attrs)

    def _remove_existing(self) -> None:
        del self._group()[self._internal]

    def _create(self, resume: bool) -> None:
        self._track(self.path)
        self._track(os.path.join(self.path, *self._internal.split("/")))
        if resume:
            self._open()
            return
        self._array = self._group().create_array(
            self._internal, shape=self._shape, chunks=self._chunks, dtype=self._dtype, fill_value=0,
            dimension_names=list(self._axes), attributes=self._metadata(self._axes), config={"write_empty_chunks": True})

    def _open(self) -> None:
        import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
        self._array = zarr.open_array(self.path, path=self._internal, mode="r+")

    def _set_attributes(self, attributes: dict) -> None:
        self._array.attrs.update(attributes)


class _OmeZarrWriter(_ZarrArrayWriter):
    """OME-Zarr (NGFF 0.4, zarr v2 with `/` keys): data in tczyx at `s0`, coarser levels `s1`, ... for
    multi-scale (2x along x, y, z until one chunk holds the image: block mean for floats, every second
    pixel for integers); `multiscales` metadata written on close. Refuses an existing path unless resuming."""

    def __init__(self, *, multiscale: bool, offset: Sequence[int], **common) -> None:
        self._multiscale = multiscale
        self._offset = dict(zip(common["axes"], offset))
        common["chunks"] = tuple(1 if a in "tc" else n for a, n in zip(_OME_AXES, _to_ome(common["chunks"], common["axes"], 1)))
        super().__init__(**common)

    def _existing_attributes(self) -> dict | None:
        if not os.path.exists(self.path):
            return None
        import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
        try:
            return dict(zarr.open_group(self.path, mode="r").attrs)
        except (OSError, ValueError, zarr.errors.BaseZarrError):
            return {}

    def _remove_existing(self) -> None:
        raise UserError(f"the OME-Zarr output {self.path} already exists (ilastik refuses to overwrite it too); "
                        "delete it or choose another --output_filename_format.")

    def _create(self, resume: bool) -> None:
        self._track(self.path)
        if resume:
            self._open()
            return
        import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
        self._root_group = zarr.open_group(self.path, mode="w-", zarr_format=2)
        self._array = self._new_level("s0", _to_ome(self._shape, self._axes, 1))

    def _open(self) -> None:
        import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
        self._root_group = zarr.open_group(self.path, mode="r+", zarr_format=2)
        self._array = self._root_group["s0"]

    def _new_level(self, name: str, shape: Sequence[int]) -> zarr.Array:
        return self._root_group.create_array(
            name, shape=tuple(shape), chunks=tuple(min(c, n) for c, n in zip(self._chunks, shape)), dtype=self._dtype,
            fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"}, config={"write_empty_chunks": True},
            overwrite=True)

    def _storage_slices(self, slices: tuple[slice, ...]) -> tuple[slice, ...]:
        return tuple(_to_ome(slices, self._axes, slice(0, 1)))

    def _write(self, slices: tuple[slice, ...], data: np.ndarray) -> None:
        present = [a for a in _OME_AXES if a in self._axes]
        moved = np.transpose(data, [self._axes.index(a) for a in present])
        moved = moved[tuple(slice(None) if a in self._axes else np.newaxis for a in _OME_AXES)]
        self._array[self._storage_slices(slices)] = moved

    def _set_attributes(self, attributes: dict) -> None:
        self._root_group.attrs.update(attributes)

    def _finish(self) -> None:
        levels = [self._array]
        while self._multiscale and _needs_coarser(levels[-1].shape, self._chunks):
            levels.append(self._downsample(levels[-1], f"s{len(levels)}"))
        resolution = [float((self._resolutions or {}).get(a) or 1.0) for a in _OME_AXES]
        full = levels[0].shape
        datasets = [{"path": level.path.split("/")[-1], "coordinateTransformations": [
            {"type": "scale", "scale": [r * n / m for r, n, m in zip(resolution, full, level.shape)]}]} for level in levels]
        entry: dict[str, object] = {
            "version": "0.4",
            "axes": [{"name": a, "type": {"t": "time", "c": "channel"}.get(a, "space"),
                      **({"unit": self._units[a]} if self._units.get(a) else {})} for a in _OME_AXES],
            "datasets": datasets,
        }
        translation = [self._offset.get(a, 0) * r for a, r in zip(_OME_AXES, resolution)]
        if any(translation):
            entry["coordinateTransformations"] = [{"type": "scale", "scale": [1.0] * 5},
                                                  {"type": "translation", "translation": translation}]
        if len(levels) > 1:
            entry["metadata"] = {"method": "block mean (floats), every second pixel (integers)", "factor": 2}
        for level in levels:
            level.attrs.update(self._metadata(_OME_AXES))
        self._set_attributes({"_creator": {"name": "hpc-ilastik", "version": __version__}, "multiscales": [entry]})

    def _downsample(self, source: zarr.Array, name: str) -> zarr.Array:
        """Next level: 2x coarser along the spatial axes longer than 1, computed chunk by chunk."""
        factors = [2 if a in "zyx" and n > 1 else 1 for a, n in zip(_OME_AXES, source.shape)]
        target = self._new_level(name, [n // f for n, f in zip(source.shape, factors)])
        for index in _grid_indices(tuple(slice(0, n) for n in target.shape), target.chunks):
            out = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, target.chunks, target.shape))
            block = source[tuple(slice(s.start * f, s.stop * f) for s, f in zip(out, factors))]
            target[out] = _reduce(block, factors)
        return target


def _reduce(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Shrink by integer factors: mean of each factor-block for floats, its first element for integers."""
    if not np.issubdtype(block.dtype, np.floating):
        return block[tuple(slice(None, None, f) for f in factors)]
    split = [d for n, f in zip(block.shape, factors) for d in (n // f, f)]
    return block.reshape(split).mean(axis=tuple(range(1, 2 * len(factors), 2)), dtype=np.float64).astype(block.dtype)


def _needs_coarser(shape: Sequence[int], chunks: Sequence[int]) -> bool:
    """ilastik's stop rule: coarser levels until every spatial extent fits one chunk."""
    return any(n > c for a, n, c in zip(_OME_AXES, shape, chunks) if a in "zyx")


def _to_ome(values: Sequence, axes: str, missing) -> list:
    """Per-axis values in `axes` order → tczyx order, `missing` for axes not in `axes`."""
    return [values[axes.index(a)] if a in axes else missing for a in _OME_AXES]


# ---- whole-image formats ---------------------------------------------------------------------------


def _files_for(name: str, path: str, shape: tuple[int, ...], axes: str, offset: tuple[int, ...],
               resolutions, units) -> Callable[[np.ndarray], Iterator[tuple[str, Callable[[str], None]]]]:
    """For a whole-image format: image → (final path, save-to-temporary-path) for every file it makes."""
    if name == "numpy":
        save = _save_npy
    elif name.startswith("multipage tiff"):
        save = partial(_save_ome_tiff, resolutions=resolutions, units=units)
    else:
        save = _IMAGE_SAVERS[_BASE.get(name.split()[0], name.split()[0])]
    if not name.endswith("sequence"):
        return lambda image: iter([(path, partial(_save_as, save, image, axes))])
    step = _step_axis(shape, axes)
    k = axes.index(step)
    template = pad_slice_index(path, offset[k], shape[k])
    rest = axes.replace(step, "")

    def files(image: np.ndarray) -> Iterator[tuple[str, Callable[[str], None]]]:
        for i in range(shape[k]):
            target = format_known_keys(template, {"slice_index": offset[k] + i})
            yield target, partial(_save_as, save, np.take(image, i, axis=k), rest)

    return files


def _save_as(save: Callable, image: np.ndarray, axes: str, temp: str) -> None:
    save(temp, image, axes)


def _save_npy(path: str, image: np.ndarray, axes: str) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(image))


def _save_ome_tiff(path: str, image: np.ndarray, axes: str, resolutions, units) -> None:
    """ilastik's multipage tiff: an OME-TIFF in TZCYX order with physical pixel sizes where known."""
    order = "tzcyx"
    present = [a for a in order if a in axes]
    data = np.transpose(image, [axes.index(a) for a in present])
    data = data[tuple(slice(None) if a in axes else np.newaxis for a in order)]
    metadata: dict[str, object] = {"axes": order.upper()}
    for axis, size_key in (("x", "PhysicalSizeX"), ("y", "PhysicalSizeY"), ("z", "PhysicalSizeZ"), ("t", "TimeIncrement")):
        size, unit = (resolutions or {}).get(axis), (units or {}).get(axis)
        if size and (not unit or unit in _OME_TIFF_UNITS):
            metadata[size_key] = float(size)
            if unit:
                metadata[size_key + "Unit"] = _OME_TIFF_UNITS[unit]
    import tifffile  # lazy here, as zarr: imported only by runs that read or write this format

    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=metadata,
                     bigtiff=_needs_bigtiff(data.nbytes), software="hpc-ilastik")


def _plane(image: np.ndarray, axes: str) -> np.ndarray:
    """A 2-D image as (rows, columns[, channels]) the way vigra writes it: of its two non-singleton axes the
    earlier in x, y, z, t order gives the columns; singleton channel dropped."""
    columns, rows = sorted((a for a, n in zip(axes, image.shape) if a != "c" and n > 1), key=_VIGRA_ORDER.index)
    keep = [rows, columns] + (["c"] if "c" in axes and image.shape[axes.index("c")] > 1 else [])
    squeezed = image[tuple(slice(None) if a in keep else 0 for a in axes)]
    remaining = [a for a in axes if a in keep]
    return np.ascontiguousarray(np.transpose(squeezed, [remaining.index(a) for a in keep]))


def _save_tiff(path: str, image: np.ndarray, axes: str) -> None:
    import tifffile  # lazy here, as zarr: imported only by runs that read or write this format

    plane = _plane(image, axes)
    samples = 1 if plane.ndim == 2 else plane.shape[2]
    tifffile.imwrite(path, plane, photometric="rgb" if samples == 3 else "minisblack",
                     planarconfig="contig" if samples > 1 else None, bigtiff=_needs_bigtiff(plane.nbytes),
                     software="hpc-ilastik")


def _save_pillow(kind: str, path: str, image: np.ndarray, axes: str) -> None:
    from PIL import Image  # lazy here, as zarr: imported only by runs that read or write this format

    Image.fromarray(_plane(image, axes)).save(path, format=kind)


def _save_png(path: str, image: np.ndarray, axes: str) -> None:
    """PNG, 8 or 16 bit, gray or RGB (Pillow cannot write 16-bit RGB)."""
    plane = _plane(image, axes)
    rows, columns = plane.shape[:2]
    color_type = 0 if plane.ndim == 2 else 2
    scanlines = np.ascontiguousarray(plane, dtype=plane.dtype.newbyteorder(">")).reshape(rows, -1).view(np.uint8)
    filtered = np.concatenate([np.zeros((rows, 1), np.uint8), scanlines], axis=1)  # filter type 0 per line
    header = struct.pack(">IIBBBBB", columns, rows, 8 * plane.dtype.itemsize, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(filtered.tobytes()))
                + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _save_pnm(path: str, image: np.ndarray, axes: str) -> None:
    """Binary netpbm: P5 (gray) or P6 (RGB), maxval 255 or 65535; like vigra, pbm files hold a graymap."""
    plane = _plane(image, axes)
    rows, columns = plane.shape[:2]
    magic = "P5" if plane.ndim == 2 else "P6"
    header = f"{magic}\n{columns} {rows}\n{255 if plane.dtype.itemsize == 1 else 65535}\n".encode()
    with open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(plane, dtype=plane.dtype.newbyteorder(">")).tobytes())


def _save_ras(path: str, image: np.ndarray, axes: str) -> None:
    """Sun raster, standard type: 8-bit gray or 24-bit BGR, rows padded to an even byte count."""
    plane = _plane(image, axes)
    rows, columns = plane.shape[:2]
    pixels = plane if plane.ndim == 2 else plane[:, :, ::-1]
    lines = pixels.reshape(rows, -1)
    if lines.shape[1] % 2:
        lines = np.concatenate([lines, np.zeros((rows, 1), np.uint8)], axis=1)
    depth = 8 if plane.ndim == 2 else 24
    header = struct.pack(">8I", 0x59A66A95, columns, rows, depth, lines.size, 1, 0, 0)
    with open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(lines).tobytes())


def _save_hdr(path: str, image: np.ndarray, axes: str) -> None:
    """Radiance RGBE; scanlines run-length encoded (literal runs only) where the format allows it."""
    plane = _plane(image, axes).astype(np.float64)
    rows, columns = plane.shape[:2]
    rgbe = _rgbe(plane)
    if 8 <= columns <= 0x7FFF:
        marker = np.tile(np.array([2, 2, columns >> 8, columns & 0xFF], np.uint8), (rows, 1))
        body = np.concatenate([marker] + [_literal_runs(rgbe[:, :, k]) for k in range(4)], axis=1).tobytes()
    else:
        body = rgbe.tobytes()
    with open(path, "wb") as f:
        f.write(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {rows} +X {columns}\n".encode() + body)


def _rgbe(plane: np.ndarray) -> np.ndarray:
    """Radiance's shared-exponent encoding of (rows, columns, 3) values (negative and NaN become 0)."""
    values = np.nan_to_num(np.maximum(plane, 0.0))
    largest = values.max(axis=2)
    mantissa, exponent = np.frexp(largest)
    visible = largest > 1e-32
    scale = np.where(visible, mantissa * 256.0 / np.where(visible, largest, 1.0), 0.0)
    out = np.zeros(plane.shape[:2] + (4,), np.uint8)
    out[:, :, :3] = np.floor(values * scale[:, :, np.newaxis])
    out[:, :, 3] = np.where(visible, exponent + 128, 0)
    return out


def _literal_runs(component: np.ndarray) -> np.ndarray:
    """Each row of bytes as RLE literal packets: a count (≤ 128) followed by that many bytes."""
    rows, columns = component.shape
    full, rest = divmod(columns, 128)
    parts = []
    if full:
        packets = component[:, : full * 128].reshape(rows, full, 128)
        parts.append(np.concatenate([np.full((rows, full, 1), 128, np.uint8), packets], axis=2).reshape(rows, -1))
    if rest:
        parts.append(np.concatenate([np.full((rows, 1), rest, np.uint8), component[:, full * 128:]], axis=1))
    return np.concatenate(parts, axis=1)


_IMAGE_SAVERS: dict[str, Callable[[str, np.ndarray, str], None]] = {
    "png": _save_png, "jpg": partial(_save_pillow, "JPEG"), "gif": partial(_save_pillow, "GIF"),
    "bmp": partial(_save_pillow, "BMP"), "tiff": _save_tiff, "hdr": _save_hdr, "ras": _save_ras,
    "pnm": _save_pnm, "ppm": _save_pnm, "pgm": _save_pnm, "pbm": _save_pnm,
}


# ---- helpers ---------------------------------------------------------------------------------------


def _needs_bigtiff(nbytes: int) -> bool:
    """Classic TIFF addresses 4 GiB; leave room for the tags."""
    return nbytes > 2**32 - 2**25


def _step_axis(shape: Sequence[int], axes: str) -> str | None:
    """The axis a sequence steps along: the first non-singleton one (ilastik's OpStackWriter)."""
    return next((a for a, n in zip(axes, shape) if n > 1), None)


def _ilastik_chunks(shape: Sequence[int], axes: str, dtype: np.dtype, target_bytes: int) -> tuple[int, ...]:
    """ilastik's chunks: extent 1 along t and c, the other axes as equal as their extents allow, about
    `target_bytes` in all (lazyflow's determineBlockShape)."""
    limits = [1 if a in "tc" else max(int(n), 1) for a, n in zip(axes, shape)]
    target = target_bytes / dtype.itemsize
    chunks = [0] * len(limits)
    volume = 1
    for remaining, (limit, index) in zip(range(len(limits), 0, -1), sorted(zip(limits, range(len(limits))))):
        side = max(1, min(int((target // volume) ** (1.0 / remaining) + 0.5), limit))
        chunks[index] = side
        volume *= side
    return tuple(chunks)


def _chunk_shape(shape: tuple[int, ...], axes: str, chunks: Sequence[int] | None, dtype: np.dtype,
                 target_bytes: int) -> tuple[int, ...]:
    """Given chunks clamped to the image, or ilastik's chunks of about `target_bytes`."""
    if chunks is None:
        return _ilastik_chunks(shape, axes, dtype, target_bytes)
    if len(chunks) != len(shape) or any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunks {tuple(chunks)} do not fit shape {shape}")
    return tuple(max(1, min(int(c), n)) for c, n in zip(chunks, shape))


def _grid_indices(region: Sequence[slice], chunks: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Grid positions of the chunks a region touches."""
    return itertools.product(*(range(s.start // c, -(-s.stop // c)) for s, c in zip(region, chunks)))


def _make_directory(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {directory}: {exc.strerror or exc}.") from exc
    try:  # a real probe: os.access says yes to root and on read-only or pseudo file systems
        handle, probe = tempfile.mkstemp(prefix=".hpc-ilastik-probe-", dir=directory)
    except OSError as exc:
        raise UserError(f"the output directory {directory} is not writable: {exc.strerror or exc}.") from exc
    os.close(handle)
    _remove(probe)


def _temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
