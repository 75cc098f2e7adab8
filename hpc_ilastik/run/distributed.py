"""MPI at the edge: blocks (or files) handed out dynamically to every rank, resume, errors that end the run.

How the work is shared (plain point-to-point messages: robust with MPICH, Open MPI and Intel MPI, over
shared memory or a network; no one-sided RMA, whose progress on a busy rank 0 is not guaranteed):

* Rank 0 owns the queue and computes blocks like every other rank, taking them from the queue directly.
  Requests of the other ranks are answered by a *dispatcher thread* on rank 0 and, between its own
  blocks, by rank 0's main thread: a numba kernel that holds the GIL starves the thread meanwhile
  (kernels compiled with `nogil=True` let it answer within milliseconds). The thread needs
  `MPI_THREAD_MULTIPLE` (mpi4py asks for it; MPICH and Open MPI give it); an MPI without it gets the
  ilastik layout instead: rank 0 only dispatches (logged as a warning).
* Every other rank asks for its next block *before* computing the current one, so a reply that waits
  for rank 0 to finish its block does not leave it idle. Near the end (fewer blocks left than ranks)
  such a request is answered only once that rank reports its current block: the last blocks go to
  whichever rank is free first, not to one that is still busy. `RunStats` measures the balance (busy
  time per rank, idle fraction).
* Waiting is done by polling with short sleeps, never in a blocking MPI call, so waiting ranks leave
  their cores to the computing ones (MPICH spins inside blocking calls).
* Resume: the rank that draws a block first asks `is_done(block)` (the writer's chunk-exists test,
  done in parallel) and skips it if so (`io.resume` keeps outputs of other commands apart).
* Errors: the failing rank logs `rank R, block B: message` once and calls `MPI_Abort`, which ends every
  rank with a non-zero exit (a rank that dies outright is ended the same way by mpiexec/srun). Before the
  blocks start, `on_root` turns a UserError on rank 0 into a clean exit on every rank.

This is the one module that imports mpi4py (and only when a run has several ranks).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn, Sequence, TypeVar

from hpc_ilastik.errors import UserError
from hpc_ilastik.run import interrupt
from hpc_ilastik.run.blocks import Block
from hpc_ilastik.run.progress import Progress, launcher_rank

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MPI_INSTALL_HINT = (
    "pip install 'hpc-ilastik[mpi]' (or build mpi4py against your cluster's MPI: "
    "module load <mpi>; pip install --no-binary=mpi4py mpi4py)"
)
POLL_SECONDS = 0.005
_TAG_REQUEST, _TAG_REPORT, _TAG_FINISH, _TAG_WORK, _TAG_STATS, _TAG_ROOT = range(101, 107)


class PeerError(UserError):
    """Raised on ranks 1..N-1 when rank 0 failed with a UserError before the blocks started.

    Rank 0 reports the error itself; the other ranks only need to exit non-zero, silently."""


def get_comm(distributed: bool) -> Any | None:
    """MPI.COMM_WORLD for `--distributed` or when a launcher started several ranks, else None.

    mpi4py is imported only here; its absence, or an mpi4py built for another MPI than the launcher's
    (every rank would believe it is alone), is a UserError."""
    _, launched = launcher_rank()
    if not distributed and launched == 1:
        return None
    why = "--distributed" if distributed else f"running as {launched} MPI ranks"
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(f"{why} needs mpi4py: {MPI_INSTALL_HINT}") from None
    comm = MPI.COMM_WORLD
    if launched > 1 and comm.Get_size() == 1:
        raise UserError(f"the launcher started {launched} ranks but mpi4py sees 1: mpi4py was built for a "
                        f"different MPI than this mpiexec/srun; {MPI_INSTALL_HINT}")
    return comm


@dataclass(frozen=True)
class RankStats:
    """What one rank did: items computed and skipped (already done), seconds busy, seconds in the run."""

    rank: int
    computed: int
    skipped: int
    busy_s: float
    wall_s: float
    stopped_by: int | None = None  # the signal that stopped this rank early
    threads: int = 1               # the rank's worker threads


@dataclass(frozen=True)
class RunStats:
    """Per-rank statistics of a run and its wall time; `idle_fraction` measures the load balance."""

    ranks: tuple[RankStats, ...]
    wall_s: float
    stopped_by: int | None = None  # a signal stopped the run: every rank raises Interrupted
    total: int = 0                 # items in the run

    @property
    def computed(self) -> int:
        return sum(r.computed for r in self.ranks)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.ranks)

    @property
    def idle_fraction(self) -> float:
        """Share of the workers' time (threads of every rank x wall) not spent on items: waiting, or done before
        the others."""
        capacity = self.wall_s * sum(r.threads for r in self.ranks)
        return max(0.0, 1.0 - sum(r.busy_s for r in self.ranks) / capacity) if capacity > 0 else 0.0

    def summary(self, unit: str = "blocks") -> str:
        busy = "/".join(f"{r.busy_s:.1f}" for r in self.ranks)
        return (f"{self.computed} {unit} computed, {self.skipped} already done, on {len(self.ranks)} rank(s) in "
                f"{self.wall_s:.2f} s; busy per rank {busy} s; idle {100 * self.idle_fraction:.1f}%")


def run_blocks(blocks: Sequence[Block] | None, process_block: Callable[[Block], None], comm: Any | None = None, *,
               is_done: Callable[[Block], bool] | None = None, progress: Progress | None = None,
               threads: int = 1, cost: Callable[[Block], Any] | None = None) -> RunStats:
    """Run `process_block` on every block not `is_done`, shared dynamically over the ranks of `comm`
    (without one: a loop over `threads` worker threads; the kernels release the GIL). Rank 0's
    `blocks` and `progress` are used; other ranks may pass None. Every rank returns the run's statistics.

    The costliest blocks go first (`cost`, a sort key; default the voxels: a grid's last block along an axis
    is often smaller), so that the ranks end on small blocks and finish close together, and each rank's first
    block lays out the memory the later ones reuse."""
    job = _Job(process_block, is_done, "blocks", lambda block: block.voxels, str)
    key = cost or (lambda block: (block.voxels,))
    costliest_first = sorted(blocks, key=key, reverse=True) if blocks is not None else None
    return _run_dynamic(costliest_first, job, comm, progress, threads)


def map_items(items: Sequence[T] | None, fn: Callable[[T], R], comm: Any | None = None, *, threads: int = 1,
              progress: Progress | None = None, unit: str = "items", voxels: Callable[[T], int] = lambda _: 0,
              describe: Callable[[T], str] = str) -> list[R] | None:
    """`fn(item)` for every item, shared dynamically over threads or ranks as `run_blocks` shares blocks; rank 0
    gets the results in the order of its `items` (keep them small: they travel to rank 0), the others None."""
    indexed = list(enumerate(items)) if items is not None else None
    results: dict[int, R] = {}
    lock = threading.Lock()

    def one(pair: tuple[int, T]) -> None:
        value = fn(pair[1])
        with lock:
            results[pair[0]] = value

    job = _Job(one, None, unit, lambda pair: voxels(pair[1]), lambda pair: describe(pair[1]))
    _run_dynamic(indexed, job, comm, progress, threads)
    if comm is not None and comm.Get_size() > 1:
        parts = comm.gather(results, root=0)
        if comm.Get_rank() != 0:
            return None
        for part in parts:
            results.update(part)
    return [results[i] for i in range(len(indexed or ()))]


def from_root(comm: Any | None, value: T) -> T:
    """Rank 0's `value` on every rank (pickled; keep it to tables and maps, not images)."""
    if comm is None or comm.Get_size() == 1:
        return value
    return comm.bcast(value, root=0)


@dataclass(frozen=True)
class _Job:
    """What to do with each item, when to skip it, and how to count and name it."""

    process: Callable[[Any], None]
    is_done: Callable[[Any], bool] | None
    unit: str
    voxels: Callable[[Any], int]
    describe: Callable[[Any], str]


class _Tally:
    """One rank's running count of computed/skipped items and busy seconds."""

    def __init__(self, rank: int, threads: int = 1) -> None:
        self.rank, self.threads, self.computed, self.skipped, self.busy = rank, threads, 0, 0, 0.0
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def record(self, computed: bool, busy: float) -> None:
        with self.lock:
            self.computed += computed
            self.skipped += not computed
            self.busy += busy

    def stats(self, stopped_by: int | None = None) -> RankStats:
        return RankStats(self.rank, self.computed, self.skipped, self.busy, time.monotonic() - self.start, stopped_by,
                         self.threads)


def _process(job: _Job, item: Any) -> tuple[bool, float]:
    """Process one item unless it is done: (computed, seconds)."""
    started = time.monotonic()
    computed = not (job.is_done is not None and job.is_done(item))
    if computed:
        job.process(item)
    return computed, time.monotonic() - started


def _run_dynamic(items: Sequence[Any] | None, job: _Job, comm: Any | None, progress: Progress | None,
                 threads: int = 1) -> RunStats:
    if comm is None or comm.Get_size() == 1:
        stats = _run_serial(items or (), job, progress, threads)
        log.info("%s", stats.summary(job.unit))
        return stats
    from mpi4py import MPI

    comm = comm.Dup()  # our tags never meet the caller's messages
    try:
        if comm.Get_rank() != 0:
            return _run_worker(comm, job, threads)
        stats = _run_root(comm, list(items or ()), job, progress, threads,
                          threaded=MPI.Query_thread() >= MPI.THREAD_MULTIPLE)
        log.info("%s", stats.summary(job.unit))
        return stats
    finally:
        comm.Free()


def _run_serial(items: Sequence[Any], job: _Job, progress: Progress | None, threads: int = 1) -> RunStats:
    tally = _Tally(0)
    lock = threading.Lock()

    def one(item: Any) -> None:
        interrupt.check()  # a stop was asked for: no new item
        try:
            computed, busy = _process(job, item)
        except Exception as err:
            err.add_note(f"while processing {job.describe(item)}")
            raise
        with lock:
            tally.record(computed, busy)
            if progress is not None:
                progress.update(job.voxels(item), computed)

    try:
        if threads <= 1 or len(items) <= 1:
            for item in items:
                one(item)
        else:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hpc-ilastik-block") as pool:
                futures = [pool.submit(one, item) for item in items]
                try:
                    for future in as_completed(futures):
                        future.result()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    except interrupt.Interrupted as stop:  # the blocks being computed have finished (the pool waits for them)
        raise interrupt.Interrupted(stop.signum, tally.computed + tally.skipped, len(items), job.unit) from None
    if progress is not None:
        progress.close()
    stats = tally.stats()
    return RunStats((stats,), stats.wall_s, total=len(items))


def _fail(comm: Any, where: str, err: BaseException) -> NoReturn:
    """Report an error of this rank once, tagged with the rank and where it happened, and end every rank."""
    message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    log.error("rank %d, %s: %s", comm.Get_rank(), where, message)
    log.debug("traceback", exc_info=err)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    sys.stderr.flush()
    comm.Abort(err.exit_code if isinstance(err, UserError) else 1)
    raise AssertionError("MPI_Abort returned")


def _backoff() -> Iterator[float]:
    """Sleep times while polling: short at first (a message is often only a progress poll away), then
    POLL_SECONDS, so that a waiting rank costs almost no CPU."""
    pause = 1e-5
    while True:
        yield pause
        pause = min(2 * pause, POLL_SECONDS)


def _wait_recv(comm: Any, source: int, tag: int) -> Any:
    """Receive a message without spinning a core while waiting for it."""
    pauses = _backoff()
    while (message := comm.improbe(source=source, tag=tag)) is None:
        time.sleep(next(pauses))
    return message.recv()


def _run_worker(comm: Any, job: _Job, threads: int) -> RunStats:
    """Ranks 1..N-1: ask rank 0 for items until it answers None, computing up to `threads` at a time in
    worker threads and always one request ahead. Only this main thread talks to MPI."""
    tally = _Tally(comm.Get_rank(), threads)
    queued: list[tuple[int, Any]] = []    # (serial, item) received, not started
    running: dict[Any, tuple[int, Any]] = {}  # future → (serial, item)
    requested, exhausted = 0, False
    pauses = _backoff()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hpc-ilastik-block") as pool:
        while True:
            stopping = interrupt.requested() is not None
            for future in [f for f in running if f.done()]:
                serial, item = running.pop(future)
                if (err := future.exception()) is not None:
                    _fail(comm, job.describe(item), err)
                computed, busy = future.result()
                tally.record(computed, busy)
                comm.send((serial, computed), dest=0, tag=_TAG_REPORT)
            if stopping:  # items not started go back unreported as computed, so that rank 0 answers every request
                for serial, _ in queued:
                    comm.send((serial, None), dest=0, tag=_TAG_REPORT)
                queued.clear()
            while not (exhausted or stopping) and requested + len(queued) + len(running) < threads + 1:
                comm.send(threads, dest=0, tag=_TAG_REQUEST)
                requested += 1
            while (message := comm.improbe(source=0, tag=_TAG_WORK)) is not None:
                answer = message.recv()
                requested -= 1
                if answer is None:
                    exhausted = True
                else:
                    queued.append(answer)
            while queued and len(running) < threads and not stopping:
                serial, item = queued.pop(0)
                running[pool.submit(_process, job, item)] = (serial, item)
                pauses = _backoff()  # something happened: look again soon
            if (exhausted or stopping) and not (requested or queued or running):
                break
            time.sleep(next(pauses))
    comm.send(tally.stats(interrupt.requested()), dest=0, tag=_TAG_FINISH)  # a stopping rank tells rank 0
    return _stopped_or(_wait_recv(comm, 0, _TAG_STATS), job)


def _stopped_or(stats: RunStats, job: _Job) -> RunStats:
    """The run's statistics, or Interrupted on every rank when a signal stopped any of them."""
    if stats.stopped_by is not None:
        raise interrupt.Interrupted(stats.stopped_by, stats.computed + stats.skipped, stats.total, job.unit)
    return stats


class _Dispatcher:
    """Rank 0's queue: answers ranks 1..N-1 (from a thread, and from rank 0's main thread between its
    own blocks) and hands items to rank 0's main thread directly."""

    def __init__(self, comm: Any, items: list[Any], progress: Progress | None, voxels: Callable[[Any], int]) -> None:
        from mpi4py import MPI

        self.comm, self.items, self.progress, self.voxels = comm, items, progress, voxels
        self.next = 0
        self.queue_lock = threading.Lock()      # the item counter and the progress
        self.message_lock = threading.Lock()    # one thread at a time answers messages
        self.outstanding: dict[int, dict[int, Any]] = {}  # per rank: serial → item handed out, not yet reported
        self.serial = 0
        self.threads: dict[int, int] = {0: 1}        # worker threads per rank, as their requests say
        self.deferred: dict[int, int] = {}          # per rank: requests that wait for one of its items to end
        self.served: set[int] = set()               # ranks that got an answer
        self.finished: list[RankStats] = []
        self.sends: list[Any] = []
        self.stopped_by: int | None = None   # a signal stopped a rank: no more items for anyone
        self.status, self.any_source, self.any_tag = MPI.Status(), MPI.ANY_SOURCE, MPI.ANY_TAG

    def stop(self, signum: int | None) -> None:
        """Hand out no more items (a rank was asked to stop by `signum`)."""
        if signum is not None:
            with self.queue_lock:
                if self.stopped_by is None:
                    self.stopped_by = signum

    def take(self) -> Any | None:
        with self.queue_lock:
            if self.next == len(self.items) or self.stopped_by is not None:
                return None
            self.next += 1
            return self.items[self.next - 1]

    def near_the_end(self) -> bool:
        """Fewer items left than worker threads: a rank whose threads are all busy should not reserve one."""
        workers = sum(self.threads.values()) + self.comm.Get_size() - len(self.threads)
        with self.queue_lock:
            return len(self.items) - self.next < workers

    def send_next(self, rank: int) -> None:
        """Hand the next item (None: no more) to `rank`, numbered so that its report names it."""
        item = self.take()
        if item is not None:
            self.serial += 1
            self.outstanding.setdefault(rank, {})[self.serial] = item
        self.sends.append(self.comm.isend(None if item is None else (self.serial, item), dest=rank, tag=_TAG_WORK))

    def done(self, item: Any, computed: bool) -> None:
        with self.queue_lock:
            if self.progress is not None:
                self.progress.update(self.voxels(item), computed)

    def all_served(self) -> bool:
        """Every other rank got its first answer."""
        return len(self.served) == self.comm.Get_size() - 1

    def all_finished(self) -> bool:
        """Every other rank has finished."""
        return len(self.finished) == self.comm.Get_size() - 1

    def answer_pending(self) -> int:
        """Answer every message that has arrived; returns how many."""
        self.message_lock.acquire()
        try:
            answered = 0
            self.comm.Iprobe(source=self.any_source, tag=self.any_tag)  # progress: messages arrived meanwhile show up
            while (message := self.comm.improbe(source=self.any_source, tag=self.any_tag, status=self.status)):
                payload, rank, tag = message.recv(), self.status.Get_source(), self.status.Get_tag()
                if tag == _TAG_REQUEST:
                    self.served.add(rank)
                    self.threads[rank] = payload
                    if len(self.outstanding.get(rank, ())) >= payload and self.near_the_end():
                        self.deferred[rank] = self.deferred.get(rank, 0) + 1
                    else:
                        self.send_next(rank)
                elif tag == _TAG_REPORT:
                    serial, computed = payload
                    item = self.outstanding[rank].pop(serial)
                    if computed is not None:  # None: handed back unstarted by a stopping rank
                        self.done(item, computed)
                    if self.deferred.get(rank):
                        self.deferred[rank] -= 1
                        self.send_next(rank)
                else:
                    self.finished.append(payload)
                    self.stop(payload.stopped_by)
                answered += 1
            return answered
        except Exception as err:
            _fail(self.comm, "the dispatcher", err)
        finally:
            self.message_lock.release()

    def serve_until(self, condition: Callable[[], bool]) -> None:
        """Answer messages as they come until `condition()` holds."""
        pauses = _backoff()
        while not condition():
            self.stop(interrupt.requested())
            if self.answer_pending():
                pauses = _backoff()
            else:
                time.sleep(next(pauses))


def _run_root(comm: Any, items: list[Any], job: _Job, progress: Progress | None, threads: int,
              threaded: bool) -> RunStats:
    """Rank 0: dispatch, and compute in `threads` threads too when MPI allows a dispatcher thread. Between
    their items the computing threads answer waiting ranks: a kernel that holds the GIL starves the
    dispatcher thread meanwhile."""
    dispatcher = _Dispatcher(comm, items, progress, job.voxels)
    tally = _Tally(0, threads if threaded else 1)
    if threaded:
        dispatcher.threads[0] = threads
        thread = threading.Thread(target=dispatcher.serve_until, args=(dispatcher.all_finished,),
                                  name="hpc-ilastik-dispatcher", daemon=True)
        thread.start()
        # The others' first requests follow the collective Dup at once: answer them before computing,
        # so that none waits for rank 0's first block.
        dispatcher.serve_until(dispatcher.all_served)

        def compute() -> None:
            while True:
                dispatcher.stop(interrupt.requested())  # a signal here: no more items for any rank
                if (item := dispatcher.take()) is None:
                    return
                try:
                    computed, busy = _process(job, item)
                except Exception as err:
                    _fail(comm, job.describe(item), err)
                tally.record(computed, busy)
                dispatcher.done(item, computed)
                dispatcher.answer_pending()

        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hpc-ilastik-block") as pool:
            for future in [pool.submit(compute) for _ in range(threads)]:
                future.result()
        thread.join()
    else:
        log.warning("this MPI does not provide MPI_THREAD_MULTIPLE: rank 0 only hands out work")
        dispatcher.serve_until(dispatcher.all_finished)
    for request in dispatcher.sends:
        request.wait()
    if progress is not None:
        progress.close()
    dispatcher.stop(interrupt.requested())
    stats = RunStats(tuple(sorted(dispatcher.finished + [tally.stats(interrupt.requested())], key=lambda r: r.rank)),
                     time.monotonic() - tally.start, dispatcher.stopped_by, len(items))
    requests = [comm.isend(stats, dest=rank, tag=_TAG_STATS) for rank in range(1, comm.Get_size())]
    for request in requests:
        request.wait()
    return _stopped_or(stats, job)


def on_root(comm: Any | None, fn: Callable[[], T]) -> T:
    """`fn()` evaluated on rank 0 only, its result given to every rank (rank 0 reads the input, plans,
    creates the output). A UserError is raised on rank 0 and as PeerError on the others; any other
    error on rank 0 ends the run like an error in a block. Keep the result small (a shape, a path): it
    is sent to every rank; the block list is needed on rank 0 only."""
    if comm is None or comm.Get_size() == 1:
        return fn()
    if comm.Get_rank() != 0:
        ok, value, exit_code = _wait_recv(comm, 0, _TAG_ROOT)
        if not ok:
            raise PeerError(f"stopped because rank 0 failed: {value}", exit_code)
        return value
    failure: UserError | None = None
    try:
        result = fn()
        reply = (True, result, 0)
    except UserError as err:
        failure, reply = err, (False, str(err), err.exit_code)
    except Exception as err:
        _fail(comm, "setup", err)
    requests = [comm.isend(reply, dest=rank, tag=_TAG_ROOT) for rank in range(1, comm.Get_size())]
    for request in requests:
        request.wait()
    if failure is not None:
        raise failure
    return result


@dataclass(frozen=True)
class RankGroup:
    """The ranks of a communicator as the writers of one output see them (`io.streaming.Ranks`)."""

    comm: Any

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def on_root(self, fn: Callable[[], T]) -> T:
        return on_root(self.comm, fn)

    def barrier(self) -> None:
        self.comm.barrier()
