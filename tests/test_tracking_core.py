"""The tracking core (hpc_ilastik.tracking) on arrays: the exact solver against brute force, the flow heuristic
against the exact solver, feasibility of every solution, hytra's hypotheses graph, tracklets, energies, convexify,
merger resolution and lineage ids against hytra's own code (tests/data/tracking_hytra_reference.h5, see its
`provenance`), and a synthetic time series of moving blobs tracked end to end."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.tracking.energies import convexify, field_of_view, insert_energies
from hpc_ilastik.tracking.hypotheses import build_hypotheses_graph, contract_tracklets, filter_traxels, make_traxels
from hpc_ilastik.tracking.lineage import TrackGraph, compute_lineage
from hpc_ilastik.tracking.mergers import mergers_to_resolve, resolve_mergers
from hpc_ilastik.tracking.problem import TrackingProblem, make_solution, solution_violations
from hpc_ilastik.tracking.solve import TrackingParameters, solve_tracking, track
from hpc_ilastik.tracking.solver_flow import solve_flow
from hpc_ilastik.tracking.solver_ilp import solve_ilp

REFERENCE = Path(__file__).parent / "data" / "tracking_hytra_reference.h5"
NAN = np.nan


# ------------------------------------------------------------------------------------------------ helpers

def brute_force(problem: TrackingProblem) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The minimum energy over every assignment of node, link and division states (appearance and disappearance
    follow from conservation), with the constraints and energy written out independently of `problem.py`."""
    n, n_links, k = problem.n_nodes, len(problem.links), problem.max_obj + 1
    divs = np.flatnonzero(problem.has_division)
    radix = [k] * (n_links + n) + [2] * len(divs)
    grid = np.indices(radix, dtype=np.int8).reshape(len(radix), -1).T.astype(np.int64)
    y, x = grid[:, :n_links], grid[:, n_links:n_links + n]
    z = np.zeros_like(x)
    z[:, divs] = grid[:, n_links + n:]
    into_m = np.zeros((n_links, n), dtype=np.int64)
    out_m = np.zeros((n_links, n), dtype=np.int64)
    into_m[np.arange(n_links), problem.links[:, 1]] = 1
    out_m[np.arange(n_links), problem.links[:, 0]] = 1
    a, d = x - y @ into_m, x + z - y @ out_m
    ok = ((a >= 0) & (a < k) & (d >= 0) & (d < k)).all(1)
    ok &= ~((a > 0) & ((y > 0) @ into_m > 0)).any(1) & ~((d > 0) & ((y > 0) @ out_m > 0)).any(1)
    ok &= ~((z == 1) & ((x != 1) | (d > 0) | ((y == 1) @ out_m < 2))).any(1)
    a, d = np.clip(a, 0, k - 1), np.clip(d, 0, k - 1)
    rows = np.arange(n)
    energy = (problem.detection[rows, x].sum(1) + problem.appearance[rows, a].sum(1)
              + problem.disappearance[rows, d].sum(1) + problem.transition[np.arange(n_links), y].sum(1))
    if len(divs):
        energy += problem.division[divs[None, :], z[:, divs]].sum(1)
    energy[~ok] = np.inf
    best = int(np.argmin(energy))
    return float(energy[best]), x[best], y[best], z[best].astype(bool)


def hand_made(kind: str) -> TrackingProblem:
    """Tiny graphs whose optimum uses an appearance/disappearance, a division or a merger."""
    det1 = [8.0, 0.5, 9.0]  # "one object" is likely
    if kind == "appearance":  # 0 -> {1, 2} -> 3; node 2 is cheap to start and end, node 1 continues
        links = [(0, 1), (0, 2), (1, 3), (2, 3)]
        det = [det1, det1, [6.0, 0.2, 9.0], det1]
        app = [[0, 0, 0], [0, 5, 10], [0, 1, 2], [0, 5, 10]]
        dis = [[0, 5, 10], [0, 5, 10], [0, 1, 2], [0, 0, 0]]
        trans = [[3, 1, 6], [0.5, 4, 8], [3, 1, 6], [0.5, 4, 8]]
        div = [[NAN, NAN], [NAN, NAN], [NAN, NAN], [NAN, NAN]]
    elif kind == "division":  # 0 divides into 1 and 2, which continue to 3 and 4
        links = [(0, 1), (0, 2), (1, 3), (2, 4)]
        det = [det1] * 5
        app = [[0, 0, 0]] + [[0, 20, 40]] * 4
        dis = [[0, 20, 40]] * 3 + [[0, 0, 0]] * 2
        trans = [[3, 1, 6]] * 4
        div = [[2.0, 0.3], [NAN, NAN], [NAN, NAN], [NAN, NAN], [NAN, NAN]]
    elif kind == "merger":  # 0 and 1 meet in 2 (two objects), which parts into 3 and 4
        links = [(0, 2), (1, 2), (2, 3), (2, 4)]
        det = [det1, det1, [9.0, 4.0, 0.3], det1, det1]
        app = [[0, 0, 0], [0, 0, 0], [0, 20, 40], [0, 20, 40], [0, 20, 40]]
        dis = [[0, 20, 40], [0, 20, 40], [0, 20, 40], [0, 0, 0], [0, 0, 0]]
        trans = [[3, 1, 6]] * 4
        div = [[NAN, NAN]] * 2 + [[3.0, 2.5]] + [[NAN, NAN]] * 2
    else:
        raise ValueError(kind)
    as_array = [np.array(v, dtype=np.float64) for v in (links, det, app, dis, trans, div)]
    return TrackingProblem(as_array[0].astype(np.int64), *as_array[1:5], as_array[5])


def random_problem(rng: np.random.Generator, n_frames: int = 3, per_frame: int = 2, max_obj: int = 2,
                   p_link: float = 0.6) -> TrackingProblem:
    """Random costs on a random layered graph (convex appearance/disappearance, division where a node has two
    children)."""
    frames = [np.arange(per_frame) + f * per_frame for f in range(n_frames)]
    links = np.array([(a, b) for f in range(n_frames - 1) for a in frames[f] for b in frames[f + 1]
                      if rng.random() < p_link], dtype=np.int64).reshape(-1, 2)
    n, k = n_frames * per_frame, max_obj + 1
    ramp = np.arange(k, dtype=np.float64)
    division = np.full((n, 2), NAN)
    two_children = np.flatnonzero(np.bincount(links[:, 0], minlength=n) >= 2)
    division[two_children] = rng.uniform(0, 5, (len(two_children), 2))
    return TrackingProblem(links, rng.uniform(0, 10, (n, k)), np.outer(rng.uniform(0, 5, n), ramp),
                           np.outer(rng.uniform(0, 5, n), ramp), rng.uniform(0, 5, (len(links), k)), division)


def convexified(problem: TrackingProblem) -> TrackingProblem:
    return TrackingProblem(problem.links, convexify(problem.detection), convexify(problem.appearance),
                           convexify(problem.disappearance), convexify(problem.transition), problem.division)


def random_scene(rng: np.random.Generator, n_frames: int = 5, n_tracks: int = 7, size: float = 60.0):
    """Random walks that start and end at random frames, with random object-count and division probabilities."""
    start = rng.integers(0, n_frames // 2, n_tracks)
    stop = rng.integers(n_frames // 2 + 1, n_frames + 1, n_tracks)
    pos = rng.uniform(0, size, (n_tracks, 2))
    rows = []
    for t in range(n_frames):
        pos = pos + rng.normal(0, 3, pos.shape)
        alive = np.flatnonzero((start <= t) & (t < stop))
        rows += [(t, j + 1, *pos[i]) for j, i in enumerate(alive)]
    rows = np.array(rows)
    return make_traxels(rows[:, 0], rows[:, 1], rows[:, 2:4], rng.dirichlet([1.0, 5.0, 1.5], len(rows)),
                        rng.beta(0.6, 2.0, len(rows)))


SCENE_PARAMETERS = TrackingParameters(time_range=(0, 4), x_range=(0, 60), y_range=(0, 60), max_dist=25, max_obj=2,
                                      div_threshold=0.3, border_aware_width=10, appearance_cost=50,
                                      disappearance_cost=50)


def disk(image: np.ndarray, cx: float, cy: float, r: float, value: int) -> None:
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    image[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = value


def blob_series() -> list[tuple[np.ndarray, list[str]]]:
    """Six (y, x) label images and the name of every label: A moves right; B divides into B1, B2 between frames 2
    and 3; C and D touch in frame 3 (one object, "CD") and part again; E enters at the left border in frame 2.
    The same scene as the reference's inputs/blob_*."""
    frames = []
    for t in range(6):
        objects = [("A", 12 + 5 * t, 12, 4)]
        if t <= 2:
            objects.append(("B", 60, 10 + 5 * t, 4))
        else:
            objects += [("B1", 56 - 3 * (t - 3), 25 + 3 * (t - 3), 4), ("B2", 65 + 3 * (t - 3), 25 + 3 * (t - 3), 4)]
        if t != 3:
            gap = {0: 24, 1: 18, 2: 12, 4: 12, 5: 18}[t]
            objects += [("C", 36 - gap // 2, 50, 4), ("D", 36 + gap // 2, 50, 4)]
        else:
            objects.append(("CD", 36, 50, None))
        if t >= 2:
            objects.append(("E", 3 + 5 * (t - 2), 36, 3))
        image = np.zeros((64, 80), np.int32)
        for label, (name, cx, cy, r) in enumerate(objects, start=1):
            if r is None:
                disk(image, cx - 4, cy, 4, label)
                disk(image, cx + 4, cy, 4, label)
            else:
                disk(image, cx, cy, r, label)
        frames.append((image, [o[0] for o in objects]))
    return frames


def blob_traxels(frames):
    """Traxel inputs as the caller computes them: RegionCenter (x, y), size, bounding box, and probabilities."""
    rows = []
    for t, (image, names) in enumerate(frames):
        for label, name in enumerate(names, start=1):
            y, x = np.nonzero(image == label)
            det = [0.001, 0.05, 0.949] if name == "CD" else [0.001, 0.99, 0.009]
            rows.append((t, label, x.mean(), y.mean(), len(x), x.min(), y.min(), x.max(), y.max(), det,
                         0.85 if (name == "B" and t == 2) else 0.02, name))
    column = [np.array([r[i] for r in rows]) for i in range(11)]
    return column, [r[11] for r in rows]


def merger_pixels(images: list[np.ndarray], tracks: TrackGraph) -> dict[int, np.ndarray]:
    """The mergers' pixel coordinates in ilastik's order: x, y, z (z = 0), as np.where on the x, y, z frame."""
    pixels = {}
    for node in mergers_to_resolve(tracks):
        x, y = np.nonzero(images[tracks.frame[node]].T == tracks.label[node])
        pixels[int(node)] = np.stack([x, y, np.zeros_like(x)], axis=1)
    return pixels


# ------------------------------------------------------------------------------------------------ solvers

@pytest.mark.parametrize("kind", ["appearance", "division", "merger"])
def test_exact_solver_equals_brute_force_on_hand_made_graphs(kind):
    problem = hand_made(kind)
    energy, nodes, links, divisions = brute_force(problem)
    solution = solve_ilp(problem)
    assert solution_violations(problem, solution) == []
    assert solution.energy == pytest.approx(energy, abs=1e-9)
    np.testing.assert_array_equal(solution.nodes, nodes)
    np.testing.assert_array_equal(solution.links, links)
    # each graph exercises what it is named after
    if kind == "appearance":
        assert solution.appearances[2] == 1 and solution.disappearances[2] == 1 and solution.links[1] == 0
    elif kind == "division":
        assert solution.divisions[0] and list(solution.links) == [1, 1, 1, 1]
    else:
        assert solution.nodes[2] == 2 and list(solution.links) == [1, 1, 1, 1] and not solution.divisions[2]


def test_exact_solver_equals_brute_force_on_random_graphs(record_property):
    rng = np.random.default_rng(2026)
    checked = 0
    while checked < 12:
        problem = random_problem(rng)
        if len(problem.links) > 5:  # keeps the enumeration to a few 10^5 assignments
            continue
        energy, *_ = brute_force(problem)
        solution = solve_ilp(problem)
        assert solution_violations(problem, solution) == []
        assert solution.energy == pytest.approx(energy, abs=1e-9)
        checked += 1
    record_property("figures", f"exact ILP = brute force on {checked} random graphs and 3 hand-made ones")


def test_flow_solver_against_exact(record_property):
    rng = np.random.default_rng(0)
    scene_gaps, problem_gaps = [], []
    for _ in range(20):  # tracking-like problems: random scenes through the whole energy pipeline
        run = track(random_scene(rng), SCENE_PARAMETERS, solver="ilp")
        flow = solve_flow(run.problem)
        assert solution_violations(run.problem, flow) == []
        scene_gaps.append((flow.energy - run.solution.energy) / run.solution.energy)
    for _ in range(20):  # random costs, four frames of four nodes, up to two objects, divisions
        problem = convexified(random_problem(rng, n_frames=4, per_frame=4, p_link=0.5))
        exact, flow = solve_ilp(problem), solve_flow(problem)
        assert solution_violations(problem, flow) == []
        problem_gaps.append((flow.energy - exact.energy) / exact.energy)
    scene_gaps, problem_gaps = np.array(scene_gaps), np.array(problem_gaps)
    record_property("figures", f"flow vs exact energy on 20 random scenes: mean gap {100 * scene_gaps.mean():.3f}%, "
                               f"max {100 * scene_gaps.max():.2f}%, optimal in {np.sum(scene_gaps < 1e-12)}/20; "
                               f"on 20 random-cost graphs: mean {100 * problem_gaps.mean():.2f}%, "
                               f"max {100 * problem_gaps.max():.2f}%, optimal in {np.sum(problem_gaps < 1e-12)}/20")
    assert scene_gaps.min() > -1e-12 and problem_gaps.min() > -1e-12  # never below the optimum
    assert scene_gaps.mean() < 0.01  # stated bound: 1 % on tracking-like problems (measured 0.08 %)
    assert problem_gaps.mean() < 0.05  # 5 % on random costs (measured about 1.4 %)


def test_feasibility_checks_catch_broken_solutions():
    problem = hand_made("division")
    good = solve_ilp(problem)
    assert solution_violations(problem, good) == []
    broken = [
        (good.nodes, good.links, np.zeros(5, bool)),  # division dropped: one unit leaves from nowhere
        (np.array([2, 1, 1, 1, 1]), good.links, good.divisions),  # dividing parent holds two objects
        (good.nodes, np.array([2, 0, 1, 1]), good.divisions),  # both units to one child
        (np.array([1, 1, 1, 1, 3]), good.links, good.divisions),  # state above maxObj
    ]
    for nodes, links, divisions in broken:
        assert solution_violations(problem, make_solution(problem, nodes, links, divisions, "test"))


def test_solver_dispatch_by_size():
    rng = np.random.default_rng(5)
    run = track(random_scene(rng, n_frames=8, n_tracks=20, size=120.0), SCENE_PARAMETERS, solver="ilp")
    mixed = solve_tracking(run.problem, "auto", max_exact=150)
    flow = solve_tracking(run.problem, "flow")
    exact = solve_tracking(run.problem, "auto")
    assert mixed.solver == "flow+ilp" and flow.solver == "flow" and exact.solver == "ilp"
    for solution in (mixed, flow, exact):
        assert solution_violations(run.problem, solution) == []
        assert solution.energy >= run.solution.energy - 1e-9
    assert exact.energy == pytest.approx(run.solution.energy, abs=1e-9)


# ------------------------------------------------------------------------------------------------ hytra reference

CASES = {"blob_k3": ("blob", 3, 20, (80, 64), 6), "blob_k1": ("blob", 1, 20, (80, 64), 6),
         "random_k2": ("random", 2, 15, (100, 100), 8)}


def _reference_traxels(h5, source):
    inputs = h5["inputs"]
    return make_traxels(*(inputs[f"{source}_{key}"][:] for key in ("frame", "label", "center", "det", "div")))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tracklets", [False, True])
def test_graph_and_energies_equal_hytra(case, tracklets):
    source, k, max_dist, shape, n_frames = CASES[case]
    with h5py.File(REFERENCE) as h5:
        traxels = _reference_traxels(h5, source)
        graph = build_hypotheses_graph(traxels, k, max_dist, with_divisions=True, div_threshold=0.5)
        ref = h5[case + ("_tracklets" if tracklets else "")]
        ends = np.stack([traxels.frame[graph.links[:, 0]], traxels.label[graph.links[:, 0]],
                         traxels.frame[graph.links[:, 1]], traxels.label[graph.links[:, 1]]], axis=1)
        np.testing.assert_array_equal(ends, ref["edges"][:])  # same links in the same (networkx) order
        contracted = contract_tracklets(graph) if tracklets else None
        if tracklets:
            first, last = contracted.first, contracted.last
            np.testing.assert_array_equal(np.stack([traxels.frame[first], traxels.label[first]], 1),
                                          ref["tracklet_first"][:])
            np.testing.assert_array_equal(np.diff(contracted.member_start), ref["tracklet_length"][:])
            np.testing.assert_array_equal(np.stack([traxels.frame[contracted.member],
                                                    traxels.label[contracted.member]], 1), ref["tracklet_members"][:])
            src, dst = first[contracted.links[:, 0]], first[contracted.links[:, 1]]
            np.testing.assert_array_equal(np.stack([traxels.frame[src], traxels.label[src], traxels.frame[dst],
                                                    traxels.label[dst]], 1), ref["tracklet_edges"][:])
            assert np.array_equal(last[contracted.links[:, 0]], graph.links[contracted.link_origin, 0])
        features = insert_energies(graph, contracted, (0, n_frames - 1),
                                   field_of_view((0, shape[0]), (0, shape[1]), (0, 1)), border_width=10,
                                   with_divisions=True, div_threshold=0.5)
        for group, ours in (("features", features), ("convexified", features.convexified())):
            # bit for bit, including NaN where a node has no division hypothesis
            for name, mine in (("features", ours.detection), ("appearanceFeatures", ours.appearance),
                               ("disappearanceFeatures", ours.disappearance), ("divisionFeatures", ours.division),
                               ("link_features", ours.transition)):
                np.testing.assert_array_equal(mine, ref[f"{group}/{name}"][:], err_msg=f"{group}/{name}")


def test_convexify_equals_hytra():
    with h5py.File(REFERENCE) as h5:
        inputs, outputs = h5["convexify/input"][:], h5["convexify/output"][:]
    for vector, expected in zip(inputs, outputs):
        n = np.count_nonzero(~np.isnan(vector))
        np.testing.assert_array_equal(convexify(vector[:n]), expected[:n])
    # a worked example: flat costs rise by eps, 2 eps, ... from the first minimum
    np.testing.assert_allclose(convexify([0.0, 0.0, 0.0]), [0.0, 1e-6, 3e-6], rtol=0, atol=1e-15)


@pytest.mark.parametrize("key", ["traxels", "tracklets"])
def test_mergers_and_lineage_equal_hytra(key):
    """The reference's solution (ours, as input) put into hytra's graph, merger resolution, computeLineage."""
    with h5py.File(REFERENCE) as h5:
        traxels = _reference_traxels(h5, "blob")
        images = h5["inputs/blob_images"][:].astype(np.int64)
        nodes = {(t, i): (v, d) for t, i, v, d in h5[f"inputs/blob_solution_{key}_nodes"][:].tolist()}
        links = {tuple(row[:4]): row[4] for row in h5[f"inputs/blob_solution_{key}_links"][:].tolist()}
        ref_nodes, ref_edges = h5[f"lineage_{key}/nodes"][:], h5[f"lineage_{key}/edges"][:]
        ref_images = h5[f"lineage_{key}/relabelled_images"][:]
    graph = build_hypotheses_graph(traxels, 3, 20, with_divisions=True, div_threshold=0.5)
    keys = list(zip(traxels.frame.tolist(), traxels.label.tolist()))
    tracks = TrackGraph(traxels.frame, traxels.label, traxels.center, np.array([nodes[k][0] for k in keys]),
                        np.array([nodes[k][1] for k in keys], dtype=bool), np.zeros(len(keys), np.int64),
                        graph.links, np.array([links[(*keys[a], *keys[b])] for a, b in graph.links.tolist()]))
    resolved, splits = resolve_mergers(tracks, merger_pixels(list(images), tracks),
                                       {t: int(images[t].max()) for t in range(len(images))})
    lineage = compute_lineage(resolved)
    mine = np.stack([resolved.frame, resolved.label, resolved.value, resolved.division, resolved.merger_label,
                     lineage.track_id, lineage.lineage_id, lineage.parent_track_id], axis=1)
    np.testing.assert_array_equal(mine, ref_nodes)  # node order, values, merger labels, track/lineage/parent ids
    edges = np.stack([resolved.frame[resolved.links[:, 0]], resolved.label[resolved.links[:, 0]],
                      resolved.frame[resolved.links[:, 1]], resolved.label[resolved.links[:, 1]],
                      resolved.link_value], axis=1)
    np.testing.assert_array_equal(edges, ref_edges)
    relabelled = images.copy()
    for split in splits:
        x, y = np.nonzero(images[split.frame].T == split.label)
        relabelled[split.frame][y, x] = split.pixel_ids
    np.testing.assert_array_equal(relabelled, ref_images)


# ------------------------------------------------------------------------------------------------ the blob scene

@pytest.mark.parametrize("solver", ["auto", "flow"])
@pytest.mark.parametrize("tracklets", [False, True])
def test_blob_scene_tracks(solver, tracklets, record_property):
    frames = blob_series()
    (frame, label, cx, cy, size, x0, y0, x1, y1, det, div), names = blob_traxels(frames)
    keep = filter_traxels(size, np.stack([x0, y0], 1), np.stack([x1, y1], 1), (0, 100000), (0, 80), (0, 64),
                          (0, 1), max_obj=2)
    assert keep.all()
    traxels = make_traxels(frame, label, np.stack([cx, cy], 1), det, div)
    parameters = TrackingParameters(time_range=(0, 5), x_range=(0, 80), y_range=(0, 64), max_dist=20, max_obj=2,
                                    div_threshold=0.5, with_tracklets=tracklets, border_aware_width=10)
    run = track(traxels, parameters, solver=solver)
    assert solution_violations(run.problem, run.solution) == []
    resolved, splits = resolve_mergers(run.tracks, merger_pixels([f[0] for f in frames], run.tracks),
                                       {t: len(f[1]) for t, f in enumerate(frames)})
    lineage = compute_lineage(resolved)
    name_of = dict(zip(zip(frame.tolist(), label.tolist()), names))
    ids = {}
    for i, (t, obj) in enumerate(zip(resolved.frame.tolist(), resolved.label.tolist())):
        name = name_of.get((t, obj), "split")
        if name == "split":  # one half of the CD merger: the half nearer C's side continues C
            name = "C" if resolved.center[i, 0] < 36 else "D"
            assert resolved.merger_label[i] == 4 and resolved.value[i] == 1
        ids.setdefault(name, set()).add((int(lineage.track_id[i]), int(lineage.lineage_id[i])))
        if name in ("B1", "B2"):
            assert lineage.parent_track_id[i] == (3 if t == 3 else 0)
        else:
            assert lineage.parent_track_id[i] == 0
    expected = {"A": (2, 2), "B": (3, 3), "C": (4, 4), "D": (5, 5), "E": (6, 6), "B1": (7, 3), "B2": (8, 3)}
    assert ids == {name: {pair} for name, pair in expected.items()}
    assert len(splits) == 1 and sorted(splits[0].new_ids) == [6, 7] and set(splits[0].pixel_ids) == {6, 7}
    record_property("figures", f"blob scene ({solver}, tracklets {tracklets}): energy {run.solution.energy:.4f}, "
                               f"7 tracks with ilastik's ids, division and merger resolved")


def test_lineage_numbering_rules():
    """Starts numbered in node order from 2; the stack hands out division children's ids (later starts first);
    a node reached twice (an unresolved merger) keeps the ids that reach it first; value-0 nodes get none."""
    frame = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    links = np.array([(0, 3), (1, 3), (3, 5), (4, 6), (4, 7)])
    tracks = TrackGraph(frame, np.arange(8), np.zeros((8, 3)), np.array([1, 1, 0, 2, 1, 2, 1, 1]),
                        np.array([0, 0, 0, 0, 1, 0, 0, 0], bool), np.zeros(8, np.int64), links,
                        np.array([1, 1, 2, 1, 1]))
    lineage = compute_lineage(tracks)
    assert lineage.track_id.tolist() == [2, 3, -1, 3, 4, 3, 5, 6]
    assert lineage.lineage_id.tolist() == [2, 3, -1, 3, 4, 3, 4, 4]
    assert lineage.parent_track_id.tolist() == [0, 0, 0, 0, 0, 0, 4, 4]


def test_traxel_filter():
    size = np.array([1, 2, 5, 10, 5, 5])
    lower = np.array([[5, 5], [5, 5], [5, 5], [5, 5], [-9, 5], [50, 5]])
    upper = np.array([[8, 8], [8, 8], [8, 8], [8, 8], [-1, 8], [55, 8]])
    keep = filter_traxels(size, lower, upper, size_range=(0, 10), x_range=(0, 50), y_range=(0, 50),
                          z_range=(0, 1), max_obj=2)
    # size 1 < maxObj = 2 (the raised lower bound), 10 not below the upper bound, a box left of / right of x_range
    assert keep.tolist() == [False, True, True, False, False, False]
