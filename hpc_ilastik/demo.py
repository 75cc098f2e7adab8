"""`hpc-ilastik demo`: synthetic sample → trained project → headless prediction → accuracy."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.n5 import open_n5_dataset
from hpc_ilastik.synthetic import make_blobs_volume, sparse_labels
from hpc_ilastik.train import train_command
from hpc_ilastik.workflows.headless import run_headless
from hpc_ilastik.workflows.options import ExportRequest, HeadlessOptions, InputOptions, RunOptions

log = logging.getLogger(__name__)


def _write_h5(path: str, name: str, data: np.ndarray) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data, chunks=True, compression="gzip")
    return f"{path}/{name}"


def _predict(project: str, raw_spec: str, fmt: str, template: str, distributed: bool, quiet: bool) -> None:
    """Probabilities and Simple Segmentation of the sample: in this process, or under `mpiexec -n 2`."""
    if not distributed:
        run_headless(HeadlessOptions(
            project=project, inputs=InputOptions(files={"Raw Data": (raw_spec,)}),
            export=ExportRequest(sources=("Probabilities", "Simple Segmentation"), output_format=fmt,
                                 filename_template=template),
            run=RunOptions(quiet=quiet)))
        return
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise UserError("demo --distributed needs mpiexec: pip install 'hpc-ilastik[mpi]'")
    command = [mpiexec, "-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless", "--distributed",
               f"--project={project}", f"--output_format={fmt}", "--export_source=Probabilities,Simple Segmentation",
               f"--output_filename_format={template}", raw_spec] + (["--quiet"] if quiet else [])
    if subprocess.run(command).returncode != 0:
        raise UserError("the demo's distributed prediction failed (see above)")


def run_demo(output_dir: str, distributed: bool = False, quiet: bool = False) -> int:
    """Make a 3D sample with known truth, train on sparse labels, predict headless, report accuracy."""
    os.makedirs(output_dir, exist_ok=True)
    out = os.path.abspath(output_dir)
    raw, truth = make_blobs_volume()
    labels = sparse_labels(truth, seed=1)
    raw_spec = _write_h5(os.path.join(out, "sample.h5"), "raw", raw)
    labels_spec = _write_h5(os.path.join(out, "labels.h5"), "labels", labels)
    project = os.path.join(out, "demo.ilp")

    start = time.perf_counter()
    train_command(raw=raw_spec, labels=labels_spec, features=None, tree_count=100, output=project,
                  raw_axes="zyx", store_inside=False)
    trained = time.perf_counter()

    fmt, ext = ("n5", "n5") if distributed else ("compressed hdf5", "h5")
    probs_path = os.path.join(out, f"sample_Probabilities.{ext}")
    seg_path = os.path.join(out, f"sample_Simple Segmentation.{ext}")
    _predict(project, raw_spec, fmt, os.path.join(out, f"sample_{{result_type}}.{ext}"), distributed, quiet)
    predicted = time.perf_counter()

    segmentation = _read_result(seg_path, fmt)
    accuracy = float(np.mean(segmentation.reshape(truth.shape) == truth))
    labelled = float(np.mean(labels > 0))
    print(f"project:        {project}")
    print(f"probabilities:  {probs_path}/exported_data")
    print(f"segmentation:   {seg_path}/exported_data")
    print(f"demo: accuracy {accuracy:.1%} against the known truth on {truth.size:,} voxels "
          f"(trained on {labelled:.2%} labelled voxels; train {trained - start:.1f} s, "
          f"predict {predicted - trained:.1f} s{' on 2 MPI ranks' if distributed else ''})")
    return 0 if accuracy > 0.9 else 1


def _read_result(path: str, fmt: str) -> np.ndarray:
    if fmt == "n5":
        dataset = open_n5_dataset(path, "exported_data")
        return dataset.read(tuple(slice(0, n) for n in dataset.shape))
    with h5py.File(path, "r") as f:
        return f["exported_data"][()]
