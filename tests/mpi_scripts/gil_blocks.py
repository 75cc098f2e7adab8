"""Test driver for load balance when rank 0's kernels hold the GIL (numba without nogil, like a long
forest prediction): every block runs a compiled loop of ~SECONDS; rank 0 prints the statistics as JSON."""

import json
import sys
import time

from numba import njit

from hpc_ilastik.run.blocks import plan_blocks
from hpc_ilastik.run.distributed import get_comm, run_blocks


@njit(cache=False)  # no nogil: the GIL is held for the whole call
def spin(n: int) -> float:
    total = 0.0
    for i in range(n):
        total += (i % 7) * 0.5
    return total


def main() -> int:
    n_blocks, seconds = int(sys.argv[1]), float(sys.argv[2])
    comm = get_comm(True)
    spin(1000)
    started = time.perf_counter()
    spin(10_000_000)
    iterations = comm.bcast(int(10_000_000 * seconds / (time.perf_counter() - started)))  # same work everywhere
    blocks = plan_blocks((1, n_blocks, 1, 1, 1), (1, 1, 1, 1, 1)) if comm.Get_rank() == 0 else None
    stats = run_blocks(blocks, lambda block: spin(iterations), comm)
    if comm.Get_rank() == 0:
        print(json.dumps({"computed": [r.computed for r in stats.ranks], "idle_fraction": stats.idle_fraction}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
