"""bench/features.py at --quick size: the per-scale, per-feature profile of workload A's selection (no timing
asserts: which rows and features it reports, and that the parts and the whole are measured)."""

import re
import subprocess
import sys

from tests.conftest import REPO


def test_quick_feature_profile_reports_every_selected_scale_and_feature():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "features.py"), "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "block (32, 32, 32) with halo (14, 14, 14), 15 feature channels" in out
    assert float(re.search(r"whole selection: ([\d.]+) ms per block", out).group(1)) > 0
    rows = dict(re.findall(r"^\| ([\d.]+) \| [\d.]+ ms \| (.*) \|$", out, re.M))
    assert list(rows) == ["0.7", "1.0", "1.6", "3.5"]  # the project's selected scales, its Gaussian Smoothings
    assert rows["0.7"] == ""                             # in the presmoothing column
    assert re.fullmatch(r"Laplacian of Gaussian -?[\d.]+", rows["1.0"])
    assert [name for name in re.findall(r"([A-Z][A-Za-z ]+?) -?[\d.]+", rows["1.6"])] == [
        "Gaussian Gradient Magnitude", "Structure Tensor Eigenvalues", "Hessian of Gaussian Eigenvalues"]
    assert float(re.search(r"sum of the parts: ([\d.]+) ms", out).group(1)) > 0
