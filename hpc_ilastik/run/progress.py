"""Progress lines (done/total, rate, ETA) at a bounded rate, and rank-tagged log prefixes for MPI runs."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

# (rank, size) environment variables of the common launchers, most specific first; srun's only inside a step.
_RANK_ENV = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
             ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE"), ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"))


def launcher_rank() -> tuple[int, int]:
    """(rank, size) as the MPI launcher (mpiexec, srun) set it in the environment; (0, 1) outside one.

    Read from the environment so that logging can be set up without initialising MPI."""
    for rank_var, size_var in _RANK_ENV:
        rank, size = os.environ.get(rank_var), os.environ.get(size_var)
        if rank is not None and size is not None and rank.isdigit() and size.isdigit():
            return int(rank), int(size)
    return 0, 1


def rank_prefix(rank: int | None = None, size: int | None = None) -> str:
    """'[rank 3/8] ' for log lines of a multi-rank run ('' for a single process); default: the launcher's."""
    if rank is None or size is None:
        rank, size = launcher_rank()
    return f"[rank {rank}/{size}] " if size > 1 else ""


def format_duration(seconds: float) -> str:
    """'45s', '4m12s', '2h05m'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _format_rate(per_second: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= factor:
            return f"{per_second / factor:.1f} {prefix}{unit}/s"
    return f"{per_second:.2f} {unit}/s"


INTERVAL_ENV = "HPC_ILASTIK_PROGRESS_INTERVAL"  # seconds between progress lines (--progress_interval sets it)


def default_interval(stream: TextIO) -> float:
    """Seconds between progress lines: HPC_ILASTIK_PROGRESS_INTERVAL, else 2 on a terminal (where the line is
    rewritten in place) and 30 in a log file (a SLURM job's output stays readable)."""
    given = os.environ.get(INTERVAL_ENV)
    if given is not None:
        try:
            return max(0.0, float(given))
        except ValueError:
            pass
    return 2.0 if _is_terminal(stream) else 30.0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts finished items (computed or found already done) and writes `done/total, rate, ETA` to a
    stream at most every `interval` seconds (default: `default_interval`) and once at `close()`, prefixed
    by `label` (e.g. the image's name); on a terminal the line is rewritten in place; silent when `quiet`.

    The rate counts only computed work (voxels when `total_voxels` is given, else items); the ETA is the
    remaining work at that rate."""

    def __init__(self, total: int, *, total_voxels: int | None = None, unit: str = "blocks", label: str = "",
                 quiet: bool = False, stream: TextIO | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.total_voxels, self.unit, self.quiet = total, total_voxels, unit, quiet
        self.prefix = f"{label}: " if label else ""
        self._stream, self._clock = stream, clock
        self.interval = default_interval(stream or sys.stderr) if interval is None else interval
        self.done = self.skipped = self.computed = 0
        self.done_voxels = self.computed_voxels = 0
        self._start = self._last = clock()

    def update(self, voxels: int = 0, computed: bool = True) -> None:
        """One item finished (`computed=False`: it was already done and skipped)."""
        self.done += 1
        self.done_voxels += voxels
        if computed:
            self.computed += 1
            self.computed_voxels += voxels
        else:
            self.skipped += 1
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self.status(now), final=False)

    def close(self) -> None:
        """Write the final line."""
        self._write(self.status(self._clock(), final=True), final=True)

    def status(self, now: float, final: bool = False) -> str:
        """The progress line at time `now`."""
        elapsed = max(now - self._start, 1e-9)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.prefix}{self.unit} {self.done}/{self.total} ({percent:.0f}%"
        text += f"; {self.skipped} already done)" if self.skipped else ")"
        if self.total_voxels is not None:
            rate, unit = self.computed_voxels / elapsed, "voxel"
            remaining = self.total_voxels - self.done_voxels
        else:
            rate, unit = self.computed / elapsed, self.unit
            remaining = self.total - self.done
        speed = _format_rate(rate, unit) if self.computed else "rate unknown yet"
        if final:
            return f"{text} in {format_duration(elapsed)}, {speed}"
        eta = format_duration(remaining / rate) if rate > 0 else "unknown"
        return f"{text}, {speed}, ETA {eta}"

    def _write(self, line: str, final: bool) -> None:
        if not self.quiet:
            stream = self._stream or sys.stderr
            if _is_terminal(stream):  # in place: back to the line's start, the rest of the old line erased
                stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))
            else:
                stream.write(line + "\n")
            stream.flush()
