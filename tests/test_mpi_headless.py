"""The real pipeline under MPI: -n 1/2/3 equal the serial run, kill + resume, a failing rank ends the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from hpc_ilastik.cli import main
from hpc_ilastik.io.n5 import create_n5_dataset, open_n5_dataset
from tests.conftest import API

PROJECT = str(API / "PixelClass3D.ilp")
BLOCK = '{"x": 24, "y": 24, "z": 24}'  # 64³ volume → 3 blocks per axis, uneven edge blocks
MPIEXEC = ["mpiexec"]


def _volume() -> np.ndarray:
    return np.load(API / "Data_3D.npy")[..., 0]  # 64³ uint8, zyx


@pytest.fixture(scope="module")
def volume_h5(tmp_path_factory) -> str:
    import h5py

    path = tmp_path_factory.mktemp("mpi") / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=_volume(), chunks=(16, 16, 16))
    return f"{path}/data"


def _args(raw: str, out: str) -> list[str]:
    return ["--headless", f"--project={PROJECT}", "--output_format=n5", f"--output_filename_format={out}",
            f"--distributed_block_roi={BLOCK}", "--input_axes=zyx", raw]


def _mpi(n: int, raw: str, out: str, **kwargs) -> subprocess.CompletedProcess:
    command = MPIEXEC + ["-n", str(n), sys.executable, "-m", "hpc_ilastik", *_args(raw, out), "--distributed"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def _read(out: str) -> np.ndarray:
    dataset = open_n5_dataset(out, "exported_data")
    assert dataset.attributes.get("complete") is True
    return dataset.read(tuple(slice(0, n) for n in dataset.shape))


@pytest.fixture(scope="module")
def serial(volume_h5, tmp_path_factory) -> np.ndarray:
    out = str(tmp_path_factory.mktemp("serial") / "serial.n5")
    assert main(_args(volume_h5, out) + ["--quiet"]) == 0
    return _read(out)


def test_serial_blockwise_equals_whole_image(volume_h5, serial, tmp_path):
    whole = tmp_path / "whole.npy"
    assert main(["--headless", f"--project={PROJECT}", "--output_format=numpy", f"--output_filename_format={whole}",
                 "--input_axes=zyx", "--quiet", volume_h5]) == 0
    assert serial.shape == (64, 64, 64, 2)
    np.testing.assert_array_equal(serial, np.load(whole))


def test_blocks_larger_than_a_tile_are_computed_tile_by_tile(volume_h5, serial, tmp_path, monkeypatch):
    """A block (one output chunk) larger than the engine's tile is computed in tiles with their own halos, the
    memory a tile's: ilastik's 256³ blocks of --distributed took 2 GiB per rank for workload A, one tile ~0.2."""
    import hpc_ilastik.workflows.pixel_classification as pixel

    seen: list[int] = []
    tiles_of = pixel.tiles_of
    monkeypatch.setattr(pixel, "tile_shape_for", lambda shape, context=(): (1, 10, 16, 24, shape[4]))
    monkeypatch.setattr(pixel, "tiles_of", lambda *args: seen.append(len(tiles_of(*args))) or tiles_of(*args))
    out = str(tmp_path / "tiled.n5")
    assert main(_args(volume_h5, out) + ["--quiet"]) == 0
    assert len(seen) == 27 and max(seen) == 3 * 2  # a 24³ block: 3 tiles along z (10, 10, 4), 2 along y, 1 along x
    np.testing.assert_array_equal(_read(out), serial)


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_mpi_ranks_equal_serial(volume_h5, serial, tmp_path, ranks):
    out = str(tmp_path / f"n{ranks}.n5")
    done = _mpi(ranks, volume_h5, out)
    assert done.returncode == 0, done.stderr
    assert "blocks 27/27 (100%)" in done.stderr
    np.testing.assert_array_equal(_read(out), serial)
    # an independent N5 reader sees the same values and axes
    store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": out}, "path": "exported_data"}).result()
    np.testing.assert_array_equal(np.asarray(store.read().result()).transpose(3, 2, 1, 0), serial)
    assert open_n5_dataset(out, "exported_data").attributes["axes"] == ["c", "x", "y", "z"]


def test_threads_a_block_has_no_use_for_compute_its_tiles(volume_h5, serial, tmp_path, monkeypatch, capsys):
    """One block (the whole 64³ volume) and two threads: the block's tiles are computed two at a time, on two
    threads, into the same output as the serial run's."""
    import threading

    import hpc_ilastik.workflows.pixel_classification as pixel

    monkeypatch.setattr(pixel, "tile_shape_for", lambda shape, context=(): (1, 16, 32, 32, shape[4]))
    workers: set[int] = set()
    compute_sources = pixel.compute_sources
    monkeypatch.setattr(pixel, "compute_sources",
                        lambda *a, **k: workers.add(threading.get_ident()) or compute_sources(*a, **k))
    out = str(tmp_path / "one_block.n5")
    args = _args(volume_h5, out)
    args[args.index(f"--distributed_block_roi={BLOCK}")] = "--distributed_block_roi=64"
    assert main(args + ["--threads=2"]) == 0
    assert "1 block(s) of (1, 64, 64, 64) (tzyx)" in capsys.readouterr().err
    np.testing.assert_array_equal(_read(out), serial)
    assert len(workers) == 2


def test_fewer_blocks_than_ranks_is_said_once(volume_h5, serial, tmp_path):
    """ilastik's default block (256³) is one block for a small volume: the ranks without a block are named."""
    out = str(tmp_path / "one.n5")
    command = MPIEXEC + ["-n", "2", sys.executable, "-m", "hpc_ilastik", *_args(volume_h5, out), "--distributed"]
    command.remove(f"--distributed_block_roi={BLOCK}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("1 block(s) for 2 MPI ranks: 1 rank(s) will have none") == 1
    np.testing.assert_array_equal(_read(out), serial)


@pytest.mark.parametrize("how", ["--threads", "SLURM_CPUS_PER_TASK"])
def test_mpi_ranks_with_threads_equal_serial(volume_h5, serial, tmp_path, how):
    """Hybrid MPI + threads: 2 ranks computing blocks in 2 (--threads) or 3 (SLURM --cpus-per-task) threads each."""
    out = str(tmp_path / "hybrid.n5")
    env = {**os.environ, "SLURM_CPUS_PER_TASK": "3"} if how == "SLURM_CPUS_PER_TASK" else None
    command = MPIEXEC + ["-n", "2", sys.executable, "-m", "hpc_ilastik", *_args(volume_h5, out), "--distributed",
                         "--debug", *(["--threads=2"] if how == "--threads" else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(_read(out), serial)
    threads = 2 if how == "--threads" else 3
    assert f"{threads} at a time on each of 2 ranks" in done.stderr
    assert "27 blocks computed, 0 already done, on 2 rank(s)" in done.stderr


def _chunk_files(out: str) -> list[Path]:
    root = Path(out) / "exported_data"
    return [p for p in root.rglob("*") if p.is_file() and p.name != "attributes.json" and ".tmp" not in p.name]


def _kill_session(session: int) -> None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # field 6 of /proc/PID/stat: the session id
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue


def _settled_count(out: str) -> int:
    """Chunk files once no rank writes any more."""
    count, stable_since = len(_chunk_files(out)), time.monotonic()
    while time.monotonic() - stable_since < 1.0:
        time.sleep(0.1)
        now = len(_chunk_files(out))
        if now != count:
            count, stable_since = now, time.monotonic()
    return count


def test_killed_run_resumes_to_identical_output(volume_h5, serial, tmp_path):
    # 512 blocks of 8³: the kill lands mid-run (27 blocks of 24³ take less than the 50 ms between two looks)
    out = str(tmp_path / "resume.n5")
    args = [a if not a.startswith("--distributed_block_roi=") else "--distributed_block_roi=8"
            for a in _args(volume_h5, out)]
    command = MPIEXEC + ["-n", "2", sys.executable, "-m", "hpc_ilastik", *args, "--distributed"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(_chunk_files(out)) < 4 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    _kill_session(process.pid)  # ranks the launcher put in other process groups
    process.wait()
    written = _settled_count(out)
    assert 4 <= written < 512, f"kill came too late or too early ({written} chunks)"
    assert open_n5_dataset(out, "exported_data").attributes.get("complete") is not True

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{512 - written} blocks computed, {written} already done" in again.stderr
    np.testing.assert_array_equal(_read(out), serial)


def test_other_command_against_existing_output_is_refused(volume_h5, tmp_path):
    out = str(tmp_path / "other.n5")
    assert main(_args(volume_h5, out) + ["--quiet"]) == 0
    other = _args(volume_h5, out)
    other[other.index(f"--distributed_block_roi={BLOCK}")] = "--distributed_block_roi=32"
    done = subprocess.run([sys.executable, "-m", "hpc_ilastik", *other], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "different command" in done.stderr and "block_shape" in done.stderr
    assert "Traceback" not in done.stderr


def test_failing_rank_ends_the_whole_run(tmp_path):
    """A damaged input chunk fails one block on one rank: every rank exits non-zero, the block is named."""
    container = str(tmp_path / "input.n5")
    data = create_n5_dataset(container, "raw", (64, 64, 64), (24, 24, 24), "uint8", attributes={"axes": ["x", "y", "z"]})
    data.write((slice(0, 64),) * 3, _volume())
    Path(data.chunk_path((1, 1, 1))).write_bytes(b"\x00\x00\x00\x03garbage")
    start = time.monotonic()
    done = _mpi(2, f"{container}/raw", str(tmp_path / "out.n5"))
    assert done.returncode != 0
    assert time.monotonic() - start < 200
    assert "rank" in done.stderr and "block" in done.stderr
    assert "Traceback" not in done.stderr
    assert open_n5_dataset(str(tmp_path / "out.n5"), "exported_data").attributes.get("complete") is not True


def test_mpi_ome_zarr_output_equals_serial(volume_h5, serial, tmp_path):
    import zarr

    out = str(tmp_path / "out.zarr")
    command = MPIEXEC + ["-n", "2", sys.executable, "-m", "hpc_ilastik", *_args(volume_h5, out), "--distributed",
                         "--output_format=single-scale OME-Zarr"]
    command.remove("--output_format=n5")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    root = zarr.open_group(out, mode="r")
    axes = [a["name"] for a in root.attrs["multiscales"][0]["axes"]]
    assert axes == list("tczyx")
    array = root[root.attrs["multiscales"][0]["datasets"][0]["path"]]
    assert array.chunks[2:] == (24, 24, 24)  # one chunk per block
    np.testing.assert_array_equal(np.asarray(array[0]).transpose(1, 2, 3, 0), serial)


def test_many_files_are_shared_across_ranks(tmp_path):
    """Without --distributed, ranks take whole files, one at a time: every file once, each equal to serial."""
    import imageio.v3 as iio

    image = iio.imread(API / "Data_1channel.png")
    names = []
    for k in range(4):
        names.append(str(tmp_path / f"img{k}.png"))
        iio.imwrite(names[-1], np.roll(image, 17 * k, axis=1))
    template = f"--output_filename_format={tmp_path}/mpi/{{nickname}}.npy"
    project = f"--project={API / 'PixelClass.ilp'}"
    done = subprocess.run(MPIEXEC + ["-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless", project,
                                     "--output_format=numpy", template, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 files computed" in done.stderr
    serial = f"--output_filename_format={tmp_path}/serial/{{nickname}}.npy"
    assert main(["--headless", project, "--output_format=numpy", serial, "--quiet", *names]) == 0
    for k in range(4):
        np.testing.assert_array_equal(np.load(tmp_path / "mpi" / f"img{k}.npy"), np.load(tmp_path / "serial" / f"img{k}.npy"))
