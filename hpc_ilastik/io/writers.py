"""The writer every output format implements, the HDF5 and whole-image writers, and what writers share.

A writer takes blocks in any order, then commits (`close`) or discards (`abort`). HDF5 streams into
`<file>.tmp-<pid>`, renamed into place on `close()` (or copied into an existing file, replacing only the
dataset at the internal path, as ilastik appends). Whole-image formats buffer the image (in memory, or
beyond `memory_limit` in a memory-mapped file beside the output) and write every file of the format to
temporary names renamed into place: a failed or aborted export leaves no output file.

A write that fails in the operating system (disk full, quota, read-only, I/O error) is one `UserError`
naming the output, exit code `EXIT_WRITE_FAILED`, from `reporting_write_errors`, which every writer uses.
HDF5 needs care: a close that cannot flush its cache leaves h5py's objects half-closed and the next close
(at the latest at exit) crashes the process, so writers flush first and discard a failed file's cache
(`_close_discarding`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import make_axistags
from hpc_ilastik.io.hdf5_chunks import block_aligned_chunks, write_whole_chunks

MEMORY_LIMIT = 1 << 30  # whole-image formats buffer up to this many bytes in memory, more in a memmap
EXIT_WRITE_FAILED = 74  # sysexits.h's EX_IOERR: the output could not be written (a usage error exits 2)
_HDF5_ERRORS = (OSError, RuntimeError)  # h5py raises RuntimeError for some failed HDF5 calls (a close that cannot flush)
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")  # how HDF5 names the errno of a failed system call
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")  # numpy's tofile (np.save, tifffile): no errno


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
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes <= memory_limit:
            self._buffer = np.zeros(shape, dtype)
            return
        try:
            with reporting_write_errors(path):
                handle, self._spill = tempfile.mkstemp(prefix=".hpc-ilastik-buffer-",
                                                       dir=os.path.dirname(os.path.abspath(path)))
                try:
                    _reserve(handle, nbytes)
                finally:
                    os.close(handle)
                self._buffer = np.memmap(self._spill, dtype=dtype, mode="r+", shape=shape)
        except BaseException:
            self._release()
            raise

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        self._buffer[tuple(slices)] = data

    def close(self) -> None:
        staged: list[tuple[str, str]] = []
        try:
            for final, save in self._files(self._buffer):
                staged.append((temp_name(final), final))
                with reporting_write_errors(final):  # while the temporary file is there: a short write is judged
                    save(staged[-1][0])                # by the space left
            for temp, final in staged:
                with reporting_write_errors(final):
                    os.replace(temp, final)
        except BaseException:
            for temp, _ in staged:
                remove_file(temp)
            raise
        finally:
            self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        self._buffer = None
        if self._spill is not None:
            remove_file(self._spill)
            self._spill = None


class HDF5Writer(Writer):
    """Streams into `<file>.tmp-<pid>`; close renames it, or copies the dataset into an existing file. Given the
    block shape (`blocks`), the chunks are ilastik's moved to divide it, and each block goes in as whole chunks."""

    def __init__(self, path: str, internal_path: str, shape: tuple[int, ...], dtype: np.dtype, axes: str,
                 compress: bool, drange: Sequence[float] | None, resolutions: Mapping[str, float] | None,
                 units: Mapping[str, str] | None, blocks: Sequence[int] | None = None) -> None:
        self.path = path
        self._internal = internal_path.strip("/")
        if not self._internal:
            raise UserError("HDF5 output needs a dataset name: give --output_internal_path (e.g. exported_data).")
        if os.path.exists(path) and not h5py.is_hdf5(path):  # found before computing, not when adding to it
            raise UserError(f"the output goes into the existing file {path}, which is not an HDF5 file; remove it "
                            "or choose another --output_filename_format.")
        self._temp = temp_name(path)
        self._file: h5py.File | None = None
        try:
            with reporting_write_errors(path, _HDF5_ERRORS):
                self._file = h5py.File(self._temp, "w")
                options = {"compression": "gzip", "compression_opts": 1} if compress else {}
                chunks = ilastik_chunks(shape, axes, dtype, 512_000)
                if blocks is not None:
                    chunks = block_aligned_chunks(chunks, [min(b, n) for b, n in zip(blocks, shape)])
                self._dataset = self._file.create_dataset(self._internal, shape=shape, dtype=dtype, chunks=chunks,
                                                          **options)
                _describe_hdf5(self._dataset, axes, drange, resolutions, units)
        except BaseException:
            self.abort()
            raise

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        with reporting_write_errors(self.path, _HDF5_ERRORS):
            if not write_whole_chunks(self._dataset, slices, data):
                self._dataset[tuple(slices)] = data

    def close(self) -> None:
        try:
            with reporting_write_errors(self.path, _HDF5_ERRORS):
                self._file.flush()  # a full disk shows here, while the file can still be discarded safely
                file, self._file = self._file, None  # flushed: the close has nothing left to write
                file.close()
                if not os.path.exists(self.path):
                    os.replace(self._temp, self.path)
                    return
            with reporting_write_errors(self.path, _HDF5_ERRORS, "; the existing file may be damaged"):
                _copy_dataset(self._temp, self.path, self._internal)
        finally:
            self.abort()  # the temporary file goes; after a failure with the file's unwritten cache

    def abort(self) -> None:
        if self._file is not None:
            _close_discarding(self._file)
            self._file = None
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
    try:
        with h5py.File(source_file, "r") as source:
            if internal in target:
                del target[internal]
            parent = posixpath.dirname(internal)
            group = target.require_group(parent) if parent else target
            source.copy(source[internal], group, name=posixpath.basename(internal))
        target.flush()
    except BaseException:
        _close_discarding(target)
        raise
    target.close()


def _close_discarding(file: h5py.File) -> None:
    """Close an HDF5 file whose cached writes are not wanted (or cannot be written: disk full). They go to an
    anonymous scratch file instead, so the close succeeds: an HDF5 close that fails leaves h5py's objects
    half-closed, and closing them again, at the latest when the interpreter exits, crashes the process.
    A failed flush can leave HDF5's metadata cache mid-flush (its skip list on), which makes the close fail;
    a flush that fails on that state resets it, so flush (into the scratch file) until one succeeds."""
    if not file.id.valid:
        return
    scratch = _scratch_descriptor()
    try:
        os.dup2(scratch, file.id.get_vfd_handle())  # the default (sec2) driver's file descriptor
    finally:
        os.close(scratch)
    for _ in range(3):
        with suppress(*_HDF5_ERRORS):
            file.flush()
            break
    file.close()


def _scratch_descriptor() -> int:
    """A descriptor of an anonymous file that takes writes, seeks and truncation, in memory where possible."""
    if hasattr(os, "memfd_create"):  # Linux
        return os.memfd_create("hpc-ilastik-discarded")
    with tempfile.TemporaryFile() as scratch:
        return os.dup(scratch.fileno())


# ---- helpers ---------------------------------------------------------------------------------------


@contextmanager
def reporting_write_errors(path: str, errors: tuple[type[BaseException], ...] = (OSError,),
                           advice: str = "") -> Iterator[None]:
    """Inside, an error of `errors` (the operating system's: disk full, quota, read-only, I/O) becomes the one
    line `write_error(path, ...)`."""
    try:
        yield
    except errors as exc:
        raise write_error(path, exc, advice) from exc


def write_error(path: str, exc: BaseException, advice: str = "") -> UserError:
    """'cannot write PATH: <the system's reason>' + `advice`, exit code EXIT_WRITE_FAILED."""
    return UserError(f"cannot write {path}: {_reason(path, exc)}{advice}", EXIT_WRITE_FAILED)


def _reason(path: str, exc: BaseException) -> str:
    """The errno's text (HDF5 gives it inside its message); for a short write without one, whether the disk is full."""
    text = " ".join(str(exc).split())
    code = getattr(exc, "errno", None)
    if code is None and (found := _ERRNO_IN_TEXT.search(text)):
        code = int(found.group(1))
    if code:
        return os.strerror(code)
    if short := _SHORT_WRITE.search(text):
        requested, written = map(int, short.groups())
        if _free_bytes(os.path.dirname(os.path.abspath(path))) < requested - written:
            return os.strerror(errno.ENOSPC)
        return f"only {written} of {requested} bytes were written"
    return text


def _free_bytes(directory: str) -> float:
    """Bytes an unprivileged writer may still use on the file system of `directory` (inf if unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return math.inf
    return st.f_bavail * st.f_frsize


def _reserve(handle: int, nbytes: int) -> None:
    """Give the open file `nbytes` of disk space now (an error if there is none): a memory-mapped page that the disk
    has no room for ends the process with SIGBUS when it is written."""
    if hasattr(os, "posix_fallocate"):  # not on macOS
        os.posix_fallocate(handle, 0, nbytes)
    else:
        os.ftruncate(handle, nbytes)


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
