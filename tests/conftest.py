"""Shared test paths (the real ilastik fixtures live beside the checkout in ../shared), an in-process
headless runner, and the report of the figures tests record."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from hpc_ilastik.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "ilastik"
API = FIXTURES / "api"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The ilastik fixture folder; its absence is a failure, never a skip."""
    assert FIXTURES.is_dir(), f"ilastik fixtures not found at {FIXTURES}"
    return FIXTURES


@pytest.fixture
def headless(tmp_path, capsys):
    """`run(project, inputs, *options)`: `hpc-ilastik --headless` in-process with --output_format=numpy
    into a fresh folder under tmp_path; asserts success and returns the exported array."""
    runs = itertools.count()

    def run(project, inputs, *options: str) -> np.ndarray:
        out = tmp_path / f"run{next(runs)}"
        argv = ["--headless", f"--project={project}", "--output_format=numpy", "--quiet",
                f"--output_filename_format={out}/{{nickname}}_{{result_type}}.npy", *options, *map(str, inputs)]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, err
        written = sorted(out.glob("*.npy"))
        assert len(written) == 1, written
        return np.load(written[0])

    return run


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what tests recorded with `record_property("figures", text)`, so it shows even under -q."""
    lines = sorted({(report.nodeid, value)
                    for reports in terminalreporter.stats.values() for report in reports
                    for name, value in getattr(report, "user_properties", ()) if name == "figures"})
    if lines:
        terminalreporter.write_sep("-", "measured figures")
        for nodeid, value in lines:
            terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {value}")
