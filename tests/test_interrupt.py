"""SIGTERM (SLURM's time limit, scancel), SIGINT and SIGUSR1 end a run well: the blocks being computed finish,
no other starts, temporary files go, one line says what happened, and the same command resumes."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from hpc_ilastik.io.n5 import open_n5_dataset
from hpc_ilastik.run import interrupt
from hpc_ilastik.run.blocks import plan_blocks
from hpc_ilastik.run.distributed import run_blocks
from tests.conftest import API

PROJECT = API / "PixelClass3D.ilp"
ARGS = ["--headless", f"--project={PROJECT}", "--input_axes=zyx", "--distributed_block_roi=32"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> str:
    """256³ (512 blocks of 32³): several seconds of work, so that a signal arrives mid-run."""
    path = tmp_path_factory.mktemp("interrupt") / "vol.h5"
    tile = np.load(API / "Data_3D.npy")[..., 0]
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.tile(tile, (4, 4, 4)), chunks=(32, 32, 32))
    return f"{path}/data"


def _start(command: list[str]) -> subprocess.Popen:
    """A command in a session of its own: its process group stands for a SLURM job's processes."""
    return subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    start = time.monotonic()
    while not condition():
        assert process.poll() is None, f"the run ended before the signal: {process.stderr.read()}"
        assert time.monotonic() - start < timeout
        time.sleep(0.02)


def test_a_loop_stops_between_blocks_and_says_how_far_it_got():
    grid = plan_blocks((1, 1, 8, 8, 1), (1, 1, 2, 2, 1))  # 16 blocks
    seen = []

    def process(block):
        seen.append(block.number)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGUSR1)  # as `sbatch --signal=USR1@60` would

    previous = interrupt.install_handlers()
    try:
        with pytest.raises(interrupt.Interrupted) as stopped:
            run_blocks(grid, process, threads=1)
    finally:
        interrupt.restore_handlers(previous)
    assert len(seen) == 3 and (stopped.value.done, stopped.value.total, stopped.value.name) == (3, 16, "SIGUSR1")
    assert signal.getsignal(signal.SIGUSR1) == previous[signal.SIGUSR1]


def test_sigterm_removes_the_unfinished_hdf5_file_and_a_rerun_writes_it(volume, tmp_path):
    out = tmp_path / "out.h5"
    command = [sys.executable, "-m", "hpc_ilastik", *ARGS, "--threads=2", "--output_format=hdf5",
               f"--output_filename_format={out}", volume]
    process = _start(command)
    # some blocks into the temporary file (a block's chunks are 256 KB), hundreds of blocks still to go
    _wait_for(lambda: any(os.path.getsize(p) > 1 << 20 for p in glob.glob(f"{out}.tmp-*")), process)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    lines = err.strip().splitlines()
    assert lines[-1].startswith("hpc-ilastik: stopped by SIGTERM with ") and " of 512 blocks done" in lines[-1]
    assert "Traceback" not in err and not os.listdir(tmp_path)  # neither the output nor its temporary file
    done = subprocess.run(command + ["--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        assert f["exported_data"].shape == (256, 256, 256, 2)


def test_sigterm_under_mpi_then_the_same_command_resumes_to_the_same_output(volume, tmp_path):
    out = tmp_path / "mpi.n5"
    command = ["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik", *ARGS, "--distributed",
               "--output_format=n5", f"--output_filename_format={out}", volume]
    process = _start(command)
    chunks = f"{out}/exported_data/*/*/*/*"
    _wait_for(lambda: len(glob.glob(chunks)) >= 40, process)
    os.killpg(process.pid, signal.SIGTERM)  # as SLURM signals every process of the job
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1 and "Traceback" not in err  # said once, by rank 0
    finished = len(glob.glob(chunks))
    assert 40 <= finished < 512
    assert not [p for p in glob.glob(f"{out}/**", recursive=True) if ".tmp" in os.path.basename(p)]
    assert open_n5_dataset(str(out), "exported_data").attributes.get("complete") is False
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{finished} already done" in resumed.stderr
    reference = tmp_path / "reference.n5"
    whole = subprocess.run([sys.executable, "-m", "hpc_ilastik", *ARGS, "--quiet", "--output_format=n5",
                            f"--output_filename_format={reference}", volume], capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr
    a, b = open_n5_dataset(str(out), "exported_data"), open_n5_dataset(str(reference), "exported_data")
    region = tuple(slice(0, n) for n in a.shape)
    assert a.attributes.get("complete") is True and np.array_equal(a.read(region), b.read(region))
