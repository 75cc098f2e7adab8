"""Writing a set of small files all or nothing (the tracking export plugins: CSV, text formats, Cell Tracking
Challenge folders of TIFF masks): every file goes to a temporary name beside its target, and only when all are
written are they renamed into place, so an interrupted run never leaves a set that looks complete."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from hpc_ilastik.io.writers import make_directory, remove_file, reporting_write_errors, temp_name

FileContent = str | np.ndarray  # text, or an image written as TIFF


def write_file_set(files: Sequence[tuple[str, FileContent]]) -> list[str]:
    """Write every (path, content): text as UTF-8 (newlines as given), arrays as uncompressed TIFF
    (tifffile, the array's own axes and dtype); returns the paths. A disk-full or I/O error is one line."""
    written: list[str] = []
    try:
        for path, content in files:
            make_directory(os.path.dirname(os.path.abspath(path)))
            temp = temp_name(path)
            written.append(temp)
            with reporting_write_errors(path):
                if isinstance(content, str):
                    with open(temp, "w", encoding="utf-8", newline="") as f:
                        f.write(content)
                else:
                    import tifffile  # only a plugin that writes images needs it

                    tifffile.imwrite(temp, np.ascontiguousarray(content))
        for temp, (path, _) in zip(written, files):
            with reporting_write_errors(path):
                os.replace(temp, path)
    except BaseException:
        for temp in written:
            remove_file(temp)
        raise
    return [path for path, _ in files]
