"""Object Classification from prediction maps: hpc-ilastik against the real ilastik and a scikit-image
regionprops pipeline, in one run, one thread each.

    python bench/objects.py                 # O1 (256³, ~400 cells) and the memory check at 256³ and 512³
    python bench/objects.py --quick         # 64³, no ilastik, no 512³: the CI smoke run
    python bench/objects.py --ilastik ~/.cache/ilastik-oracle/ilastik.sh --rounds 3

O1: a synthetic 3-D two-channel uint8 volume of well-separated round cells (radius 4-8) and its
two-channel prediction maps, classified with the fixture project `ObjectClassification5t3d2c_wPred.ilp`
(simple threshold 0.7 after smoothing σ 1, size ≥ 50, the Standard Object Features with their
neighbourhood variants, margin 30 × 30 × 1, a 100-tree forest). hpc-ilastik and ilastik (built from
source, `shared/oracle/ilastik`; its convex-hull-capable vigra via ILASTIK_ORACLE_VIGRA=source) run the
same command alternately, fastest of `--rounds` each, and their Object Predictions must be identical.
The baseline is what a user would write with scikit-image and scikit-learn: Gaussian smoothing,
threshold, `label`, `remove_small_objects`, `regionprops_table` (size, centroid, bounding box, intensity
mean/min/max, inertia eigenvalues) plus variance/skewness/kurtosis/sum per channel, the neighbourhood
statistics per object from a distance transform of its box, and a 100-tree scikit-learn forest.
Memory: hpc-ilastik's peak per rank under `mpiexec -n 2 --distributed` at 256³ and at 512³ (8× the
volume): it must not grow with the volume.
"""

from __future__ import annotations

import os

os.environ.update({var: "1" for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage, stats  # noqa: E402

BENCH = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("HPC_ILASTIK_SHARED", BENCH.parent.parent / "shared"))  # as the tests find it
PROJECT = SHARED / "fixtures" / "ilastik" / "ObjectClassification5t3d2c_wPred.ilp"
ORACLE = Path.home() / ".cache" / "ilastik-oracle" / "ilastik.sh"
ARGS = ["--headless", "--export_source=Object Predictions", "--output_format=hdf5", "--input_axes=zyxc"]


def make_cells(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(raw (z, y, x, 2) uint8, prediction maps (z, y, x, 2) float32, number of cells)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    centres: list[tuple[np.ndarray, float]] = []
    wanted = int(400 * np.prod(shape) / 256 ** 3)
    for _ in range(50 * wanted):
        if len(centres) == wanted:
            break
        centre, radius = rng.uniform(10, np.array(shape) - 10), rng.uniform(4, 8)
        if any(np.linalg.norm(centre - c) < radius + r + 2 for c, r in centres[-2000:]):
            continue
        centres.append((centre, radius))
        box = tuple(slice(int(c - radius - 1), int(c + radius + 2)) for c in centre)
        z, y, x = np.ogrid[box]
        mask[box] |= (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
    p = np.clip(ndimage.gaussian_filter(mask.astype(np.float32), 1.0) + rng.normal(0, 0.05, shape), 0, 1)
    raw = np.stack([60 + 120 * p, 200 - 100 * p], axis=-1) + rng.normal(0, 10, shape + (2,))
    return (np.clip(raw, 0, 255).astype(np.uint8), np.stack([p, 1 - p], axis=-1).astype(np.float32),
            len(centres))


def write_inputs(folder: Path, shape: tuple[int, int, int]) -> tuple[str, str, int]:
    raw, maps, cells = make_cells(shape)
    for name, data in (("raw.h5", raw), ("maps.h5", maps)):
        with h5py.File(folder / name, "w") as f:
            f.create_dataset("data", data=data, chunks=(64, 64, 64, 2))
    return str(folder / "raw.h5/data"), str(folder / "maps.h5/data"), cells


def timed(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident MiB of the process itself) of a command run to success.

    The peak is the process's VmHWM, read every 20 ms while it runs (`ru_maxrss` would not do: Linux
    carries it over `execve` from this bench process, which holds the images)."""
    errors = tempfile.TemporaryFile("w+")  # a pipe could fill up and stall the command
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
    peak_kib = 0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                peak_kib = max([peak_kib] + [int(line.split()[1]) for line in status if line.startswith("VmHWM:")])
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    errors.seek(0)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors.read()}")
    return wall, peak_kib / 1024


def as_installed() -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE: each engine keeps the .pyc files its first run writes, as
    an installation has them (a source build would otherwise compile every module again in every run)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def ours(raw: str, maps: str, output: Path) -> tuple[float, float]:
    return timed([sys.executable, "-m", "hpc_ilastik", *ARGS, "--threads=1", "--quiet", f"--project={PROJECT}",
                  f"--raw_data={raw}", f"--prediction_maps={maps}", f"--output_filename_format={output}"],
                 as_installed())


def ilastik(oracle: Path, raw: str, maps: str, output: Path) -> tuple[float, float]:
    env = dict(as_installed(), LAZYFLOW_THREADS="1", ILASTIK_ORACLE_VIGRA="source")
    return timed([str(oracle), *ARGS, f"--project={PROJECT}", f"--raw_data={raw}", f"--prediction_maps={maps}",
                  f"--output_filename_format={output}"], env)


def baseline(raw_path: str, maps_path: str) -> float:
    """Seconds of the scikit-image + scikit-learn pipeline in this process (inputs read before timing)."""
    from skimage import measure
    from sklearn.ensemble import RandomForestClassifier

    raw = h5py.File(raw_path.rsplit("/", 1)[0], "r")["data"][()].astype(np.float32)
    maps = h5py.File(maps_path.rsplit("/", 1)[0], "r")["data"][()]
    start = time.perf_counter()
    smoothed = ndimage.gaussian_filter(maps[..., 0], 1.0)
    labels = measure.label(smoothed >= 0.7, connectivity=1)
    labels[np.bincount(labels.ravel())[labels] < 50] = 0
    table = measure.regionprops_table(labels, intensity_image=raw, properties=(
        "label", "area", "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max",
        "inertia_tensor_eigvals"), extra_properties=(_variance, _skewness, _kurtosis, _total))
    own = np.column_stack([np.asarray(v, dtype=np.float64) for k, v in table.items() if k != "label"])
    near = np.stack([_neighbourhood(labels, raw, region) for region in measure.regionprops(labels)])
    matrix = np.nan_to_num(np.hstack([own, near]))
    forest = RandomForestClassifier(100, random_state=0, n_jobs=1).fit(matrix, np.arange(len(matrix)) % 2)
    forest.predict(matrix)
    return time.perf_counter() - start


def _variance(mask, values):
    return np.var(values[mask], axis=0)


def _skewness(mask, values):
    return stats.skew(values[mask], axis=0)


def _kurtosis(mask, values):
    return stats.kurtosis(values[mask], axis=0)


def _total(mask, values):
    return np.sum(values[mask], axis=0)


def _neighbourhood(labels: np.ndarray, raw: np.ndarray, region, margin=(1, 30, 30)) -> np.ndarray:
    """Mean, variance, min, max, sum per channel of the pixels within the margin around one object."""
    box = tuple(slice(max(lo - m, 0), min(hi + m, n))
                for lo, hi, m, n in zip(region.bbox[:3], region.bbox[3:], margin, labels.shape))
    own = labels[box] == region.label
    near = (ndimage.distance_transform_edt(~own, sampling=(30, 1, 1)) < 30) & ~own
    values = raw[box][near]
    return np.concatenate([values.mean(0), values.var(0), values.min(0), values.max(0), values.sum(0)])


def distributed_peak(raw: str, maps: str, output: Path) -> list[float]:
    """Peak MiB of each rank of `mpiexec -n 2 hpc-ilastik --distributed` (bench/rank.py reports)."""
    report = output.with_suffix(".report")
    command = [shutil.which("mpiexec") or "mpiexec", "-n", "2", sys.executable, str(BENCH / "rank.py"), str(report),
               *ARGS, "--distributed", "--output_format=n5", "--quiet", f"--project={PROJECT}", f"--raw_data={raw}",
               f"--prediction_maps={maps}", f"--output_filename_format={output}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return [json.loads(Path(f"{report}.{rank}").read_text())["peak_kib"] / 1024 for rank in range(2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64³, no ilastik, no 512³")
    parser.add_argument("--ilastik", type=Path, default=ORACLE, help=f"the oracle's ilastik.sh (default {ORACLE})")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per engine (fastest kept)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    edge = 64 if args.quick else 256
    with tempfile.TemporaryDirectory(prefix="hpc-ilastik-objects-") as tmp:
        folder = Path(tmp)
        raw, maps, cells = write_inputs(folder, (edge,) * 3)
        result: dict = {"workload": f"O1: {edge}³ uint8, 2 channels, {cells} cells", "cells": cells}
        with_ilastik = not args.quick and args.ilastik.is_file()
        runs: dict[str, list] = {"ours": [], "ilastik": []}
        for _ in range(1 if args.quick else args.rounds):
            runs["ours"].append(ours(raw, maps, folder / "ours.h5"))
            if with_ilastik:
                runs["ilastik"].append(ilastik(args.ilastik, raw, maps, folder / "ilastik.h5"))
        result["ours"] = {"wall_s": min(r[0] for r in runs["ours"]), "peak_mib": max(r[1] for r in runs["ours"])}
        if with_ilastik:
            result["ilastik"] = {"wall_s": min(r[0] for r in runs["ilastik"]),
                                 "peak_mib": max(r[1] for r in runs["ilastik"])}
            with h5py.File(folder / "ours.h5") as a, h5py.File(folder / "ilastik.h5") as b:
                result["same_output_as_ilastik"] = bool(np.array_equal(a["exported_data"][()], b["exported_data"][()]))
            result["speedup_vs_ilastik"] = result["ilastik"]["wall_s"] / result["ours"]["wall_s"]
            result["memory_ratio_vs_ilastik"] = result["ilastik"]["peak_mib"] / result["ours"]["peak_mib"]
        else:
            result["ilastik"] = f"not run: no ilastik at {args.ilastik} (build it: shared/oracle/ilastik/setup.sh)" \
                if not args.quick else "not run (--quick)"
        result["baseline_s"] = baseline(raw, maps)
        result["speedup_vs_baseline"] = result["baseline_s"] / result["ours"]["wall_s"]
        result["distributed_peak_mib"] = {f"{edge}³": distributed_peak(raw, maps, folder / "mpi.n5")}
        if not args.quick:
            big = folder / "big"
            big.mkdir()
            big_raw, big_maps, _ = write_inputs(big, (2 * edge,) * 3)
            result["distributed_peak_mib"][f"{2 * edge}³"] = distributed_peak(big_raw, big_maps, big / "mpi.n5")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result.get("same_output_as_ilastik", True) else 1


if __name__ == "__main__":
    sys.exit(main())
