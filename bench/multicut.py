"""Boundary-based segmentation with Multicut (issue 18): superpixels, region graph, edge features and
Kernighan-Lin on a synthetic boundary map of touching cells, stage by stage, against scikit-image's watershed
and a hand-written numpy/networkx region graph in the same run, one thread each; then the whole
`hpc-ilastik --headless` run of a Multicut project on the same files.

    python bench/multicut.py                      # 256³ (a few minutes on 2 cores)
    python bench/multicut.py --quick              # 64³: the CI smoke run
    python bench/multicut.py --size 128 --json multicut.json

Workload: `hpc_ilastik.synthetic.make_blobs_volume` gives clumps of bright round blobs (a quarter of the
volume); the clumps are cut into touching cells by a Voronoi tessellation of seeds on a jittered grid (spacing
16, each clump at least one seed; the tessellation grown inside the clumps, so every cell is one piece). The
boundary map is what a pixel classifier makes of a membrane stain: the cells' faces (voxels with a 6-neighbour
of another cell or of the background), Gaussian-blurred (σ 1) and scaled so that the median membrane voxel is
1, times a smooth strength field in [0.5, 1] (faint membranes in places), plus smooth noise (σ 0.1), clipped to
[0, 1]. It is written as a two-channel probability image (background, boundary); the raw image is the
generator's with the membranes darkened (the project trains no edge forest, so only the boundary is used).
The truth is the cells, the background 0 (ignored by the scores).

Ours (public functions of `hpc_ilastik.graphs`): `distance_transform_watershed` with ilastik's GUI-test
parameters (threshold 0.6, min size 7, σ 1.1, α 0.4; tests/test_multicut.py), `region_adjacency_graph` with the
boundary as edge values, `standard_edge_features` (the mean; all 15 standard_edge columns timed apart),
`edge_costs` of the normalised mean (β 0.5, threshold 0.5, as ilastik without a forest), and
`solve_multicut("kernighan-lin")` (GAEC timed apart). The baseline is what a user writes with scipy and
scikit-image: `distance_transform_edt`, `gaussian_filter`, `skimage.morphology.local_maxima` (6-neighbourhood,
plateaus) and `ndimage.label` for the seeds, the same height formula, `skimage.segmentation.watershed`, the size
filter and the watershed again; the region graph from the faces between labels with numpy (pairs, `np.unique`,
mean boundary by `bincount`) put into a networkx graph (nodes = labels, edges with their mean boundary), and
its segmentation: the connected components of the edges whose mean boundary is below 0.5 (no multicut solver
is installable). The region growing alone is also timed on the same heights and seeds in both engines.

Time per stage is wall time after a warm-up on a 48³ volume (numba kernels loaded); memory per stage is the
process's peak resident set during the stage (VmHWM reset through /proc/self/clear_refs) and what it added
above the resident set at the stage's start. The CLI runs in a subprocess (`--threads=1`) on a project made from
the fixture `Boundary-basedSegmentationwMulticut3d1c.ilp` as tests/test_multicut.py's `_gui_project` makes
one (new-style DT Watershed parameters as above, TrainRandomForest False, kernighan-lin); its segmentation must
equal the in-process one (the run fails otherwise).

Figures: superpixel, edge and segment counts; the multicut energy of Kernighan-Lin, of GAEC and of merging every
attractive edge (same graph and costs); skimage's adapted Rand error (with its precision and recall) of each
superpixel image and segmentation against the truth and of ours against the baseline's, on the cells' voxels;
the voxel agreement of the two region growings on the same heights and seeds; the numpy graph on our
superpixels against ours (same edges, largest difference of the mean boundary, checked).
"""

from __future__ import annotations

import os

os.environ.update({var: "1" for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from objects import SHARED, timed  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import connected_components  # noqa: E402
from skimage.metrics import adapted_rand_error  # noqa: E402
from skimage.morphology import local_maxima  # noqa: E402
from skimage.segmentation import watershed  # noqa: E402

from hpc_ilastik.graphs.costs import edge_costs, normalized  # noqa: E402
from hpc_ilastik.graphs.edge_features import standard_edge_features, supported_features  # noqa: E402
from hpc_ilastik.graphs.exact_multicut import labels_from_cut, multicut_energy  # noqa: E402
from hpc_ilastik.graphs.multicut import solve_multicut  # noqa: E402
from hpc_ilastik.graphs.rag import region_adjacency_graph  # noqa: E402
from hpc_ilastik.graphs.watershed import distance_transform_watershed, seeded_watershed  # noqa: E402
from hpc_ilastik.synthetic import BLOB, make_blobs_volume  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: the GUI test's project is the tests'
from tests.multicut_support import WATERSHED, gui_project  # noqa: E402

FIXTURE = SHARED / "fixtures" / "ilastik" / "Boundary-basedSegmentationwMulticut3d1c.ilp"
THRESHOLD, MIN_SIZE, SIGMA, ALPHA = (WATERSHED[k] for k in ("Threshold", "MinSize", "Sigma", "Alpha"))  # channel 1
BETA, CUT_THRESHOLD = 0.5, 0.5
CELL_SPACING = 16
FAINTEST = 0.5  # the weakest membrane, relative to the median one
VERSIONED = ("numpy", "scipy", "numba", "scikit-image", "networkx", "h5py")
ALL_EDGE_FEATURES = [name for name in supported_features(3) if name.startswith("standard_edge_")
                     and name != "standard_edge_quantiles"]


# ------------------------------------------------------------------------------------------------------------
# the workload

def make_cells(edge: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw zyx uint8, truth cells zyx int32 with background 0, boundary probability zyx float32)."""
    shape = (edge,) * 3
    raw, classes = make_blobs_volume(shape, seed)
    inside = classes == BLOB
    rng = np.random.default_rng(seed + 1)
    grid = np.arange(CELL_SPACING / 2, edge, CELL_SPACING)
    points = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    points = np.clip(np.rint(points + rng.uniform(-0.3, 0.3, points.shape) * CELL_SPACING), 0, edge - 1).astype(int)
    points = points[inside[tuple(points.T)]]
    clumps, n_clumps = ndimage.label(inside)
    boxes = ndimage.find_objects(clumps)
    for clump in np.setdiff1d(np.arange(1, n_clumps + 1), clumps[tuple(points.T)]):  # a seed in every clump
        box = boxes[clump - 1]
        first = np.argwhere(clumps[box] == clump)[0] + [s.start for s in box]
        points = np.concatenate([points, first[np.newaxis]])
    marks = np.zeros(shape, np.int32)
    marks[tuple(points.T)] = np.arange(1, len(points) + 1)
    reach = ndimage.distance_transform_edt(marks == 0).astype(np.float32)
    cells = watershed(reach, marks, mask=inside, connectivity=1)  # Voronoi cells grown inside their clump
    del reach, marks, clumps
    faces = np.zeros(shape, bool)
    for axis in range(3):
        low, high = _shifted(axis)
        differ = cells[low] != cells[high]
        faces[low] |= differ
        faces[high] |= differ
    membrane = ndimage.gaussian_filter(faces.astype(np.float32), 1.0)
    membrane /= np.median(membrane[faces])
    strength = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 4.0)
    strength = FAINTEST + (1 - FAINTEST) * (strength - strength.min()) / (strength.max() - strength.min())
    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.0)
    boundary = np.clip(membrane * strength + noise * (0.1 / noise.std()), 0, 1).astype(np.float32)
    raw = np.clip(raw * (1 - 0.6 * boundary), 0, 255).astype(np.uint8)
    return raw, cells.astype(np.int32), boundary


def _shifted(axis: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The slices of the lower and of the upper voxel of every neighbour pair along `axis` of a 3-D array."""
    low, high = [slice(None)] * 3, [slice(None)] * 3
    low[axis], high[axis] = slice(None, -1), slice(1, None)
    return tuple(low), tuple(high)


def write_inputs(folder: Path, raw: np.ndarray, boundary: np.ndarray) -> tuple[str, str]:
    """The raw image (zyxc, one channel) and the probabilities (zyxc: background, boundary) as HDF5."""
    chunks = tuple(min(64, n) for n in raw.shape)
    with h5py.File(folder / "raw.h5", "w") as f:
        f.create_dataset("data", data=raw[..., np.newaxis], chunks=chunks + (1,))
    with h5py.File(folder / "probabilities.h5", "w") as f:
        f.create_dataset("exported_data", data=np.stack([1 - boundary, boundary], axis=-1), chunks=chunks + (2,))
    return str(folder / "raw.h5/data"), str(folder / "probabilities.h5/exported_data")


def write_project(folder: Path, raw: str, probabilities: str) -> Path:
    """The fixture Multicut project rewritten as ilastik's GUI test's (as tests/test_multicut.py's), on these inputs."""
    return gui_project(FIXTURE, folder / "multicut.ilp", raw, probabilities, CUT_THRESHOLD, False, beta=BETA)


# ------------------------------------------------------------------------------------------------------------
# measuring

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current resident set (Linux ≥ 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextmanager
def stage(stages: dict, name: str):
    """Record the wall seconds, the peak resident MiB and the MiB added above the start of the `with` body."""
    reset = _reset_peak()
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    stages[name] = {"s": round(seconds, 3), "peak_mib": round(peak / 1024, 1),
                    "added_mib": round((peak - before) / 1024, 1) if reset else None}


# ------------------------------------------------------------------------------------------------------------
# the two engines

def ours(boundary: np.ndarray, stages: dict) -> dict:
    """Superpixels, graph, features, costs and multicut with hpc_ilastik's public functions."""
    with stage(stages, "superpixels"):
        superpixels, max_id = distance_transform_watershed(boundary, THRESHOLD, SIGMA, SIGMA, MIN_SIZE, ALPHA)
    with stage(stages, "graph"):
        graph = region_adjacency_graph(superpixels, boundary[..., np.newaxis])
    with stage(stages, "features"):
        mean = standard_edge_features(graph, 0, ["standard_edge_mean"])[:, 0]
    with stage(stages, "features_all_standard_edge"):
        standard_edge_features(graph, 0, ALL_EDGE_FEATURES)
    edges = graph.edges.astype(np.int64)
    n_nodes = max_id + 1
    with stage(stages, "costs"):
        costs = edge_costs(graph.edges, normalized(mean), BETA, CUT_THRESHOLD).astype(np.float64)
    with stage(stages, "gaec"):
        gaec = solve_multicut("greedy-additive", n_nodes, edges, costs)
    with stage(stages, "kernighan_lin"):
        solution = solve_multicut("kernighan-lin", n_nodes, edges, costs)
    with stage(stages, "relabel"):
        segmentation = solution.labels.astype(np.uint32)[superpixels]
    merged = labels_from_cut(n_nodes, edges, costs <= 0)  # every attractive edge merged, on the same graph
    return {"superpixels": superpixels, "edges": graph.edges, "mean": mean, "segmentation": segmentation,
            "figures": {"superpixels": len(np.unique(superpixels)), "edges": len(edges),
                        "segments": len(np.unique(segmentation)), "energy": solution.energy,
                        "gaec_energy": gaec.energy,
                        "merge_attractive_energy": multicut_energy(edges, costs, merged)}}


def numpy_region_graph(labels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hand-written region graph: (edges (E, 2) int64 sorted, mean of (a + b) / 2 over each edge's faces)."""
    keys, sums = [], []
    for axis in range(labels.ndim):
        low, high = _shifted(axis)
        a, b = labels[low], labels[high]
        differ = a != b
        a, b = a[differ].astype(np.int64), b[differ].astype(np.int64)
        keys.append(np.minimum(a, b) << 32 | np.maximum(a, b))
        sums.append((values[low][differ] + values[high][differ]) / np.float32(2))
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    mean = np.bincount(inverse, np.concatenate(sums)) / np.bincount(inverse)
    return np.stack([unique >> 32, unique & 0xFFFFFFFF], axis=1), mean


def baseline(boundary: np.ndarray, stages: dict, growing: dict) -> dict:
    """What a user writes with scipy, scikit-image and networkx (a numpy graph only where networkx is missing);
    `growing` gets the region growing alone on the baseline's heights and seeds, by skimage and by us."""
    with stage(stages, "superpixels"):
        distance = ndimage.distance_transform_edt(boundary <= THRESHOLD).astype(np.float32)
        distance = ndimage.gaussian_filter(distance, SIGMA)
        seeds, _ = ndimage.label(local_maxima(distance, connectivity=1))
        distance = 1 - (distance - distance.min()) / distance.max()
        heights = ALPHA * ndimage.gaussian_filter(boundary, SIGMA) + (1 - ALPHA) * distance
        del distance
        superpixels = watershed(heights, seeds)
        superpixels[(np.bincount(superpixels.ravel()) < MIN_SIZE)[superpixels]] = 0
        superpixels = watershed(heights, superpixels)
    with stage(growing, "skimage"):
        theirs = watershed(heights, seeds)
    with stage(growing, "ours"):
        mine, _ = seeded_watershed(heights, seeds.astype(np.uint32))
    growing["seeds"], growing["voxel_agreement"] = int(seeds.max()), round(float(np.mean(theirs == mine)), 6)
    del theirs, mine, heights, seeds
    with stage(stages, "graph_and_features_numpy"):
        edges, mean = numpy_region_graph(superpixels, boundary)
    try:
        import networkx as nx
    except ImportError:
        nx = None
        note = "networkx is not installed: the numpy region graph only (components by scipy.sparse.csgraph)"
    if nx is not None:
        note = "numpy faces and means, then a networkx graph (nodes = labels, edges with their mean boundary)"
        with stage(stages, "graph_networkx"):
            graph = nx.Graph()
            graph.add_nodes_from(np.unique(superpixels).tolist())
            graph.add_edges_from((u, v, {"boundary": m}) for (u, v), m in zip(edges.tolist(), mean.tolist()))
        with stage(stages, "merge_below_0.5"):
            kept = nx.Graph()
            kept.add_nodes_from(graph)
            kept.add_edges_from((u, v) for u, v, m in graph.edges(data="boundary") if m < CUT_THRESHOLD)
            lookup = np.zeros(int(superpixels.max()) + 1, np.uint32)
            for number, component in enumerate(nx.connected_components(kept), start=1):
                lookup[list(component)] = number
            segmentation = lookup[superpixels]
    else:
        with stage(stages, "merge_below_0.5"):
            n = int(superpixels.max()) + 1
            keep = mean < CUT_THRESHOLD
            adjacency = coo_matrix((np.ones(keep.sum()), (edges[keep, 0], edges[keep, 1])), shape=(n, n))
            segmentation = connected_components(adjacency, directed=False)[1].astype(np.uint32)[superpixels]
    return {"superpixels": superpixels, "segmentation": segmentation, "graph": note,
            "figures": {"superpixels": len(np.unique(superpixels)), "edges": len(edges),
                        "segments": len(np.unique(segmentation))}}


def rand_scores(truth: np.ndarray, segmentation: np.ndarray, ignore: tuple = (0,)) -> dict:
    """skimage's adapted Rand error with its precision and recall (the labels `ignore` of `truth` left out)."""
    error, precision, recall = adapted_rand_error(truth, segmentation, ignore_labels=ignore)
    return {"error": round(float(error), 4), "precision": round(float(precision), 4), "recall": round(float(recall), 4)}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _ratio(baseline_s: float, ours_s: float) -> float:
    return round(baseline_s / max(ours_s, 1e-9), 2)


def totals(stages: dict, names: list[str]) -> float:
    return round(sum(stages[name]["s"] for name in names if name in stages), 3)


# ------------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64³ (the CI smoke run)")
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic volume (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    edge = 64 if args.quick else args.size
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                "load_before": round(os.getloadavg()[0], 2), "python": platform.python_version(),
                                **{name: _version(name) for name in VERSIONED}}}
    start = time.perf_counter()
    raw, truth, boundary = make_cells(edge, args.seed)
    result["workload"] = (f"{edge}³ boundary map of {int(truth.max())} touching cells "
                          f"({np.mean(truth > 0):.0%} of the volume), seed {args.seed}")
    result["cells"] = int(truth.max())
    result["generate_s"] = round(time.perf_counter() - start, 1)
    ours(make_cells(48, args.seed)[2], {})  # warm-up: numba kernels compiled or loaded from the cache
    with tempfile.TemporaryDirectory(prefix="hpc-ilastik-multicut-") as tmp:
        folder = Path(tmp)
        raw_spec, probabilities_spec = write_inputs(folder, raw, boundary)
        del raw
        project = write_project(folder, raw_spec, probabilities_spec)
        with h5py.File(probabilities_spec.rsplit("/", 1)[0], "r") as f:
            boundary = f["exported_data"][..., 1]  # the very values the CLI reads
        stages_ours: dict = {}
        mine = ours(boundary, stages_ours)
        stages_base: dict = {}
        growing: dict = {}
        theirs = baseline(boundary, stages_base, growing)
        output = folder / "cli.h5"
        wall, peak = timed([sys.executable, "-m", "hpc_ilastik", "--headless", "--threads=1", "--quiet",
                            f"--project={project}", f"--raw_data={raw_spec}", f"--probabilities={probabilities_spec}",
                            "--output_format=hdf5", f"--output_filename_format={output}"])
        with h5py.File(output, "r") as f:
            same_as_cli = bool(np.array_equal(f["exported_data"][..., 0], mine["segmentation"]))
    pipeline = ["superpixels", "graph", "features", "costs", "kernighan_lin", "relabel"]
    result["ours"] = {"stages": stages_ours, "pipeline_s": totals(stages_ours, pipeline), **mine["figures"]}
    base_pipeline = ["superpixels", "graph_and_features_numpy", "graph_networkx", "merge_below_0.5"]
    result["baseline"] = {"stages": stages_base, "pipeline_s": totals(stages_base, base_pipeline),
                          "graph": theirs["graph"], **theirs["figures"]}
    result["same_heights_and_seeds"] = growing
    result["cli"] = {"wall_s": round(wall, 2), "peak_mib": round(peak, 1), "same_segmentation_as_in_process":
                     same_as_cli}
    check_edges, check_mean = numpy_region_graph(mine["superpixels"], boundary)
    same_edges = bool(np.array_equal(check_edges, mine["edges"]))
    mean_diff = float(np.max(np.abs(check_mean - mine["mean"]), initial=0)) if same_edges else None
    cells = truth > 0  # ours against the baseline on the cells' voxels, as against the truth
    result["agreement"] = {
        "graph_on_our_superpixels_same_edges": same_edges,
        "graph_on_our_superpixels_max_mean_diff": mean_diff,
        "superpixels_ours_vs_skimage": rand_scores(theirs["superpixels"][cells], mine["superpixels"][cells], ()),
        "segmentations_ours_vs_baseline": rand_scores(theirs["segmentation"][cells], mine["segmentation"][cells], ()),
        "vs_truth": {"our_superpixels": rand_scores(truth, mine["superpixels"]),
                     "skimage_superpixels": rand_scores(truth, theirs["superpixels"]),
                     "our_multicut": rand_scores(truth, mine["segmentation"]),
                     "baseline_merge_below_0.5": rand_scores(truth, theirs["segmentation"])},
    }
    graph_and_mean = stages_ours["graph"]["s"] + stages_ours["features"]["s"]
    result["speedup"] = {
        "superpixels": _ratio(stages_base["superpixels"]["s"], stages_ours["superpixels"]["s"]),
        "region_growing_same_heights_and_seeds": _ratio(growing["skimage"]["s"], growing["ours"]["s"]),
        "graph_and_mean_vs_numpy": _ratio(stages_base["graph_and_features_numpy"]["s"], graph_and_mean),
        "pipeline": _ratio(result["baseline"]["pipeline_s"], result["ours"]["pipeline_s"]),
    }
    result["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    result["all_checks_pass"] = same_as_cli and same_edges and mean_diff <= 1e-5
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if result["all_checks_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
