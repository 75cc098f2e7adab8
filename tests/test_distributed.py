"""The block engine under MPI (mpiexec -n 1/2/3 with mpich), resume, failures, file sharing, progress,
the launcher and the SLURM templates.

The MPI runs use tests/mpi_scripts/gaussian_blocks.py: a blockwise Gaussian filter of a synthetic volume
written as N5 chunks, read back here with tensorstore (an independent N5 implementation).
"""

import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorstore

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.resume import check_resume, file_digest, run_attributes
from hpc_ilastik.run.blocks import plan_blocks, read_region
from hpc_ilastik.run.distributed import _TAG_REPORT, _TAG_REQUEST, _Dispatcher, get_comm, run_blocks
from hpc_ilastik.run.progress import INTERVAL_ENV, Progress, rank_prefix

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "mpi_scripts"
sys.path.insert(0, str(SCRIPTS))
from gaussian_blocks import filtered  # noqa: E402

BLOCK_ROI = '{"z": 12, "y": 10, "x": 8}'  # on (2, 40, 36, 30, 2): 2 x 4 x 4 x 4 = 128 blocks, uneven edges
N_BLOCKS = 128
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                 "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                 "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_STEP_TASKS_PER_NODE", "HPC_ILASTIK_THREADS")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def run_script(script: str, *args: str, ranks: int | None = None, env: dict | None = None,
               timeout: float = 90) -> subprocess.CompletedProcess:
    """Run a test driver alone (ranks=None) or under `mpiexec -n ranks` (mpich oversubscribes by default)."""
    command = [sys.executable, str(SCRIPTS / script), *args]
    if ranks is not None:
        command = ["mpiexec", "-n", str(ranks)] + command
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env or _env())


def gaussian(volume: Path, out: Path, *args: str, ranks: int | None = None, **kw) -> subprocess.CompletedProcess:
    extra = ("--distributed",) if ranks is not None else ()
    return run_script("gaussian_blocks.py", str(volume), str(out), "--block-roi", BLOCK_ROI, *extra, *args,
                      ranks=ranks, **kw)


def stats_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_n5(container: Path) -> np.ndarray:
    """The dataset as tzyxc, read by tensorstore (which orders N5 axes x first)."""
    store = tensorstore.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(container / "exported_data")}})
    return np.asarray(store.result().read().result()).transpose(4, 3, 2, 1, 0)


def chunk_files(container: Path) -> list[Path]:
    return [p for p in (container / "exported_data").rglob("*")
            if p.is_file() and p.name != "attributes.json" and ".tmp-" not in p.name]


def attributes(container: Path) -> dict:
    return json.loads((container / "exported_data" / "attributes.json").read_text())


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("volume") / "volume.npy"
    np.save(path, np.random.default_rng(0).random((2, 40, 36, 30, 2), dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def serial(volume, tmp_path_factory) -> np.ndarray:
    """The engine without MPI (no launcher, no --distributed): a plain loop over the blocks."""
    out = tmp_path_factory.mktemp("serial") / "serial.n5"
    stats = stats_of(gaussian(volume, out))
    assert stats["computed"] == [N_BLOCKS] and stats["skipped"] == 0
    return read_n5(out)


def test_serial_blocks_equal_the_whole_volume_filter(volume, serial):
    np.testing.assert_array_equal(serial, filtered(np.load(volume), 1.5))


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_mpi_output_equals_serial_output(volume, serial, tmp_path, ranks):
    out = tmp_path / "out.n5"
    result = gaussian(volume, out, "--delay", "0.01", ranks=ranks)
    stats = stats_of(result)
    np.testing.assert_array_equal(read_n5(out), serial)
    assert len(stats["computed"]) == ranks and sum(stats["computed"]) == N_BLOCKS
    assert all(n > 0 for n in stats["computed"]), stats  # every rank computes, rank 0 included
    print(f"\n{ranks} rank(s): blocks per rank {stats['computed']}, idle {100 * stats['idle_fraction']:.1f}%")
    if ranks > 1:  # dynamic hand-out keeps the ranks busy (blocks of ~15 ms on 2 cores)
        assert stats["idle_fraction"] < 0.25, stats
        assert f"{N_BLOCKS} blocks computed, 0 already done, on {ranks} rank(s)" in result.stderr
    assert "blocks 128/128 (100%) in" in result.stderr


def test_kernels_holding_the_gil_on_rank0_do_not_starve_the_other_ranks():
    stats = stats_of(run_script("gil_blocks.py", "40", "0.04", ranks=2))
    print(f"\nGIL-bound blocks: per rank {stats['computed']}, idle {100 * stats['idle_fraction']:.1f}%")
    # no timing threshold (a loaded CI machine would make it flaky): both ranks must take a real share
    assert sum(stats["computed"]) == 40 and min(stats["computed"]) >= 8, stats


def test_n5_attributes_follow_the_standard(volume, serial, tmp_path):
    out = tmp_path / "out.n5"
    stats_of(gaussian(volume, out, ranks=2))
    attrs = attributes(out)
    assert attrs["dimensions"] == [2, 30, 36, 40, 2]                 # x first
    assert attrs["blockSize"] == [2, 8, 10, 12, 1]                   # one chunk per block
    assert attrs["dataType"] == "float32" and attrs["compression"]["type"] == "gzip"
    assert attrs["axes"] == ["c", "x", "y", "z", "t"]
    assert attrs["complete"] is True
    assert "n5" in json.loads((out / "attributes.json").read_text())
    assert len(chunk_files(out)) == N_BLOCKS


def test_killed_run_resumes_to_identical_output(volume, serial, tmp_path):
    out = tmp_path / "out.n5"
    killed = gaussian(volume, out, "--delay", "0.01", "--exit-after", "5", "--exit-rank", "1", ranks=3)
    assert killed.returncode != 0
    present = len(chunk_files(out))
    assert 5 <= present < N_BLOCKS
    assert attributes(out)["complete"] is False
    resumed = stats_of(gaussian(volume, out, ranks=2))   # another rank count resumes as well
    assert resumed["skipped"] == present
    assert sum(resumed["computed"]) == N_BLOCKS - present  # only the missing blocks were computed
    np.testing.assert_array_equal(read_n5(out), serial)
    assert attributes(out)["complete"] is True


def test_a_failing_rank_ends_the_run_on_every_rank(volume, tmp_path):
    out = tmp_path / "out.n5"
    result = gaussian(volume, out, "--delay", "0.01", "--fail-block", "7", ranks=3, timeout=60)
    assert result.returncode != 0
    assert len(chunk_files(out)) < N_BLOCKS - 10  # the other ranks stopped too
    output = result.stdout + result.stderr
    block = re.escape("block 7 (t 0:1, z 0:12, y 10:20, x 24:30, c 0:2)")
    reports = re.findall(rf"rank \d, {block}: RuntimeError: synthetic failure", output)
    assert len(reports) == 1, output


def test_a_failure_without_mpi_names_the_block(volume, tmp_path):
    result = gaussian(volume, tmp_path / "out.n5", "--fail-block", "3", timeout=60)
    assert result.returncode != 0
    assert "while processing block 3 (t 0:1, z 0:12, y 0:10, x 24:30, c 0:2)" in result.stderr


def test_a_different_command_is_refused_on_an_existing_output(volume, tmp_path):
    out = tmp_path / "out.n5"
    stats_of(gaussian(volume, out))
    result = gaussian(volume, out, "--sigma", "1.0", ranks=2)
    assert result.returncode == 2
    assert result.stderr.count("was written by a different command (sigma: 1.5 then, 1.0 now)") == 1, result.stderr
    assert attributes(out)["hpc_ilastik_run"]["sigma"] == 1.5


def test_without_thread_multiple_rank0_only_dispatches(volume, serial, tmp_path):
    out = tmp_path / "out.n5"
    result = gaussian(volume, out, ranks=3, env=_env(MPI4PY_RC_THREAD_LEVEL="serialized"))
    stats = stats_of(result)
    assert stats["computed"][0] == 0 and sum(stats["computed"]) == N_BLOCKS
    assert "MPI_THREAD_MULTIPLE" in result.stderr
    np.testing.assert_array_equal(read_n5(out), serial)


def test_files_are_shared_one_at_a_time_across_ranks(tmp_path):
    n_files = 9
    result = run_script("share_files.py", str(tmp_path), str(n_files), "0.05", ranks=3)
    assert result.returncode == 0, result.stderr
    ranks = json.loads(result.stdout.strip().splitlines()[-1])["ranks"]
    done = sorted(p.name for p in tmp_path.glob("*.done"))
    assert done == [f"image{i:02d}.done" for i in range(n_files)]  # each exactly once (opened with "x")
    assert ranks == [int((tmp_path / d).read_text()) for d in done]  # rank 0 gets every result, in file order
    assert sorted(set(ranks)) == [0, 1, 2]


def test_a_failing_file_ends_the_run_naming_rank_and_file(tmp_path):
    result = run_script("share_files.py", str(tmp_path), "9", "0.05", "image03", ranks=3, timeout=60)
    assert result.returncode != 0
    reports = re.findall(rf"rank \d, file {re.escape(str(tmp_path))}/image03: RuntimeError: unreadable image",
                         result.stderr)
    assert len(reports) == 1, result.stderr
    assert len(list(tmp_path.glob("*.done"))) < 8  # the others stopped too


def test_run_blocks_without_mpi_skips_done_blocks_and_reports_progress():
    blocks = plan_blocks((1, 10, 10, 10, 1), (1, 4, 4, 10, 1))
    seen = []
    stream = io.StringIO()
    progress = Progress(len(blocks), total_voxels=1000, stream=stream)
    stats = run_blocks(blocks, lambda b: seen.append(b.number), is_done=lambda b: b.number % 3 == 0,
                       progress=progress)
    voxels = {b.number: b.voxels for b in blocks}  # 4x4, 4x4, 4x2 / 4x4, 4x4, 4x2 / 2x4, 2x4, 2x2 (z, y)
    assert seen == [1, 4, 2, 5, 7, 8]  # largest first (the edges' smaller blocks last), the done ones skipped
    assert [voxels[n] for n in seen] == [160, 160, 80, 80, 80, 40]
    assert (stats.computed, stats.skipped) == (6, 3)
    assert stream.getvalue().startswith("blocks 9/9 (100%; 3 already done) in ")


def test_run_blocks_takes_the_costliest_first():
    """headless passes the voxels each block reads (its halo clipped at the image border) as the cost: the
    block with halo on every side goes first and lays out the memory every later block reuses."""
    blocks = plan_blocks((1, 12, 12, 12, 1), (1, 4, 4, 4, 1))
    halo = (2, 2, 2)
    seen = []
    run_blocks(blocks, lambda b: seen.append(b.index[1:4]),
               cost=lambda b: math.prod(s.stop - s.start for s in read_region(b, halo, (1, 12, 12, 12, 1))[0]))
    assert seen[0] == (1, 1, 1) and len(seen) == 27  # the only block with a halo on all six sides
    assert set(seen[1:7]) == {(0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)}


class _QueuedComm:
    """Just enough of an MPI communicator for rank 0's dispatcher: the messages it will receive, in order,
    and what it sends."""

    def __init__(self, size: int) -> None:
        self.size, self.inbox, self.sent = size, [], []

    def Get_size(self) -> int:
        return self.size

    def Iprobe(self, **_) -> bool:
        return bool(self.inbox)

    def improbe(self, source, tag, status):
        if not self.inbox:
            return None
        rank, tag, payload = self.inbox.pop(0)
        status.Set_source(rank)
        status.Set_tag(tag)
        return SimpleNamespace(recv=lambda: payload)

    def isend(self, item, dest, tag):
        self.sent.append((dest, item))
        return SimpleNamespace(wait=lambda: None)


def test_near_the_end_a_busy_rank_gets_its_next_block_only_when_it_reports():
    """Ranks ask one block ahead; with fewer blocks left than worker threads the request of a rank whose
    threads are all busy waits for its report, so the last blocks go to whichever rank is free first."""
    comm = _QueuedComm(size=2)
    dispatcher = _Dispatcher(comm, ["A", "B", "C", "D"], None, lambda item: 0)
    comm.inbox = [(1, _TAG_REQUEST, 1)]  # a request says how many threads the rank computes with
    dispatcher.answer_pending()
    assert comm.sent == [(1, (1, "A"))]  # items go numbered: reports name them
    comm.inbox = [(1, _TAG_REQUEST, 1)]  # asking ahead while computing A, three blocks left: B at once
    dispatcher.answer_pending()
    assert comm.sent == [(1, (1, "A")), (1, (2, "B"))]
    assert dispatcher.take() == "C"  # rank 0's own block
    comm.inbox = [(1, _TAG_REPORT, (1, True)), (1, _TAG_REQUEST, 1)]  # A done; asks ahead while computing B
    dispatcher.answer_pending()
    assert len(comm.sent) == 2  # one block left: D is not reserved for the busy rank 1
    comm.inbox = [(1, _TAG_REPORT, (2, True))]
    dispatcher.answer_pending()
    assert comm.sent[-1] == (1, (3, "D"))  # rank 1 is free first: it gets D
    comm.inbox = [(1, _TAG_REQUEST, 1), (1, _TAG_REPORT, (3, True))]
    dispatcher.answer_pending()
    assert comm.sent[-1] == (1, None) and dispatcher.take() is None  # done, and no block was lost


def test_a_rank_with_threads_is_served_until_all_its_threads_are_busy():
    """A rank computing with 2 threads gets a block for each, and one ahead; near the end only a thread that
    ends frees a block for it; an item a stopping rank hands back unstarted is not counted as done."""
    comm = _QueuedComm(size=2)
    dispatcher = _Dispatcher(comm, ["A", "B", "C", "D", "E"], None, lambda item: 0)
    comm.inbox = [(1, _TAG_REQUEST, 2)] * 3
    dispatcher.answer_pending()
    assert [item for _, (_, item) in comm.sent] == ["A", "B", "C"]  # two to compute, one ahead
    comm.inbox = [(1, _TAG_REQUEST, 2)]  # two left, fewer than the 3 threads of ranks 0 and 1: deferred
    dispatcher.answer_pending()
    assert len(comm.sent) == 3
    comm.inbox = [(1, _TAG_REPORT, (2, True))]  # B ended first: the deferred request gets D
    dispatcher.answer_pending()
    assert comm.sent[-1] == (1, (4, "D")) and sorted(dispatcher.outstanding[1]) == [1, 3, 4]
    comm.inbox = [(1, _TAG_REPORT, (3, None))]  # C handed back unstarted (a signal)
    dispatcher.answer_pending()
    assert sorted(dispatcher.outstanding[1]) == [1, 4] and dispatcher.take() == "E"


def test_get_comm(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    assert get_comm(False) is None  # no --distributed, no launcher: mpi4py is never imported
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if mpi4py were not installed
    with pytest.raises(UserError, match=r"--distributed needs mpi4py: pip install 'hpc-ilastik\[mpi\]'"):
        get_comm(True)
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(UserError, match="running as 4 MPI ranks needs mpi4py"):
        get_comm(False)


def test_get_comm_detects_an_mpi4py_of_another_mpi():
    # Open MPI's variables say 4 ranks, but this MPICH-built mpi4py starts as a lone singleton.
    code = "from hpc_ilastik.run.distributed import get_comm; get_comm(True)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=_env(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="4"))
    assert result.returncode != 0
    assert "the launcher started 4 ranks but mpi4py sees 1" in result.stderr


def test_check_resume():
    fingerprint = {"project": "sha256:ab", "input_shape": (1, 5, 6, 7, 1), "block_shape": (1, 4, 4, 4, 1)}
    assert check_resume(None, fingerprint, "out.n5") is False
    stored = json.loads(json.dumps({"dimensions": [7, 6, 5, 1, 1], **run_attributes(fingerprint)}))
    assert stored["complete"] is False
    assert check_resume(stored, fingerprint, "out.n5") is True
    with pytest.raises(UserError, match=r"written by a different command \(block_shape: \[1, 4, 4, 4, 1\] then, "
                                        r"\[1, 8, 8, 8, 1\] now\); remove it or choose another output"):
        check_resume(stored, {**fingerprint, "block_shape": (1, 8, 8, 8, 1)}, "out.n5")
    with pytest.raises(UserError, match="project: "):
        check_resume(stored, {**fingerprint, "project": "sha256:cd"}, "out.n5")
    with pytest.raises(UserError, match="not written by hpc-ilastik"):
        check_resume({"dimensions": [7, 6, 5, 1, 1], "axes": ["x", "y", "z", "c", "t"]}, fingerprint, "out.n5")


def test_file_digest_identifies_a_project_by_content(fixtures_dir, tmp_path):
    project = fixtures_dir / "ObjectClassification2d_wPred.ilp"  # 11 MB: read in several pieces
    copy = tmp_path / "moved.ilp"
    copy.write_bytes(project.read_bytes())
    expected = "sha256:" + hashlib.sha256(copy.read_bytes()).hexdigest()
    assert file_digest(str(project)) == file_digest(str(copy)) == expected
    with open(copy, "r+b") as f:
        f.seek(9_000_000)
        f.write(b"\x00changed")
    assert file_digest(str(copy)) != file_digest(str(project))


def test_progress_lines_are_rate_limited_with_rate_and_eta():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(10, total_voxels=1000, stream=stream, interval=2.0, label="raw", clock=lambda: now[0])
    now[0] = 1.0
    progress.update(100)
    assert stream.getvalue() == ""  # not before the interval
    now[0] = 4.0
    progress.update(100, computed=False)  # a skipped block counts as done but not into the rate
    assert stream.getvalue() == "raw: blocks 2/10 (20%; 1 already done), 25.00 voxel/s, ETA 32s\n"
    now[0] = 5.0
    progress.update(100)
    assert stream.getvalue().count("\n") == 1
    progress.close()
    assert stream.getvalue().splitlines()[-1] == "raw: blocks 3/10 (30%; 1 already done) in 5s, 40.00 voxel/s"
    quiet = io.StringIO()
    silent = Progress(1, stream=quiet, quiet=True, interval=0.0)
    silent.update()
    silent.close()
    assert quiet.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_rewritten_in_place_on_a_terminal_and_sparse_in_a_log(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert Progress(1, stream=io.StringIO()).interval == 30.0  # a SLURM log: one line every 30 s at most
    assert Progress(1, stream=_Terminal()).interval == 2.0
    monkeypatch.setenv(INTERVAL_ENV, "5")  # what --progress_interval sets
    assert Progress(1, stream=io.StringIO()).interval == Progress(1, stream=_Terminal()).interval == 5.0
    now = [0.0]
    terminal = _Terminal()
    progress = Progress(2, stream=terminal, interval=1.0, clock=lambda: now[0])
    now[0] = 2.0
    progress.update()
    progress.close()
    assert terminal.getvalue() == ("\rblocks 1/2 (50%), 0.50 blocks/s, ETA 2s\x1b[K"
                                   "\rblocks 1/2 (50%) in 2s, 0.50 blocks/s\x1b[K\n")


def test_rank_prefix(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    assert rank_prefix() == ""
    assert rank_prefix(3, 8) == "[rank 3/8] "
    assert rank_prefix(0, 1) == ""
    monkeypatch.setenv("PMI_RANK", "2")
    monkeypatch.setenv("PMI_SIZE", "4")
    assert rank_prefix() == "[rank 2/4] "


@pytest.mark.parametrize("env, threads", [
    ({"SLURM_CPUS_PER_TASK": "6", "SLURM_CPUS_ON_NODE": "48"}, "6"),
    ({"SLURM_CPUS_ON_NODE": "48", "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}, "6"),
    ({"SLURM_CPUS_ON_NODE": "8", "MPI_LOCALNRANKS": "3"}, "2"),
    ({"SLURM_CPUS_ON_NODE": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, "1"),
    ({"HPC_ILASTIK_THREADS": "5", "SLURM_CPUS_PER_TASK": "6"}, "5"),
])
def test_launcher_sets_threads_per_rank(env, threads):
    result = subprocess.run([str(REPO / "launch" / "hpc-ilastik-launch"), "--exec", "env"], capture_output=True,
                            text=True, timeout=30, env=_env(**env))
    assert result.returncode == 0, result.stderr
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LAZYFLOW_THREADS"):
        assert values[var] == threads  # LAZYFLOW_THREADS: each rank computes that many blocks at a time
    assert values["HDF5_USE_FILE_LOCKING"] == "FALSE"


def _fake_command(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    path.chmod(0o755)
    return path


def _array_task(folder: Path, task_id: int, first: int, last: int, **env: str) -> subprocess.CompletedProcess:
    """array.sbatch as SLURM runs task `task_id` of a submission whose ids run from `first` to `last`."""
    return subprocess.run(["bash", str(REPO / "slurm_templates" / "array.sbatch")], capture_output=True, text=True,
                          timeout=30, cwd=folder,
                          env=_env(SLURM_ARRAY_TASK_ID=str(task_id), SLURM_ARRAY_TASK_MIN=str(first),
                                   SLURM_ARRAY_TASK_MAX=str(last), FILE_LIST="files.txt",
                                   LAUNCH=str(folder / "launch"), **env))


def _taken(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()[1:]
    assert "--headless" in args and any(a.startswith("--project=") for a in args)
    return [a for a in args if a.startswith("/data/")]


@pytest.mark.parametrize("array, ids", [
    (None, range(10)),                           # the template's own #SBATCH --array=0-9
    ("0-18:2", range(0, 19, 2)),                 # a stepped array
    ("1,3,5-7,20%2", [1, 3, 5, 6, 7, 20]),       # a list, at most 2 at a time
])
def test_array_template_gives_every_file_to_exactly_one_task(tmp_path, array, ids):
    files = [f"/data/img{i}.tif" for i in range(23)]
    (tmp_path / "files.txt").write_text("\n".join(files[:3]) + "\n\n" + "\n".join(files[3:]) + "\n")
    _fake_command(tmp_path, "launch")
    extra = {"ARRAY": array} if array else {}
    taken = {i: _taken(_array_task(tmp_path, i, min(ids), max(ids), **extra)) for i in ids}
    assert sorted(sum(taken.values(), [])) == sorted(files)  # every file once
    assert max(map(len, taken.values())) - min(map(len, taken.values())) <= 1
    # resubmitting one failed task (sbatch --array=<id>) redoes exactly its files
    for i in list(ids)[1::3]:
        assert _taken(_array_task(tmp_path, i, i, i, **extra)) == taken[i]


def test_array_template_refuses_an_array_that_does_not_fit_its_layout(tmp_path):
    """`sbatch --array=0-49` over the template's 0-9 without ARRAY: every task stops, none splits wrongly."""
    (tmp_path / "files.txt").write_text("/data/a.tif\n")
    _fake_command(tmp_path, "launch")
    for task in (3, 42):
        result = _array_task(tmp_path, task, 0, 49)
        assert result.returncode == 2 and result.stdout == ""
        assert "is not in the array layout '0-9': pass ARRAY=" in result.stderr


def test_volume_template_runs_one_distributed_srun(tmp_path):
    _fake_command(tmp_path, "srun")
    result = subprocess.run(["bash", str(REPO / "slurm_templates" / "volume.sbatch")], capture_output=True, text=True,
                            timeout=30, env=_env(PATH=f"{tmp_path}:{os.environ['PATH']}", INPUT="big.h5/raw"))
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()
    assert args[:3] == ["--kill-on-bad-exit=1", "--cpu-bind=cores", "hpc-ilastik-launch"]
    assert {"--headless", "--distributed", "--distributed-block-roi", "big.h5/raw"} <= set(args)
    assert json.loads(args[args.index("--distributed-block-roi") + 1]) == {"x": 256, "y": 256, "z": 128}
