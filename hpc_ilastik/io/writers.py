"""The writer every output format implements, the HDF5 and whole-image writers, and what writers share.

A writer takes blocks in any order, then commits (`close`) or discards (`abort`). HDF5 streams into
`<file>.tmp-<pid>`, renamed into place on `close()` (or copied into an existing file, replacing only the
dataset at the internal path, as ilastik appends). Whole-image formats buffer the image (in memory, or
beyond `memory_limit` in a memory-mapped file beside the output) and write every file of the format to
temporary names renamed into place: a failed or aborted export leaves no output file.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import make_axistags

MEMORY_LIMIT = 1 << 30  # whole-image formats buffer up to this many bytes in memory, more in a memmap


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


class WholeImageWriter(Writer):
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
                staged.append((temp_name(final), final))
                save(staged[-1][0])
            for temp, final in staged:
                os.replace(temp, final)
        except BaseException as exc:
            for temp, _ in staged:
                remove_file(temp)
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
            remove_file(self._spill)
            self._spill = None


class HDF5Writer(Writer):
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
        self._temp = temp_name(path)
        self._file = h5py.File(self._temp, "w")
        try:
            options = {"compression": "gzip", "compression_opts": 1} if compress else {}
            self._dataset = self._file.create_dataset(
                self._internal, shape=shape, dtype=dtype, chunks=ilastik_chunks(shape, axes, dtype, 512_000), **options)
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
            remove_file(self._temp)

    def abort(self) -> None:
        self._file.close()
        remove_file(self._temp)


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


# ---- helpers ---------------------------------------------------------------------------------------


def ilastik_chunks(shape: Sequence[int], axes: str, dtype: np.dtype, target_bytes: int) -> tuple[int, ...]:
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


def make_directory(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {directory}: {exc.strerror or exc}.") from exc
    try:  # a real probe: os.access says yes to root and on read-only or pseudo file systems
        handle, probe = tempfile.mkstemp(prefix=".hpc-ilastik-probe-", dir=directory)
    except OSError as exc:
        raise UserError(f"the output directory {directory} is not writable: {exc.strerror or exc}.") from exc
    os.close(handle)
    remove_file(probe)


def temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
