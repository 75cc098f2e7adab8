"""Where a block's feature time goes, per scale and per feature: the profile behind issue 21's feature bank.

    python bench/features.py                     # workload A's project on a block of big_256.h5 (~30 s)
    python bench/features.py --project P.ilp --input img.h5/data --block 128 --rounds 7
    python bench/features.py --quick             # a 32³ block, 1 round (the CI smoke run)

One block of the input (the engine's block for this selection, as a one-process run computes it: 64³ where the
features' halo is at most 24, as A's, else 96³; at the image's centre) with the halo
the project's whole selection needs, features computed as `hpc-ilastik --headless` computes them (crop = the
block): the whole selection, then each scale's presmoothing alone, then each selected (feature, scale) alone
(its presmoothing included; its own time is that minus the presmoothing and Gaussian Smoothing of its scale,
which is the presmoothing's probe). One thread, malloc set up as the
command sets it up, an untimed run first; the fastest of `--rounds` runs each. The sum of the single features
exceeds the whole selection's time by the work that the whole selection shares (one presmoothing per scale,
one derivative bank per scale).
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from hpc_ilastik.io.inputs import open_input  # noqa: E402
from hpc_ilastik.pixel.features import FEATURE_NAMES, FeatureSelection, compute_features, plan_features  # noqa: E402
from hpc_ilastik.project.reader import open_project  # noqa: E402
from hpc_ilastik.run.process import keep_freed_memory  # noqa: E402
from hpc_ilastik.workflows.blockwise import tile_shape_for  # noqa: E402

SHARED = Path(os.environ.get("HPC_ILASTIK_SHARED", BENCH.parent.parent / "shared"))
WORKLOAD_A = SHARED / "fixtures" / "bench"


def fastest(work: Callable[[], object], runs: int = 3, warm_up: bool = False) -> float:
    """Seconds of the fastest of `runs` runs of `work` (after an untimed one if `warm_up`)."""
    if warm_up:
        work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def single(selection: FeatureSelection, feature: str | None, column: int) -> FeatureSelection:
    """The selection of one (feature, scale column); feature None: the presmoothing of that scale alone (its
    Gaussian Smoothing, whose filter at sigma_f is the only addition)."""
    feature = feature or "GaussianSmoothing"
    ids = selection.feature_ids if feature in selection.feature_ids else selection.feature_ids + (feature,)
    matrix = tuple(tuple(i == ids.index(feature) and j == column for j in range(len(selection.scales)))
                   for i in range(len(ids)))
    return FeatureSelection(ids, selection.scales, matrix, selection.compute_in_2d)


def profile(selection: FeatureSelection, block: np.ndarray, halo: tuple[int, ...], rounds: int) -> dict:
    """Milliseconds of the whole selection, of each scale's presmoothing and of each selected feature on the
    block (zyxc, halo included around it)."""
    shape = block.shape[:3]
    crop = tuple(slice(h, n - h) for h, n in zip(halo, shape))

    def timed(sel: FeatureSelection) -> float:
        plan = plan_features(sel, shape, block.shape[3], check=False)
        return 1e3 * fastest(lambda: compute_features(block, plan, crop), rounds, warm_up=True)

    rows = []
    for column in selection.selected_columns():
        pre = timed(single(selection, None, column))
        features = {fid: timed(single(selection, fid, column)) - pre
                    for fid, row in zip(selection.feature_ids, selection.matrix)
                    if row[column] and fid != "GaussianSmoothing"}  # that one is the presmoothing probe itself
        rows.append({"scale": selection.scales[column], "presmoothing_ms": pre, "features_ms": features})
    return {"whole_ms": timed(selection), "scales": rows}


def report(result: dict, voxels: int) -> str:
    lines = [f"whole selection: {result['whole_ms']:.1f} ms per block ({1e6 * result['whole_ms'] / voxels:.1f} "
             "ns per voxel)", "", "| scale | presmoothing and Gaussian Smoothing | other features: own time (ms) |", "|---|---|---|"]
    singles = 0.0
    for row in result["scales"]:
        features = ", ".join(f"{FEATURE_NAMES[f]} {ms:.1f}" for f, ms in row["features_ms"].items())
        lines.append(f"| {row['scale']} | {row['presmoothing_ms']:.1f} ms | {features} |")
        singles += row["presmoothing_ms"] + sum(row["features_ms"].values())
    lines.append(f"\nsum of the parts: {singles:.1f} ms (the whole selection shares presmoothing and banks)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=str(WORKLOAD_A / "pixel_class.ilp"))
    parser.add_argument("--input", default=str(WORKLOAD_A / "big_256.h5/data"))
    parser.add_argument("--block", type=int, help="block side (default: the engine's for this selection)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a 32³ block, one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    keep_freed_memory()
    selection = open_project(args.project).stages[0].features
    source = open_input(args.input)
    t, z, y, x, c = source.shape_tzyxc
    plan = plan_features(selection, (z, y, x), c)
    side = 32 if args.quick else args.block or tile_shape_for((t, z, y, x, c), plan.halo)[1]
    extent = [min(side, n) for n in (z, y, x)]
    starts = [max(0, (n - e) // 2 - h) for n, e, h in zip((z, y, x), extent, plan.halo)]
    stops = [min(n, s + e + 2 * h) for n, s, e, h in zip((z, y, x), starts, extent, plan.halo)]
    block = np.asarray(source.read((slice(0, 1), *map(slice, starts, stops), slice(0, c)))[0])
    halo = tuple(min(h, (b - e) // 2) for h, b, e in zip(plan.halo, block.shape[:3], extent))
    print(f"{args.project} on {args.input}: block {tuple(extent)} with halo {halo}, {plan.n_channels_out} feature "
          f"channels, fastest of {rounds} run(s), one thread")
    print(report(profile(selection, block, halo, rounds), int(np.prod(extent))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
