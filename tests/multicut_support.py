"""ilastik's Multicut GUI test project (`testEdgeTrainingWithMulticutGui.py`) rebuilt from a fixture project, for
the tests and `bench/multicut.py` alike (plain h5py: no pytest, no hpc_ilastik)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

# the GUI test's DT watershed (channel 1) and the edge features of its forest
WATERSHED = {"Threshold": 0.6, "MinSize": 7, "Sigma": 1.1, "Alpha": 0.4, "BlockwiseWatershed": False}
GUI_FEATURES = {"Raw Data": ["standard_sp_mean"], "Probabilities-0": [], "Probabilities-1": ["standard_edge_mean"]}


def gui_project(template: Path, path: Path, raw: str, probabilities: str, threshold: float, forest: bool,
                edge_labels: tuple | None = None, beta: float | None = None) -> Path:
    """A copy of the Multicut project `template` as ilastik 1.4 saves the GUI test's: its training lane on `raw` and
    `probabilities` (the raw data's stored axes dropped: it may have a channel axis), the test's watershed,
    Kernighan-Lin at `threshold` (and `beta` when given), the edge forest trained from `edge_labels` (none: no
    labelled edges) when `forest`."""
    shutil.copy(template, path)
    with h5py.File(path, "r+") as f:
        lane = f["Input Data/infos/lane0000"]
        for role, spec in (("Raw Data", raw), ("Probabilities", probabilities)):
            del lane[role]["filePath"]
            lane[role]["filePath"] = spec.encode()
        del lane["Raw Data/axisorder"], lane["Raw Data/axistags"]
        del f["DT Watershed"]
        ws = f.create_group("DT Watershed")
        for name, value in WATERSHED.items():
            ws[name] = value
        ws["ChannelSelections"] = np.array([1])
        ws["StorageVersion"] = b"0.2"
        training = f["Training and Multicut"]
        for name in ("Output", "FeatureNames", "EdgeLabelsDict", "EdgeFeatures", "Rags", "SolverName"):
            if name in training:
                del training[name]
        training["SolverName"] = b"kernighan-lin"
        if beta is not None:
            training["Beta"][()] = beta
        training["ProbabilityThreshold"] = threshold
        training["TrainRandomForest"] = forest
        names = training.create_group("FeatureNames")
        for channel, features in GUI_FEATURES.items():
            names[channel] = np.array([n.encode() for n in features], dtype="S32")
        labels = training.create_group("EdgeLabelsDict").create_group("EdgeLabels0000")
        pairs, values = edge_labels or (np.zeros((0, 2), np.uint32), np.zeros(0, np.uint8))
        labels["sp_ids"], labels["labels"] = pairs, values
    return path
