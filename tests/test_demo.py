"""`hpc-ilastik demo`, the README's first command: runs end to end with a high accuracy on known truth."""

from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np

from hpc_ilastik.project.reader import open_project
from hpc_ilastik.synthetic import make_blobs_volume


def _accuracy(stdout: str) -> float:
    match = re.search(r"accuracy (\d+\.\d)%", stdout)
    assert match, stdout
    return float(match.group(1)) / 100


def test_demo_trains_predicts_and_reports_accuracy(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hpc_ilastik", "demo", "--output-dir", str(tmp_path), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _accuracy(done.stdout) >= 0.95
    project = open_project(str(tmp_path / "demo.ilp"))
    assert project.workflow_name == "Pixel Classification" and project.stages[0].classifier.n_trees == 100
    _, truth = make_blobs_volume()
    with h5py.File(tmp_path / "sample_Simple Segmentation.h5", "r") as f:
        segmentation = f["exported_data"][()]
    with h5py.File(tmp_path / "sample_Probabilities.h5", "r") as f:
        probabilities = f["exported_data"][()]
    assert probabilities.shape == truth.shape + (2,) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(segmentation[..., 0], probabilities.argmax(-1) + 1)
    assert abs(np.mean(segmentation[..., 0] == truth) - _accuracy(done.stdout)) < 0.001  # the printed figure is true


def test_demo_distributed_matches_serial(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hpc_ilastik", "demo", "--distributed", "--output-dir", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "on 2 MPI ranks" in done.stdout and _accuracy(done.stdout) >= 0.95
