"""The headline benchmark: hpc-ilastik against the real ilastik, the same projects, data and thread count,
whole commands alternating in one batch; ratios of wall time and of peak memory, and our difference to
ilastik's output, per workload.

    python bench/ilastik.py                                  # every workload, 3 rounds (~10 min on 2 cores)
    python bench/ilastik.py --workloads A,2d --rounds 5 --json out.json
    python bench/ilastik.py --quick                          # small inputs, 1 round, no warm-up (CI smoke run)
    python bench/ilastik.py --readme bench/README.md         # rewrite the table between the ilastik markers

The real ilastik is the source build of `shared/oracle/ilastik` (`$ILASTIK_ORACLE_ROOT/ilastik.sh`, default
~/.cache/ilastik-oracle; `--ilastik` picks another). Without it the bench says how to build it and times
hpc-ilastik alone.

Workloads (`--workloads`, comma-separated; inputs mirrored or cropped, never resampled):
  A            shared/fixtures/bench/pixel_class.ilp (made by ilastik 1.4.3.dev) on big_256.h5 (256³ uint8).
  3d           fixtures/ilastik/PixelClassification3d.ilp on inputdata/3d.h5 (50×60×55) mirrored to 128³.
  2d           fixtures/ilastik/notebooks/pc.ilp on its own 1024×1344 image, copied out of the project.
  autocontext  fixtures/ilastik/Autocontext2d3c.ilp on inputdata/2d3c.h5 (73×187×3) mirrored to 1024², stage 2.
  oc           bench/objects.py's O1: 256³ cells and their prediction maps through
               fixtures/ilastik/ObjectClassification5t3d2c_wPred.ilp (ilastik with its vigra built from source).

Rules: one thread each (hpc-ilastik `--threads=1`; ilastik LAZYFLOW_THREADS=1; both with NUMBA, OMP, OPENBLAS
and MKL threads 1; LAZYFLOW_TOTAL_RAM_MB left unset: ilastik's default), both writing HDF5 to a temporary
folder. One untimed warm-up run of each engine first (numba's cache, ilastik's imports and .pyc files), then
`--rounds` rounds, ilastik and hpc-ilastik alternating (which goes first alternates too). Wall time is the
whole command's; peak memory is the command's maximum resident set (`/usr/bin/time -f %M`, GNU time: the
ru_maxrss of the process it waits for; without GNU time, the process's VmHWM sampled every 20 ms as
objects.py does). Each engine's fastest run and the spread of its runs are reported; the wall ratio is
ilastik's fastest over ours, the memory ratio ilastik's largest peak over ours.
"""

from __future__ import annotations

import os

SINGLE_THREAD = {var: "1" for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "MKL_NUM_THREADS", "LAZYFLOW_THREADS")}
os.environ.update(SINGLE_THREAD)  # inherited by both engines

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import objects  # noqa: E402  (O1's cells, project and arguments; the VmHWM timer)

FIXTURES = objects.SHARED / "fixtures" / "ilastik"
BENCH_FIXTURES = objects.SHARED / "fixtures" / "bench"
ORACLE_ROOT = Path(os.environ.get("ILASTIK_ORACLE_ROOT", Path.home() / ".cache" / "ilastik-oracle"))
ORACLE = ORACLE_ROOT / "ilastik.sh"
ORACLE_DOCS = "shared/oracle/ilastik/README.md"
BUILD_HINT = (f"To build it (about 5 minutes on 2 cores; see {ORACLE_DOCS}): mirror github:ilastik/ilastik, "
              "ilastik/fastfilters, ilastik/ndstructs and ilastik/ilastik-feature-selection as <dir>/<owner>+<name>/"
              "repo, run `shared/oracle/ilastik/setup.sh --mirror <dir>` (it installs into $ILASTIK_ORACLE_ROOT, "
              "default ~/.cache/ilastik-oracle), and for Object Classification also `build_vigra.sh --vigra "
              "<ukoethe+vigra mirror>` (~15 minutes)")
GNU_TIME = Path("/usr/bin/time")
WORKLOADS = ("A", "3d", "2d", "autocontext", "oc")
OFF = 0.015  # ilastik's own tests count a probability off by this much as different
README_START, README_END = "<!-- ilastik:start -->", "<!-- ilastik:end -->"


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    project: Path
    args: tuple[str, ...]  # inputs, axes and export source: the same for both engines
    labels: bool = False  # the output is a label image (compared voxel by voxel), not probabilities
    speed_target: float | None = None  # ilastik's wall time / ours, at least
    speed_goal: float | None = None
    memory_target: float | None = None  # ilastik's peak memory / ours, at least
    ilastik_env: tuple[tuple[str, str], ...] = ()


# ---- workloads ---------------------------------------------------------------------------------------------

def _write(path: Path, data: np.ndarray) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=True)
    return f"{path}/data"


def mirrored(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`data` cropped or mirrored at its far borders to `shape` on its leading axes (later axes kept)."""
    data = data[tuple(slice(0, n) for n in shape)]
    pad = [(0, n - s) for n, s in zip(shape, data.shape)] + [(0, 0)] * (data.ndim - len(shape))
    return np.pad(data, pad, mode="symmetric")


def _pixel_args(raw: str, axes: str, source: str = "Probabilities") -> tuple[str, ...]:
    return (f"--raw_data={raw}", f"--input_axes={axes}", f"--export_source={source}")


def workload_a(folder: Path, quick: bool) -> Workload:
    raw = BENCH_FIXTURES / "big_256.h5"
    with h5py.File(raw) as f:
        shape = f["data"].shape if not quick else (64, 64, 64)
        spec = _write(folder / "A.h5", f["data"][:64, :64, :64]) if quick else f"{raw}/data"
    return Workload("A", f"fixtures/bench/pixel_class.ilp on big_256.h5, {_size(shape)} uint8, "
                    "15 feature channels, 100 trees, 3 classes", BENCH_FIXTURES / "pixel_class.ilp",
                    _pixel_args(spec, "zyx"), speed_target=8.0, speed_goal=10.0, memory_target=5.0)


def workload_3d(folder: Path, quick: bool) -> Workload:
    with h5py.File(FIXTURES / "inputdata" / "3d.h5") as f:
        data = f["data"][()]
    shape = (64,) * 3 if quick else (128,) * 3
    return Workload("3d", f"PixelClassification3d.ilp on 3d.h5 ({_size(data.shape)}) mirrored to {_size(shape)}, "
                    "27 feature channels σ 0.3-5 in 3-D, 2 classes", FIXTURES / "PixelClassification3d.ilp",
                    _pixel_args(_write(folder / "3d.h5", mirrored(data, shape)), "zyx"), speed_target=5.0)


def workload_2d(folder: Path, quick: bool) -> Workload:
    project = FIXTURES / "notebooks" / "pc.ilp"
    with h5py.File(project) as f:
        (data,) = [d[()] for d in f["Input Data/local_data"].values()]
    data = data[:256, :256] if quick else data
    return Workload("2d", f"notebooks/pc.ilp on its own image, {_size(data.shape[:2])} uint8, 49 feature channels "
                    "σ 0.3-10, 2 classes", project, _pixel_args(_write(folder / "2d.h5", data), "yxc"),
                    speed_target=5.0)


def workload_autocontext(folder: Path, quick: bool) -> Workload:
    with h5py.File(FIXTURES / "inputdata" / "2d3c.h5") as f:
        data = f["data"][()]
    shape = (256, 256) if quick else (1024, 1024)
    return Workload("autocontext", f"Autocontext2d3c.ilp on 2d3c.h5 ({_size(data.shape[:2])}×3) mirrored to "
                    f"{_size(shape)}×3, two stages, Probabilities Stage 2", FIXTURES / "Autocontext2d3c.ilp",
                    _pixel_args(_write(folder / "autocontext.h5", mirrored(data, shape)), "yxc",
                                "Probabilities Stage 2"), speed_target=5.0)


def workload_oc(folder: Path, quick: bool) -> Workload:
    edge = 64 if quick else 256
    (folder / "oc").mkdir()
    raw, maps, cells = objects.write_inputs(folder / "oc", (edge,) * 3)
    args = tuple(a for a in objects.ARGS if a not in ("--headless", "--output_format=hdf5"))
    return Workload("oc", f"Object Classification: bench/objects.py's O1, {edge}³ uint8 × 2 channels, {cells} cells, "
                    "ObjectClassification5t3d2c_wPred.ilp", objects.PROJECT,
                    (*args, f"--raw_data={raw}", f"--prediction_maps={maps}"), labels=True,
                    ilastik_env=(("ILASTIK_ORACLE_VIGRA", "source"),))


BUILDERS = {"A": workload_a, "3d": workload_3d, "2d": workload_2d, "autocontext": workload_autocontext,
            "oc": workload_oc}


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}³" if len(shape) == 3 and len(set(shape)) == 1 else "×".join(map(str, shape))


# ---- running ------------------------------------------------------------------------------------------------

def commands(work: Workload, oracle: Path, folder: Path) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """Each engine's command, environment and HDF5 output file."""
    common = [f"--project={work.project}", "--output_format=hdf5", *work.args]
    env = objects.as_installed()  # the warm-up runs write both engines' .pyc files
    ours_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    theirs_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # ilastik.sh sets its own
    theirs_env.update(work.ilastik_env)
    outputs = {name: folder / f"{work.key}-{name}.h5" for name in ("ilastik", "ours")}
    return {
        "ilastik": ([str(oracle), "--headless", *common, f"--output_filename_format={outputs['ilastik']}"],
                    theirs_env, outputs["ilastik"]),
        "ours": ([sys.executable, "-m", "hpc_ilastik", "--headless", "--threads=1", "--quiet", *common,
                  f"--output_filename_format={outputs['ours']}"], ours_env, outputs["ours"]),
    }


def timed(command: list[str], env: dict[str, str], output: Path) -> dict:
    """Wall seconds, peak resident MiB and (with GNU time) CPU seconds of a command run to success, its
    output file removed first."""
    output.unlink(missing_ok=True)
    if not GNU_TIME.is_file():
        wall, peak = objects.timed(command, env)
        return {"wall_s": wall, "peak_mib": peak, "cpu_s": None}
    with tempfile.NamedTemporaryFile("w+") as stats, tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        done = subprocess.run([str(GNU_TIME), "-f", "%M %U %S", "-o", stats.name, *command], env=env,
                              stdout=subprocess.DEVNULL, stderr=errors)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"exit status {done.returncode}: {errors.read()[-3000:]}")
        peak_kib, user, system = Path(stats.name).read_text().split("\n")[-2].split()
    return {"wall_s": wall, "peak_mib": int(peak_kib) / 1024, "cpu_s": float(user) + float(system)}


def difference(work: Workload, ours: Path, theirs: Path) -> dict:
    """Our output against ilastik's: shapes, and max |diff|, values off by >= OFF and argmax agreement
    (probabilities) or the voxels that differ (labels)."""
    with h5py.File(ours) as a, h5py.File(theirs) as b:
        x, y = a["exported_data"][()], b["exported_data"][()]
    if x.shape != y.shape:
        return {"same_shape": False, "shapes": {"ours": list(x.shape), "ilastik": list(y.shape)}}
    if work.labels:
        return {"same_shape": True, "identical": bool(np.array_equal(x, y)), "voxels_differing": int(np.sum(x != y))}
    diff = np.abs(x.astype(np.float64) - y)
    argmax_differs = int(np.sum(x.argmax(axis=-1) != y.argmax(axis=-1)))
    return {"same_shape": True, "max_diff": float(diff.max()), "values": int(diff.size),
            "values_off": int(np.sum(diff >= OFF)), "pixels": int(diff.size // diff.shape[-1]),
            "argmax_differs": argmax_differs, "argmax_agreement": 1 - argmax_differs / (diff.size // diff.shape[-1])}


def measure(work: Workload, folder: Path, oracle: Path | None, rounds: int, warm_up: bool) -> dict:
    """Warm-up, then `rounds` alternating runs of both engines (ours alone without an oracle)."""
    engines = commands(work, oracle or Path("ilastik.sh"), folder)
    names = ["ilastik", "ours"] if oracle else ["ours"]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    for r in range(-1 if warm_up else 0, rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if name in errors:
                continue
            try:
                run = timed(*engines[name])
            except RuntimeError as error:
                errors[name] = f"{shlex.join(engines[name][0])}: {error}"
                print(f"{work.key}: {name} FAILED ({error})", file=sys.stderr)
                continue
            print(f"{work.key}: {name} {'warm-up' if r < 0 else f'round {r + 1}'}: {run['wall_s']:.2f} s, "
                  f"{run['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
            if r >= 0:
                runs[name].append(run)
    result: dict = {"workload": work.key, "title": work.title, "rounds": rounds,
                    "command": {name: shlex.join(engines[name][0]) for name in names}, "errors": errors}
    for name in names:
        if runs[name]:
            result[name] = summary(runs[name])
    if "ilastik" in result and "ours" in result:
        result["ratios"] = ratios(result["ilastik"], result["ours"])
        result["difference"] = difference(work, engines["ours"][2], engines["ilastik"][2])
    result["targets"] = targets(work, result.get("ratios"))
    return result


def summary(runs: list[dict]) -> dict:
    walls, peaks = [r["wall_s"] for r in runs], [r["peak_mib"] for r in runs]
    cpus = [r["cpu_s"] for r in runs if r["cpu_s"] is not None]
    return {"wall_s": min(walls), "wall_spread": max(walls) / min(walls) - 1, "walls_s": walls,
            "peak_mib": max(peaks), "peaks_mib": peaks, "cpu_s": min(cpus) if cpus else None}


def ratios(theirs: dict, ours: dict) -> dict:
    per_round = [t / o for t, o in zip(theirs["walls_s"], ours["walls_s"])]
    cpu = theirs["cpu_s"] / ours["cpu_s"] if theirs["cpu_s"] and ours["cpu_s"] else None
    return {"wall": theirs["wall_s"] / ours["wall_s"], "wall_per_round": [min(per_round), max(per_round)],
            "cpu": cpu, "memory": theirs["peak_mib"] / ours["peak_mib"]}


def targets(work: Workload, measured: dict | None) -> dict:
    """The issue's targets for this workload and whether the measured ratios meet them (None: not measured)."""
    found: dict = {}
    for key, target in (("wall", work.speed_target), ("memory", work.memory_target)):
        if target is not None:
            found[key] = {"at_least": target, "met": None if measured is None else measured[key] >= target}
    if work.speed_goal is not None:
        found["wall_goal"] = {"at_least": work.speed_goal,
                              "met": None if measured is None else measured["wall"] >= work.speed_goal}
    return found


# ---- report -------------------------------------------------------------------------------------------------

def oracle_version(oracle: Path) -> str:
    """ilastik's version as its source build recorded it."""
    version_file = oracle.parent / "src" / "ilastik" / "ilastik" / "_version.py"
    found = re.search(r"version = '([^']+)'", version_file.read_text()) if version_file.is_file() else None
    return found.group(1) if found else "unknown version"


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "load_before": round(os.getloadavg()[0], 2), "date": datetime.date.today().isoformat(),
            "memory_measure": "GNU time %M (ru_maxrss)" if GNU_TIME.is_file() else "VmHWM sampled every 20 ms"}


def _wall(s: dict) -> str:
    return f"{s['wall_s']:.1f} s (+{100 * s['wall_spread']:.0f} %)"


def _peaks(s: dict) -> str:
    low, high = min(s["peaks_mib"]), max(s["peaks_mib"])
    return f"{high:.0f} MiB" if high - low < 1 else f"{high:.0f} MiB ({low:.0f}-{high:.0f})"


def _difference(r: dict) -> str:
    d = r.get("difference")
    if d is None:
        return "not compared"
    if not d["same_shape"]:
        return f"**shapes differ**: ours {d['shapes']['ours']}, ilastik {d['shapes']['ilastik']}"
    if "identical" in d:
        return "identical" if d["identical"] else f"**{d['voxels_differing']} voxels differ**"
    return (f"max |diff| {d['max_diff']:.2g}; {d['values_off']:,} of {d['values']:,} values off by ≥ {OFF}; "
            f"argmax differs at {d['argmax_differs']:,} of {d['pixels']:,} pixels")


def _targets(r: dict) -> str:
    parts = []
    for key, label in (("wall", "wall"), ("wall_goal", "goal"), ("memory", "memory")):
        if key in r["targets"]:
            t = r["targets"][key]
            verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
            parts.append(f"{label} ≥ {t['at_least']:g}×: {verdict}")
    return "; ".join(parts) or "none set"


def markdown(results: list[dict], info: dict) -> str:
    """The README's table: machine, command, then one row per workload."""
    lines = [f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores (load average {info['load_before']} "
             f"before, {info['load_after']} after); ilastik {info['ilastik']}; hpc-ilastik under Python "
             f"{info['python']}, numpy {info['numpy']}. Command: `{info['command']}`. Wall: fastest of "
             f"{info['rounds']} alternating round(s){'' if info['quick'] else ' after a warm-up'} (+spread: slowest "
             "over fastest); peak memory: "
             f"{info['memory_measure']}, largest of the rounds.", "",
             "| workload | ilastik wall | ours wall | wall ratio (per round; CPU) | ilastik peak | ours peak | memory ratio "
             "| our difference to ilastik | targets |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cells = [f"**{r['workload']}**: {r['title']}"]
        for name in ("ilastik", "ours"):
            cells.append(_wall(r[name]) if name in r else f"failed: {r['errors'][name][-200:]}"
                         if name in r["errors"] else "not run")
        ratio = r.get("ratios")
        cells.append(f"**{ratio['wall']:.2f}×** ({ratio['wall_per_round'][0]:.2f}-{ratio['wall_per_round'][1]:.2f}"
                     + (f"; CPU time {ratio['cpu']:.2f}×)" if ratio["cpu"] else ")") if ratio else "")
        cells += [_peaks(r[name]) if name in r else "" for name in ("ilastik", "ours")]
        cells += [f"**{ratio['memory']:.1f}×**" if ratio else "", _difference(r), _targets(r)]
        lines.append("| " + " | ".join(c.replace("\n", " ").replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def update_readme(path: Path, table: str) -> None:
    """Replace the text between the ilastik markers of the README."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{path} has no {README_START} ... {README_END} markers")
    path.write_text(text[:text.index(README_START)] + f"{README_START}\n{table}\n"
                    + text[text.index(README_END):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed runs per engine (default 3)")
    parser.add_argument("--quick", action="store_true", help="small inputs, one round, no warm-up")
    parser.add_argument("--ilastik", type=Path, default=ORACLE, help=f"the oracle's ilastik.sh (default {ORACLE})")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--readme", type=Path, help="rewrite the table between the ilastik markers of this file")
    args = parser.parse_args(argv)
    chosen = args.workloads.split(",")
    if unknown := sorted(set(chosen) - set(WORKLOADS)):
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    rounds = 1 if args.quick else args.rounds
    info = machine()
    oracle = args.ilastik if args.ilastik.is_file() else None
    info["ilastik"] = f"{oracle_version(oracle)} ({oracle})" if oracle else \
        f"not run (no ilastik at {args.ilastik}; build it with shared/oracle/ilastik/setup.sh, see {ORACLE_DOCS})"
    if not oracle:
        print(f"No ilastik at {args.ilastik}: timing hpc-ilastik alone. {BUILD_HINT}.", file=sys.stderr)
    info.update(rounds=rounds, quick=args.quick, command=shlex.join(["python", "bench/ilastik.py", *sys.argv[1:]]))
    results = []
    with tempfile.TemporaryDirectory(prefix="hpc-ilastik-vs-ilastik-") as tmp:
        for key in chosen:
            work = BUILDERS[key](Path(tmp), args.quick)
            results.append(measure(work, Path(tmp), oracle, rounds, warm_up=not args.quick))
    info["load_after"] = round(os.getloadavg()[0], 2)
    table = markdown(results, info)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    if args.readme:
        update_readme(args.readme, table)
    failed = [r["workload"] for r in results if r["errors"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
