"""Prediction with vigra forests in numba: vigra's float32 arithmetic and ilastik's combination of
several forests, bit for bit.

All forests of a classifier are packed into one node table (`pack_forests`); rows go through every tree
a batch at a time, and each tree finds a row's leaf by bit masks (QuickScorer, trees of at most 64
leaves) or by walking (larger trees). Trees of pure leaves (ilastik's) share 32-bit words, several trees
to a word, and count their votes by popcount. Facts: ilastik-numerics.md §7-§8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from hpc_ilastik.forest.vigra import VigraForest

_BATCH_ROWS = 1024  # rows per pass of the trees: their features (<= a few hundred KiB) stay in L2, sums in L1
_LANES = 16  # rows walked through a tree in lock step
_FEW_LEAVES = 8  # trees with at most this many leaves per class, and at most 32 leaves, add their values by
#                 vectorised selects, one pass per group of leaves that give a class the same value
_ALL_LEAVES_INT = (1 << 64) - 1
_DEBRUIJN_INT = 0x03F79D71B4CB0A89  # a de Bruijn sequence: (2^k · it mod 2^64) >> 58 differs for each k < 64
_DEBRUIJN = np.uint64(_DEBRUIJN_INT)


def _debruijn_positions() -> np.ndarray:
    """k for each value of (2^k · _DEBRUIJN mod 2^64) >> 58: the index of a word's only set bit."""
    table = np.zeros(64, dtype=np.int64)
    for k in range(64):
        table[((1 << k) * _DEBRUIJN_INT % (1 << 64)) >> 58] = k
    return table


_DEBRUIJN_POSITION = _debruijn_positions()


def pack_forests(forests: Sequence[VigraForest]) -> tuple[np.ndarray, ...]:
    """The kernel's arrays for these forests: node tables (see _walk_arrays, _mask_arrays), leaf values,
    trees per forest and each forest's constant row norm (NaN where rows differ)."""
    values = np.ascontiguousarray(np.concatenate(
        [f.leaf_probs * (f.leaf_weights[:, None] if f.predict_weighted else 1.0) for f in forests]), dtype=np.float64)
    masks = _mask_arrays(forests)
    per_forest = np.split(values, np.cumsum([len(f.leaf_weights) for f in forests])[:-1])
    derived = np.array([_derived_class(v) for v in per_forest], dtype=np.int64)
    forest_trees = np.cumsum([0] + [f.n_trees for f in forests]).astype(np.int64)
    norms = np.array([_constant_norm(v, f.leaf_start) for v, f in zip(per_forest, forests)], dtype=np.float32)
    return (
        *_walk_arrays(forests),
        *masks,
        *_leaf_groups(masks[-2], masks[-1], values, np.repeat(derived, [f.n_trees for f in forests])),
        *_vote_words(*masks[1:], values, forest_trees, np.where(np.isnan(norms), -1, derived)),
        derived,
        values,
        forest_trees,
        norms,
    )


def _derived_class(values: np.ndarray) -> int:
    """The class whose sum the kernel derives instead of adding it up, or -1: where every leaf gives exactly 1 to
    one class and 0 to the others (ilastik's pure leaves), each tree adds exactly one 1, so a row's sums are whole
    numbers, exact in float32, and the one class's sum is the tree count less the others'. The class that most
    leaves give their vote to (the most group passes spared)."""
    if values.size == 0 or values.shape[1] < 2 or not np.isin(values, (0.0, 1.0)).all() \
            or not (values.sum(axis=1) == 1.0).all():
        return -1
    return int(np.argmax(values.sum(axis=0)))


def predict_columns(X: np.ndarray, packed: tuple[np.ndarray, ...], n_columns: int, combine: bool) -> np.ndarray:
    """(n, F) float32 features → (n, n_columns) float32: vigra's probabilities per forest, combined as ilastik
    does when `combine` (else the single forest's own). X is best a view of channels-first data (as
    `compute_features` gives it: read in place); other layouts are copied channels-first."""
    probs = np.empty((X.shape[0], n_columns), dtype=np.float32)
    _predict_kernel(np.ascontiguousarray(X.T), *packed, combine, probs)
    return probs


@njit(cache=True, nogil=True)
def _walk(flat, row_stride, start, m, feature, threshold, children, root, depth, n_splits, node, leaf):
    """leaf[r] for rows start..start+m-1 of the channels-first features `flat` (feature f of row i at
    f·row_stride + i): _LANES rows walk the tree in lock step for exactly its depth (leaves loop to
    themselves), a branch-free loop whose independent walks the CPU overlaps."""
    last = np.uint64(start + m - 1)
    for r0 in range(0, m, _LANES):
        for j in range(_LANES):
            node[j] = root
        for _ in range(depth):
            for j in range(_LANES):  # lanes beyond m walk the last row again; their leaves go unused
                a = node[j]
                x = flat[np.uint64(feature[a]) * np.uint64(row_stride) + min(np.uint64(start + r0 + j), last)]
                node[j] = children[np.uint64(2 * a) + np.uint64(x >= threshold[a])]
        for j in range(min(_LANES, m - r0)):
            leaf[r0 + j] = np.int64(node[j]) - n_splits


@njit(cache=True, nogil=True, inline="always")
def _kept(x, threshold, mask, everything):
    """A split's effect on a row's reachable set: its mask where the row goes right, else no change."""
    return mask if x >= threshold else everything


@njit(cache=True, nogil=True)
def _reachable(Xt, start, m, feature, threshold, bits, first, stop, reachable):
    """QuickScorer for rows start..start+m-1 of a tree of at most 64 leaves numbered left to right: every
    split whose test sends a row right removes its left subtree's leaves from the row's reachable set, and
    the exit leaf is the lowest bit left. Each split is one vectorised pass over a feature's row; the sets
    are `reachable`'s unsigned type (uint32 for trees of at most 32 leaves: twice the rows per vector)."""
    word = reachable.dtype.type
    everything = word(~word(0))
    reachable[:m] = everything
    s = first
    while s + 4 <= stop:  # four splits per pass: a quarter of the loads and stores of the sets
        a, b = Xt[feature[s], start:start + m], Xt[feature[s + 1], start:start + m]
        c, d = Xt[feature[s + 2], start:start + m], Xt[feature[s + 3], start:start + m]
        ta, tb, tc, td = threshold[s], threshold[s + 1], threshold[s + 2], threshold[s + 3]
        ma, mb, mc, md = word(bits[s]), word(bits[s + 1]), word(bits[s + 2]), word(bits[s + 3])
        for r in range(m):
            v = word(reachable[r] & _kept(a[r], ta, ma, everything))
            v = word(v & _kept(b[r], tb, mb, everything))
            v = word(v & _kept(c[r], tc, mc, everything))
            reachable[r] = word(v & _kept(d[r], td, md, everything))
        s += 4
    for s in range(s, stop):
        row = Xt[feature[s], start:start + m]
        th = threshold[s]
        mask = word(bits[s])
        for r in range(m):
            reachable[r] &= _kept(row[r], th, mask, everything)


@njit(cache=True, nogil=True)
def _lowest_leaves(reachable, m, leaves, leaf):
    """leaf[r] = leaves[index of the lowest set bit of reachable[r]] (de Bruijn multiplication)."""
    for r in range(m):
        lowest = reachable[r] & (~reachable[r] + np.uint64(1))
        leaf[r] = leaves[_DEBRUIJN_POSITION[(lowest * _DEBRUIJN) >> np.uint64(58)]]


@njit(cache=True, nogil=True)
def _add_leaves(leaf, m, leaf_values, acc, weight, track_weight):
    """vigra's accumulation of one tree: acc[c, r] += float32(value), weight[r] += value (if `track_weight`),
    class by class."""
    for r in range(m):
        for c in range(leaf_values.shape[1]):
            v = leaf_values[leaf[r], c]
            acc[c, r] += np.float32(v)
            if track_weight:
                weight[r] += v


@njit(cache=True, nogil=True)
def _add_exit_groups(reachable, m, g_class, g_value, g_bits, first, stop, acc, weight, track_weight):
    """_lowest_leaves + _add_leaves for a tree whose leaves fall into few groups, vectorised: the leaves that
    give class c the same value v form a group (its bits in the tree's left-to-right order), and each group
    adds v to class c where the exit leaf is one of its own and zero elsewhere (x + 0 == x; a row meets one
    group per class, class by class, so the sums are vigra's, bit for bit). Values of 0 form no group; the
    weights (only if `track_weight`) get them as they are exact."""
    word = reachable.dtype.type
    for r in range(m):
        reachable[r] &= ~reachable[r] + word(1)  # the exit leaf's bit alone
    for g in range(first, stop):
        c = g_class[g]
        v = g_value[g]
        v32 = np.float32(v)
        members = word(g_bits[g])
        row_acc = acc[c]
        # word(...) of the test: numba widens `&` to 64 bits, and LLVM then tests 64-bit lanes (half the rows
        # per vector, and a pack); cast back, the test stays in the word's width (2x faster)
        if track_weight:  # two loops: with the test inside, LLVM keeps it there (a third slower)
            for r in range(m):
                hit = word(reachable[r] & members) != word(0)
                row_acc[r] += v32 if hit else np.float32(0)
                weight[r] += v if hit else 0.0
        else:
            for r in range(m):
                row_acc[r] += v32 if word(reachable[r] & members) != word(0) else np.float32(0)


@njit(cache=True, nogil=True, inline="always")
def _popcount32(x):
    """Set bits of a uint32: the SWAR form LLVM turns into its popcount (one instruction where the CPU has it;
    every step cast back to 32 bits keeps the vectors 32-bit lanes wide)."""
    word = np.uint32
    x = word(x - word(word(x >> word(1)) & word(0x55555555)))
    x = word(word(x & word(0x33333333)) + word(word(x >> word(2)) & word(0x33333333)))
    x = word(word(x + word(x >> word(4))) & word(0x0F0F0F0F))
    return word(word(x * word(0x01010101)) >> word(24))


@njit(cache=True, nogil=True)
def _add_word_votes(reachable, m, low, votes, acc):
    """The votes of a word of trees of pure leaves (see _vote_words): each tree's exit leaf is the lowest bit
    left in its field (`low` has each field's lowest bit; no field is ever empty, so subtracting it borrows
    within fields only), and class c gets as many votes as exit leaves fall in votes[c]. The counts are whole
    numbers, exact in float32, whatever the order of their additions."""
    word = reachable.dtype.type
    low = word(low)
    for r in range(m):
        reachable[r] &= ~word(reachable[r] - low)
    for c in range(votes.shape[0]):
        members = word(votes[c])
        if members == word(0):
            continue
        row_acc = acc[c]
        for r in range(m):
            row_acc[r] += np.float32(_popcount32(word(reachable[r] & members)))


@njit(cache=True, nogil=True)
def _add_shares(sums, m, weight, norm, trees, combine, result):
    """One class of one forest: its probability sums / norm, vigra's, into `result` (times the forest's tree count
    and added, if `combine`); where `norm` is NaN, each row's own weight rounded to float32 instead. Each case its
    own loop over the rows (vectorised)."""
    if combine:
        if np.isnan(norm):
            for r in range(m):
                result[r] = result[r] + (sums[r] / np.float32(weight[r])) * trees
        else:
            for r in range(m):
                result[r] = result[r] + (sums[r] / norm) * trees
    elif np.isnan(norm):
        for r in range(m):
            result[r] = sums[r] / np.float32(weight[r])
    else:
        for r in range(m):
            result[r] = sums[r] / norm


@njit(cache=True, nogil=True)
def _predict_kernel(Xt, feature, threshold, children, roots, depths, walked, m_feature, m_threshold, m_bits, m_start,
                    m_leaves, m_leaf_start, grouped, g_start, g_class, g_value, g_bits, in_word, forest_words,
                    word_start, word_feature, word_threshold, word_bits, word_low, word_votes, derived, leaf_values,
                    forest_trees, norms, combine, out):
    """Forest probabilities into `out` (float32 (n, C), every value written) for the C-contiguous features Xt (F, n):
    vigra's per forest, then ilastik's tree-count weighted mean of the forests if `combine` (else `out`
    is the single forest's own result). Rows go _BATCH_ROWS at a time through every tree (their features
    stay in L2); each tree finds its exit leaves by walking (`walked`, more than 64 leaves) or by masks, and
    adds their values; trees packed in words (`in_word`) count their votes a word at a time. A forest whose
    `norms` entry is not NaN divides every row by it (see _constant_norm)."""
    n_features, n = Xt.shape
    n_classes = leaf_values.shape[1]
    n_splits = feature.shape[0] - leaf_values.shape[0]
    n_forests = forest_trees.shape[0] - 1
    total_trees = np.float32(forest_trees[n_forests])
    acc = np.empty((n_classes, _BATCH_ROWS), dtype=np.float32)
    res = np.empty((n_classes, _BATCH_ROWS), dtype=np.float32)  # the rows' probabilities, class by class
    weight = np.empty(_BATCH_ROWS, dtype=np.float64)
    has_nan = np.empty(_BATCH_ROWS, dtype=np.uint8)
    flat = Xt.ravel()
    node = np.empty(_LANES, dtype=np.uint32)
    leaf = np.empty(_BATCH_ROWS, dtype=np.int64)
    reachable = np.empty(_BATCH_ROWS, dtype=np.uint64)
    few = np.empty(_BATCH_ROWS, dtype=np.uint32)  # the reachable sets of trees with few leaves
    for start in range(0, n, _BATCH_ROWS):
        m = min(_BATCH_ROWS, n - start)
        has_nan[:m] = 0
        res[:, :m] = 0
        for f in range(n_features):  # also brings the rows' features into the cache for the trees
            row = Xt[f, start:start + m]
            for r in range(m):
                has_nan[r] |= row[r] != row[r]
        for f in range(n_forests):
            acc[:, :m] = 0
            weight[:m] = 0
            track_weight = np.isnan(norms[f])
            for w in range(forest_words[f], forest_words[f + 1]):
                _reachable(Xt, start, m, word_feature, word_threshold, word_bits, word_start[w], word_start[w + 1], few)
                _add_word_votes(few, m, word_low[w], word_votes[w], acc)
            for t in range(forest_trees[f], forest_trees[f + 1]):
                if in_word[t]:
                    continue
                leaves = m_leaves[m_leaf_start[t]:m_leaf_start[t + 1]]
                if walked[t]:
                    _walk(flat, n, start, m, feature, threshold, children, np.uint32(roots[t]), depths[t], n_splits,
                          node, leaf)
                    _add_leaves(leaf, m, leaf_values, acc, weight, track_weight)
                    continue
                if grouped[t]:
                    _reachable(Xt, start, m, m_feature, m_threshold, m_bits, m_start[t], m_start[t + 1], few)
                    _add_exit_groups(few, m, g_class, g_value, g_bits, g_start[t], g_start[t + 1], acc, weight,
                                     track_weight)
                else:
                    _reachable(Xt, start, m, m_feature, m_threshold, m_bits, m_start[t], m_start[t + 1], reachable)
                    _lowest_leaves(reachable, m, leaves, leaf)
                    _add_leaves(leaf, m, leaf_values, acc, weight, track_weight)
            trees_f = np.float32(forest_trees[f + 1] - forest_trees[f])
            d = derived[f]
            if d >= 0:  # whole numbers: the tree count less the other classes' sums is this class's, exactly (in
                total = acc[d]  # any order of the subtractions)
                total[:m] = trees_f
                for c in range(n_classes):
                    if c != d:
                        sums = acc[c]
                        for r in range(m):
                            total[r] -= sums[r]
            for c in range(n_classes):
                _add_shares(acc[c], m, weight, norms[f], trees_f, combine, res[c])
        if combine:
            for c in range(n_classes):
                result = res[c]
                for r in range(m):
                    result[r] /= total_trees
        for r in range(m):
            for c in range(n_classes):  # rows with NaN features stay 0
                out[start + r, c] = 0 if has_nan[r] else res[c, r]


def _constant_norm(values: np.ndarray, leaf_start: np.ndarray) -> float:
    """float32(total weight) of a row when it provably does not depend on the row, else NaN.

    vigra sums every leaf value a row meets in double (tree by tree, class by class) and divides by that
    sum rounded to float32. When each tree's leaves sum to nearly the same total (unweighted forests: 1),
    the exact sum lies in [Σ min, Σ max] over the trees, the double sum within n·2⁻⁵³·Σ|v| of it (plus
    margin); if both ends round to the same float32, so does every row's sum, and the kernel skips it."""
    n_trees = len(leaf_start) - 1
    if n_trees < 1 or not np.isfinite(values).all():
        return math.nan
    starts = leaf_start[:-1]
    sums = values.sum(axis=1)
    abs_total = float(np.maximum.reduceat(np.abs(values).sum(axis=1), starts).sum())
    slack = 4.0 * (n_trees * values.shape[1] + values.shape[1] + 4) * 2.0 ** -53 * abs_total
    lo = math.fsum(np.minimum.reduceat(sums, starts)) - slack
    hi = math.fsum(np.maximum.reduceat(sums, starts)) + slack
    return float(np.float32(lo)) if np.float32(lo) == np.float32(hi) else math.nan


def _leaf_groups(leaves: np.ndarray, leaf_start: np.ndarray, values: np.ndarray,
                 derived: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per masked tree (leaves left to right: leaves[leaf_start[t]:leaf_start[t + 1]]), the groups of leaves that
    give a class the same nonzero value, class by class: whether the tree adds by groups (at most 32 leaves
    and _FEW_LEAVES groups per class), then g_start[t]:g_start[t + 1] into each group's class, value and bits.
    The tree's `derived` class (see _derived_class) gets no groups."""
    grouped: list[bool] = []
    starts: list[int] = [0]
    classes: list[int] = []
    group_values: list[float] = []
    group_bits: list[int] = []
    for t in range(len(leaf_start) - 1):
        order = leaves[leaf_start[t]:leaf_start[t + 1]]
        groups = [(c, v, sum(1 << k for k, leaf in enumerate(order) if values[leaf, c] == v))
                  for c in range(values.shape[1]) for v in sorted(set(values[order, c].tolist()) - {0.0})]
        per_class = np.bincount([c for c, _, _ in groups], minlength=values.shape[1])
        grouped.append(0 < len(order) <= 32 and bool(per_class.max(initial=0) <= _FEW_LEAVES))
        if grouped[-1]:
            for c, v, bits in groups:
                if c == derived[t]:
                    continue
                classes.append(c)
                group_values.append(v)
                group_bits.append(bits)
        starts.append(len(classes))
    return (np.array(grouped, dtype=np.bool_), np.array(starts, dtype=np.int64), np.array(classes, dtype=np.int64),
            np.array(group_values, dtype=np.float64), np.array(group_bits, dtype=np.uint64))


def _float32_threshold(threshold: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 threshold: for float32 x, x < t exactly when x < that value."""
    t32 = threshold.astype(np.float32)
    below = t32.astype(np.float64) < threshold
    t32[below] = np.nextafter(t32[below], np.float32(np.inf))
    return t32


def _walk_arrays(forests: Sequence[VigraForest]) -> tuple[np.ndarray, ...]:
    """All forests as one node table for the kernel: split nodes (indices shifted per forest), then one node
    per leaf that loops to itself (feature 0, threshold NaN: never x >= NaN). Returns feature (int32),
    float32 threshold, children (int32, flat pairs), roots and depths (splits on the longest path) per tree."""
    split_shift = np.cumsum([0] + [len(f.feature) for f in forests])
    leaf_shift = np.cumsum([0] + [len(f.leaf_weights) for f in forests])
    n_splits, n_leaves = int(split_shift[-1]), int(leaf_shift[-1])

    def as_nodes(arrays) -> np.ndarray:  # forest-local child codes → node indices
        return np.concatenate([np.where(a >= 0, a + s, n_splits + l - 1 - a)
                               for a, s, l in zip(arrays, split_shift, leaf_shift)]).astype(np.int64)

    leaves = np.arange(n_splits, n_splits + n_leaves)
    children = np.concatenate([as_nodes([f.children for f in forests]).reshape(-1, 2),
                               np.stack([leaves, leaves], axis=1)])
    roots = as_nodes([f.roots() for f in forests])
    depth = np.zeros(n_splits + n_leaves, dtype=np.int64)
    frontier = roots[roots < n_splits]
    while frontier.size:  # level by level from the roots (trees are acyclic: read_vigra_forest checks)
        below = children[frontier].ravel()
        depth[below] = np.repeat(depth[frontier] + 1, 2)
        frontier = below[below < n_splits]
    tree_of_leaf = np.concatenate([np.repeat(np.arange(f.n_trees) + t0, np.diff(f.leaf_start))
                                   for f, t0 in zip(forests, np.cumsum([0] + [f.n_trees for f in forests]))])
    depths = np.zeros(len(roots), dtype=np.int64)
    np.maximum.at(depths, tree_of_leaf, depth[n_splits:])
    feature = np.concatenate([f.feature for f in forests] + [np.zeros(n_leaves)]).astype(np.int32)
    threshold = np.concatenate([_float32_threshold(np.concatenate([f.threshold for f in forests])),
                                np.full(n_leaves, np.nan, dtype=np.float32)])
    return feature, threshold, children.astype(np.int32).ravel(), roots, depths


def _left_to_right(children: np.ndarray, root: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    """A tree's leaves left to right (forest-local leaf indices) and, per split, the positions lo:hi of its
    left subtree's leaves in that order."""
    order: list[int] = []
    tests: list[tuple[int, int, int]] = []

    def visit(code: int) -> tuple[int, int]:
        if code < 0:
            order.append(-1 - code)
            return len(order) - 1, len(order)
        lo, mid = visit(int(children[code, 0]))
        _, hi = visit(int(children[code, 1]))
        tests.append((code, lo, mid))
        return lo, hi

    visit(root)
    return order, tests


def _mask_arrays(forests: Sequence[VigraForest]) -> tuple[np.ndarray, ...]:
    """The kernel's tables for finding exit leaves by masks: per split its feature, float32 threshold and the
    bits of the leaves that stay reachable when the row goes right; per tree whether it is walked instead
    (more than 64 leaves), its splits m_start[t]:m_start[t + 1] and its leaves left to right (global
    leaf indices, m_leaf_start[t]:m_leaf_start[t + 1])."""
    feature: list[int] = []
    threshold: list[float] = []
    bits: list[int] = []
    walked: list[bool] = []
    starts: list[int] = []
    leaves: list[int] = []
    leaf_starts: list[int] = []
    leaf_shift = 0
    for forest in forests:
        for t, root in enumerate(forest.roots()):
            starts.append(len(feature))
            leaf_starts.append(len(leaves))
            walked.append(bool(forest.leaf_start[t + 1] - forest.leaf_start[t] > 64))
            if walked[-1]:
                continue
            order, tests = _left_to_right(forest.children, int(root))
            for split, lo, hi in tests:
                feature.append(int(forest.feature[split]))
                threshold.append(float(forest.threshold[split]))
                bits.append(_ALL_LEAVES_INT & ~(((1 << (hi - lo)) - 1) << lo))
            leaves.extend(leaf_shift + leaf for leaf in order)
        leaf_shift += len(forest.leaf_weights)
    starts.append(len(feature))
    leaf_starts.append(len(leaves))
    return (np.array(walked, dtype=np.bool_), np.array(feature, dtype=np.int32),
            _float32_threshold(np.array(threshold, dtype=np.float64)), np.array(bits, dtype=np.uint64),
            np.array(starts, dtype=np.int64), np.array(leaves, dtype=np.int64), np.array(leaf_starts, dtype=np.int64))


def _vote_words(m_feature: np.ndarray, m_threshold: np.ndarray, m_bits: np.ndarray, m_start: np.ndarray,
                leaves: np.ndarray, leaf_start: np.ndarray, values: np.ndarray, forest_trees: np.ndarray,
                derived: np.ndarray) -> tuple[np.ndarray, ...]:
    """Trees of pure leaves packed into 32-bit words for _add_word_votes: in each forest whose `derived` class is
    set (pure leaves, one constant row norm), its trees of at most 32 leaves share words, each tree in its own
    field of bits (its leaves left to right). A word's trees are chosen to share split tests (the same feature
    and float32 threshold), and each test is made once per word with the masks of its trees combined. Returns
    per tree whether it is in a word; per forest its words forest_words[f]:forest_words[f + 1]; per word its
    tests word_start[w]:word_start[w + 1] (feature, threshold, mask), each field's lowest bit and per class
    the bits of the leaves that vote for it (none for the derived class)."""
    in_word = np.zeros(len(m_start) - 1, dtype=np.bool_)
    forest_words, starts, lows, votes = [0], [0], [], []
    features: list[int] = []
    thresholds: list[float] = []
    masks: list[int] = []

    def tests_of(t: int) -> dict[tuple[int, float], int]:  # a tree's tests → the mask of their left subtrees
        tests: dict[tuple[int, float], int] = {}
        for s in range(m_start[t], m_start[t + 1]):
            key = (int(m_feature[s]), float(m_threshold[s]))
            tests[key] = tests.get(key, 0) | (_ALL_LEAVES_INT & ~int(m_bits[s]))
        return tests

    for f in range(len(forest_trees) - 1):
        if derived[f] >= 0:
            pending = {t: tests_of(t) for t in range(forest_trees[f], forest_trees[f + 1])
                       if 0 < leaf_start[t + 1] - leaf_start[t] <= 32}
            while pending:
                word: dict[tuple[int, float], int] = {}
                width, low, word_votes = 0, 0, [0] * values.shape[1]
                while True:  # the tree that fits and shares the most tests (first: the forest's first left)
                    fits = [t for t in pending if width + leaf_start[t + 1] - leaf_start[t] <= 32]
                    if not fits:
                        break
                    t = max(fits, key=lambda t: (len(pending[t].keys() & word.keys()), -t))
                    for key, left in pending.pop(t).items():
                        word[key] = word.get(key, 0) | (left << width)
                    for k, leaf in enumerate(leaves[leaf_start[t]:leaf_start[t + 1]]):
                        c = int(np.argmax(values[leaf]))
                        if c != derived[f]:
                            word_votes[c] |= 1 << (width + k)
                    low |= 1 << width
                    width += int(leaf_start[t + 1] - leaf_start[t])
                    in_word[t] = True
                for (feature, threshold), left in word.items():
                    features.append(feature)
                    thresholds.append(threshold)
                    masks.append(0xFFFFFFFF & ~left)
                starts.append(len(features))
                lows.append(low)
                votes.append(word_votes)
        forest_words.append(len(lows))
    return (in_word, np.array(forest_words, dtype=np.int64), np.array(starts, dtype=np.int64),
            np.array(features, dtype=np.int32), np.array(thresholds, dtype=np.float32),
            np.array(masks, dtype=np.uint64), np.array(lows, dtype=np.uint64),
            np.array(votes, dtype=np.uint64).reshape(len(lows), values.shape[1]))
