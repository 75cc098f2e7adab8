"""Writing whole-image formats (numpy, TIFF, the 2-D image formats, multipage TIFF, `<ext> sequence`):
the savers that turn one buffered image into the file(s) of its format, as ilastik and vigra write them.

Facts: ilastik-spec.md §2.6 (ilastik's `ioOperators.py`, `opExportMultipageTiff.py`; vigra's impex).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from hpc_ilastik.io.formats import base_format, sequence_axis
from hpc_ilastik.io.paths import format_known_keys, pad_slice_index

_VIGRA_ORDER = "xyzt"  # vigra writes 2-D images with the earlier of these axes as columns
_OME_TIFF_UNITS = {"micrometer": "µm", "micron": "µm", "um": "µm", "µm": "µm", "nanometer": "nm", "nm": "nm",
                   "millimeter": "mm", "mm": "mm", "second": "s", "s": "s", "millisecond": "ms", "ms": "ms"}


def files_for(name: str, path: str, shape: tuple[int, ...], axes: str, offset: tuple[int, ...],
               resolutions, units) -> Callable[[np.ndarray], Iterator[tuple[str, Callable[[str], None]]]]:
    """For a whole-image format: image → (final path, save-to-temporary-path) for every file it makes."""
    if name == "numpy":
        save = _save_npy
    elif name.startswith("multipage tiff"):
        save = partial(_save_ome_tiff, resolutions=resolutions, units=units)
    else:
        save = _IMAGE_SAVERS[base_format(name.split()[0])]
    if not name.endswith("sequence"):
        return lambda image: iter([(path, partial(_save_as, save, image, axes))])
    step = sequence_axis(shape, axes)
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


def _needs_bigtiff(nbytes: int) -> bool:
    """Classic TIFF addresses 4 GiB; leave room for the tags."""
    return nbytes > 2**32 - 2**25
