"""ilastik's `--output_format` names: which exist, their file extensions, and what each can hold.

Facts: ilastik-spec.md §2.6 (ilastik's `opExportSlot.py` `FormatValidity`, `ioOperators.py`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from hpc_ilastik.errors import UserError

_IMAGE_EXTENSIONS = ("bmp", "gif", "hdr", "jpeg", "jpg", "pbm", "pgm", "png", "pnm", "ppm", "ras", "tif", "tiff")
_EXTENSIONS = {
    **{ext: ext for ext in _IMAGE_EXTENSIONS},
    **{f"{ext} sequence": ext for ext in _IMAGE_EXTENSIONS},
    "multipage tiff": "tiff",
    "multipage tiff sequence": "tiff",
    "hdf5": "h5",
    "compressed hdf5": "h5",
    "n5": "n5",
    "compressed n5": "n5",
    "single-scale OME-Zarr": "zarr",
    "multi-scale OME-Zarr": "zarr",
    "numpy": "npy",
    "dvid": "",
    "blockwise hdf5": "json",
    "zarr": "zarr",
}
# `--output_format` choices in ilastik's order (its 2-D list is vigra's extensions), then our own `zarr`.
OUTPUT_FORMATS: tuple[str, ...] = tuple(_EXTENSIONS)
UNSUPPORTED_FORMATS = {
    "dvid": "dvid export is not supported by hpc-ilastik (it needs a DVID server); use n5, zarr or hdf5",
    "blockwise hdf5": "'blockwise hdf5' export is not supported (ilastik does not implement it either); use hdf5 or n5",
}
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


def canonical_format(fmt: str) -> str:
    """The `--output_format` name as listed in OUTPUT_FORMATS (matched ignoring case and extra spaces)."""
    wanted = " ".join(fmt.split()).lower()
    for name in OUTPUT_FORMATS:
        if name.lower() == wanted:
            return name
    raise UserError(f"Unknown output format {fmt!r}; choose one of: {', '.join(OUTPUT_FORMATS)}.")


def format_extension(fmt: str) -> str:
    """The file extension ilastik gives a format (h5, n5, zarr, npy, tiff, png, ...)."""
    name = canonical_format(fmt)
    if name in UNSUPPORTED_FORMATS:
        raise UserError(UNSUPPORTED_FORMATS[name] + ".")
    return _EXTENSIONS[name]


def with_extension(path: str, fmt: str) -> str:
    """ilastik's extension rule: the text after the last dot of the file name is replaced by the format's extension."""
    return os.path.splitext(path)[0] + "." + format_extension(fmt)


def describe_shape(shape: Sequence[int], axes: str) -> str:
    """A shape with its axes, as error messages name it."""
    return f"shape {tuple(int(n) for n in shape)} in axes {axes}"


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
        step = sequence_axis(shape, axes)
        if step is None:
            raise UserError(f"format {name} needs an image to slice, but the export is {describe_shape(shape, axes)}.")
        k = axes.index(step)
        shape, axes = tuple(shape[:k]) + tuple(shape[k + 1:]), axes.replace(step, "")
        words = words[:-1]
    base = base_format(words[-1])
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


def base_format(word: str) -> str:
    """The format behind one of its spellings (jpeg → jpg, tif → tiff)."""
    return _BASE.get(word, word)


def sequence_axis(shape: Sequence[int], axes: str) -> str | None:
    """The axis a sequence steps along: the first non-singleton one (ilastik's OpStackWriter)."""
    return next((a for a, n in zip(axes, shape) if n > 1), None)
