"""The benchmark suite at --quick size: it runs end to end and its agreement checks pass (no timing asserts)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_quick_bench_runs_and_agrees_with_the_baselines(tmp_path):
    report = tmp_path / "bench.json"
    readme = tmp_path / "README.md"
    readme.write_text("# bench\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n\nnotes\n")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(report),
                           "--readme", str(readme)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(report.read_text())
    assert results["all_checks_pass"] is True
    by_name = {r["workload"]: r for r in results["results"]}
    assert set(by_name) == {"W1", "W2"} and "W3" in by_name["W1"]
    assert (by_name["W1"]["feature_channels"], by_name["W2"]["feature_channels"]) == (60, 48)
    for r in by_name.values():
        checks = r["checks"]
        assert checks["features_ok"] and checks["features_worst_diff_over_tol"] <= 1.0
        for engine in ("forest", "headless"):
            assert checks[engine]["argmax_agreement"] >= 0.999 and checks[engine]["max_diff"] <= 1e-4
        assert all(ratio > 0 for ratio in r["ratios"].values())
        assert r["forest"]["trees"] == 100
    w3 = by_name["W1"]["W3"]
    assert w3["checks"]["same_output_as_single_process"]
    assert len(w3["peak_mib"]["n2_per_rank"]) == 2 and w3["efficiency"] > 0 and w3["threads_efficiency"] > 0
    assert all(w3["outside_blocks_s"][n] > 0 for n in ("n1", "n2")) and w3["efficiency_ceiling"] > 0
    assert w3["hybrid_blocks_efficiency"] > 0 and w3["peak_mib"]["hybrid"] > 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# bench\n") and text.endswith("notes\n")
    assert "| W1: 3D uint8 72³" in text and "parallel efficiency" in text and "`--threads=2`" in text
    assert "had the block phase scaled perfectly" in text and "hybrid layout, `mpiexec -n 1 --threads=2`" in text


def test_quick_contention_bench_times_features_alone_and_beside_a_busy_core():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "contention.py"), "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    alone, compute, memory, twin = done.stdout.splitlines()
    assert "60 channels" in alone and "32³ block" in alone and alone.endswith("ms alone (2 rounds)")
    for line, neighbour in ((compute, "computing in registers only"), (memory, "streaming memory"),
                            (twin, "computing the same features")):
        assert neighbour in line and float(line.rsplit(", ", 1)[1].split("×")[0]) > 0


def test_quick_objects_bench_runs_ours_the_baseline_and_two_ranks(tmp_path):
    report = tmp_path / "objects.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "objects.py"), "--quick", "--json", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["cells"] > 0 and result["workload"].startswith("O1: 64³")
    assert result["ours"]["wall_s"] > 0 and result["ours"]["peak_mib"] > 0 and result["baseline_s"] > 0
    assert result["ilastik"] == "not run (--quick)"
    assert len(result["distributed_peak_mib"]["64³"]) == 2


def test_quick_multicut_bench_runs_ours_the_skimage_baseline_and_the_cli(tmp_path):
    report = tmp_path / "multicut.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(REPO / "bench" / "multicut.py"), "--quick", "--json", str(report)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["all_checks_pass"] is True and result["workload"].startswith("64³") and result["cells"] > 0
    assert result["cli"]["same_segmentation_as_in_process"] is True and result["cli"]["peak_mib"] > 0
    ours, base = result["ours"], result["baseline"]
    assert set(ours["stages"]) >= {"superpixels", "graph", "features", "costs", "kernighan_lin"}
    assert set(base["stages"]) >= {"superpixels", "graph_and_features_numpy", "merge_below_0.5"}
    assert all(s["s"] >= 0 and s["peak_mib"] > 0 for s in [*ours["stages"].values(), *base["stages"].values()])
    assert ours["superpixels"] > ours["segments"] > 1 and ours["edges"] > ours["superpixels"]
    assert ours["energy"] <= ours["gaec_energy"] + 1e-9 and ours["energy"] < ours["merge_attractive_energy"]
    assert abs(ours["superpixels"] - base["superpixels"]) <= 0.05 * ours["superpixels"]
    agreement = result["agreement"]
    assert agreement["graph_on_our_superpixels_same_edges"] and agreement["graph_on_our_superpixels_max_mean_diff"] < 1e-5
    assert result["same_heights_and_seeds"]["voxel_agreement"] >= 0.99
    assert agreement["superpixels_ours_vs_skimage"]["error"] < 0.2
    assert 0 <= agreement["vs_truth"]["our_multicut"]["error"] < 0.5
