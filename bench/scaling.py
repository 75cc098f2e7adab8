"""Scaling on one node: `python bench/scaling.py [--workers 1,2,16] [--rounds 3]`.

Workload A (`shared/fixtures/bench/pixel_class.ilp` on big_256.h5, 256³ uint8, 15 feature channels, 100 trees)
run by `hpc-ilastik --headless` with w workers in the two ways a node is used: one process with `--threads=w`
(no MPI), and `mpiexec -n w ... --distributed` with one thread per rank, both on the same grid of 64³ blocks
(`--block`). All kinds alternate, `--rounds`
times, and each keeps its fastest run. The efficiency of w workers is T(1) / (w · T(w)), for the whole
command (wall time, start-up and finish included) and for the block phase alone (the time hpc-ilastik logs
for its blocks). Peak memory is each process's VmHWM (the largest rank's under MPI). Every run's
probabilities must equal the one-thread run's, bit for bit (the run fails otherwise). A worker count above
the machine's cores is measured but flagged: it shares cores. `--quick` runs a 64³ crop (the CI smoke run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import objects  # noqa: E402  (as_installed, SHARED)

# every run keeps the .pyc files the first one writes, as an installation has them (see objects.as_installed)
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from run import _load, headless, machine, read_probabilities  # noqa: E402

PROJECT = objects.SHARED / "fixtures" / "bench" / "pixel_class.ilp"
RAW = objects.SHARED / "fixtures" / "bench" / "big_256.h5"
N_CLASSES = 3


def kinds(workers: list[int]) -> dict[str, tuple[int | None, int]]:
    """name: (MPI ranks or None for one process, threads per process)."""
    out: dict[str, tuple[int | None, int]] = {}
    for w in workers:
        out[f"threads{w}"] = (None, w)
        out[f"ranks{w}"] = (w, 1)
    return out


def measure(raw_spec: str, folder: Path, workers: list[int], rounds: int, block: int | None) -> dict:
    """Fastest of `rounds` alternating runs per kind; efficiencies against the one-worker runs."""
    runs: dict[str, list[dict]] = {name: [] for name in kinds(workers)}
    for _ in range(rounds):
        for name, (ranks, threads) in kinds(workers).items():
            runs[name].append(headless(str(PROJECT), raw_spec, "zyx", folder / f"{name}.n5", ranks, block, threads))
    reference = read_probabilities(folder / "threads1.n5", N_CLASSES)
    identical = all(np.array_equal(read_probabilities(folder / f"{name}.n5", N_CLASSES), reference)
                    for name in runs)
    best = {name: min(r, key=lambda one: one["wall_s"]) for name, r in runs.items()}
    rows = []
    for w in workers:
        for way, one in (("threads", best["threads1"]), ("ranks", best["ranks1"])):
            got = best[f"{way}{w}"]
            rows.append({
                "way": way, "workers": w, "wall_s": got["wall_s"], "blocks_s": got["blocks_wall_s"],
                "efficiency": one["wall_s"] / (w * got["wall_s"]),
                "blocks_efficiency": one["blocks_wall_s"] / (w * got["blocks_wall_s"]),
                "peak_mib": got["peak_mib"],
                "all_wall_s": [r["wall_s"] for r in runs[f"{way}{w}"]],
            })
    return {"rows": rows, "identical": identical}


def markdown(result: dict, info: dict) -> str:
    cores = info["cores"]
    lines = [f"Machine: {info['cpu']}, {cores} cores; load average {info['load_before']} before, "
             f"{info['load_after']} after. Command: `{info['command']}`.", "",
             "| way | workers | whole command (s) | efficiency | block phase (s) | efficiency | peak memory per "
             "process (MiB) | runs (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        shared = " (more workers than cores)" if r["workers"] > cores else ""
        lines.append(f"| {'--threads' if r['way'] == 'threads' else 'mpiexec -n'} | {r['workers']}{shared} | "
                     f"{r['wall_s']:.2f} | {100 * r['efficiency']:.1f} % | {r['blocks_s']:.2f} | "
                     f"{100 * r['blocks_efficiency']:.1f} % | {r['peak_mib']:.0f} | "
                     f"{', '.join(f'{s:.2f}' for s in r['all_wall_s'])} |")
    lines += ["", f"Every run's probabilities identical to the one-thread run's: "
                  f"{'yes' if result['identical'] else 'NO'}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts; 1 is always included")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the untimed first run (numba's cache already holds the kernels)")
    parser.add_argument("--block", type=int, default=64,
                        help="--distributed_block_roi edge for both ways (default 64: hpc-ilastik's own block for A "
                             "without --distributed; with it the default is ilastik's 256³, one block of A)")
    parser.add_argument("--quick", action="store_true", help="a 64³ crop, one round (the CI smoke run)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    workers = sorted({1, *(int(w) for w in args.workers.split(","))})
    info = machine()
    with tempfile.TemporaryDirectory(prefix="hpc-ilastik-scaling-") as tmp:
        folder = Path(tmp)
        raw_spec = f"{RAW}/data"
        if args.quick:
            with h5py.File(RAW) as f, h5py.File(folder / "crop.h5", "w") as out:
                out.create_dataset("data", data=f["data"][:64, :64, :64])
            raw_spec = f"{folder / 'crop.h5'}/data"
        if args.warm_up:  # numba compiles or loads its cache, the OS caches the files
            headless(str(PROJECT), raw_spec, "zyx", folder / "warm-up.n5", None, args.block)
        result = measure(raw_spec, folder, workers, 1 if args.quick else args.rounds, args.block)
    info.update(load_after=_load(),
                command="python bench/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(markdown(result, info))
    if args.json:
        args.json.write_text(json.dumps({"info": info, **result}, indent=1))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
