"""Test driver for the many-files mode: each rank takes the next file when free and writes `<file>.done`
holding its rank; rank 0 prints the per-rank file counts as JSON. An optional 4th argument names a file
whose processing fails."""

import json
import sys
import time

from hpc_ilastik.run.distributed import get_comm, share_files


def main() -> int:
    folder, n_files, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    failing = sys.argv[4] if len(sys.argv) > 4 else None
    comm = get_comm(distributed=False)
    rank = comm.Get_rank()

    def process(path: str) -> None:
        time.sleep(delay)
        if path.endswith(f"/{failing}"):
            raise RuntimeError("unreadable image")
        with open(path + ".done", "x") as f:  # "x": a file given out twice would fail here
            f.write(str(rank))

    files = [f"{folder}/image{i:02d}" for i in range(n_files)] if rank == 0 else None
    stats = share_files(files, process, comm)
    if rank == 0:
        print(json.dumps({"computed": [r.computed for r in stats.ranks]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
