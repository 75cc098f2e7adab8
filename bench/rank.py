"""Run `hpc-ilastik` in this process and record what one rank used: `python rank.py REPORT ARGS...`.

Writes `REPORT.<rank>` as JSON: the rank, the wall time of the command in this process and its peak
resident memory. Used by `run.py` for single-process and `mpiexec` runs alike.

The peak is Linux's VmHWM of this process: `ru_maxrss` would not do, Linux carries it over `execve` from
the process that forked us (the bench, holding its images), so it reports the parent's peak when that is
larger.
"""

import json
import os
import resource
import sys
import time


def _rank() -> int:
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def peak_kib() -> int:
    """This process's own peak resident memory in KiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    report, argv = sys.argv[1], sys.argv[2:]
    from hpc_ilastik.cli import main as cli_main
    from hpc_ilastik.run.process import finish

    start = time.perf_counter()
    code = cli_main(argv)
    seconds = time.perf_counter() - start
    with open(f"{report}.{_rank()}", "w") as f:
        json.dump({"rank": _rank(), "seconds": seconds, "peak_kib": peak_kib(),
                   "exit_code": code}, f)
    finish(code)  # ends the process as the `hpc-ilastik` console script does


if __name__ == "__main__":
    main()
