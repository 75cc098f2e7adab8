"""Writing ilastik's object tables: CSV (`<path>_table.<ext>`, values as Python prints numpy scalars) and
HDF5 (dataset `table` with strings as UTF-8 bytes, plus per-object image crops under `images/<row>/`),
each written to a temporary name and renamed into place (ilastik's `exportFile.ExportFile`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.writers import make_directory, remove_file, temp_name


def csv_table_path(path: str) -> str:
    """ilastik's CSV file name: the text before the last dot, `_table`, the extension (`out.csv` →
    `out_table.csv`; without an extension `out_table.csv`)."""
    directory, name = os.path.split(path)
    base, dot, ext = name.rpartition(".")
    return os.path.join(directory, f"{base}_table.{ext}" if dot else f"{name}_table.csv")


def write_csv_table(path: str, table: np.ndarray) -> str:
    """The table as CSV at `csv_table_path(path)`; returns that path."""
    target = csv_table_path(path)
    lines = [",".join(table.dtype.names)] + [",".join(map(str, row)) for row in table]
    _commit(target, lambda temp: _write_text(temp, "\n".join(lines) + "\n"))
    return target


def write_hdf5_table(path: str, table: np.ndarray, images: Iterable[tuple[str, np.ndarray, Mapping[str, str]]],
                     compression: Mapping[str, object] | None = None) -> str:
    """The table (and `images`: (dataset path, array, attributes)) as an HDF5 file at `path`."""

    def write(temp: str) -> None:
        with h5py.File(temp, "w") as f:
            f.create_dataset("table", data=_bytes_strings(table), **dict(compression or {}))
            for name, array, attributes in images:
                dataset = f.create_dataset(name, data=array)
                dataset.attrs.update(dict(attributes))

    _commit(path, write)
    return path


def _bytes_strings(table: np.ndarray) -> np.ndarray:
    """String columns as UTF-8 bytes (what ilastik's HDF5 tables hold)."""
    dtype = []
    for name in table.dtype.names:
        column = table[name]
        if column.dtype.kind == "U":
            width = max([len(s.encode("utf-8")) for s in column] + [1])
            dtype.append((name, f"S{width}"))
        else:
            dtype.append((name, column.dtype))
    out = np.zeros(table.shape, dtype=dtype)
    for name in table.dtype.names:
        out[name] = np.char.encode(table[name], "utf-8") if table[name].dtype.kind == "U" else table[name]
    return out


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _commit(target: str, write) -> None:
    """Write to a temporary name beside `target`, then rename; nothing is left on failure."""
    make_directory(os.path.dirname(os.path.abspath(target)))
    temp = temp_name(target)
    try:
        write(temp)
        os.replace(temp, target)
    except OSError as exc:
        remove_file(temp)
        raise UserError(f"cannot write the object table {target}: {exc.strerror or exc}.") from exc
    except BaseException:
        remove_file(temp)
        raise
