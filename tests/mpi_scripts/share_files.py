"""Test driver for the many-files mode: each rank takes the next file when free and writes `<file>.done`
holding its rank; rank 0 prints, as JSON, the rank that did each file, in the order of the files. An
optional 4th argument names a file whose processing fails."""

import json
import sys
import time

from hpc_ilastik.run.distributed import get_comm, map_items


def main() -> int:
    folder, n_files, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    failing = sys.argv[4] if len(sys.argv) > 4 else None
    comm = get_comm(distributed=False)
    rank = comm.Get_rank()

    def process(path: str) -> int:
        time.sleep(delay)
        if path.endswith(f"/{failing}"):
            raise RuntimeError("unreadable image")
        with open(path + ".done", "x") as f:  # "x": a file given out twice would fail here
            f.write(str(rank))
        return rank

    files = [f"{folder}/image{i:02d}" for i in range(n_files)] if rank == 0 else None
    ranks = map_items(files, process, comm, unit="files", describe=lambda path: f"file {path}")
    if rank == 0:
        print(json.dumps({"ranks": ranks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
