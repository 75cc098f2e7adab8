"""A full disk ends an export with one line naming the output and the system's reason, exit code 74, no traceback,
no temporary file and nothing that looks complete, for every output format; N5 resumes once there is space.

Every case runs twice: with the failure injected (OSError ENOSPC raised by the call through which the writer's
data reaches the operating system), so that a machine without mount privileges tests it too, and then on a real
disk where this process may mount a tmpfs (root with CAP_SYS_ADMIN): a tiny tmpfs, mostly filled to the last byte.
"""

from __future__ import annotations

import builtins
import errno
import gc
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.cli import main
from hpc_ilastik.errors import UserError
from hpc_ilastik.io import n5, writers
from hpc_ilastik.io.n5 import open_n5_dataset
from hpc_ilastik.io.output import open_writer
from hpc_ilastik.io.resume import COMPLETE_KEY
from hpc_ilastik.io.writers import EXIT_WRITE_FAILED
from tests.conftest import API

PROJECT = API / "PixelClass.ilp"
IMAGE = API / "Data_1channel.png"  # 128 x 128: 2 channels of float32 probabilities, 128 KiB
NO_SPACE = os.strerror(errno.ENOSPC)
RESUMES = "; run the same command again to resume once that is fixed"


def _no_space(*args, **kwargs) -> None:
    raise OSError(errno.ENOSPC, NO_SPACE)


def _create_then_fail(path, *args, **kwargs) -> None:
    """A full disk still makes the file (a directory entry needs no data block); writing it fails."""
    builtins.open(path, "wb").close()
    _no_space()


# format → (extra options, output name, the call through which the writer's data reaches the operating system)
FORMATS: dict[str, tuple[list[str], str, str, Callable]] = {
    "hdf5": ([], "out.h5", "hpc_ilastik.io.hdf5_chunks.store_chunk", _no_space),  # blocks go in as whole chunks
    "compressed hdf5": ([], "out.h5", "hpc_ilastik.io.hdf5_chunks.store_chunk", _no_space),
    "n5": ([], "out.n5", "hpc_ilastik.io.n5._write_atomic", _no_space),
    "zarr": ([], "out.zarr", "zarr.Array.__setitem__", _no_space),
    "single-scale OME-Zarr": ([], "out.zarr", "zarr.Array.__setitem__", _no_space),
    "tiff": ([], "out.tiff", "tifffile.imwrite", _create_then_fail),
    "multipage tiff": (["--output_axis_order=cyx"], "out.tiff", "tifffile.imwrite", _create_then_fail),
    "png": (["--export_source=Simple Segmentation"], "out.png", "hpc_ilastik.io.images.open", _create_then_fail),
    "numpy": ([], "out.npy", "hpc_ilastik.io.images.open", _create_then_fail),
}
STREAMING = ("n5", "zarr", "single-scale OME-Zarr")


@contextmanager
def _tmpfs(directory: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` at the new folder `directory` while inside (True), or a plain folder (False) where this
    process may not mount one."""
    directory.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                                 capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=True, timeout=30)


@contextmanager
def _patched(monkeypatch, *what) -> Iterator[None]:
    """`monkeypatch.setattr(*what)` while inside (a missing attribute is created: images.open shadows `open`)."""
    with monkeypatch.context() as patch:
        patch.setattr(*what, raising=False)
        yield


def _fill(directory: Path) -> None:
    """Take every free byte of the file system of `directory`."""
    stats = os.statvfs(directory)
    with open(directory / "filler", "wb") as filler:
        os.posix_fallocate(filler.fileno(), 0, stats.f_bavail * stats.f_frsize)
    assert os.statvfs(directory).f_bavail == 0


def _on_full_disks(tmp_path: Path, inject: Callable[[], AbstractContextManager], size: str, fill: bool,
                   check: Callable[[Path], None]) -> str:
    """`check(folder)` with the failure injected, then on a tmpfs of `size` (filled to the last byte if `fill`)
    where mounting is allowed; says which ran."""
    (tmp_path / "injected").mkdir()
    with inject():
        check(tmp_path / "injected")
    with _tmpfs(tmp_path / "disk", size) as mounted:
        if mounted:
            if fill:
                _fill(tmp_path / "disk")
            check(tmp_path / "disk")
    return "injected ENOSPC" + (f", and a {'full ' if fill else ''}{size} tmpfs" if mounted else " only")


def _export(capsys, out: Path, fmt: str, *options: str) -> tuple[int, str]:
    """The real command line in-process: (exit code, stderr)."""
    code = main(["--headless", f"--project={PROJECT}", f"--output_format={fmt}", f"--output_filename_format={out}",
                 *options, str(IMAGE)])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def _assert_failed_cleanly(code: int, err: str, output: Path, advice: str = "") -> None:
    """Exit code 74, exactly the one line naming the output and the reason, no temporary file left, no HDF5 file
    left open (closing it later, at the latest at exit, would crash the process)."""
    assert (code, err) == (EXIT_WRITE_FAILED, f"hpc-ilastik: error: cannot write {output}: {NO_SPACE}{advice}\n")
    gc.collect()
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0
    leftovers = [p.name for p in output.parent.rglob("*")
                 if ".tmp-" in p.name or p.name.startswith(".hpc-ilastik") or p.name.endswith(".partial")]
    assert leftovers == []


def _marked_complete(container: Path) -> bool:
    """Whether any N5/zarr metadata file in the container records the output as complete."""
    for name in ("attributes.json", "zarr.json", ".zattrs"):
        for meta in container.rglob(name):
            attributes = json.loads(meta.read_text())
            if attributes.get("attributes", attributes).get(COMPLETE_KEY) is True:
                return True
    return False


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_full_disk_is_one_line_and_leaves_nothing_that_looks_complete(fmt, capsys, monkeypatch, tmp_path,
                                                                          record_property):
    options, name, target, failure = FORMATS[fmt]

    def check(folder: Path) -> None:
        code, err = _export(capsys, folder / "out", fmt, "--quiet", *options)
        _assert_failed_cleanly(code, err, folder / name, RESUMES if fmt in STREAMING else "")
        if fmt in STREAMING:  # kept to resume, not marked complete
            assert not _marked_complete(folder / name)
        else:
            assert not (folder / name).exists()

    inject = partial(_patched, monkeypatch, target, failure)
    record_property("figures", f"{fmt}: " + _on_full_disks(tmp_path, inject, "64k", True, check))


def test_hdf5_into_an_existing_file_on_a_full_disk(capsys, monkeypatch, tmp_path, record_property):
    """ilastik adds the dataset to an existing HDF5 file; the copy into it fails (the temporary file fits)."""

    def check(folder: Path) -> None:
        output = folder / "out.h5"
        with h5py.File(output, "w") as f:
            f["other"] = np.arange(3)
        code, err = _export(capsys, folder / "out", "hdf5", "--quiet")
        _assert_failed_cleanly(code, err, output, "; the existing file may be damaged")
        with h5py.File(output, "r") as f:  # here it was not: the copy failed before it touched the file
            assert list(f) == ["other"] and list(f["other"][()]) == [0, 1, 2]

    inject = partial(_patched, monkeypatch, h5py.Group, "copy", _no_space)
    # 256 KiB: the 137 KiB temporary file fits, a second copy of its dataset does not
    record_property("figures", _on_full_disks(tmp_path, inject, "256k", False, check))


def test_a_buffer_spilled_to_disk_reserves_its_space_first(monkeypatch, tmp_path, record_property):
    """A whole-image output beyond the memory limit is buffered in a memory-mapped file: without its space
    reserved, the first page written on a full disk would end the process (SIGBUS)."""

    def check(folder: Path) -> None:
        with pytest.raises(UserError) as failed:
            open_writer("numpy", str(folder / "out.npy"), shape=(256, 256), dtype=np.float32, axes="yx",
                        memory_limit=1024)
        assert str(failed.value) == f"cannot write {folder}/out.npy: {NO_SPACE}"
        assert failed.value.exit_code == EXIT_WRITE_FAILED
        assert not [p for p in folder.iterdir() if p.name.startswith(".hpc-ilastik")]

    inject = partial(_patched, monkeypatch, os, "posix_fallocate", _no_space)
    record_property("figures", _on_full_disks(tmp_path, inject, "64k", True, check))


def test_a_short_write_without_errno_is_judged_by_the_space_left(monkeypatch):
    """numpy's tofile (np.save, tifffile) reports a short write without its errno."""
    short = OSError("32768 requested and 16312 written")
    monkeypatch.setattr(writers, "_free_bytes", lambda directory: 4096)
    assert str(writers.write_error("x.npy", short)) == f"cannot write x.npy: {NO_SPACE}"
    monkeypatch.setattr(writers, "_free_bytes", lambda directory: 1 << 40)
    assert str(writers.write_error("x.npy", short)) == "cannot write x.npy: only 16312 of 32768 bytes were written"


def test_n5_on_a_full_disk_resumes_when_there_is_space(capsys, monkeypatch, tmp_path, record_property):
    options = ("--distributed_block_roi=32", "--threads=2")  # 16 blocks of 32 x 32, one chunk each
    assert _export(capsys, tmp_path / "reference", "n5", "--quiet", *options)[0] == 0
    expected = open_n5_dataset(str(tmp_path / "reference.n5"), "exported_data").read()
    real_write, chunks_written = n5._write_atomic, []

    def fails_after_five_chunks(path: str, *parts) -> None:
        if not path.endswith("attributes.json"):
            chunks_written.append(path)
            if len(chunks_written) > 5:
                _no_space()
        real_write(path, *parts)

    injected = partial(_patched, monkeypatch, n5, "_write_atomic", fails_after_five_chunks)
    def fails_then_resumes(folder: Path, failing: Callable[[], AbstractContextManager],
                           free: Callable[[], object]) -> int:
        output = folder / "out.n5"
        with failing():
            code, err = _export(capsys, folder / "out", "n5", "--quiet", *options)
        _assert_failed_cleanly(code, err, output, RESUMES)
        left = sum(1 for p in (output / "exported_data").rglob("*") if p.is_file() and p.name != "attributes.json")
        assert 0 < left < 16 and not _marked_complete(output)
        free()
        code, err = _export(capsys, folder / "out", "n5", *options)
        assert code == 0 and f"{16 - left} blocks computed, {left} already done" in err, err
        dataset = open_n5_dataset(str(output), "exported_data")
        assert dataset.attributes[COMPLETE_KEY] is True and np.array_equal(dataset.read(), expected)
        return left

    (tmp_path / "injected").mkdir()
    figures = [f"injected: {fails_then_resumes(tmp_path / 'injected', injected, lambda: None)}/16 chunks written"]
    disk = tmp_path / "disk"
    with _tmpfs(disk, "96k") as mounted:  # 16 chunks of 8 KiB (3 pages each): some fit
        if mounted:
            grow = ["mount", "-o", "remount,size=1m", str(disk)]
            left = fails_then_resumes(disk, nullcontext, lambda: subprocess.run(grow, check=True, timeout=30))
            figures.append(f"96 KiB tmpfs: {left}/16 chunks written, then grown to 1 MiB")
    record_property("figures", "; ".join(figures))
