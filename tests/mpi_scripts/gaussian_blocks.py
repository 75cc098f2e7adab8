"""Test driver for the block engine: a blockwise Gaussian filter of a tzyxc volume (.npy) into N5 chunks.

Run alone (serial: no MPI) or under `mpiexec -n N ... --distributed`. Every rank reads only its blocks
plus halo from the memory-mapped volume, filters them and writes their chunks. Rank 0 prints one JSON
line with the run statistics on stdout. Failure injection: --fail-block B raises in block B;
--exit-after K --exit-rank R makes rank R die (os._exit) right after writing its K-th chunk.
"""

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.n5 import create_n5_dataset, open_n5_dataset, read_n5_attributes
from hpc_ilastik.io.resume import COMPLETE_KEY, check_resume, run_attributes
from hpc_ilastik.run.blocks import parse_block_roi, plan_blocks, read_region
from hpc_ilastik.run.distributed import PeerError, get_comm, on_root, run_blocks
from hpc_ilastik.run.progress import Progress, rank_prefix

DATASET = "exported_data"
TRUNCATE = 3.0


def halo_for(sigma: float) -> int:
    """scipy's Gaussian radius: the context a block needs to match the whole-volume result."""
    return int(TRUNCATE * sigma + 0.5)


def filtered(volume: np.ndarray, sigma: float) -> np.ndarray:
    """The reference: the filter applied to each time point and channel of the whole volume."""
    out = np.empty(volume.shape, np.float32)
    for t in range(volume.shape[0]):
        for c in range(volume.shape[4]):
            out[t, ..., c] = gaussian_filter(volume[t, ..., c], sigma, mode="mirror", truncate=TRUNCATE)
    return out


def prepare(volume_path: str, shape: tuple, block_shape: tuple, sigma: float, output: str) -> None:
    """Rank 0: check the existing output against this command and create the dataset."""
    fingerprint = {"volume": os.path.abspath(volume_path), "shape": shape, "block_shape": block_shape, "sigma": sigma}
    existing = read_n5_attributes(os.path.join(output, DATASET)) or None
    resume = check_resume(existing, fingerprint, output)
    create_n5_dataset(output, DATASET, shape, block_shape, "float32",
                      attributes=None if resume else {**run_attributes(fingerprint), "axes": list("cxyzt")},
                      exist_ok=resume)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("volume")
    p.add_argument("output")
    p.add_argument("--block-roi")
    p.add_argument("--sigma", type=float, default=1.5)
    p.add_argument("--distributed", action="store_true")
    p.add_argument("--delay", type=float, default=0.0, help="extra seconds of work per block")
    p.add_argument("--fail-block", type=int)
    p.add_argument("--exit-after", type=int)
    p.add_argument("--exit-rank", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"{rank_prefix()}%(message)s", stream=sys.stderr)
    try:
        comm = get_comm(args.distributed)
        rank = 0 if comm is None else comm.Get_rank()
        volume = np.load(args.volume, mmap_mode="r")
        shape = tuple(volume.shape)
        block_shape = parse_block_roi(args.block_roi, shape)
        on_root(comm, lambda: prepare(args.volume, shape, block_shape, args.sigma, args.output))
        blocks = plan_blocks(shape, block_shape) if rank == 0 else None  # only rank 0 hands them out
        dataset = open_n5_dataset(args.output, DATASET)
        halo = (halo_for(args.sigma),) * 3
        written = 0

        def process(block) -> None:
            nonlocal written
            if block.number == args.fail_block:
                raise RuntimeError("synthetic failure")
            read, crop = read_region(block, halo, shape)
            result = filtered(np.asarray(volume[read]), args.sigma)[crop]
            time.sleep(args.delay)
            dataset.write_chunk(block.index, result)
            written += 1
            if args.exit_after is not None and rank == args.exit_rank and written == args.exit_after:
                os._exit(3)

        progress = Progress(len(blocks or ()), total_voxels=int(np.prod(shape)), interval=0.2)
        stats = run_blocks(blocks, process, comm, is_done=lambda b: dataset.chunk_exists(b.index), progress=progress)
        if rank == 0:
            dataset.set_attributes({COMPLETE_KEY: True})
            print(json.dumps({"computed": [r.computed for r in stats.ranks], "skipped": stats.skipped,
                              "busy": [r.busy_s for r in stats.ranks], "idle_fraction": stats.idle_fraction}))
        return 0
    except PeerError as err:  # rank 0 reports it
        return err.exit_code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
