"""bench/ilastik.py at --quick size without the real ilastik: it says how to build it, times hpc-ilastik alone on
every workload, and writes its JSON and README table (no timing asserts)."""

import json
import subprocess
import sys

from tests.conftest import REPO

WORKLOADS = ["A", "3d", "2d", "autocontext", "oc"]


def test_quick_bench_without_ilastik_says_how_to_build_it_and_runs_ours(tmp_path):
    report, readme = tmp_path / "bench.json", tmp_path / "README.md"
    readme.write_text("# bench\n\n<!-- ilastik:start -->\nold table\n<!-- ilastik:end -->\n\nnotes\n")
    missing = tmp_path / "no-oracle" / "ilastik.sh"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "ilastik.py"), "--quick", f"--ilastik={missing}",
                           "--json", str(report), "--readme", str(readme)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"No ilastik at {missing}: timing hpc-ilastik alone" in done.stderr
    assert "shared/oracle/ilastik/setup.sh --mirror" in done.stderr and "shared/oracle/ilastik/README.md" in done.stderr
    info = json.loads(report.read_text())
    assert info["machine"]["ilastik"].startswith(f"not run (no ilastik at {missing}")
    assert info["machine"]["rounds"] == 1 and info["machine"]["cores"] >= 1
    results = info["results"]
    assert [r["workload"] for r in results] == WORKLOADS
    for r in results:
        assert r["errors"] == {} and "ilastik" not in r and "ratios" not in r and "difference" not in r
        ours = r["ours"]
        assert len(ours["walls_s"]) == 1 and ours["wall_s"] > 0 and ours["peak_mib"] > 0
        assert "--threads=1" in r["command"]["ours"] and "--output_format=hdf5" in r["command"]["ours"]
        assert all(t["met"] is None for t in r["targets"].values())
    targets = {r["workload"]: {k: t["at_least"] for k, t in r["targets"].items()} for r in results}
    assert targets == {"A": {"wall": 8.0, "wall_goal": 10.0, "memory": 5.0}, "3d": {"wall": 5.0},
                       "2d": {"wall": 5.0}, "autocontext": {"wall": 5.0}, "oc": {}}
    titles = {r["workload"]: r["title"] for r in results}
    assert "64³" in titles["A"] and "mirrored to 64³" in titles["3d"] and "256×256" in titles["2d"]
    assert "Probabilities Stage 2" in titles["autocontext"] and "64³" in titles["oc"]
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# bench\n") and text.endswith("<!-- ilastik:end -->\n\nnotes\n")
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert [row.split("**")[1] for row in rows] == WORKLOADS
    assert all("| not run |" in row and ("not measured" in row or "none set" in row) for row in rows)


def test_unknown_workload_is_refused():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "ilastik.py"), "--workloads", "A,4d"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown workloads ['4d']" in done.stderr
