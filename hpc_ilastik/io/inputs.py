"""Opening inputs lazily: one `Source` per input argument, read block by block in tzyxc order.

Formats: HDF5 (`f.h5/inner/path`, also .hdf5 and .ilp), N5 (`x.n5/inner/path`), zarr v2/v3 and
OME-Zarr (`x.zarr/s0`), TIFF, PNG/JPEG/BMP/GIF, `.npy`, `.npz` (`f.npz/key`). A quoted glob or several
paths joined by os.pathsep form one dataset stacked along `stack_along`, as in ilastik.
"""

import functools
import glob
import json
import logging
import os
import xml.etree.ElementTree as ElementTree
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import (
    INTERNAL_AXES,
    axistags_resolutions,
    default_axes,
    internal_slices,
    parse_axistags,
    to_tzyxc,
    validate_axes,
)
from hpc_ilastik.io.n5 import list_n5_datasets, open_n5_dataset, read_n5_attributes

if TYPE_CHECKING:
    import tifffile

logger = logging.getLogger(__name__)

_HDF5_EXTS = (".h5", ".hdf5", ".ilp")
_CONTAINER_EXTS = _HDF5_EXTS + (".n5", ".zarr", ".npz")
_TIFF_EXTS = (".tif", ".tiff")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_CHUNK_CACHE = 64 << 20  # bytes of decompressed chunks an open HDF5 input keeps for the next blocks' halos
SUPPORTED_EXTENSIONS = _CONTAINER_EXTS + (".npy",) + _TIFF_EXTS + _IMAGE_EXTS
STACK_AXES = "tzc"

Reader = Callable[[tuple[slice, ...]], np.ndarray]
PerAxis = tuple  # one entry per axis of the file (None where unknown)


@dataclass(frozen=True)
class _Data:
    """What a format opener learns about one file: shape, type, axis metadata and how to read a region."""

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str | None  # from the file's metadata; None = unknown (use ilastik's shape rule)
    reader: Reader
    resolutions: PerAxis | None = None
    units: PerAxis | None = None


# What readers and decoders raise on a damaged or foreign file (PIL: SyntaxError "broken PNG file"; truncated
# data: EOFError; codecs: RuntimeError, zlib.error)
_DAMAGED = (OSError, ValueError, SyntaxError, EOFError, RuntimeError, KeyError, zlib.error, zipfile.BadZipFile)


@dataclass(frozen=True)
class Source:
    """One input dataset; `shape`/`axes` are the file's own, `read` returns tzyxc arrays."""

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    nickname: str
    dataset_dir: str
    paths: tuple[str, ...]  # absolute paths of the file(s) or container(s) read
    resolutions: dict[str, float] | None  # physical pixel size per axis, where the file has it
    units: dict[str, str] | None  # unit per axis, where the file has it
    _reader: Reader = field(repr=False, compare=False)

    @property
    def shape_tzyxc(self) -> tuple[int, ...]:
        """The shape in internal tzyxc order (size 1 for axes the file lacks)."""
        sizes = dict(zip(self.axes, self.shape))
        return tuple(sizes.get(key, 1) for key in INTERNAL_AXES)

    def read(self, roi_tzyxc: Sequence[slice] | None = None) -> np.ndarray:
        """Read a tzyxc region (default: everything) as a tzyxc array, equal to read()[roi_tzyxc].

        Chunked formats (HDF5, N5, zarr, TIFF, npy) read only that region from disk."""
        roi = tuple(roi_tzyxc) if roi_tzyxc is not None else (slice(None),) * len(INTERNAL_AXES)
        if len(roi) != len(INTERNAL_AXES):
            raise ValueError(f"a tzyxc region needs 5 slices, got {len(roi)}")
        own = []
        for s, size in zip(internal_slices(roi, self.axes), self.shape):
            start, stop, step = s.indices(size)
            if step != 1:
                raise ValueError("regions need step 1")
            own.append(slice(start, max(start, stop)))
        try:
            values = np.asarray(self._reader(tuple(own)))
        except _DAMAGED as exc:
            what = self.paths[0] if len(self.paths) == 1 else f"{self.nickname} ({len(self.paths)} files)"
            raise UserError(f"Cannot read {what}: the file is damaged or unreadable ({type(exc).__name__}: {exc})"
                            ) from exc
        internal = to_tzyxc(values, self.axes)
        # Axes the file lacks have size 1: slicing them like numpy keeps read(roi) == read()[roi].
        return internal[tuple(slice(None) if key in self.axes else s for key, s in zip(INTERNAL_AXES, roi))]


def open_input(spec: str, axes: str | None = None, stack_along: str = "z") -> Source:
    """Open one input argument (a path, `file.h5/inner/path`, a quoted glob or paths joined by os.pathsep)."""
    if stack_along not in STACK_AXES:
        raise UserError(f"Cannot stack along '{stack_along}': use one of t, z, c.")
    files = resolve_files(spec)
    kinds = sorted({_kind(external) for external, _ in files})
    if len(kinds) > 1:
        raise UserError(f"Input '{spec}' mixes files of different types ({', '.join(kinds)}); a stack needs one type.")
    if len(files) == 1:
        data = _open_file(*files[0], cache=True)
    else:
        data = _stack(files, stack_along)
    return _make_source(
        data,
        axes,
        nickname=_nickname(files),
        dataset_dir=os.path.dirname(files[0][0]),
        paths=tuple(dict.fromkeys(external for external, _ in files)),
        name=spec,
    )


def derived_source(like: Source, shape_tzyxc: Sequence[int], dtype, read: Reader) -> Source:
    """A Source of values computed from `like` (its names, paths and pixel sizes), in tzyxc order: `read`
    gets the tzyxc slices of a region (concrete, in range) and returns that region."""
    return Source(shape=tuple(int(n) for n in shape_tzyxc), dtype=np.dtype(dtype), axes=INTERNAL_AXES,
                  nickname=like.nickname, dataset_dir=like.dataset_dir, paths=like.paths,
                  resolutions=like.resolutions, units=like.units, _reader=read)


def open_project_internal(h5_dataset: h5py.Dataset, axes: str | None, nickname: str, dataset_dir: str) -> Source:
    """A Source over image data stored inside an open project (`Input Data/local_data/<id>`)."""
    data = _hdf5_metadata(h5_dataset, lambda slices: h5_dataset[slices])
    return _make_source(data, axes, nickname=nickname, dataset_dir=dataset_dir,
                        paths=(os.path.abspath(h5_dataset.file.filename),),
                        name=f"{h5_dataset.file.filename}/{h5_dataset.name.lstrip('/')}")


def _make_source(data: _Data, axes: str | None, nickname: str, dataset_dir: str, paths: tuple, name: str) -> Source:
    if axes is not None:
        own_axes = validate_axes(axes, data.shape)
    else:
        own_axes = data.axes or default_axes(data.shape)
        try:
            validate_axes(own_axes, data.shape)
        except UserError as exc:
            raise UserError(f"{name}: {exc} Give the axes with --input_axes.") from exc
    # Axes given by the user replace the file's own, which makes its pixel sizes meaningless (as in ilastik).
    keep_metadata = own_axes == (data.axes or default_axes(data.shape))
    return Source(
        shape=data.shape,
        dtype=data.dtype,
        axes=own_axes,
        nickname=nickname,
        dataset_dir=dataset_dir,
        paths=paths,
        resolutions=_per_key(own_axes, data.resolutions) if keep_metadata else None,
        units=_per_key(own_axes, data.units) if keep_metadata else None,
        _reader=data.reader,
    )


def _per_key(axes: str, values: PerAxis | None) -> dict | None:
    found = {key: value for key, value in zip(axes, values or ()) if value}
    return found or None


# ---- paths, globs and names ----------------------------------------------------------------------


def input_names(spec: str) -> tuple[str, str]:
    """(nickname, dataset_dir) of an input argument, as its Source will have them, without opening it."""
    files = resolve_files(spec)
    return _nickname(files), os.path.dirname(files[0][0])


def resolve_files(spec: str) -> list[tuple[str, str]]:
    """(absolute external path, internal path) for every file of an input argument, sorted as ilastik does."""
    files, missing = [], []
    for part in filter(None, spec.split(os.pathsep)):
        external, inner = _split_container(os.path.expanduser(part))
        matches = [external] if os.path.exists(external) else sorted(glob.glob(external))
        if not matches:
            missing.append(external)
        files.extend((os.path.abspath(match), inner) for match in matches)
    if missing:
        if any(ch in pattern for pattern in missing for ch in "*?["):
            raise UserError(f"No file matches {', '.join(repr(m) for m in missing)}.")
        raise UserError(f"Input file not found: {', '.join(missing)}.")
    return sorted(files)


def _split_container(path: str) -> tuple[str, str]:
    """Split `dir/file.h5/inner/path` into the container and the path inside it ("" if none)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.lower().endswith(_CONTAINER_EXTS):
            return "/".join(parts[: i + 1]), "/".join(p for p in parts[i + 1 :] if p)
    return path, ""


def _extension(external: str) -> str:
    return os.path.splitext(external.rstrip("/"))[1].lower()


def _kind(external: str) -> str:
    ext = _extension(external)
    if ext in SUPPORTED_EXTENSIONS:
        return {".hdf5": ".h5", ".ilp": ".h5", ".tiff": ".tif", ".jpeg": ".jpg"}.get(ext, ext)
    if os.path.isdir(external):
        raise UserError(f"{external} is a folder: give a (quoted) glob such as '{external}/*.png' to read a stack.")
    raise UserError(
        f"Cannot read {external}: unknown file type '{ext}'; supported: {', '.join(SUPPORTED_EXTENSIONS)}."
    )


def _nickname(files: Sequence[tuple[str, str]]) -> str:
    """ilastik's nickname: common prefix of the paths without extension, plus '-inner-path' for containers."""
    stems = [external[: len(external) - len(_extension(external))] for external, _ in files]
    name = Path(os.path.commonprefix(stems)).name or "stack_at-" + Path(stems[0]).name
    internal = os.path.commonprefix([inner for _, inner in files]).strip("/")
    return name + ("-" + internal.replace("/", "-") if internal else "")


# ---- one file ---------------------------------------------------------------------------------------


def _open_file(external: str, inner: str, cache: bool) -> _Data:
    """Open one file of any supported type; whole-file formats keep their decoded pixels only if `cache`."""
    ext = _extension(external)
    try:
        if ext in _HDF5_EXTS:
            return _open_hdf5(external, inner, cache)
        if ext == ".n5":
            return _open_n5(external, inner)
        if ext == ".zarr":
            return _open_zarr(external, inner)
        if ext == ".npz":
            return _open_npz(external, inner, cache)
        if ext == ".npy":
            return _open_npy(external)
        if ext in _TIFF_EXTS:
            return _open_tiff(external)
        return _open_image(external, cache)
    except _DAMAGED as exc:  # tifffile's TiffFileError is a ValueError
        raise UserError(f"Cannot read {external}: {exc}") from exc


def _whole_file_reader(load: Callable[[], np.ndarray], cache: bool) -> Reader:
    """Reader for formats that decode the whole file: decoded once per Source if `cache`, else per read."""
    if cache:
        load = functools.lru_cache(maxsize=1)(load)
    return lambda slices: np.array(load()[slices])


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _open_hdf5(path: str, inner: str, cache: bool) -> _Data:
    """With `cache`, reads share one open dataset whose chunk cache (up to _CHUNK_CACHE bytes) keeps the chunks
    that neighbouring blocks' halos read again: each compressed chunk is decompressed about once."""
    with h5py.File(path, "r", locking=False) as f:
        datasets = []
        f.visititems(lambda name, obj: datasets.append((name, obj.shape)) if isinstance(obj, h5py.Dataset) else None)
        if not inner:
            images = [name for name, shape in datasets if 2 <= len(shape) <= 5]
            if len(images) != 1:
                raise UserError(f"{path} holds {len(images)} image datasets; name one as {path}/<dataset>: "
                                f"{_listing(['/' + n + ' ' + str(s) for n, s in datasets])}.")
            inner = images[0]
        node = f.get(inner)
        if not isinstance(node, h5py.Dataset):
            raise UserError(f"{path} has no dataset '/{inner.strip('/')}'; datasets there: "
                            f"{_listing(['/' + n + ' ' + str(s) for n, s in datasets])}.")
        cache_bytes = min(node.size * node.dtype.itemsize, _CHUNK_CACHE) if cache and node.chunks else 0
        opened: list[h5py.Dataset] = []  # the shared dataset, opened at the first read (closed with the Source)

        def read(slices: tuple[slice, ...]) -> np.ndarray:
            if not cache_bytes:
                with h5py.File(path, "r", locking=False) as h5:
                    return h5[inner][slices]
            if not opened:
                opened.append(h5py.File(path, "r", locking=False, rdcc_nbytes=cache_bytes, rdcc_nslots=100_003)[inner])
            return opened[0][slices]

        return _hdf5_metadata(node, read)


def _hdf5_metadata(dataset: h5py.Dataset, reader: Reader) -> _Data:
    """Shape, type and axes of an HDF5 dataset: `axistags`, else `axes` reversed, else unknown."""
    attrs = dataset.attrs
    axes, resolutions = _axes_from_attributes(dict(attrs))
    units = None
    if "axis_units" in attrs and axes:
        units = tuple(_json_object(attrs["axis_units"]).get(key) or None for key in axes)
    return _Data(tuple(dataset.shape), dataset.dtype, axes, reader, resolutions, units)


def _axes_from_attributes(attrs: dict) -> tuple[str | None, PerAxis | None]:
    """Axes (and axistags resolutions) from ilastik's `axistags` or a Neuroglancer/N5-style reversed `axes`."""
    if "axistags" in attrs:
        text = attrs["axistags"]
        axes = parse_axistags(text)
        if set(axes) <= set(INTERNAL_AXES):
            resolutions = axistags_resolutions(text) or {}
            return axes, tuple(resolutions.get(key) for key in axes)
    if "axes" in attrs:
        value = attrs["axes"]
        keys = value if isinstance(value, str) else "".join(str(k) for k in value)
        axes = keys[::-1].lower()
        if set(axes) <= set(INTERNAL_AXES):
            return axes, None
    return None, None


def _json_object(value) -> dict:
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _open_n5(path: str, inner: str) -> _Data:
    if not inner and "dimensions" not in read_n5_attributes(path):
        found = list_n5_datasets(path)
        if len(found) != 1:
            raise UserError(f"{path} holds {len(found)} datasets; name one as {path}/<dataset>: {_listing(found)}.")
        inner = found[0]
    dataset = open_n5_dataset(path, inner)
    axes, resolutions = _axes_from_attributes(dataset.attributes)
    units = None
    pixel_resolution = dataset.attributes.get("pixelResolution")
    if isinstance(pixel_resolution, dict) and "dimensions" in pixel_resolution:
        resolutions = tuple(reversed(pixel_resolution["dimensions"]))
        units = (pixel_resolution.get("unit"),) * len(dataset.shape)
    elif "resolution" in dataset.attributes:
        resolutions = tuple(reversed(dataset.attributes["resolution"]))
        units = tuple(reversed(dataset.attributes.get("units") or [None] * len(dataset.shape)))
    return _Data(dataset.shape, dataset.dtype, axes, dataset.read, resolutions, units)


def _open_zarr(path: str, inner: str) -> _Data:
    import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
    try:
        node = zarr.open(store=path, path=inner, mode="r")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise UserError(f"{path} has no zarr array '{inner}'; arrays there: {_listing(_zarr_arrays(path))}.") from exc
    scale = None
    if isinstance(node, zarr.Group):
        multiscales = _ngff_multiscales(node.attrs)
        if multiscales:
            scale = multiscales[0], multiscales[0]["datasets"][0]
            inner = "/".join(filter(None, [inner, scale[1]["path"]]))
            logger.info("%s is an OME-Zarr image: reading its full-resolution scale '%s'.", path, scale[1]["path"])
        else:
            arrays = _zarr_arrays(path, inner)
            if len(arrays) != 1:
                raise UserError(f"{path} holds {len(arrays)} arrays; name one as {path}/<array>: {_listing(arrays)}.")
            inner = arrays[0]
        node = zarr.open_array(store=path, path=inner, mode="r")
    else:
        scale = _ngff_scale_of(path, inner)
    axes = _axes_from_attributes(dict(node.attrs))[0]
    resolutions = units = None
    if scale:
        multiscale, dataset = scale
        names = "".join(str(a["name"] if isinstance(a, dict) else a).lower() for a in multiscale.get("axes", ()))
        if not axes and set(names) <= set(INTERNAL_AXES) and len(names) == node.ndim:
            axes = names
        resolutions = _ngff_scale_vector(multiscale, dataset, node.ndim)
        units = tuple(a.get("unit") if isinstance(a, dict) else None for a in multiscale.get("axes", ())) or None
    dimension_names = getattr(node.metadata, "dimension_names", None)
    if not axes and dimension_names and all(dimension_names):
        names = "".join(dimension_names).lower()
        axes = names if len(names) == node.ndim and set(names) <= set(INTERNAL_AXES) else None
    return _Data(tuple(node.shape), node.dtype, axes, lambda slices: node[slices], resolutions, units)


def _ngff_multiscales(attrs) -> list:
    """OME-NGFF `multiscales` of a group (0.5 keeps them under `ome`)."""
    attrs = dict(attrs)
    return list(attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales") or [])


def _ngff_scale_of(path: str, inner: str) -> tuple[dict, dict] | None:
    """The (multiscale, dataset) entries of an enclosing OME-Zarr group that describe array `inner`."""
    import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
    parts = inner.split("/")
    for cut in range(len(parts) - 1, -1, -1):
        try:
            group = zarr.open_group(store=path, path="/".join(parts[:cut]), mode="r")
        except (FileNotFoundError, KeyError, ValueError):
            continue
        rest = "/".join(parts[cut:])
        for multiscale in _ngff_multiscales(group.attrs):
            for dataset in multiscale.get("datasets", ()):
                if dataset.get("path") == rest:
                    return multiscale, dataset
    return None


def _ngff_scale_vector(multiscale: dict, dataset: dict, ndim: int) -> PerAxis | None:
    """Pixel size per axis: the dataset's scale times the multiscale-level scale, if any."""
    vector = np.ones(ndim)
    found = False
    for transforms in (dataset.get("coordinateTransformations", ()), multiscale.get("coordinateTransformations", ())):
        for transform in transforms:
            if transform.get("type") == "scale" and len(transform.get("scale", ())) == ndim:
                vector *= np.asarray(transform["scale"], dtype=float)
                found = True
    return tuple(float(v) for v in vector) if found else None


def _zarr_arrays(path: str, inner: str = "") -> list[str]:
    import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
    try:
        group = zarr.open_group(store=path, path=inner, mode="r")
    except (FileNotFoundError, KeyError, ValueError):
        return []
    prefix = inner + "/" if inner else ""
    return sorted(prefix + name for name, _ in group.arrays()) + sorted(
        name for sub, _ in group.groups() for name in _zarr_arrays(path, prefix + sub)
    )


def _open_npy(path: str) -> _Data:
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    # Re-map per read: keeping thousands of stacked files mapped would exhaust file handles.
    return _Data(mapped.shape, mapped.dtype, None, lambda slices: np.array(np.load(path, mmap_mode="r")[slices]))


def _open_npz(path: str, key: str, cache: bool) -> _Data:
    with zipfile.ZipFile(path) as archive:
        keys = sorted(name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy"))
        if not key:
            if len(keys) != 1:
                raise UserError(f"{path} holds {len(keys)} arrays; name one as {path}/<key>: {_listing(keys)}.")
            key = keys[0]
        if key not in keys:
            raise UserError(f"{path} has no array '{key}'; arrays there: {_listing(keys)}.")
        with archive.open(key + ".npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.hasobject:
        raise UserError(f"{path}/{key} holds Python objects, not pixels.")

    def load() -> np.ndarray:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]

    return _Data(tuple(shape), dtype, None, _whole_file_reader(load, cache))


def _open_image(path: str, cache: bool) -> _Data:
    import imageio.v3 as iio  # lazy here, as zarr: imported only by runs that read or write this format

    props = iio.improps(path, index=0)
    axes = "yx" if len(props.shape) == 2 else "yxc"
    return _Data(tuple(props.shape), props.dtype, axes, _whole_file_reader(lambda: iio.imread(path, index=0), cache))


def _open_tiff(path: str) -> _Data:
    import tifffile  # lazy here, as zarr: imported only by runs that read or write this format

    with tifffile.TiffFile(path) as tif:
        if len(tif.series) > 1:
            logger.warning("%s holds %d image series; reading the first.", path, len(tif.series))
        series = tif.series[0]
        shape = tuple(series.shape)
        axes = _tiff_axes(series.axes, path)
        resolutions, units = _tiff_pixel_sizes(tif, axes) if axes else (None, None)
        dtype = series.dtype

    def read(slices: tuple[slice, ...]) -> np.ndarray:
        import zarr  # lazy here: importing zarr adds ~0.15 s to every run's start-up
        with tifffile.TiffFile(path) as tiff:
            return zarr.open_array(tiff.series[0].aszarr(level=0), mode="r")[slices]

    return _Data(shape, dtype, axes, read, resolutions, units)


def _tiff_axes(letters: str, path: str) -> str | None:
    """ilastik's reading of tifffile's axis letters: S (samples) is c; I (sequence) is t, else z, else c."""
    axes = letters.lower().replace("s", "c")
    for free in "tzc":
        if free not in axes:
            axes = axes.replace("i", free, 1)
    if "i" in axes or not set(axes) <= set(INTERNAL_AXES) or len(set(axes)) != len(axes):
        if "q" not in letters.lower():
            logger.info("%s: TIFF axes '%s' have no ilastik meaning; guessing from the shape.", path, letters)
        return None
    return axes


def _tiff_pixel_sizes(tif: "tifffile.TiffFile", axes: str) -> tuple[PerAxis | None, PerAxis | None]:
    """Pixel sizes and units from OME-XML or ImageJ metadata (ilastik's rules); (None, None) if absent."""
    if tif.ome_metadata:
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Image/{*}Pixels")
        if pixels is None:
            return None, None
        attr = {"x": "PhysicalSizeX", "y": "PhysicalSizeY", "z": "PhysicalSizeZ", "t": "TimeIncrement"}
        sizes = {k: float(pixels.get(a, 0)) for k, a in attr.items()}
        units = {k: pixels.get(a + "Unit", "") for k, a in attr.items()}
    elif tif.imagej_metadata:
        meta = tif.imagej_metadata
        tags = tif.pages[0].tags
        sizes = {
            "x": _tiff_pixel_size(tags.get("XResolution")),
            "y": _tiff_pixel_size(tags.get("YResolution")),
            "z": float(meta.get("spacing", 0.0)),
            "t": float(meta.get("finterval", 0.0)),
        }
        units = {k: str(meta.get(key, "")) for k, key in zip("xyzt", ("unit", "yunit", "zunit", "tunit"))}
        for key in "yz":  # ImageJ leaves out y/z units equal to the x unit
            if units["x"] and sizes[key] and not units[key]:
                units[key] = units["x"]
    else:
        return None, None
    return tuple(sizes.get(k) for k in axes), tuple(units.get(k) for k in axes)


def _tiff_pixel_size(tag) -> float:
    """Pixel size from a TIFF resolution tag (pixels per unit as a fraction), rounded when nearly whole."""
    if tag is None or not tag.value[0]:
        return 0.0
    size = tag.value[1] / tag.value[0]
    return float(round(size)) if abs(size - round(size)) < 1e-8 else size


# ---- stacks -----------------------------------------------------------------------------------------


def _stack(files: Sequence[tuple[str, str]], along: str) -> _Data:
    """Several files as one dataset: concatenated along `along`, or stacked on a new leading `along` axis."""
    members = [_open_file(external, inner, cache=False) for external, inner in files]
    described = [(m.shape, m.dtype, m.axes or default_axes(m.shape)) for m in members]
    for (external, _), description in zip(files, described):
        if description != described[0]:
            raise UserError(
                "All files of a stack must have the same shape, type and axes: "
                f"{files[0][0]} is {_describe(*described[0])}, {external} is {_describe(*description)}."
            )
    first, member_axes = members[0], described[0][2]
    if along in member_axes:
        axis = member_axes.index(along)
        axes, length = member_axes, first.shape[axis]
        readers = [m.reader for m in members]
        shape = first.shape[:axis] + (length * len(members),) + first.shape[axis + 1 :]
        resolutions, units = first.resolutions, first.units
    else:
        axis, axes, length = 0, along + member_axes, 1
        readers = [functools.partial(_read_with_new_axis, m.reader) for m in members]
        shape = (len(members),) + first.shape
        resolutions = (None,) + first.resolutions if first.resolutions else None
        units = (None,) + first.units if first.units else None
    read = functools.partial(_read_stack, readers, axis, length, first.dtype)
    return _Data(shape, first.dtype, axes, read, resolutions, units)


def _describe(shape: tuple[int, ...], dtype: np.dtype, axes: str) -> str:
    return f"{shape} {dtype} '{axes}'"


def _read_with_new_axis(reader: Reader, slices: tuple[slice, ...]) -> np.ndarray:
    return reader(slices[1:])[np.newaxis]


def _read_stack(
    readers: Sequence[Reader], axis: int, length: int, dtype: np.dtype, slices: tuple[slice, ...]
) -> np.ndarray:
    """Read a region of a stack: each member covers `length` positions along `axis`."""
    start, stop = slices[axis].start, slices[axis].stop
    parts = []
    for index in range(start // length, -(-stop // length)):
        offset = index * length
        local = slices[:axis] + (slice(max(start, offset) - offset, min(stop, offset + length) - offset),)
        parts.append(readers[index](local + slices[axis + 1 :]))
    if not parts:
        return np.zeros(tuple(s.stop - s.start for s in slices), dtype=dtype)
    return np.concatenate(parts, axis=axis)
