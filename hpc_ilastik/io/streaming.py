"""Streaming formats (N5, zarr, OME-Zarr): blocks go straight into the output, written by one process or
by several MPI ranks together (rank 0 creates the output, the others open it). An output that records
the fingerprint of the command writing it resumes: written chunks are kept and `block_done` tells which
blocks a rerun may skip; without a fingerprint `abort()` removes what was created. A write that fails in the
operating system (disk full, ...) is one `UserError` naming the output, raised on every rank when it happens
on rank 0 while creating or finishing the output; chunks are written whole or not at all, so the same command
resumes once the cause is fixed.

Facts: ilastik-spec.md §2.6 (ilastik's N5 export, `write_ome_zarr.py`).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from hpc_ilastik import __version__
from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import make_axistags
from hpc_ilastik.io.n5 import N5Dataset, create_n5_dataset, open_n5_dataset, read_n5_attributes
from hpc_ilastik.io.resume import COMPLETE_KEY, check_resume, run_attributes
from hpc_ilastik.io.writers import Writer, ilastik_chunks, remove_file, reporting_write_errors

if TYPE_CHECKING:
    import zarr

T = TypeVar("T")

_OME_AXES = "tczyx"


class Ranks(Protocol):
    """The processes that write one output together (`run.distributed.RankGroup` over MPI ranks)."""

    @property
    def rank(self) -> int:
        """This process's rank."""

    @property
    def size(self) -> int:
        """How many ranks write the output."""

    def on_root(self, fn: Callable[[], T]) -> T:
        """`fn()` run on rank 0 only, its result (or its UserError) given to every rank."""

    def barrier(self) -> None:
        """Wait until every rank arrives here."""


class StreamingWriter(Writer):
    """Blocks go straight into the output. Rank 0 creates it (or, with the same fingerprint, resumes it);
    the other ranks open it. Subclasses say how to create, open, write, test chunks and finish."""

    def __init__(self, *, path: str, shape: tuple[int, ...], dtype: np.dtype, axes: str, chunks: tuple[int, ...],
                 drange, resolutions, units, ranks: Ranks | None, fingerprint) -> None:
        self.path = path
        self._shape, self._dtype, self._axes, self._chunks = shape, dtype, axes, chunks
        self._drange, self._resolutions, self._units = drange, resolutions, dict(units or {})
        self._ranks, self._fingerprint = ranks, fingerprint
        self._root = ranks is None or ranks.rank == 0
        self._created: list[str] = []
        if ranks is None:
            self._start()
        else:
            ranks.on_root(self._start)
        if not self._root:
            with self._reporting():
                self._open()

    def _reporting(self):
        """`reporting_write_errors` for this output, telling that a rerun resumes it when it does."""
        resumes = "; run the same command again to resume once that is fixed" if self._fingerprint is not None else ""
        return reporting_write_errors(self.path, advice=resumes)

    def _start(self) -> None:
        """Rank 0: start the output, or resume it when it records the same fingerprint."""
        try:
            with self._reporting():
                existing = self._existing_attributes()
                resume = self._fingerprint is not None and check_resume(existing, self._fingerprint, self.path)
                if existing is not None and not resume:
                    self._remove_existing()
                self._create(resume)
                if self._fingerprint is not None:
                    self._set_attributes(run_attributes(self._fingerprint, complete=False))
        except BaseException:
            self.abort()  # nobody else will: the writer was never made
            raise

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        with self._reporting():
            self._write(tuple(slices), data)

    def block_done(self, slices: Sequence[slice]) -> bool:
        region = self._storage_slices(tuple(slices))
        return all(self._chunk_exists(index) for index in _grid_indices(region, self._chunks))

    def close(self) -> None:
        if self._ranks is None:
            self._commit()
        else:
            self._ranks.barrier()
            self._ranks.on_root(self._commit)  # a failure there ends every rank, not rank 0 alone

    def _commit(self) -> None:
        """Rank 0, every block written: finish the output, then mark it complete."""
        with self._reporting():
            self._finish()
            if self._fingerprint is not None:
                self._set_attributes({COMPLETE_KEY: True})

    def abort(self) -> None:
        if not self._root:
            return
        if self._fingerprint is None:
            for path in reversed(self._created):
                shutil.rmtree(path, ignore_errors=True)
        _settle_zarr_writes()
        for folder, _, names in os.walk(self.path):  # zarr's own temporaries of a write that failed (disk full)
            for name in names:
                if name.startswith(".") and name.endswith(".partial"):
                    remove_file(os.path.join(folder, name))

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


class N5Writer(StreamingWriter):
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


class _ZarrArrayWriter(StreamingWriter):
    """Shared by zarr and OME-Zarr: chunk existence from the store's files."""

    _array: zarr.Array

    def _chunk_exists(self, index: tuple[int, ...]) -> bool:
        key = self._array.metadata.encode_chunk_key(index)
        return os.path.isfile(os.path.join(self.path, *self._array.path.split("/"), *key.split("/")))

    def _write(self, slices: tuple[slice, ...], data: np.ndarray) -> None:
        self._array[slices] = data


class ZarrWriter(_ZarrArrayWriter):
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


class OmeZarrWriter(_ZarrArrayWriter):
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


def chunk_shape(shape: tuple[int, ...], axes: str, chunks: Sequence[int] | None, dtype: np.dtype,
                 target_bytes: int) -> tuple[int, ...]:
    """Given chunks clamped to the image, or ilastik's chunks of about `target_bytes`."""
    if chunks is None:
        return ilastik_chunks(shape, axes, dtype, target_bytes)
    if len(chunks) != len(shape) or any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunks {tuple(chunks)} do not fit shape {shape}")
    return tuple(max(1, min(int(c), n)) for c, n in zip(chunks, shape))


def _settle_zarr_writes(timeout: float = 60.0) -> None:
    """Wait until zarr's I/O loop has finished the writes it started. zarr writes a node's documents concurrently:
    when one fails (disk full) the error comes back while the others still run, each with its `.partial`
    temporary, on a daemon thread that an exiting process would cut short, leaving the temporary behind."""
    try:
        from zarr.core import sync as zarr_sync
    except ImportError:
        return
    loop = getattr(zarr_sync, "loop", [None])[0]
    if loop is None or not loop.is_running():  # zarr never wrote in this process
        return
    import asyncio  # here: zarr has loaded it; every other run is spared its import (20-30 ms)

    async def others_done() -> None:
        me = asyncio.current_task()
        while any(task is not me and not task.done() for task in asyncio.all_tasks()):
            await asyncio.sleep(0.001)

    try:
        asyncio.run_coroutine_threadsafe(others_done(), loop).result(timeout)
    except concurrent.futures.TimeoutError:
        pass  # a write that hangs: its temporary is left, as it would be without this wait


def _grid_indices(region: Sequence[slice], chunks: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Grid positions of the chunks a region touches."""
    return itertools.product(*(range(s.start // c, -(-s.stop // c)) for s, c in zip(region, chunks)))
