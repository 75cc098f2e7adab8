"""Computing an image block by block into its export targets: the block shape, the worker threads, and
the run over the grid that skips blocks a resumed output already holds, commits every target at the end
and discards them all on failure."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from hpc_ilastik.errors import UserError
from hpc_ilastik.run import blocks as blk
from hpc_ilastik.run.distributed import run_blocks
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.export import Target
from hpc_ilastik.workflows.options import RunOptions

log = logging.getLogger(__name__)


def block_shape_for(run: RunOptions, shape_tzyxc: tuple[int, ...], context: Sequence[int] = ()) -> tuple[int, ...]:
    """The block grid's block shape: --distributed_block_roi, else memory-friendly defaults (`context`: the zyx
    halo the pixel features need, where known)."""
    if run.block_roi:
        return blk.parse_block_roi(run.block_roi, shape_tzyxc)
    if run.distributed:
        return blk.parse_block_roi(None, shape_tzyxc)
    return tile_shape_for(shape_tzyxc, context)


def tile_shape_for(shape_tzyxc: tuple[int, ...], context: Sequence[int] = ()) -> tuple[int, ...]:
    """The most the pixel engine computes at once: the default block shape, and the tiles a larger block (ilastik's
    256³ under --distributed, or a --distributed_block_roi) is computed in (`context`: the features' zyx halo)."""
    t, z, y, x, c = shape_tzyxc
    if z == 1:  # 512²: a block's feature stack (tens of channels) is faulted in once and reused; 1024² blocks
        # were slower (notebooks/pc.ilp's 1024×1344 image 1.34-1.57 s against 1.10-1.43 s) and took twice the memory
        return (1, 1, min(y, 512), min(x, 512), c)
    # 96³: the filter passes' arrays stay near the caches (measured on W1 of bench/, halo 38: 10 % less CPU and
    # half the memory of 128³; 64³ pays more in halos). With a halo of at most 24, 64³ takes the same time and a
    # quarter less memory (workload A, halo 14: 223 instead of 286 MiB; the 3d fixture, halo 19: 210 instead of 306)
    side = 64 if context and max(context) <= 24 else 96
    return (1, min(z, side), min(y, side), min(x, side), c)


def thread_count(run: RunOptions, under_mpi: bool = False) -> int:
    """Worker threads of this process: --threads, else ilastik's LAZYFLOW_THREADS; else, one MPI rank of
    several, SLURM's --cpus-per-task (or 1: a rank per core), and a single process every core it may use
    (its CPU affinity: what SLURM allocated)."""
    if run.threads is not None:
        if run.threads < 1:
            raise UserError(f"--threads must be at least 1, not {run.threads}")
        return run.threads
    for name in ("LAZYFLOW_THREADS", "SLURM_CPUS_PER_TASK") if under_mpi else ("LAZYFLOW_THREADS",):
        given = os.environ.get(name)
        if given is not None:
            if not given.strip().isdigit():
                raise UserError(f"{name}={given!r} is not a thread count (a whole number)")
            return max(1, int(given))  # ilastik's LAZYFLOW_THREADS=0: no worker threads, the caller's only
    if under_mpi:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def block_threads(run: RunOptions, comm: Any | None, items: Sequence[Any] | None) -> int:
    """Threads for a run over `items` (rank 0's; None on the other ranks): no more than there are items."""
    threads = thread_count(run, comm is not None and comm.Get_size() > 1)
    return threads if items is None else max(1, min(threads, len(items)))


def memory_limit(workers: int) -> int:
    """Bytes one worker (thread or rank of this node) may use for one item: ilastik's LAZYFLOW_TOTAL_RAM_MB when
    set, else half the machine's memory, shared by the workers."""
    given = os.environ.get("LAZYFLOW_TOTAL_RAM_MB")
    if given is not None:
        try:
            total = float(given) * 2**20
        except ValueError:
            raise UserError(f"LAZYFLOW_TOTAL_RAM_MB={given!r} is not a number of megabytes") from None
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2
    return int(total / max(workers, 1))


def fit_block_shape(block_shape: tuple[int, ...], needs: Callable[[tuple[int, ...]], int], workers: int,
                    run: RunOptions) -> tuple[int, ...]:
    """The block shape made smaller (its longest spatial side halved, down to 16) until `workers` blocks at
    once fit in ilastik's LAZYFLOW_TOTAL_RAM_MB; unchanged when that is not set or the shape was given."""
    if run.block_roi or os.environ.get("LAZYFLOW_TOTAL_RAM_MB") is None:
        return block_shape
    budget = memory_limit(workers)
    shape = list(block_shape)
    while needs(tuple(shape)) > budget and max(shape[1:4]) > 16:
        longest = max(range(1, 4), key=lambda axis: shape[axis])
        shape[longest] = max(16, (shape[longest] + 1) // 2)
    if needs(tuple(shape)) > budget:
        log.warning("blocks of %s (tzyx) need about %.0f MiB each, more than the %.0f MiB per worker that "
                    "LAZYFLOW_TOTAL_RAM_MB allows; going on with them", tuple(shape[:4]), needs(tuple(shape)) / 2**20,
                    budget / 2**20)
    elif tuple(shape) != tuple(block_shape):
        log.info("blocks of %s (tzyx) so that %d at a time fit in LAZYFLOW_TOTAL_RAM_MB", tuple(shape[:4]), workers)
    return tuple(shape)


def tiles_of(block: blk.Block, tile_shape: tuple[int, ...], shape_tzyxc: tuple[int, ...]) -> list[blk.Block]:
    """`block` cut into tiles of at most `tile_shape` (their `out_slices` relative to the block), or the block
    itself where it is no larger."""
    if all(b <= t for b, t in zip(block.shape[:4], tile_shape[:4])):
        return [block]
    return blk.plan_blocks(shape_tzyxc, tuple(tile_shape[:4]) + (shape_tzyxc[4],),
                           block.slices[:4] + (slice(0, shape_tzyxc[4]),))


def write_blocks(grid: Sequence[blk.Block], process: Callable[[blk.Block], None], targets: Sequence[Target],
                 comm: Any | None, threads: int, progress: Progress, cost: Callable[[blk.Block], Any],
                 nickname: str) -> list[str]:
    """Run `process` (which writes the targets) over the grid, skipping blocks every target already holds;
    then commit the targets (or, on any failure, discard them) and return their paths."""
    ranks = comm.Get_size() if comm is not None else 1
    if ranks > len(grid) and comm.Get_rank() == 0:
        log.warning("%s: %d block(s) for %d MPI ranks: %d rank(s) will have none (a block is one output chunk, "
                    "computed by one rank); a smaller --distributed_block_roi gives every rank work", nickname,
                    len(grid), ranks, ranks - len(grid))
    try:
        run_blocks(grid, process, comm=comm, threads=threads, progress=progress, cost=cost,
                   is_done=lambda block: all(t.writer.block_done(t.output_slices(block)) for t in targets))
    except BaseException:
        for target in targets:
            target.writer.abort()
        raise
    for index, target in enumerate(targets):
        try:
            target.writer.close()
        except BaseException:
            for later in targets[index + 1:]:  # never left open: HDF5 would close them at exit, onto a full disk
                later.writer.abort()
            raise
        if comm is None or comm.Get_rank() == 0:
            log.info("%s: %s written to %s", nickname, target.name, target.path)
    return [t.path for t in targets]
