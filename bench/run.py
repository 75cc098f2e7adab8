"""hpc-ilastik's benchmark: the pixel-classification path against scipy.ndimage + scikit-learn, one thread each.

    python bench/run.py                    # W1, W2, W3 at full size (a few minutes on 2 cores)
    python bench/run.py --quick            # tiny sizes: the CI smoke run
    python bench/run.py --readme bench/README.md --json results.json

Every workload trains a 100-tree forest on synthetic data (`hpc_ilastik.synthetic`) with scikit-learn,
converts it (`forest.from_sklearn`) and writes an ilastik project; the same forest then runs in both
engines. Baselines run in the same process and run, one thread each: the features with
scipy.ndimage/numpy (`baseline.py`), the forest with the sklearn model's `predict_proba`. The engines are
compared on a centred part of the image (128³ of W1, 2048² of W2; the whole image with --quick), and
each run checks that our outputs agree with the baseline's (features within 1e-3·max|feature| + 1e-6·input
range, probabilities with argmax agreement >= 99.9 % and max |diff| <= 1e-4) and prints the ratios of CPU
times measured in that run. The whole path is `hpc-ilastik --headless` on the whole image (blocks, halos,
reading and writing included) against the baseline's time per pixel times the image's pixels.

W1: 3-D uint8 volume, one channel, all six features at scales 0.7 to 10 (60 channels).
W2: 2-D image, three channels, `hpc-ilastik train`'s default feature subset (48 channels).
W3: W1 through `mpiexec -n 2 ... --distributed` against `-n 1` (parallel efficiency), `--threads=2` against
    `--threads=1` in one process (no MPI), and the peak memory per rank for W1 and for half its volume
    (same blocks: the peak must not grow with the volume).
"""

from __future__ import annotations

import os

SINGLE_THREAD = {var: "1" for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "MKL_NUM_THREADS")}
os.environ.update(SINGLE_THREAD)  # before numpy, scipy, numba load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import scipy_feature_groups  # noqa: E402

from hpc_ilastik.forest.ensemble import ForestEnsemble  # noqa: E402
from hpc_ilastik.forest.vigra import from_sklearn  # noqa: E402
from hpc_ilastik.io.inputs import open_input  # noqa: E402
from hpc_ilastik.io.n5 import open_n5_dataset  # noqa: E402
from hpc_ilastik.pixel.features import DEFAULT_FEATURE_IDS, FeatureSelection, compute_features, plan_features  # noqa: E402
from hpc_ilastik.pixel.training import training_set  # noqa: E402
from hpc_ilastik.project.writer import write_pixel_classification_project  # noqa: E402
from hpc_ilastik.run.process import keep_freed_memory  # noqa: E402
from hpc_ilastik.synthetic import make_blobs_volume, sparse_labels  # noqa: E402
from hpc_ilastik.train import label_blocks_from_image, parse_feature_spec  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RANK_SCRIPT = BENCH_DIR / "rank.py"
TREES = 100
ARGMAX_AGREEMENT = 0.999
MAX_PROBABILITY_DIFF = 1e-4
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
TARGETS = {"W1": 10.0, "W2": 10.0, "efficiency": 0.90}
# the line `hpc-ilastik` logs when an image's blocks are done (distributed.RunStats.summary)
BLOCK_SUMMARY = re.compile(r"blocks computed, \d+ already done, on \d+ rank\(s\) in (?P<seconds>[\d.]+) s")


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    shape_zyx: tuple[int, int, int]
    channels: int
    selection: FeatureSelection
    strokes_per_class: int
    compare_edge: int  # the engines are compared on a centred part of at most this edge
    distributed_block: int | None = None  # W3: block edge for --distributed_block_roi
    w3_repeats: int = 1  # W3: -n 1, -n 2, 1 and 2 threads alternate this often; each keeps its fastest run (load only slows runs)


def workloads(quick: bool) -> dict[str, Workload]:
    """W1 and W2 at full or --quick size (W3 reuses W1's data)."""
    scales_3d = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
    every_feature = FeatureSelection(DEFAULT_FEATURE_IDS, scales_3d, tuple((True,) * 6 for _ in DEFAULT_FEATURE_IDS),
                                     (False,) * 6)
    typical_2d = replace(parse_feature_spec(None), compute_in_2d=(True,) * 7)
    side3, side2 = (72, 512) if quick else (256, 4096)  # the half volume (W3) keeps z >= 36 for σ=10
    return {
        "W1": Workload("W1", f"3D uint8 {side3}³, 1 channel, all features σ 0.7-10", (side3,) * 3, 1, every_feature,
                       30, compare_edge=128, distributed_block=side3 // 3 if quick else 96,
                       w3_repeats=1 if quick else 5),
        "W2": Workload("W2", f"2D uint8 {side2}², 3 channels, typical subset", (1, side2, side2), 3, typical_2d, 30,
                       compare_edge=2048),
    }


# ---- data, training, project --------------------------------------------------------------------------------

def synthetic_image(work: Workload) -> tuple[np.ndarray, np.ndarray]:
    """(raw zyxc uint8, truth zyx): blob volumes; 2-D images are 512² tiles so cells keep their size."""
    if work.shape_zyx[0] > 1:
        raw, truth = make_blobs_volume(work.shape_zyx, seed=0)
        return raw[..., None], truth
    side = work.shape_zyx[1]
    tile = min(side, 512)
    tiles = [[make_blobs_volume((tile, tile), seed=i * 64 + j) for j in range(side // tile)] for i in range(side // tile)]
    raw = np.block([[t[0] for t in row] for row in tiles])
    truth = np.block([[t[1] for t in row] for row in tiles])
    other = np.block([[make_blobs_volume((tile, tile), seed=10_000 + i * 64 + j)[0] for j in range(side // tile)]
                      for i in range(side // tile)])
    channels = [raw, 255 - raw, other][:work.channels]
    return np.stack(channels, axis=-1)[None], truth[None]


def write_inputs(work: Workload, raw_zyxc: np.ndarray, labels_zyx: np.ndarray, folder: Path) -> tuple[str, str, str]:
    """The raw image and labels as HDF5 (zyx for one 3-D channel, yxc for 2-D); returns (raw, labels, axes)."""
    path = folder / f"{work.name}.h5"
    three_d = work.shape_zyx[0] > 1
    axes = "zyx" if three_d else "yxc"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=raw_zyxc[..., 0] if three_d else raw_zyxc[0], chunks=True)
        f.create_dataset("labels", data=labels_zyx if three_d else labels_zyx[0], chunks=True)
    return f"{path}/raw", f"{path}/labels", axes


def train(features_zyxf: np.ndarray, labels_zyx: np.ndarray) -> tuple[RandomForestClassifier, ForestEnsemble]:
    """A 100-tree forest with vigra's settings as `hpc_ilastik.forest.training` uses them, and its vigra conversion."""
    X, y = training_set(features_zyxf, labels_zyx)
    mtry = max(1, int(math.floor(math.sqrt(X.shape[1]) + 0.5)))
    model = RandomForestClassifier(n_estimators=TREES, criterion="gini", max_features=mtry, bootstrap=True,
                                   min_samples_split=2, min_samples_leaf=1, n_jobs=os.cpu_count(), random_state=0)
    model.fit(X, y)
    model.n_jobs = 1  # prediction is timed on one thread
    return model, ForestEnsemble(forests=[from_sklearn(model)], known_labels=np.unique(y).astype(np.uint32))


def write_project(work: Workload, folder: Path, raw_spec: str, labels_spec: str, axes: str,
                  ensemble: ForestEnsemble, names: list[str]) -> str:
    path = folder / f"{work.name}.ilp"
    label_axes = axes.replace("c", "")
    write_pixel_classification_project(
        str(path), raw=open_input(raw_spec, axes=axes), store_data_inside=False, raw_file_path=raw_spec,
        labels_tzyxc=label_blocks_from_image(open_input(labels_spec, axes=label_axes)),
        selection=work.selection, ensemble=ensemble,
        label_names=[f"Label {k}" for k in range(1, int(ensemble.known_labels.max()) + 1)], feature_names=names)
    return str(path)


# ---- measurements ---------------------------------------------------------------------------------------

def timed(fn, *args):
    """(fn(*args), CPU seconds it took): CPU time, so that other load on the machine does not count."""
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def baseline_features(volume_zyxc: np.ndarray, plan, ours_zyxf: np.ndarray) -> tuple[float, float]:
    """(seconds of the scipy baseline, worst |diff| / tolerance over all channels), one group at a time."""
    input_range = float(volume_zyxc.max()) - float(volume_zyxc.min())
    groups = scipy_feature_groups(volume_zyxc, plan)
    seconds, worst = 0.0, 0.0
    while True:
        group, spent = timed(next, groups, None)
        seconds += spent
        if group is None:
            return seconds, worst
        first, values = group
        # an eigenvalue feature's scale is its matrices' (the largest |eigenvalue|): float32 solvers, fastfilters'
        # and ours, err by ~sqrt(eps) of it on near-degenerate eigenvalues, whatever a channel's own range
        tol = 1e-3 * float(np.abs(values).max()) + 1e-6 * input_range
        for k, ref in enumerate(values):
            worst = max(worst, float(np.abs(ours_zyxf[..., first + k] - ref).max()) / tol)


def probability_agreement(ours: np.ndarray, ref: np.ndarray) -> dict:
    agreement = float(np.mean(ours.argmax(axis=1) == ref.argmax(axis=1)))
    max_diff = float(np.abs(ours - ref).max())
    return {"argmax_agreement": agreement, "max_diff": max_diff,
            "ok": agreement >= ARGMAX_AGREEMENT and max_diff <= MAX_PROBABILITY_DIFF}


def headless(project: str, raw_spec: str, axes: str, output: Path, ranks: int | None,
             block: int | None = None, threads: int = 1) -> dict:
    """Run `hpc-ilastik --headless` (under `mpiexec -n ranks --distributed` if ranks, else in one process with
    `threads` block threads; under MPI, `threads` per rank): wall time, CPU time of all its processes, per-rank reports (peak memory)."""
    shutil.rmtree(output, ignore_errors=True)
    report = output.with_suffix(".report")
    args = ["--headless", f"--project={project}", "--export_source=Probabilities", "--output_format=n5",
            f"--output_filename_format={output}", f"--input_axes={axes}"]
    if block:
        args.append(f"--distributed_block_roi={block}")
    args.append(f"--threads={threads}")
    command = [sys.executable, str(RANK_SCRIPT), str(report), *args]
    if ranks:
        command = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), *command, "--distributed"]
    command.append(raw_spec)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=dict(os.environ, **SINGLE_THREAD), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    per_rank = [json.loads(Path(f"{report}.{r}").read_text()) for r in range(ranks or 1)]
    summary = BLOCK_SUMMARY.search(done.stderr)
    if summary is None:
        raise RuntimeError(f"no block summary in the output of {' '.join(command)}:\n{done.stderr}")
    return {"wall_s": wall, "cpu_s": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
            "blocks_wall_s": float(summary["seconds"]), "ranks": per_rank,
            "peak_mib": max(r["peak_kib"] for r in per_rank) / 1024}


def read_probabilities(output: Path, n_classes: int) -> np.ndarray:
    """The exported probabilities as (pixels, classes) in z, y, x order."""
    data = open_n5_dataset(str(output), "exported_data")
    return data.read().reshape(-1, n_classes)


def forest_stats(model: RandomForestClassifier) -> dict:
    return {"trees": len(model.estimators_),
            "mean_leaves": float(np.mean([t.tree_.n_leaves for t in model.estimators_])),
            "mean_depth": float(np.mean([t.tree_.max_depth for t in model.estimators_]))}


def centre_box(shape_zyx: tuple[int, int, int], edge: int) -> tuple[slice, slice, slice]:
    """The centred box of at most `edge` pixels along each non-singleton axis."""
    return tuple(slice((n - min(n, edge)) // 2, (n - min(n, edge)) // 2 + min(n, edge)) for n in shape_zyx)


def run_workload(work: Workload, folder: Path, with_w3: bool, vigra_python: str | None) -> dict:
    """Everything for W1/W2 (and W3 on W1's data): timings, ratios, agreement checks.

    The engines are compared on a centred part of the image (at most `work.compare_edge` per axis,
    treated as an image of its own): features, then the forest on every pixel of it. The whole path
    is `hpc-ilastik --headless` on the whole image against the baseline's time per pixel.
    """
    raw, truth = synthetic_image(work)
    box = centre_box(work.shape_zyx, work.compare_edge)
    labels = np.zeros_like(truth)
    labels[box] = sparse_labels(truth[box], strokes_per_class=work.strokes_per_class, seed=1)
    part = np.ascontiguousarray(raw[box])
    plan = plan_features(work.selection, part.shape[:3], work.channels)
    # an untimed run first: numba's cached kernels load, and the process's memory is paged in, before either
    # engine is timed (the first touch of fresh memory costs a virtual machine more than the filters)
    compute_features(part, plan)
    ours, t_features = timed(compute_features, part, plan)
    t_scipy, worst = baseline_features(part, plan, ours)

    model, ensemble = train(ours, labels[box])
    raw_spec, labels_spec, axes = write_inputs(work, raw, labels, folder)
    full_plan = plan_features(work.selection, work.shape_zyx, work.channels)
    project = write_project(work, folder, raw_spec, labels_spec, axes, ensemble, full_plan.names)

    n_part = math.prod(part.shape[:3])
    features = ours.reshape(n_part, -1)  # our engine reads the channels-first stack as the pipeline gives it
    X = np.ascontiguousarray(features)  # scikit-learn and vigra get the row-major matrix they work on
    n_classes = len(ensemble.known_labels)
    ensemble.predict_proba(features[:100], n_classes)
    ours_probs, t_forest = timed(ensemble.predict_proba, features, n_classes)
    del ours, features
    sk_probs, t_sklearn = timed(model.predict_proba, X)
    forest_check = probability_agreement(ours_probs, sk_probs)
    vigra = run_vigra(vigra_python, project, len(ensemble.forests), X, ours_probs, folder) if vigra_python else None
    del X

    single = headless(project, raw_spec, axes, folder / f"{work.name}-probabilities.n5", None)
    exported = read_probabilities(folder / f"{work.name}-probabilities.n5", n_classes)
    in_context = compute_features(raw, full_plan, box)  # the whole image's features on the box
    expected = model.predict_proba(np.ascontiguousarray(in_context.reshape(n_part, -1)))
    headless_check = probability_agreement(exported.reshape(raw.shape[:3] + (n_classes,))[box].reshape(n_part, -1),
                                           expected)
    n = math.prod(work.shape_zyx)
    t_baseline_path = (t_scipy + t_sklearn) * n / n_part
    result = {
        "workload": work.name, "title": work.title, "shape_zyx": list(work.shape_zyx), "channels": work.channels,
        "compared_on": [s.stop - s.start for s in box], "feature_channels": plan.n_channels_out, "pixels": n,
        "forest": forest_stats(model), "labelled_pixels": int((labels > 0).sum()),
        "seconds": {"ours_features": t_features, "scipy_features": t_scipy, "ours_forest": t_forest,
                    "sklearn_forest": t_sklearn, "ours_headless": single["cpu_s"],
                    "baseline_path_scaled": t_baseline_path},
        "ratios": {"features": t_scipy / t_features, "forest": t_sklearn / t_forest,
                   "whole_path": t_baseline_path / single["cpu_s"]},
        "checks": {"features_worst_diff_over_tol": worst, "features_ok": worst <= 1.0,
                   "forest": forest_check, "headless": headless_check},
        "headless_peak_mib": single["peak_mib"],
    }
    if vigra:
        result["vigra_forest"] = vigra
        result["ratios"]["forest_vs_vigra"] = vigra["cpu_s"] / t_forest
    if with_w3:
        result["W3"] = run_w3(work, folder, raw, project, raw_spec, axes, exported)
    return result


def run_vigra(python: str, project: str, n_forests: int, X: np.ndarray, ours: np.ndarray, folder: Path) -> dict:
    """vigra's own forest (ilastik's engine) on the same rows, under `python`: CPU seconds, and whether
    its probabilities equal ours bit for bit."""
    features, output = folder / "vigra-features.npy", folder / "vigra-probabilities.npy"
    np.save(features, X)
    groups = [f"PixelClassification/ClassifierForests/Forest{k:04d}" for k in range(n_forests)]
    done = subprocess.run([python, str(BENCH_DIR / "vigra_forest.py"), project, str(features), str(output), *groups],
                          env=dict(os.environ, **SINGLE_THREAD), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vigra_forest.py under {python} failed:\n{done.stdout}{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    theirs = np.load(output)
    features.unlink()
    return {"python": python, "vigra": report["vigra"], "cpu_s": report["cpu_s"],
            "bit_identical": bool(np.array_equal(theirs, ours)), **probability_agreement(ours, theirs)}


def vigra_interpreter(choice: str | None) -> str | None:
    """The Python that runs vigra_forest.py: --vigra-python, else this one if it can import vigra."""
    if choice:
        return choice
    try:
        import vigra  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def run_w3(work: Workload, folder: Path, raw: np.ndarray, project: str, raw_spec: str, axes: str,
           exported: np.ndarray) -> dict:
    """W1 under mpiexec -n 1 and -n 2 (same blocks), -n 1 with 2 threads (hybrid), in one process with 1 and 2
    block threads, and -n 1 on half the volume for the memory bound."""
    n_classes = exported.shape[1]
    # name: (ranks, threads per rank); "h" is the hybrid layout: one rank computing in 2 threads
    kinds = {"n1": (1, 1), "n2": (2, 1), "t1": (None, 1), "t2": (None, 2), "h": (1, 2)}
    runs = [{name: headless(project, raw_spec, axes, folder / f"W3-{name}.n5", ranks, work.distributed_block, threads)
             for name, (ranks, threads) in kinds.items()}
            for _ in range(work.w3_repeats)]
    best = {name: min((run[name] for run in runs), key=lambda one: one["wall_s"]) for name in kinds}
    same = [np.array_equal(read_probabilities(folder / f"W3-{name}.n5", n_classes), exported) for name in kinds]
    half_path = folder / "W3-half.h5"
    with h5py.File(half_path, "w") as f:
        f.create_dataset("raw", data=raw[: work.shape_zyx[0] // 2, ..., 0], chunks=True)
    half = headless(project, f"{half_path}/raw", axes, folder / "W3-half.n5", 1, work.distributed_block)
    one, two = best["n1"], best["n2"]
    return {
        "seconds": {"n1": one["wall_s"], "n2": two["wall_s"], "half_volume_n1": half["wall_s"],
                    "n1_blocks": one["blocks_wall_s"], "n2_blocks": two["blocks_wall_s"],
                    "threads1": best["t1"]["wall_s"], "threads2": best["t2"]["wall_s"], "hybrid": best["h"]["wall_s"],
                    "hybrid_blocks": best["h"]["blocks_wall_s"]},
        "repeats": work.w3_repeats,
        "all_wall_s": {name: [run[name]["wall_s"] for run in runs] for name in kinds},
        "outside_blocks_s": {"n1": one["wall_s"] - one["blocks_wall_s"], "n2": two["wall_s"] - two["blocks_wall_s"]},
        "efficiency": one["wall_s"] / (2 * two["wall_s"]),
        "blocks_efficiency": one["blocks_wall_s"] / (2 * two["blocks_wall_s"]),
        # what the whole command would reach if the block phase scaled perfectly: the start-up's share alone
        "efficiency_ceiling": one["wall_s"] / (2 * (two["wall_s"] - two["blocks_wall_s"] + one["blocks_wall_s"] / 2)),
        "threads_efficiency": best["t1"]["wall_s"] / (2 * best["t2"]["wall_s"]),
        "hybrid_blocks_efficiency": one["blocks_wall_s"] / (2 * best["h"]["blocks_wall_s"]),
        "block": work.distributed_block,
        "peak_mib": {"n1": one["peak_mib"], "n2_per_rank": [r["peak_kib"] / 1024 for r in two["ranks"]],
                     "half_volume_n1": half["peak_mib"], "threads2": best["t2"]["peak_mib"], "hybrid": best["h"]["peak_mib"]},
        "memory_growth_for_double_volume": one["peak_mib"] / half["peak_mib"],
        "checks": {"same_output_as_single_process": all(same)},
    }


# ---- report ------------------------------------------------------------------------------------------------

def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_before": _load(), "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def all_checks_pass(results: list[dict]) -> bool:
    ok = True
    for r in results:
        ok &= r["checks"]["features_ok"] and r["checks"]["forest"]["ok"] and r["checks"]["headless"]["ok"]
        if "vigra_forest" in r:
            ok &= r["vigra_forest"]["ok"]
        if "W3" in r:
            ok &= r["W3"]["checks"]["same_output_as_single_process"]
    return bool(ok)


def _size(r: dict) -> str:
    return "×".join(str(n) for n in r["compared_on"] if n > 1)


def markdown(results: list[dict], info: dict, command: str) -> str:
    """The results table for the README."""
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, numpy {info['numpy']}, "
        f"numba {info['numba']}, scipy {info['scipy']}, scikit-learn {info['sklearn']}; load average "
        f"{info['load_before']} before, {info['load_after']} after the run. Command: `{command}`.",
        "",
        "Ratios are baseline CPU time / hpc-ilastik CPU time, measured in the same run, one thread each.",
        "",
        "| workload | features vs scipy | forest vs sklearn | whole path: `hpc-ilastik --headless` vs scipy + sklearn "
        "| target (whole path) | agreement with the baseline |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ratios, checks, forest = r["ratios"], r["checks"], r["forest"]
        target = TARGETS[r["workload"]]
        lines.append(
            f"| {r['workload']}: {r['title']} ({r['feature_channels']} feature channels; {forest['trees']} trees with "
            f"{forest['mean_leaves']:.0f} leaves, depth {forest['mean_depth']:.1f} on average) "
            f"| {ratios['features']:.1f}× | {ratios['forest']:.1f}× | {ratios['whole_path']:.1f}× "
            f"| ≥ {target:.0f}×: {'met' if ratios['whole_path'] >= target else 'missed'} "
            f"| features: worst \\|diff\\| = {checks['features_worst_diff_over_tol']:.2f}·tolerance; probabilities: "
            f"argmax {100 * checks['forest']['argmax_agreement']:.3f} % (headless {100 * checks['headless']['argmax_agreement']:.3f} %), "
            f"max \\|diff\\| {max(checks['forest']['max_diff'], checks['headless']['max_diff']):.1e} |")
    vigra_rows = [r for r in results if "vigra_forest" in r]
    if vigra_rows:
        lines += ["", "Forest against vigra's own `RandomForest.predictProbabilities` (ilastik's forest engine, "
                  f"vigra {vigra_rows[0]['vigra_forest']['vigra']} under {vigra_rows[0]['vigra_forest']['python']}), "
                  "same rows, one thread: " + "; ".join(
                      f"{r['workload']} {r['ratios']['forest_vs_vigra']:.1f}× (probabilities "
                      f"{'bit-identical' if r['vigra_forest']['bit_identical'] else 'max diff %.1e' % r['vigra_forest']['max_diff']})"
                      for r in vigra_rows) + "."]
    for r in results:
        if "W3" not in r:
            continue
        w3 = r["W3"]
        lines += [
            "",
            f"| W3: W1 under MPI (wall time, fastest of {w3['repeats']} alternating runs each) | value | target |",
            "|---|---|---|",
            f"| parallel efficiency, `mpiexec -n 2` vs `-n 1` ({w3['block']}³ blocks), whole command "
            f"({w3['seconds']['n1']:.1f} s vs {w3['seconds']['n2']:.1f} s) | {100 * w3['efficiency']:.1f} % "
            f"| ≥ {100 * TARGETS['efficiency']:.0f} %: {'met' if w3['efficiency'] >= TARGETS['efficiency'] else 'missed'} |",
            f"| parallel efficiency of the block phase (start-up excluded: {w3['seconds']['n1_blocks']:.1f} s vs "
            f"{w3['seconds']['n2_blocks']:.1f} s) | {100 * w3['blocks_efficiency']:.1f} % "
            f"| ≥ {100 * TARGETS['efficiency']:.0f} %: "
            f"{'met' if w3['blocks_efficiency'] >= TARGETS['efficiency'] else 'missed'} |",
            f"| ceiling of the whole command's efficiency had the block phase scaled perfectly (outside the block "
            f"phase: start-up and finish, {w3['outside_blocks_s']['n1']:.2f} s at -n 1, "
            f"{w3['outside_blocks_s']['n2']:.2f} s at -n 2) | {100 * w3['efficiency_ceiling']:.1f} % | |",
            f"| thread efficiency in one process without MPI, `--threads=2` vs `--threads=1` "
            f"({w3['seconds']['threads1']:.1f} s vs {w3['seconds']['threads2']:.1f} s) "
            f"| {100 * w3['threads_efficiency']:.1f} % | |",
            f"| hybrid layout, `mpiexec -n 1 --threads=2` vs 2 ranks of 1 thread: block phase "
            f"{w3['seconds']['hybrid_blocks']:.1f} s vs {w3['seconds']['n2_blocks']:.1f} s, peak memory "
            f"{w3['peak_mib']['hybrid']:.0f} MiB vs {sum(w3['peak_mib']['n2_per_rank']):.0f} MiB in all "
            f"| {100 * w3['hybrid_blocks_efficiency']:.1f} % | |",
            f"| peak memory per rank, -n 2 | {', '.join(f'{m:.0f} MiB' for m in w3['peak_mib']['n2_per_rank'])} | |",
            f"| peak memory, -n 1: half volume → full volume | {w3['peak_mib']['half_volume_n1']:.0f} MiB → "
            f"{w3['peak_mib']['n1']:.0f} MiB (×{w3['memory_growth_for_double_volume']:.2f}) | unchanged |",
            f"| outputs of -n 1, -n 2, the hybrid layout and of 1 and 2 threads identical to the single-process run | "
            f"{'yes' if w3['checks']['same_output_as_single_process'] else 'NO'} | |",
        ]
    lines += ["", "CPU seconds behind the ratios (features and forest on the compared part; the baseline's whole path "
              "is its time per pixel there times the image's pixels):", "",
              "| workload | compared on | ours features | scipy features | ours forest | sklearn forest "
              "| ours headless (whole image) | scipy + sklearn (whole image) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["seconds"]
        lines.append(f"| {r['workload']} | {_size(r)} | {s['ours_features']:.1f} | {s['scipy_features']:.1f} "
                     f"| {s['ours_forest']:.2f} | {s['sklearn_forest']:.2f} | {s['ours_headless']:.1f} "
                     f"| {s['baseline_path_scaled']:.1f} |")
    return "\n".join(lines)


def update_readme(path: Path, table: str) -> None:
    """Replace the text between the results markers of the README (appended when the markers are absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{README_START}\n{table}\n{README_END}"
    if README_START in text and README_END in text:
        text = text[:text.index(README_START)] + block + text[text.index(README_END) + len(README_END):]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


def print_result(r: dict) -> None:
    ratios, checks = r["ratios"], r["checks"]
    print(f"{r['workload']}: {r['title']}: {r['feature_channels']} feature channels; forest of {r['forest']['trees']} "
          f"trees ({r['forest']['mean_leaves']:.0f} leaves, depth {r['forest']['mean_depth']:.1f}) from "
          f"{r['labelled_pixels']:,} labelled pixels; engines compared on {_size(r)}")
    print(f"  features   {ratios['features']:6.1f}x  vs scipy.ndimage (worst |diff|/tolerance "
          f"{checks['features_worst_diff_over_tol']:.3f}: {'ok' if checks['features_ok'] else 'FAILED'})")
    print(f"  forest     {ratios['forest']:6.1f}x  vs sklearn (argmax agreement "
          f"{100 * checks['forest']['argmax_agreement']:.3f} %, max |diff| {checks['forest']['max_diff']:.1e}: "
          f"{'ok' if checks['forest']['ok'] else 'FAILED'})")
    if "vigra_forest" in r:
        v = r["vigra_forest"]
        print(f"  forest     {ratios['forest_vs_vigra']:6.1f}x  vs vigra {v['vigra']} (ilastik's forest engine; "
              f"probabilities {'bit-identical' if v['bit_identical'] else 'max |diff| %.1e' % v['max_diff']})")
    print(f"  whole path {ratios['whole_path']:6.1f}x  hpc-ilastik --headless on the whole image vs scipy + sklearn "
          f"(output vs sklearn: argmax {100 * checks['headless']['argmax_agreement']:.3f} %, max |diff| "
          f"{checks['headless']['max_diff']:.1e}: {'ok' if checks['headless']['ok'] else 'FAILED'}); "
          f"peak memory {r['headless_peak_mib']:.0f} MiB")
    if "W3" in r:
        w3 = r["W3"]
        print(f"W3: {r['workload']} under mpiexec ({w3['block']}³ blocks): parallel efficiency at 2 ranks "
              f"{100 * w3['efficiency']:.1f} % (block phase {100 * w3['blocks_efficiency']:.1f} %, ceiling set by the "
              f"start-up {100 * w3['efficiency_ceiling']:.1f} %); 2 threads without MPI "
              f"{100 * w3['threads_efficiency']:.1f} %; hybrid 1 rank x 2 threads (block phase) "
              f"{100 * w3['hybrid_blocks_efficiency']:.1f} % at {w3['peak_mib']['hybrid']:.0f} MiB; peak memory per rank "
              f"{', '.join(f'{m:.0f}' for m in w3['peak_mib']['n2_per_rank'])} MiB; -n 1 half volume "
              f"{w3['peak_mib']['half_volume_n1']:.0f} MiB → full volume {w3['peak_mib']['n1']:.0f} MiB; outputs "
              f"{'identical' if w3['checks']['same_output_as_single_process'] else 'DIFFERENT'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument("--readme", type=Path, help="write the results table into this README (between markers)")
    parser.add_argument("--workdir", type=Path, help="keep data, projects and outputs here (default: a temp folder)")
    parser.add_argument("--vigra-python", help="a Python with vigra (e.g. /usr/bin/python3 with Debian's python3-vigra) "
                        "to time vigra's own forest, ilastik's engine, on the same rows (default: this Python if it "
                        "imports vigra, else skipped)")
    args = parser.parse_args(argv)
    chosen = {w.strip().upper() for w in args.workloads.split(",") if w.strip()}
    unknown = chosen - {"W1", "W2", "W3"}
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}")
    keep_freed_memory()  # the malloc settings `hpc-ilastik` runs with, for both engines in this process
    info = machine()
    vigra_python = vigra_interpreter(args.vigra_python)
    print(f"machine: {info['cpu']}, {info['cores']} cores; one thread per engine"
          + ("" if vigra_python else "; vigra not importable: its forest is not timed (see --vigra-python)"))
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="hpc-ilastik-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name, work in workloads(args.quick).items():
            if name in chosen or (name == "W1" and "W3" in chosen):
                results.append(run_workload(work, folder, name == "W1" and "W3" in chosen, vigra_python))
                print_result(results[-1])
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    ok = all_checks_pass(results)
    info["load_after"] = _load()
    command = "python bench/run.py" + (" --quick" if args.quick else "") + (
        f" --workloads {args.workloads}" if chosen != {"W1", "W2", "W3"} else "") + (
        f" --vigra-python {args.vigra_python}" if args.vigra_python else "")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": command, "results": results,
                                         "all_checks_pass": ok}, indent=1))
    if args.readme:
        update_readme(args.readme, markdown(results, info, command))
    print("agreement checks:", "all passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
