"""Multicut solvers: the exact ILP against brute force, the heuristics against the exact optimum and against
bioimage-cpp (elf's backend, tests/data/multicut_bioimage_cpp.h5), label invariants, and ilastik's solver names."""

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.spatial import Delaunay

from hpc_ilastik.errors import UserError
from hpc_ilastik.graphs.exact_multicut import MAX_EXACT_EDGES, exact_multicut, labels_from_cut
from hpc_ilastik.graphs.multicut import (
    SOLVER_ALIASES,
    SOLVERS,
    MulticutSolution,
    greedy_additive,
    greedy_fixation,
    kernighan_lin,
    multicut_energy,
    solve_multicut,
)

REFERENCE = Path(__file__).parent / "data" / "multicut_bioimage_cpp.h5"
HEURISTICS = {"greedy-additive": greedy_additive, "greedy-fixation": greedy_fixation, "kernighan-lin": kernighan_lin}
EVERY_SOLVER = {**HEURISTICS, "ilp": exact_multicut}


def _sorted_edges(edges: np.ndarray) -> np.ndarray:
    return np.unique(np.sort(edges, axis=1), axis=0).astype(np.int64)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(h * w).reshape(h, w)
    edges = np.concatenate([np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                            np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1)])
    return _sorted_edges(edges), np.stack(np.unravel_index(np.arange(h * w), (h, w)), 1).astype(float)


def _delaunay(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    points = rng.random((n, 2)) * np.sqrt(n)
    tri = Delaunay(points).simplices
    return _sorted_edges(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [0, 2]]])), points


def _boundary_weights(edges, points, rng, n_seeds: int, noise: float) -> np.ndarray:
    """ilastik-like costs: attractive inside, repulsive across a random Voronoi partition, plus noise."""
    seeds = points[rng.choice(len(points), n_seeds, replace=False)]
    truth = np.argmin(((points[:, None] - seeds[None]) ** 2).sum(-1), 1)
    return np.where(truth[edges[:, 0]] != truth[edges[:, 1]], -1.0, 1.0) + rng.normal(0.0, noise, len(edges))


def _all_partitions(n: int) -> np.ndarray:
    """Every set partition of n nodes, as restricted growth strings (Bell(n) rows)."""
    rows = [[0]]
    for _ in range(n - 1):
        rows = [row + [k] for row in rows for k in range(max(row) + 2)]
    return np.array(rows)


def _assert_canonical(n_nodes: int, edges: np.ndarray, labels: np.ndarray) -> None:
    """int64 labels 0..k-1 by first appearance, one per connected cluster."""
    assert labels.dtype == np.int64 and labels.shape == (n_nodes,)
    cut = labels[edges[:, 0]] != labels[edges[:, 1]]
    np.testing.assert_array_equal(labels, labels_from_cut(n_nodes, edges, cut))


def test_exact_matches_brute_force():
    rng = np.random.default_rng(11)
    partitions = {n: _all_partitions(n) for n in range(2, 9)}
    for _ in range(40):
        n = int(rng.integers(2, 9))
        pairs = np.array([(u, v) for u in range(n) for v in range(u + 1, n)])
        edges = pairs[rng.random(len(pairs)) < 0.6]
        weights = rng.normal(0.0, 1.0, len(edges))
        energies = (partitions[n][:, edges[:, 0]] != partitions[n][:, edges[:, 1]]) @ weights
        labels = exact_multicut(n, edges, weights)
        _assert_canonical(n, edges, labels)
        assert multicut_energy(edges, weights, labels) == pytest.approx(energies.min(), abs=1e-9)
        for solve in HEURISTICS.values():
            assert multicut_energy(edges, weights, solve(n, edges, weights)) >= energies.min() - 1e-9


def test_heuristics_near_the_optimum(record_property):
    rng = np.random.default_rng(7)
    gaps = {name: [] for name in HEURISTICS}
    for i in range(20):
        edges, points = _grid(12, 13) if i % 2 else _delaunay(110, rng)
        weights = _boundary_weights(edges, points, rng, 8, 1.5)
        optimum = multicut_energy(edges, weights, exact_multicut(len(points), edges, weights))
        energy = {name: multicut_energy(edges, weights, solve(len(points), edges, weights))
                  for name, solve in HEURISTICS.items()}
        for name, value in energy.items():
            assert optimum - 1e-9 <= value <= 0.0
            gaps[name].append((value - optimum) / abs(optimum))
        assert energy["kernighan-lin"] <= energy["greedy-additive"] + 1e-9
    mean = {name: 100 * np.mean(values) for name, values in gaps.items()}
    record_property("figures", "multicut, 20 random graphs of ~300 edges, mean gap to the ILP optimum: " +
                    ", ".join(f"{name} {value:.2f} % (max {100 * max(gaps[name]):.2f} %)"
                              for name, value in mean.items()))
    assert mean["kernighan-lin"] <= 1.0


def test_against_bioimage_cpp(record_property):
    """GAEC and greedy fixation give bioimage-cpp's partitions (tie-free weights); KL is at least as good."""
    kl_better = 0
    with h5py.File(REFERENCE) as f:
        for group in f.values():
            n_nodes, edges, weights = int(group.attrs["n_nodes"]), group["edges"][()], group["weights"][()]
            for name, solve in HEURISTICS.items():
                reference = group[f"labels/{name}"][()]
                ours = solve(n_nodes, edges, weights)
                if name == "kernighan-lin":
                    ours_energy, reference_energy = (multicut_energy(edges, weights, labels)
                                                     for labels in (ours, reference))
                    assert ours_energy <= reference_energy + 1e-9
                    kl_better += ours_energy < reference_energy - 1e-9
                else:
                    cut = reference[edges[:, 0]] != reference[edges[:, 1]]
                    np.testing.assert_array_equal(ours, labels_from_cut(n_nodes, edges, cut), err_msg=name)
        record_property("figures", f"multicut vs bioimage-cpp on {len(f)} problems: GAEC and greedy fixation "
                        f"partitions identical; KL energy equal on {len(f) - kl_better}, lower on {kl_better}")


def test_invariants_and_determinism():
    rng = np.random.default_rng(3)
    edges, points = _delaunay(80, rng)
    weights = _boundary_weights(edges, points, rng, 6, 1.0)
    for name, solve in EVERY_SOLVER.items():
        labels = solve(len(points), edges, weights)
        _assert_canonical(len(points), edges, labels)
        np.testing.assert_array_equal(labels, solve(len(points), edges, weights), err_msg=name)
        assert multicut_energy(edges, weights, labels) <= 0.0


def test_disconnected_graph_with_isolated_nodes():
    rng = np.random.default_rng(5)
    left, points = _grid(6, 7)
    right = left + len(points)  # a second copy, not joined to the first; then 4 isolated nodes
    edges = np.concatenate([left, right])
    n_nodes = 2 * len(points) + 4
    weights = rng.normal(0.2, 1.0, len(edges))
    for name, solve in EVERY_SOLVER.items():
        labels = solve(n_nodes, edges, weights)
        _assert_canonical(n_nodes, edges, labels)
        assert len(np.unique(labels[-4:])) == 4 and not np.isin(labels[-4:], labels[:-4]).any()
        separate = sum(multicut_energy(left, w, solve(len(points), left, w))
                       for w in (weights[:len(left)], weights[len(left):]))
        assert multicut_energy(edges, weights, labels) == pytest.approx(separate, abs=1e-9), name


def test_trivial_problems():
    edges, _ = _grid(5, 5)
    no_edges = np.zeros((0, 2), np.int64)
    for name, solve in EVERY_SOLVER.items():
        np.testing.assert_array_equal(solve(4, no_edges, np.zeros(0)), np.arange(4), err_msg=name)
        np.testing.assert_array_equal(solve(25, edges, -np.ones(len(edges))), np.arange(25), err_msg=name)
        np.testing.assert_array_equal(solve(25, edges, np.full(len(edges), 0.5)), np.zeros(25), err_msg=name)
    assert len(kernighan_lin(0, no_edges, np.zeros(0))) == 0


def test_kernighan_lin_warm_starts():
    rng = np.random.default_rng(9)
    edges, points = _grid(10, 10)
    weights = _boundary_weights(edges, points, rng, 6, 1.5)
    for start in (np.arange(100), np.zeros(100, np.int64), rng.integers(0, 5, 100)):
        labels = kernighan_lin(100, edges, weights, initial=start)
        _assert_canonical(100, edges, labels)
        assert multicut_energy(edges, weights, labels) <= multicut_energy(edges, weights, start) + 1e-9
    with pytest.raises(ValueError, match="initial labelling"):
        kernighan_lin(100, edges, weights, initial=np.zeros(99))


def test_malformed_problems_are_refused():
    for edges, weights in (([[1, 0]], [1.0]), ([[0, 1], [0, 1]], [1.0, 1.0]), ([[0, 2], [0, 1]], [1.0, 1.0]),
                           ([[0, 5]], [1.0]), ([[0, 1]], [1.0, 2.0]), ([[0, 1]], [np.nan])):
        with pytest.raises(ValueError):
            greedy_additive(3, np.array(edges), np.array(weights))


def test_exact_solver_limits(caplog):
    edges, _ = _grid(60, 60)
    assert len(edges) > MAX_EXACT_EDGES
    with pytest.raises(ValueError, match=str(MAX_EXACT_EDGES)):
        exact_multicut(3600, edges, np.ones(len(edges)))
    with pytest.raises(UserError, match=str(MAX_EXACT_EDGES)):
        solve_multicut("Nifty_ExactCplex", 3600, edges, np.ones(len(edges)))
    edges, points = _grid(8, 8)
    weights = _boundary_weights(edges, points, np.random.default_rng(2), 5, 1.5)
    with caplog.at_level(logging.WARNING):
        labels = exact_multicut(64, edges, weights, time_limit=0.0)  # out of time before the first solve
    _assert_canonical(64, edges, labels)
    assert "not proven optimal" in caplog.text


def test_solver_names():
    rng = np.random.default_rng(4)
    edges, points = _grid(7, 8)
    weights = _boundary_weights(edges, points, rng, 4, 1.0)
    kl = kernighan_lin(56, edges, weights)
    for name in [*SOLVERS, *SOLVER_ALIASES]:
        solution = solve_multicut(name, 56, edges, weights)
        assert isinstance(solution, MulticutSolution)
        assert solution.solver == SOLVER_ALIASES.get(name, name)
        assert solution.energy == pytest.approx(multicut_energy(edges, weights, solution.labels))
        _assert_canonical(56, edges, solution.labels)
    for name in ("kernighan-lin", "Nifty_FmGreedy", "fusion-moves", "cut-glue-cut", "rama", "blockwise-multicut"):
        np.testing.assert_array_equal(solve_multicut(name, 56, edges, weights).labels, kl, err_msg=name)
    assert solve_multicut("Opengm_Exact", 56, edges, weights).energy == pytest.approx(
        multicut_energy(edges, weights, exact_multicut(56, edges, weights)))
    with pytest.raises(UserError) as error:
        solve_multicut("Nifty_Magic", 56, edges, weights)
    message = str(error.value)
    assert "\n" not in message and "Nifty_Magic" in message
    assert all(name in message for name in [*SOLVERS, *SOLVER_ALIASES])


def test_decomposition_never_joins_across_repulsive_cuts():
    rng = np.random.default_rng(6)
    edges, points = _grid(9, 9)
    weights = _boundary_weights(edges, points, rng, 5, 0.5)
    components = labels_from_cut(81, edges, weights <= 0)
    labels = solve_multicut("decomposition", 81, edges, weights).labels
    _assert_canonical(81, edges, labels)
    for label in np.unique(labels):
        assert len(np.unique(components[labels == label])) == 1
    optimum = multicut_energy(edges, weights, exact_multicut(81, edges, weights))
    assert optimum - 1e-9 <= multicut_energy(edges, weights, labels) <= 0.0


def test_greedy_additive_on_a_large_grid():
    rng = np.random.default_rng(8)
    edges, _ = _grid(224, 224)  # 99 904 edges
    weights = rng.normal(0.3, 1.0, len(edges))
    labels = greedy_additive(224 * 224, edges, weights)
    _assert_canonical(224 * 224, edges, labels)
    assert multicut_energy(edges, weights, labels) < 0.0
