"""ilastik's global options and environment (issue 20, item 6): LAZYFLOW_THREADS and LAZYFLOW_TOTAL_RAM_MB,
--configfile, --redirect_output, --process_name, --clean_paths, and --distributed without --output_format."""

import subprocess
import sys

import numpy as np
import pytest

from hpc_ilastik.cli import main
from hpc_ilastik.io.n5 import open_n5_dataset
from tests.conftest import API

PROJECT_3D = API / "PixelClass3D.ilp"


@pytest.fixture
def volume(tmp_path) -> str:
    path = tmp_path / "volume.npy"
    np.save(path, np.load(API / "Data_3D.npy")[:40, :40, :40, 0])
    return str(path)


@pytest.fixture
def reference(volume, tmp_path) -> np.ndarray:
    assert main(["--headless", f"--project={PROJECT_3D}", "--output_format=numpy", "--quiet", "--input_axes=zyx",
                 f"--output_filename_format={tmp_path}/reference.npy", volume]) == 0
    return np.load(tmp_path / "reference.npy")


def _run(volume: str, out, *options: str) -> int:
    return main(["--headless", f"--project={PROJECT_3D}", "--output_format=numpy", "--input_axes=zyx",
                 f"--output_filename_format={out}", *options, volume])


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    """None of the variables the command line sets (--configfile, --progress_interval) outlives the test: set and
    then deleted through monkeypatch, each is restored to its state before the test, whatever the test did."""
    for name in ("LAZYFLOW_THREADS", "LAZYFLOW_TOTAL_RAM_MB", "HPC_ILASTIK_PROGRESS_INTERVAL"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user ilastik.ini
    monkeypatch.setenv("HOME", str(tmp_path))


def test_lazyflow_total_ram_mb_makes_the_blocks_fit(volume, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAZYFLOW_TOTAL_RAM_MB", "40")
    assert _run(volume, tmp_path / "small.npy", "--threads=2") == 0
    err = capsys.readouterr().err
    assert "so that 2 at a time fit in LAZYFLOW_TOTAL_RAM_MB" in err
    blocks = int(err.split(" block(s) of ")[0].rsplit(": ", 1)[1])
    assert blocks > 1  # without the budget the 40³ volume is one 96³-capped block
    np.testing.assert_array_equal(np.load(tmp_path / "small.npy"), reference)


def test_lazyflow_threads_zero_runs_in_one_thread(volume, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAZYFLOW_THREADS", "0")  # ilastik: no worker threads
    assert _run(volume, tmp_path / "out.npy") == 0
    assert "1 at a time" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), reference)


def test_configfile_gives_threads_and_ram_unless_the_environment_does(volume, tmp_path, monkeypatch, capsys):
    config = tmp_path / "ilastik.ini"
    config.write_text("[ilastik]\ndebug: false\n\n[lazyflow]\nthreads: 3\ntotal_ram_mb: 0\n")
    monkeypatch.setenv("LAZYFLOW_TOTAL_RAM_MB", "100000")
    assert _run(volume, tmp_path / "a.npy", f"--configfile={config}", "--distributed_block_roi=20") == 0
    assert "3 at a time" in capsys.readouterr().err
    monkeypatch.setenv("LAZYFLOW_THREADS", "2")  # the environment wins, as in ilastik
    assert _run(volume, tmp_path / "b.npy", f"--configfile={config}", "--distributed_block_roi=20") == 0
    assert "2 at a time" in capsys.readouterr().err
    # the user's own ilastik.ini is read without --configfile
    monkeypatch.delenv("LAZYFLOW_THREADS")
    (tmp_path / "config" / "ilastik").mkdir(parents=True)
    (tmp_path / "config" / "ilastik" / "ilastik.ini").write_text("[lazyflow]\nthreads: 4\n")
    assert _run(volume, tmp_path / "c.npy", "--distributed_block_roi=20") == 0
    assert "4 at a time" in capsys.readouterr().err
    assert _run(volume, tmp_path / "d.npy", f"--configfile={tmp_path}/missing.ini") == 2
    assert "missing.ini does not exist" in capsys.readouterr().err


def test_redirect_output_process_name_and_clean_paths(volume, tmp_path, capsys):
    log = tmp_path / "console.txt"
    log.write_text("earlier run\n")
    assert _run(volume, tmp_path / "out.npy", f"--redirect_output={log}", "--process_name=JOB07",
                "--clean_paths", "--progress_interval=0") == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""  # everything went to the file
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier run"  # appended, as ilastik does
    assert any(line.startswith("JOB07 ") and "--clean_paths is ignored" in line for line in lines)
    assert any("blocks 1/1 (100%)" in line for line in lines)  # progress lines too
    assert all(line.startswith("JOB07 ") for line in lines[1:] if "at a time" in line)


def test_distributed_without_output_format_writes_n5_as_ilastik(tmp_path):
    volume = tmp_path / "vol.npy"
    np.save(volume, np.load(API / "Data_3D.npy")[:32, :32, :32, 0])
    done = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless", "--distributed",
                           f"--project={PROJECT_3D}", "--input_axes=zyx", "--quiet", "--distributed_block_roi=16",
                           f"--output_filename_format={tmp_path}/{{nickname}}_{{result_type}}.h5", str(volume)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    dataset = open_n5_dataset(str(tmp_path / "vol_Probabilities.n5"), "exported_data")
    assert dataset.attributes.get("complete") is True and tuple(dataset.shape) == (32, 32, 32, 2)
    assert not (tmp_path / "vol_Probabilities.h5").exists()
