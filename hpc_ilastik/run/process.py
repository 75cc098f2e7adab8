"""How every hpc-ilastik process (every MPI rank) starts and ends: the garbage collector off while it starts,
malloc tuned for block reuse, numba's cached kernels loaded without its registry refresh, and an exit without
the final garbage collection."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
from typing import Any, NoReturn


def start_without_collecting() -> None:
    """The cyclic garbage collector off while the process starts: imports (numpy, h5py, numba and ours) create
    hundreds of thousands of objects, none of them garbage, and the collections they trigger take about 0.1 s of
    every process, every MPI rank. `started` turns it back on."""
    gc.disable()


def started() -> None:
    """The start is over: what it created is moved out of the collector's reach (gc.freeze) and the collector
    runs again; only where `start_without_collecting` turned it off (the command, not a caller of `cli.main`)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for the next block rather than unmapping it: each block's large
    arrays would otherwise be mapped and page-faulted afresh (a fifth of the run time on a virtual machine).
    One arena for all threads: a thread's own arena grows in 64 MiB heaps and unmaps a heap as soon as it is
    empty, whatever the trim threshold, so with --threads=2 a fifth of the run went to page faults again.
    Other C libraries are left alone."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**31 - 1)
    mallopt(m_arena_max, 1)


def start_numba_lightly() -> None:
    """Spare every process (every MPI rank) about 0.1 s of numba's start when its cache holds the kernels.

    Before it loads a cached kernel numba refreshes its typing and target contexts: it imports and registers
    its implementations of Python and NumPy, which only compiling needs; a cached kernel needs numba's runtime
    (NRT) alone. So a kernel is looked up in the cache with only the runtime initialized; on a miss (the first
    run after an install) the contexts are refreshed, as numba would, and numba compiles. That refresh
    imports numba.np.arraymath, whose import probes for a BLAS by importing scipy.linalg (0.2 s more): it is
    imported with the probe answering "no BLAS" (no kernel here uses one) and the real probe put back, so that
    numba code that does use BLAS still compiles. The first miss of a process says, once, that kernels are
    being compiled and where they will be cached. With a numba laid out differently this does nothing. numba
    itself is imported without the imports it makes only for checks (`_import_numba_lightly`)."""
    try:
        _import_numba_lightly()
        from numba.core.caching import Cache
        from numba.core.runtime import rtsys
    except ImportError:
        return
    layout_known = (hasattr(Cache, "_load_overload") and hasattr(Cache, "_guard_against_spurious_io_errors")
                    and hasattr(rtsys, "initialize"))
    if not layout_known or getattr(Cache.load_overload, "spares_refresh", False):
        return

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            loaded = self._load_overload(sig, target_context)
            if loaded is not None:
                return loaded
        if not load_overload.announced:
            load_overload.announced = True
            logging.getLogger("hpc_ilastik").info(
                "compiling hpc-ilastik's kernels for this CPU (the first run after an install, or on a new kind of "
                "CPU: up to a minute more); later runs load them from %s (NUMBA_CACHE_DIR chooses where)",
                getattr(self, "_cache_path", None) or "numba's cache")
        _import_arraymath_without_blas_probe()
        target_context.refresh()
        return None

    load_overload.spares_refresh = True  # type: ignore[attr-defined]
    load_overload.announced = False  # type: ignore[attr-defined]
    Cache.load_overload = load_overload


def _import_numba_lightly() -> None:
    """Import numba with `import yaml` and `import scipy` failing, then importable again: numba's config imports yaml
    only to read .numba_config.yaml (from the working directory: where one is there, yaml is left alone), and its
    __init__ imports scipy only to check that it is not older than 1.0 (its other uses import it when they run).
    A pixel run then loads neither (20 and 15 ms)."""
    if "numba" in sys.modules:
        return
    spared = [name for name in ("yaml", "scipy") if name not in sys.modules]
    if "yaml" in spared and os.path.exists(".numba_config.yaml"):
        spared.remove("yaml")
    for name in spared:
        sys.modules[name] = None  # type: ignore[assignment]  (an import of a None entry raises ImportError)
    try:
        import numba  # noqa: F401
    finally:
        for name in spared:
            del sys.modules[name]


def _import_arraymath_without_blas_probe() -> None:
    if "numba.np.arraymath" in sys.modules:
        return
    try:
        import numba.np.linalg as linalg

        probe = linalg.ensure_blas
    except (ImportError, AttributeError):
        return

    def no_blas() -> None:
        raise ImportError("the BLAS probe is skipped")

    linalg.ensure_blas = no_blas
    try:
        import numba.np.arraymath  # noqa: F401  (its import runs the probe)
    finally:
        linalg.ensure_blas = probe


def finish(code: int) -> NoReturn:
    """End the process with `code` the ordinary way (atexit handlers, MPI_Finalize, files flushed and closed)
    but without the interpreter's last garbage collection: over numba's compiled kernels it takes about
    0.3 s of every process, every MPI rank, and frees nothing that outlives the process. gc.freeze() moves
    every object out of the collector's reach."""
    gc.freeze()
    sys.exit(code)
