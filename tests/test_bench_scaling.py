"""bench/scaling.py at --quick size: one process with 1 and 2 threads and mpiexec with 1 and 2 ranks on a crop of
workload A (no timing asserts: the rows it reports, efficiencies derived from the times it reports, and the
identity of every run's output with the one-thread run's)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_quick_scaling_reports_threads_and_ranks_with_identical_outputs(tmp_path):
    report = tmp_path / "scaling.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "scaling.py"), "--quick", "--workers", "2", "--block", "32",
                           "--json", str(report)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["identical"] is True
    rows = {(r["way"], r["workers"]): r for r in result["rows"]}
    assert sorted(rows) == [("ranks", 1), ("ranks", 2), ("threads", 1), ("threads", 2)]
    for (way, workers), r in rows.items():
        one = rows[(way, 1)]
        assert 0 < r["blocks_s"] < r["wall_s"]
        assert r["efficiency"] == pytest.approx(one["wall_s"] / (workers * r["wall_s"]))
        assert r["blocks_efficiency"] == pytest.approx(one["blocks_s"] / (workers * r["blocks_s"]))
        assert r["peak_mib"] > 0
    assert "| mpiexec -n | 2 |" in done.stdout and "| --threads | 2 |" in done.stdout
