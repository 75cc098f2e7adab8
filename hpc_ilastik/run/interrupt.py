"""Stopping a run well on SIGTERM, SIGINT or SIGUSR1: what SLURM sends at a job's time limit and on `scancel`
(SIGKILL follows about 30 s later), Ctrl-C, and `sbatch --signal=USR1@<seconds>`.

A signal only asks to stop: every rank finishes the block it is computing, takes no other, and the run ends
with `Interrupted`, which passes through the writers' abort (temporary files removed, N5/zarr outputs left
resumable) to the command line's one-line message. A second signal stops at once.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

_requested: int | None = None


class Interrupted(BaseException):
    """The run stopped on a signal. A BaseException: never taken for an error of the block being computed.
    `done` of `total` items (`unit`) were finished or found done when the loop over them stopped."""

    def __init__(self, signum: int, done: int | None = None, total: int | None = None, unit: str = "blocks") -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.done, self.total, self.unit = signum, done, total, unit

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def install_handlers() -> dict[int, object]:
    """Catch the stopping signals (from the main thread only; elsewhere nothing); returns the handlers they
    replace, for `restore_handlers`. A request left from an earlier run in this process is forgotten."""
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _handle) for signum in SIGNALS}


def restore_handlers(previous: dict[int, object]) -> None:
    """Put back the handlers `install_handlers` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _handle(signum: int, frame: object) -> None:
    global _requested
    if _requested is not None:
        raise Interrupted(signum)  # asked twice: stop now
    _requested = signum


def requested() -> int | None:
    """The signal that asked the run to stop, if one did."""
    return _requested


def check(done: int | None = None, total: int | None = None, unit: str = "blocks") -> None:
    """Raise `Interrupted` if a signal asked to stop (call between items of work)."""
    if _requested is not None:
        raise Interrupted(_requested, done, total, unit)
