"""Shared test paths (the real ilastik fixtures live beside the checkout in ../shared, or where
HPC_ILASTIK_SHARED points), an in-process headless runner, and the report of the figures tests record."""

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from hpc_ilastik.cli import main
from hpc_ilastik.project.reader import open_project

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HPC_ILASTIK_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "ilastik"
API = FIXTURES / "api"


def pytest_configure(config) -> None:
    """Without the ilastik fixtures most tests cannot run: one clear line before collection, not a traceback."""
    if not FIXTURES.is_dir():
        raise pytest.UsageError(f"the ilastik test fixtures are not at {FIXTURES}: put the project's shared/ folder "
                                "beside the checkout, or set HPC_ILASTIK_SHARED to the folder that holds fixtures/")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The ilastik fixture folder; its absence is a failure, never a skip."""
    assert FIXTURES.is_dir(), f"ilastik fixtures not found at {FIXTURES}"
    return FIXTURES


def training_image(project: Path) -> str:
    """The input spec of a project's first training image (Raw Data); a project-internal image is
    passed as an HDF5 path into the .ilp, as ilastik reads it."""
    ref = open_project(str(project)).lanes[0].roles["Raw Data"]
    return f"{project}{ref.path}" if ref.location == "ProjectInternal" else ref.path


def export_with_cli(out_dir: Path, project, inputs, *options: str) -> np.ndarray:
    """`hpc-ilastik --headless` in-process with --output_format=numpy into the new folder `out_dir`;
    asserts success (the error is in the captured stderr) and returns the one exported array."""
    argv = ["--headless", f"--project={project}", "--output_format=numpy", "--quiet",
            f"--output_filename_format={out_dir}/{{nickname}}_{{result_type}}.npy", *options, *map(str, inputs)]
    assert main(argv) == 0, "hpc-ilastik failed: see the captured stderr"
    written = sorted(out_dir.glob("*.npy"))
    assert len(written) == 1, written
    return np.load(written[0])


def label_agreement(probs_tzyxc: np.ndarray, stage) -> tuple[int, int]:
    """(pixels whose argmax is their label, labelled pixels) over the stage's labels of lane 0."""
    agree = total = 0
    for slices, block in stage.labels(0):
        labels = block[..., 0]
        labelled = labels > 0
        predicted = probs_tzyxc[slices[:4]].argmax(axis=-1) + 1
        agree += int(np.count_nonzero(predicted[labelled] == labels[labelled]))
        total += int(np.count_nonzero(labelled))
    return agree, total


@pytest.fixture
def headless(tmp_path):
    """`run(project, inputs, *options)`: export_with_cli into a fresh folder under tmp_path."""
    runs = itertools.count()
    return lambda project, inputs, *options: export_with_cli(tmp_path / f"run{next(runs)}", project, inputs, *options)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what tests recorded with `record_property("figures", text)`, so it shows even under -q."""
    lines = sorted({(report.nodeid, value)
                    for reports in terminalreporter.stats.values() for report in reports
                    for name, value in getattr(report, "user_properties", ()) if name == "figures"})
    if lines:
        terminalreporter.write_sep("-", "measured figures")
        for nodeid, value in lines:
            terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {value}")
