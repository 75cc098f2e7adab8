"""How much a block's features slow down when the other core is busy: `python bench/contention.py`.

Two ranks on one node share its L3 cache and memory bus; W3's parallel efficiency is lost there first.
This times W1's features (60 channels) of one interior 96³ block with its halo, in this process:
alone; beside a process that computes in registers only (what any busy core costs: clock, host);
beside one that only streams memory (copies 256 MiB over and over); and beside one computing the same
features (what a second rank does). Rounds go through the four in turn, so that the machine's drift
touches all alike; each is the median over rounds of the fastest of three runs, printed as a ratio to
"alone" (fewer rounds, on a smaller block, with --quick).
"""

from __future__ import annotations

import os

os.environ.update({var: "1" for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features import fastest  # noqa: E402
from run import workloads  # noqa: E402

from hpc_ilastik.pixel.features import FeaturePlan, compute_features, plan_features  # noqa: E402
from hpc_ilastik.run.process import keep_freed_memory  # noqa: E402
from hpc_ilastik.synthetic import make_blobs_volume  # noqa: E402


def block_with_halo(edge: int) -> tuple[np.ndarray, FeaturePlan, tuple[slice, ...]]:
    """W1's plan, an interior block of `edge`³ voxels with its halo (synthetic data), and the block's crop."""
    plan = plan_features(workloads(quick=False)["W1"].selection, (256, 256, 256), 1)
    shape = tuple(edge + 2 * h for h in plan.halo)
    raw, _ = make_blobs_volume(shape, seed=0)
    return raw[..., None], plan, tuple(slice(h, h + edge) for h in plan.halo)


def stream_memory(stop) -> None:
    """The memory-bound neighbour: copy 256 MiB until told to stop."""
    a = np.ones(64 << 20, np.float32)
    b = np.empty_like(a)
    while not stop.is_set():
        np.copyto(b, a)


def compute_in_registers(stop) -> None:
    """The compute-bound neighbour: a loop of float arithmetic whose data never leaves L1 (a busy core that
    does not touch memory)."""
    x = 1.0
    while not stop.is_set():
        for _ in range(100_000):
            x = x * 0.9999999 + 1e-7


def same_features(stop, edge: int) -> None:
    """The twin: a second rank computing the same features until told to stop."""
    keep_freed_memory()
    block, plan, crop = block_with_halo(edge)
    while not stop.is_set():
        compute_features(block, plan, crop)


NEIGHBOURS: dict[str, tuple[Callable[..., None] | None, bool]] = {  # name: (target, takes the block edge)
    "alone": (None, False),
    "a process computing in registers only": (compute_in_registers, False),
    "a process streaming memory": (stream_memory, False),
    "a process computing the same features": (same_features, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 32³ block, 2 rounds (the CI smoke run)")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("contention: needs at least 2 cores", file=sys.stderr)
        return 2
    edge, rounds = (32, 2) if args.quick else (96, 6)
    keep_freed_memory()
    block, plan, crop = block_with_halo(edge)

    def features() -> None:
        compute_features(block, plan, crop)

    features()  # numba loads its kernels, the heap is laid out
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    seconds: dict[str, list[float]] = {name: [] for name in NEIGHBOURS}
    for _ in range(rounds):
        for name, (target, takes_edge) in NEIGHBOURS.items():
            if target is None:
                seconds[name].append(fastest(features))
                continue
            stop = context.Event()
            other = context.Process(target=target, args=(stop, edge) if takes_edge else (stop,), daemon=True)
            other.start()
            time.sleep(0.5)  # the neighbour is up and at work
            seconds[name].append(fastest(features))
            stop.set()
            other.join()
    alone = statistics.median(seconds["alone"])
    print(f"W1's features ({plan.n_channels_out} channels) of one {edge}³ block with its halo, one thread: "
          f"{1e3 * alone:.0f} ms alone ({rounds} rounds)")
    for name, times in seconds.items():
        if name != "alone":
            beside = statistics.median(times)
            print(f"  beside {name}: {1e3 * beside:.0f} ms, {beside / alone:.2f}× alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
