"""Batches of many inputs keep going past a bad one (issue 20, item 3): the good inputs are written, the bad
ones are listed at the end with their reason, the exit status says that some failed; `--stop_on_error`
restores ilastik's fail-fast; two inputs that would write the same file are refused before any work."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from hpc_ilastik.cli import main
from tests.conftest import API

PROJECT = API / "PixelClass.ilp"


def _inputs(folder: Path) -> list[Path]:
    """Three PNG inputs, the middle one corrupt (a PNG header, then garbage)."""
    folder.mkdir()
    good = [folder / "a.png", folder / "c.png"]
    for path in good:
        shutil.copy(API / "Data_1channel.png", path)
    bad = folder / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return [good[0], bad, good[1]]


def _args(inputs: list[Path], out: Path, *extra: str) -> list[str]:
    return ["--headless", f"--project={PROJECT}", "--output_format=numpy", "--quiet",
            f"--output_filename_format={out}/{{nickname}}.npy", *extra, *map(str, inputs)]


def test_a_corrupt_input_is_reported_and_the_others_are_written(tmp_path, capsys):
    inputs = _inputs(tmp_path / "in")
    assert main(_args(inputs, tmp_path / "out")) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "c.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.npy"), np.load(tmp_path / "out" / "c.npy"))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    summary = err[err.index("hpc-ilastik: error: 1 of 3 input(s) failed; the others were written:"):]
    failed = summary.splitlines()[1:]
    assert len(failed) == 1 and failed[0].startswith(f"  {inputs[1]}: ") and "b.png" in failed[0]


def test_stop_on_error_stops_at_the_first_failing_input(tmp_path, capsys):
    inputs = _inputs(tmp_path / "in")
    code = main(_args(inputs, tmp_path / "out", "--stop_on_error"))
    assert code not in (0, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy"]  # c was never attempted
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpc-ilastik: error: ") and "b.png" in err[0]


def test_under_mpiexec_the_other_files_are_written_and_rank_0_lists_the_failed(tmp_path):
    inputs = _inputs(tmp_path / "in")
    done = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik",
                           *_args(inputs, tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "c.npy"]
    assert done.stderr.count("1 of 3 input(s) failed; the others were written:") == 1
    assert f"  {inputs[1]}: " in done.stderr and "Traceback" not in done.stderr


def test_two_inputs_that_would_write_one_file_are_refused_before_any_work(tmp_path, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        shutil.copy(API / "Data_1channel.png", tmp_path / folder / "img.png")
    inputs = [tmp_path / "x" / "img.png", tmp_path / "y" / "img.png"]
    assert main(_args(inputs, tmp_path / "out")) == 2
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert f"the inputs {inputs[0]} and {inputs[1]} would both be written to {tmp_path}/out/img.npy" in err
    # a template that tells them apart is accepted
    assert main(["--headless", f"--project={PROJECT}", "--output_format=numpy", "--quiet",
                 f"--output_filename_format={tmp_path}/out/{{dataset_dir}}/{{nickname}}.npy",
                 *map(str, inputs)]) == 0


def test_a_full_disk_stops_the_batch_at_once(tmp_path, capsys, monkeypatch):
    """An output that cannot be written ends the batch (the next inputs would fail the same way): exit 74."""
    import builtins
    import errno

    inputs = _inputs(tmp_path / "in")[::2]  # two good inputs

    def full(path, *args, **kwargs):
        builtins.open(path, "wb").close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hpc_ilastik.io.images.open", full, raising=False)
    assert main(_args(inputs, tmp_path / "out")) == 74
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1 and "input(s) failed" not in err
    assert f"cannot write {tmp_path}/out/a.npy" in err and "c.npy" not in err
    assert list((tmp_path / "out").iterdir()) == []  # no temporary file left either
