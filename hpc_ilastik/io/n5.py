"""A small N5 layer (saalfeldlab/n5 spec) on numcodecs: datasets, chunk files, atomic chunk writes.

Layout: a container directory with `attributes.json` holding {"n5": version}; a dataset is a directory
whose `attributes.json` holds `dimensions`, `blockSize` (both x first, i.e. reversed numpy order),
`dataType` and `compression`. Chunk grid position (i0, ..., in) in numpy order is stored at
`<dataset>/<in>/.../<i0>`: a big-endian header (uint16 mode, uint16 ndim, uint32 block size per axis,
reversed) followed by the compressed big-endian elements (numpy C order of the block). Edge chunks are
truncated to the dataset's extent; a missing chunk reads as 0.
"""

import itertools
import json
import os
import secrets
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hpc_ilastik.errors import UserError

N5_VERSION = "4.0.0"
_DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
_FORMAT_KEYS = ("dimensions", "blockSize", "dataType", "compression")
_ATTRIBUTES = "attributes.json"
_DEFAULT_COMPRESSION = {"gzip": {"type": "gzip", "level": 1}, "raw": {"type": "raw"}}


@dataclass
class N5Dataset:
    """One N5 dataset directory; shape and chunks in numpy (C) order."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    compression: dict
    attributes: dict = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks))

    def chunk_slices(self, grid_index: Sequence[int]) -> tuple[slice, ...]:
        """The region of the dataset covered by one chunk (truncated at the edge)."""
        if len(grid_index) != len(self.shape) or not all(0 <= i < g for i, g in zip(grid_index, self.grid_shape)):
            raise ValueError(f"chunk {tuple(grid_index)} is outside the chunk grid {self.grid_shape}")
        return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(grid_index, self.chunks, self.shape))

    def chunk_path(self, grid_index: Sequence[int]) -> str:
        """File name of one chunk."""
        return os.path.join(self.path, *(str(int(i)) for i in reversed(tuple(grid_index))))

    def chunk_exists(self, grid_index: Sequence[int]) -> bool:
        """True when the chunk file is there (chunks are written atomically, so it is complete)."""
        return os.path.isfile(self.chunk_path(grid_index))

    def read(self, slices: Sequence[slice] = ()) -> np.ndarray:
        """Read a region (slices with step 1; missing trailing slices mean whole axes); absent chunks read as 0."""
        region = _normalise(slices, self.shape)
        out = np.zeros(tuple(s.stop - s.start for s in region), dtype=self.dtype)
        for grid_index in _grid_indices(region, self.chunks):
            chunk_region = self.chunk_slices(grid_index)
            block = self.read_chunk(grid_index)
            if block is None:
                continue
            overlap = tuple(slice(max(r.start, c.start), min(r.stop, c.stop)) for r, c in zip(region, chunk_region))
            out[tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(overlap, region))] = block[
                tuple(slice(o.start - c.start, o.stop - c.start) for o, c in zip(overlap, chunk_region))
            ]
        return out

    def read_chunk(self, grid_index: Sequence[int]) -> np.ndarray | None:
        """One chunk as stored (cropped to the dataset's extent), or None if it was never written."""
        expected = tuple(s.stop - s.start for s in self.chunk_slices(grid_index))
        try:
            with open(self.chunk_path(grid_index), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        block = _decode_chunk(raw, self.dtype, self.compression, self.chunk_path(grid_index))
        if any(b < e for b, e in zip(block.shape, expected)):
            raise UserError(f"N5 chunk {self.chunk_path(grid_index)} holds {block.shape}, less than {expected}.")
        return block[tuple(slice(0, e) for e in expected)]

    def write_chunk(self, grid_index: Sequence[int], data: np.ndarray) -> None:
        """Write one whole chunk atomically (temporary file, then rename); data must have the chunk's extent."""
        expected = tuple(s.stop - s.start for s in self.chunk_slices(grid_index))
        if tuple(data.shape) != expected or data.dtype != self.dtype:
            raise ValueError(
                f"chunk {tuple(grid_index)} needs {self.dtype} data of shape {expected}, got {data.dtype} {data.shape}"
            )
        header = struct.pack(f">HH{len(expected)}I", 0, len(expected), *reversed(expected))
        payload = np.ascontiguousarray(data, dtype=self.dtype.newbyteorder(">"))  # the one copy: big-endian
        codec = _codec(self.compression)
        # a codec gets the bytes (for blosc's shuffle: elements of one byte, as always written here)
        _write_atomic(self.chunk_path(grid_index), header,
                      codec.encode(payload.reshape(-1).view(np.uint8)) if codec else payload)

    def write(self, slices: Sequence[slice], data: np.ndarray) -> None:
        """Write a chunk-aligned region (starts on chunk boundaries, stops on boundaries or the dataset's end)."""
        region = _normalise(slices, self.shape)
        for s, c, n in zip(region, self.chunks, self.shape):
            if s.start % c or (s.stop % c and s.stop != n):
                raise ValueError(f"region {region} is not aligned to the chunks {self.chunks}")
        if tuple(data.shape) != tuple(s.stop - s.start for s in region):
            raise ValueError(f"data of shape {data.shape} does not fit region {region}")
        for grid_index in _grid_indices(region, self.chunks):
            chunk_region = self.chunk_slices(grid_index)
            local = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(chunk_region, region))
            self.write_chunk(grid_index, data[local])

    def set_attributes(self, attributes: Mapping) -> None:
        """Add or replace user attributes (the format keys cannot be changed this way)."""
        _check_user_attributes(attributes)
        self.attributes.update(attributes)
        _write_json(os.path.join(self.path, _ATTRIBUTES), {**self._format_attributes(), **self.attributes})

    def _format_attributes(self) -> dict:
        return {
            "dimensions": list(reversed(self.shape)),
            "blockSize": list(reversed(self.chunks)),
            "dataType": self.dtype.name,
            "compression": self.compression,
        }


def create_n5_dataset(
    container: str,
    path: str,
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: np.dtype | str | type,
    compression: str | Mapping = "gzip",
    attributes: Mapping | None = None,
    exist_ok: bool = False,
) -> N5Dataset:
    """Create a dataset (and the container); with exist_ok an identical existing dataset is reopened."""
    dtype = np.dtype(dtype)
    if dtype.name not in _DATA_TYPES:
        raise UserError(f"N5 cannot store data of type {dtype}; supported: {', '.join(_DATA_TYPES)}.")
    if len(shape) != len(chunks) or any(c < 1 for c in chunks):
        raise ValueError(f"chunks {tuple(chunks)} do not fit shape {tuple(shape)}")
    if isinstance(compression, str):
        if compression not in _DEFAULT_COMPRESSION:
            raise UserError(f"Unknown N5 compression '{compression}'; use one of {', '.join(_DEFAULT_COMPRESSION)}.")
        compression = _DEFAULT_COMPRESSION[compression]
    _codec(compression)
    attributes = dict(attributes or {})
    _check_user_attributes(attributes)
    wanted = N5Dataset(
        _dataset_dir(container, path), tuple(map(int, shape)), tuple(map(int, chunks)), dtype, dict(compression)
    )
    _ensure_container(container)
    if os.path.isfile(os.path.join(wanted.path, _ATTRIBUTES)):
        existing = open_n5_dataset(container, path)
        if not exist_ok:
            raise UserError(f"N5 dataset {wanted.path} already exists.")
        if existing._format_attributes() != wanted._format_attributes():
            raise UserError(
                f"N5 dataset {wanted.path} already exists with shape {existing.shape}, chunks {existing.chunks}, "
                f"type {existing.dtype}, compression {existing.compression}; this run needs shape {wanted.shape}, "
                f"chunks {wanted.chunks}, type {wanted.dtype}, compression {wanted.compression}. "
                "Remove it or choose another output."
            )
        existing.set_attributes(attributes)
        return existing
    os.makedirs(wanted.path, exist_ok=True)
    wanted.set_attributes(attributes)
    return wanted


def open_n5_dataset(container: str, path: str) -> N5Dataset:
    """Open an existing dataset of an N5 container."""
    dataset_dir = _dataset_dir(container, path)
    attributes = read_n5_attributes(dataset_dir)
    if "dimensions" not in attributes:
        found = list_n5_datasets(container)
        raise UserError(
            f"N5 container {container} has no dataset '{path}'; datasets there: {', '.join(found) or 'none'}."
        )
    try:
        shape = tuple(int(n) for n in reversed(attributes["dimensions"]))
        chunks = tuple(int(n) for n in reversed(attributes["blockSize"]))
        dtype = np.dtype(attributes["dataType"])
        compression = attributes.get("compression", {"type": "raw"})
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"N5 dataset {dataset_dir} has invalid attributes.json: {exc}.") from exc
    if isinstance(compression, str):  # N5 before 1.0 stored the compression type as a bare string
        compression = {"type": compression}
    _codec(compression)
    user = {k: v for k, v in attributes.items() if k not in _FORMAT_KEYS}
    return N5Dataset(dataset_dir, shape, chunks, dtype, compression, user)


def read_n5_attributes(directory: str) -> dict:
    """The attributes.json of an N5 group or dataset ({} if absent)."""
    try:
        with open(os.path.join(directory, _ATTRIBUTES)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise UserError(f"{os.path.join(directory, _ATTRIBUTES)} is not valid JSON: {exc}.") from exc


def list_n5_datasets(container: str) -> list[str]:
    """Paths (relative to the container, '/'-separated; "" for the root) of every dataset in it, sorted."""
    found = []
    for directory, subdirs, _ in os.walk(container):
        if "dimensions" in read_n5_attributes(directory):
            relative = os.path.relpath(directory, container)
            found.append("" if relative == "." else relative.replace(os.sep, "/"))
            subdirs.clear()  # do not walk a dataset's chunk directories
        else:
            subdirs.sort()
    return sorted(found)


def _dataset_dir(container: str, path: str) -> str:
    return os.path.join(container, *(part for part in path.split("/") if part))


def _normalise(slices: Sequence[slice], shape: Sequence[int]) -> tuple[slice, ...]:
    slices = tuple(slices) + (slice(None),) * (len(shape) - len(slices))
    if len(slices) != len(shape):
        raise ValueError(f"{len(slices)} slices for {len(shape)} axes")
    region = []
    for s, n in zip(slices, shape):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError("N5 regions need step 1")
        region.append(slice(start, max(start, stop)))
    return tuple(region)


def _grid_indices(region: Sequence[slice], chunks: Sequence[int]) -> Iterator[tuple[int, ...]]:
    if any(s.stop <= s.start for s in region):
        return iter(())
    return itertools.product(*(range(s.start // c, -(-s.stop // c)) for s, c in zip(region, chunks)))


def _codec(compression: Mapping):
    """numcodecs codec for an N5 compression dict (None for raw)."""
    kind = compression.get("type")
    if kind == "raw":
        return None
    import numcodecs  # lazy here: raw chunks (our default) need no codec, and numcodecs loads every codec it has
    if kind == "gzip":
        level = compression.get("level", -1)
        return numcodecs.Zlib(level) if compression.get("useZlib") else numcodecs.GZip(level)
    if kind == "bzip2":
        return numcodecs.BZ2(compression.get("blockSize", 9))
    if kind == "xz":
        return numcodecs.LZMA(preset=compression.get("preset", 6))
    if kind == "zstd":
        return numcodecs.Zstd(compression.get("level", 3))
    if kind == "blosc":
        return numcodecs.Blosc(
            cname=compression.get("cname", "lz4"),
            clevel=compression.get("clevel", 5),
            shuffle=compression.get("shuffle", 1),
            blocksize=compression.get("blocksize", 0),
        )
    raise UserError(f"N5 compression {dict(compression)} is not supported; use raw, gzip, bzip2, xz, zstd or blosc.")


def _decode_chunk(raw: bytes, dtype: np.dtype, compression: Mapping, name: str) -> np.ndarray:
    try:
        mode, ndim = struct.unpack_from(">HH", raw, 0)
        block_shape = struct.unpack_from(f">{ndim}I", raw, 4)
        if mode not in (0, 1):
            raise UserError(f"N5 chunk {name} has mode {mode}; only default (0) and varlength (1) chunks hold arrays.")
        offset = 4 + 4 * ndim + 4 * mode  # "varlength" chunks (mode 1) also store the element count
        codec = _codec(compression)
        payload = raw[offset:] if codec is None else codec.decode(raw[offset:])
        shape = tuple(reversed(block_shape))
        values = np.frombuffer(payload, dtype=dtype.newbyteorder(">"), count=int(np.prod(shape)))
    except (struct.error, ValueError, OSError, EOFError, RuntimeError, zlib.error) as exc:
        raise UserError(f"N5 chunk {name} is truncated or corrupt: {exc}.") from exc
    return values.reshape(shape).astype(dtype)


def _check_user_attributes(attributes: Mapping) -> None:
    clash = sorted(set(attributes) & set(_FORMAT_KEYS))
    if clash:
        raise ValueError(f"attributes {clash} describe the N5 format and cannot be set directly")


def _ensure_container(container: str) -> None:
    os.makedirs(container, exist_ok=True)
    root = read_n5_attributes(container)
    if "n5" not in root:
        _write_json(os.path.join(container, _ATTRIBUTES), {**root, "n5": N5_VERSION})


def _write_json(path: str, content: dict) -> None:
    _write_atomic(path, json.dumps(content, indent=2).encode())


def _write_atomic(path: str, *parts: bytes | np.ndarray) -> None:
    """Write `parts` (bytes or contiguous arrays, one after another) to a unique temporary name beside `path`,
    then rename: readers see nothing or everything."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
