"""vigra forests: exact agreement with vigra's own predictions, ilastik's combination, sklearn conversion, I/O."""

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeClassifier

from hpc_ilastik.errors import UserError
from hpc_ilastik.forest.ensemble import ForestEnsemble, read_classifier, write_classifier
from hpc_ilastik.forest.predict import _constant_norm, _derived_class, _leaf_groups, _mask_arrays, pack_forests
from hpc_ilastik.forest.regression import from_pickled
from hpc_ilastik.forest.vigra import LEAF_NODE, from_sklearn, read_vigra_forest, write_vigra_forest
from hpc_ilastik.io.pickles import read_pickle

# Written by vigra itself (see the file's `provenance` attribute): forests, test features, vigra's probabilities.
REFERENCE = Path(__file__).parent / "data" / "vigra_rf_reference.h5"
CASES = ["case0", "case1", "case2"]  # labels {1,3,5} / {1,2} / {1,2,3,4}; 7 / 12 / 20 features


@pytest.fixture(scope="module")
def reference():
    with h5py.File(REFERENCE, "r") as f:
        yield f


def _forests(case_group) -> list:
    return [read_vigra_forest(case_group[f"Forest{k:04d}"]) for k in range(2)]


def _ilastik_combination(probs: list[np.ndarray], forests: list, n_channels: int) -> np.ndarray:
    """ilastik: Σ probs_f · treeCount_f / total trees in float32, column i → channel labels[i] - 1."""
    total = np.float32(sum(f.n_trees for f in forests))
    combined = sum(p * np.float32(f.n_trees) for p, f in zip(probs, forests)) / total
    full = np.zeros((len(combined), n_channels), dtype=np.float32)
    full[:, forests[0].labels.astype(int) - 1] = combined
    return full


@pytest.mark.parametrize("case", CASES)
def test_each_forest_matches_vigra_bit_for_bit(reference, case):
    X = reference[case]["Xtest"][()]
    for k, forest in enumerate(_forests(reference[case])):
        expected = reference[case][f"vigra_probs_{k}"][()]
        got = forest.predict_proba(X)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
        assert np.isnan(X[5]).any() and not got[5].any()  # vigra: a row with NaN gets all zeros


@pytest.mark.parametrize("case", CASES)
def test_ilastik_combination_and_missing_classes(reference, case):
    group = reference[case]
    forests = _forests(group)
    X = group["Xtest"][()]
    n_channels = int(forests[0].labels.max())  # case0: labels 1,3,5 → channels 2 and 4 must stay empty
    ensemble = ForestEnsemble(forests, known_labels=forests[0].labels.astype(np.int64))
    got = ensemble.predict_proba(X, n_channels)
    vigra_probs = [group[f"vigra_probs_{k}"][()] for k in range(2)]
    np.testing.assert_array_equal(got, _ilastik_combination(vigra_probs, forests, n_channels))
    missing = np.setdiff1d(np.arange(1, n_channels + 1), forests[0].labels)
    assert not got[:, missing - 1].any()


def test_weighted_forest_matches_vigra(reference):
    group = reference["case0"]
    weighted = read_vigra_forest(group["Weighted0000"])
    assert weighted.predict_weighted
    X = group["Xtest"][()]
    got = weighted.predict_proba(X)
    np.testing.assert_array_equal(got, group["vigra_probs_weighted"][()])
    assert np.abs(got - group["vigra_probs_0"][()]).max() > 0.1  # weighting changes the result


def test_nan_rows_are_zero_and_leave_other_rows_alone(reference):
    group = reference["case2"]
    forests = _forests(group)
    ensemble = ForestEnsemble(forests, known_labels=forests[0].labels.astype(np.int64))
    X = group["Xtest"][()].copy()
    X[5] = 0.0  # the reference's own NaN row, made finite
    clean = ensemble.predict_proba(X, 4)
    rows = np.array([0, 17, 18, 250, 499])
    X[rows, np.array([0, 19, 7, 3, 11])] = np.nan  # any column, used by a split or not
    got = ensemble.predict_proba(X, 4)
    assert not got[rows].any()
    others = np.setdiff1d(np.arange(len(X)), rows)
    np.testing.assert_array_equal(got[others], clean[others])
    assert np.allclose(clean.sum(axis=1), 1.0, atol=1e-6)


def _training_data(seed: int, n: int = 400, n_features: int = 5, labels=(1, 2, 3)):
    """Integer-valued float32 features: sklearn's midpoint thresholds are then exact float32 values."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-6, 7, size=(n, n_features)).astype(np.float32)
    score = X[:, : len(labels)] + rng.normal(scale=2.0, size=(n, len(labels)))
    return X, np.asarray(labels)[np.argmax(score, axis=1)]


def _threshold_probes(trees, X: np.ndarray) -> np.ndarray:
    """Rows whose split feature sits exactly at, just below and just above each split threshold."""
    rows = []
    for tree in trees:
        t = tree.tree_
        for node in np.flatnonzero(t.children_left >= 0):
            thr = np.float32(t.threshold[node])
            for value in (thr, np.nextafter(thr, np.float32(-np.inf)), np.nextafter(thr, np.float32(np.inf))):
                row = X[node % len(X)].copy()
                row[t.feature[node]] = value
                rows.append(row)
    return np.concatenate([X, np.array(rows, dtype=np.float32)])


def test_sklearn_trees_convert_exactly_including_values_at_thresholds():
    X, y = _training_data(0)
    trees = [DecisionTreeClassifier(max_features="sqrt", random_state=i).fit(X[i::2], y[i::2]) for i in range(4)]
    probes = _threshold_probes(trees, X)
    thresholds = np.concatenate([tr.tree_.threshold[tr.tree_.children_left >= 0] for tr in trees])
    np.testing.assert_array_equal(thresholds.astype(np.float32), thresholds)  # so probes hit x == t exactly
    for tree in trees:
        forest = from_sklearn([tree])
        np.testing.assert_array_equal(forest.labels, [1, 2, 3])
        np.testing.assert_array_equal(forest.predict_proba(probes), tree.predict_proba(probes).astype(np.float32))


def test_sklearn_random_forest_converts_and_averages_its_trees():
    X, y = _training_data(1, labels=(2, 4))
    rf = RandomForestClassifier(n_estimators=9, random_state=0).fit(X, y)
    forest = from_sklearn(rf)
    assert forest.n_trees == 9 and forest.n_features == 5 and not forest.predict_weighted
    probes = _threshold_probes(rf.estimators_, X)
    np.testing.assert_allclose(forest.predict_proba(probes), rf.predict_proba(probes), rtol=0, atol=1e-6)
    # classes 2 and 4 of a project with 4 labels: channels 1 and 3 stay empty
    ensemble = ForestEnsemble([forest], known_labels=np.array([2, 4]))
    full = ensemble.predict_proba(probes, 4)
    assert not full[:, [0, 2]].any()
    np.testing.assert_allclose(full[:, [1, 3]], rf.predict_proba(probes), rtol=0, atol=1e-6)
    weighted = from_sklearn(rf, predict_weighted=True)
    assert np.abs(weighted.predict_proba(probes) - forest.predict_proba(probes)).max() > 0


def _vigra_by_hand(forest, X: np.ndarray) -> np.ndarray:
    """vigra's predictProbabilities written out row by row: walk each tree, add float32(value) per class
    and the value to a double total, divide by the total rounded to float32; NaN rows give zeros."""
    out = np.zeros((len(X), len(forest.labels)), dtype=np.float32)
    roots = forest.roots()
    for i, row in enumerate(X):
        if np.isnan(row).any():
            continue
        total = 0.0
        for root in roots:
            node = int(root)
            while node >= 0:
                node = int(forest.children[node, int(row[forest.feature[node]] >= forest.threshold[node])])
            leaf = -1 - node
            for c, p in enumerate(forest.leaf_probs[leaf]):
                value = float(p) * (float(forest.leaf_weights[leaf]) if forest.predict_weighted else 1.0)
                out[i, c] += np.float32(value)
                total += value
        out[i] /= np.float32(total)
    return out


@pytest.mark.parametrize("max_leaf_nodes", [6, 40, None])  # the kernel's three paths: <= 8, <= 64, more leaves
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_paths_equal_vigras_algorithm_bit_for_bit(max_leaf_nodes, weighted):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    y = np.where(X[:, 0] + rng.normal(scale=1.5, size=len(X)) > 0, 1, 2)  # noisy: unlimited trees grow big
    rf = RandomForestClassifier(n_estimators=7, max_leaf_nodes=max_leaf_nodes, random_state=0).fit(X, y)
    forest = from_sklearn(rf, predict_weighted=weighted)
    leaves = np.diff(forest.leaf_start)
    assert leaves.max() <= 8 if max_leaf_nodes == 6 else (8 < leaves.min() and leaves.max() <= 64
                                                           if max_leaf_nodes else leaves.min() > 64)
    probes = np.concatenate([_threshold_probes(rf.estimators_, X[:300]), X[:5] * np.nan])
    np.testing.assert_array_equal(forest.predict_proba(probes), _vigra_by_hand(forest, probes))


@pytest.mark.parametrize("weighted", [False, True])
def test_trees_of_pure_leaves_add_by_groups_as_vigra(weighted):
    # fully grown trees (pure leaves, as ilastik's) of 9-32 leaves: one select pass per class, not per leaf
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    y = 1 + (X[:, 0] > 0) + (X[:, 1] + 0.15 * rng.normal(size=len(X)) > 0.5)
    rf = RandomForestClassifier(n_estimators=7, random_state=0).fit(X, y)
    forest = from_sklearn(rf, predict_weighted=weighted)
    leaves = np.diff(forest.leaf_start)
    masks = _mask_arrays([forest])
    derived = _derived_class(forest.leaf_probs * (forest.leaf_weights[:, None] if weighted else 1.0))
    grouped, group_start = _leaf_groups(masks[-2], masks[-1], forest.leaf_probs, np.full(7, derived))[:2]
    assert 8 < leaves.min() and leaves.max() <= 32 and grouped.all()
    # three classes, pure leaves: a group per class at most, and unweighted one class's sums are derived from
    # the others' (each tree gives exactly one 1)
    assert (derived < 0) == weighted and (np.diff(group_start) <= (3 if weighted else 2)).all()
    probes = np.concatenate([_threshold_probes(rf.estimators_, X[:200]), X[:5] * np.nan])
    np.testing.assert_array_equal(forest.predict_proba(probes), _vigra_by_hand(forest, probes))


def test_trees_of_pure_leaves_share_words_and_count_votes_as_vigra():
    # fully grown trees (pure leaves) of 3-7 leaves, as ilastik's, three classes, and a tree of 33+ leaves among
    # them: the small ones share 32-bit words (their votes counted a word at a time), the big one goes alone
    rng = np.random.default_rng(11)
    X = rng.normal(size=(600, 5)).astype(np.float32)

    def small(n_leaves: int, feature: int) -> DecisionTreeClassifier:  # n_leaves intervals of one feature
        y = 1 + np.digitize(X[:, feature], np.linspace(-1, 1, n_leaves - 1)) % 3
        return DecisionTreeClassifier(random_state=0).fit(X, y)

    noisy = np.where(rng.random(len(X)) < 0.3, rng.integers(1, 4, len(X)), 1 + (X[:, 0] > 0) + (X[:, 1] > 0))
    trees = [small(n, k % 5) for k, n in enumerate([3, 4, 5, 6, 7, 3, 4, 5, 6])]
    trees += [DecisionTreeClassifier(random_state=0).fit(X, noisy)]
    trees += [small(n, k % 5) for k, n in enumerate([7, 6, 5, 4, 3, 7, 6, 5])]
    forest = from_sklearn(trees)
    leaves = np.diff(forest.leaf_start)
    assert leaves[9] > 32 and list(leaves[:9]) + list(leaves[10:]) == [3, 4, 5, 6, 7, 3, 4, 5, 6, 7, 6, 5, 4, 3, 7,
                                                                         6, 5]
    in_word, forest_words, word_start, feature, threshold, _, low = pack_forests([forest])[17:24]
    np.testing.assert_array_equal(in_word, leaves <= 32)
    # 87 leaves in three words (one field per tree); trees that share tests share a word, which makes each test
    # once: the small trees' 69 splits are 26 distinct tests, and the words make 32 (here; at most 35 allowed)
    assert list(forest_words) == [0, 3] and sum(bin(int(w)).count("1") for w in low) == 17
    tests = list(zip(feature.tolist(), threshold.tolist()))
    assert all(len(set(tests[a:b])) == b - a for a, b in zip(word_start, word_start[1:]))
    assert sum(leaves[leaves <= 32] - 1) == 69 and len(set(tests)) == 26 and len(tests) <= 35
    probes = np.concatenate([_threshold_probes(trees, X[:150]), X[:5] * np.nan])
    np.testing.assert_array_equal(forest.predict_proba(probes), _vigra_by_hand(forest, probes))


def test_constant_normaliser_only_where_every_row_rounds_to_it(reference):
    forest = _forests(reference["case2"])[0]
    assert _constant_norm(forest.leaf_probs, forest.leaf_start) == forest.n_trees
    weighted = read_vigra_forest(reference["case0"]["Weighted0000"])
    assert np.isnan(_constant_norm(weighted.leaf_probs * weighted.leaf_weights[:, None], weighted.leaf_start))
    # leaves summing to 1 and to 1 + 2^-21: 100 trees' totals straddle float32's rounding boundary at 100
    leaf_start = np.arange(0, 201, 2)
    values = np.tile([[0.5, 0.5], [0.5, 0.5 + 2.0 ** -21]], (100, 1))
    assert np.float32(100.0) != np.float32(100 + 100 * 2.0 ** -21)
    assert np.isnan(_constant_norm(values, leaf_start))
    assert _constant_norm(values[::2].repeat(2, axis=0), leaf_start) == 100.0
    assert np.isnan(_constant_norm(np.full((4, 2), np.nan), np.array([0, 2, 4])))


def test_sklearn_labels_must_be_label_values():
    X, _ = _training_data(2)
    with pytest.raises(ValueError, match="positive integers"):
        from_sklearn([DecisionTreeClassifier().fit(X, np.arange(len(X)) % 2)])


def test_ensemble_rejects_mismatched_inputs(reference):
    forests = _forests(reference["case0"])
    ensemble = ForestEnsemble(forests, known_labels=np.array([1, 3, 5]))
    X = reference["case0"]["Xtest"][()]
    with pytest.raises(UserError, match="expects 7 feature channels"):
        ensemble.predict_proba(X[:, :6], 5)
    with pytest.raises(UserError, match="only 2 labels"):
        ensemble.predict_proba(X, 2)
    with pytest.raises(UserError, match="known labels"):
        ForestEnsemble(forests, known_labels=np.array([1, 3])).predict_proba(X, 5)
    with pytest.raises(UserError, match="disagree"):
        ForestEnsemble([forests[0], _forests(reference["case1"])[0]], known_labels=np.array([1, 3, 5]))


def test_write_read_round_trip_in_ilastik_layout(reference, tmp_path, fixtures_dir):
    forests = _forests(reference["case2"])
    ensemble = ForestEnsemble(forests, known_labels=np.array([1, 2, 3, 4]))
    names = [f"Gaussian Smoothing (σ={s})" for s in range(20)]
    path = tmp_path / "classifier.h5"
    with h5py.File(path, "w") as f:
        write_classifier(f.create_group("ClassifierForests"), ensemble, names)
    with h5py.File(path, "r") as f, h5py.File(fixtures_dir / "api" / "PixelClass.ilp", "r") as ilp:
        group = f["ClassifierForests"]
        stored = ilp["PixelClassification/ClassifierForests"]
        assert sorted(group) == ["Forest0000", "Forest0001", "feature_names", "known_labels", "pickled_type"]
        assert group["pickled_type"][()] == stored["pickled_type"][()]
        assert group["pickled_type"].dtype == stored["pickled_type"].dtype
        assert group["known_labels"].dtype == np.uint32
        assert [n.decode() for n in group["feature_names"][()]] == names
        forest0 = group["Forest0000"]
        assert forest0.attrs["vigra_random_forest_version"][0] == 0.1
        assert sorted(forest0["_options"]) == sorted(stored["Forest0000/_options"])
        assert sorted(forest0["_ext_param"]) == sorted(stored["Forest0000/_ext_param"])
        assert [k for k in forest0 if k.startswith("Tree_")] == [f"Tree_{k:02d}" for k in range(13)]
        assert forest0["Tree_00/topology"].dtype == np.int32 and forest0["Tree_00/parameters"].dtype == np.float64
        back = read_classifier(group)
    for original, again in zip(forests, back.forests):
        for name in ("feature", "threshold", "children", "leaf_probs", "leaf_weights", "split_start", "leaf_start",
                     "labels"):
            np.testing.assert_array_equal(getattr(again, name), getattr(original, name))
    X = reference["case2"]["Xtest"][()]
    np.testing.assert_array_equal(back.predict_proba(X, 4), ensemble.predict_proba(X, 4))


@pytest.mark.parametrize("case", CASES)
def test_rewritten_vigra_forest_keeps_vigras_metadata(reference, tmp_path, case):
    """write(read(vigra's file)) reproduces every vigra option and problem parameter, type for type."""
    for k in range(2):
        original = reference[case][f"Forest{k:04d}"]
        with h5py.File(tmp_path / f"{case}_{k}.h5", "w") as f:
            write_vigra_forest(f.create_group("forest"), read_vigra_forest(original))
            written = f["forest"]
            assert sorted(written) == sorted(original)
            np.testing.assert_array_equal(written.attrs["vigra_random_forest_version"],
                                          original.attrs["vigra_random_forest_version"])
            for sub in ("_options", "_ext_param"):
                for name in original[sub]:
                    assert written[sub][name].dtype == original[sub][name].dtype, name
                    np.testing.assert_array_equal(written[sub][name][()], original[sub][name][()], err_msg=name)


def test_written_forest_names_trees_by_count(tmp_path):
    X, y = _training_data(3)
    for n_trees, first, last in ((1, "Tree_0", "Tree_0"), (10, "Tree_0", "Tree_9"), (11, "Tree_00", "Tree_10")):
        forest = from_sklearn(RandomForestClassifier(n_estimators=n_trees, random_state=0).fit(X, y))
        with h5py.File(tmp_path / f"f{n_trees}.h5", "w") as f:
            write_vigra_forest(f.create_group("forest"), forest)
            trees = sorted(k for k in f["forest"] if k.startswith("Tree_"))
            assert (len(trees), trees[0], trees[-1]) == (n_trees, first, last)
            assert f["forest/_options/tree_count_"][0] == n_trees
            again = read_vigra_forest(f["forest"])
        np.testing.assert_array_equal(again.predict_proba(X), forest.predict_proba(X))


def _copy_classifier(src_group, dst_file, name="ClassifierForests"):
    src_group.file.copy(src_group, dst_file, name)
    return dst_file[name]


def test_classifier_types_from_pickled_type_text(fixtures_dir, tmp_path):
    with h5py.File(fixtures_dir / "api" / "PixelClass.ilp", "r") as ilp, h5py.File(tmp_path / "c.h5", "w") as f:
        stored = ilp["PixelClassification/ClassifierForests"]
        parallel = read_classifier(stored)
        assert (len(parallel.forests), parallel.n_trees, parallel.n_features) == (8, 100, 25)
        np.testing.assert_array_equal(parallel.known_labels, [1, 2])

        single = f.create_group("single")  # VigraRfLazyflowClassifier: one group `forest`, type as numpy.void
        ilp.copy(stored["Forest0000"], single, "forest")
        single["known_labels"] = np.array([1, 2], dtype=np.uint32)
        text = b"clazyflow.classifiers.vigraRfLazyflowClassifier\nVigraRfLazyflowClassifier\np0\n."
        single["pickled_type"] = np.void(text)
        one = read_classifier(single)
        assert len(one.forests) == 1 and one.n_trees == 13

        legacy = _copy_classifier(stored, f, "legacy")  # no pickled_type, no known_labels: parallel RF, labels 1..C
        del legacy["pickled_type"], legacy["known_labels"]
        np.testing.assert_array_equal(read_classifier(legacy).known_labels, [1, 2])

        sklearn_group = _copy_classifier(stored, f, "sklearn")
        del sklearn_group["pickled_type"]
        sklearn_group["pickled_type"] = (
            b"clazyflow.classifiers.sklearnLazyflowClassifier\nSklearnLazyflowClassifier\np0\n.")
        with pytest.raises(UserError, match="not supported.*unpickling"):
            read_classifier(sklearn_group)


def _damage(tmp_path, edit) -> UserError:
    with h5py.File(REFERENCE, "r") as ref, h5py.File(tmp_path / "bad.h5", "w") as f:
        ref.copy(ref["case1/Forest0000"], f, "forest")
        tree = f["forest/Tree_0"]
        topology = tree["topology"][()]
        edit(topology)
        del tree["topology"]
        tree["topology"] = topology
        with pytest.raises(UserError) as info:
            read_vigra_forest(f["forest"])
    return info.value


def test_damaged_trees_raise_user_errors(tmp_path):
    def child_out_of_range(t):
        t[4] = len(t) + 10

    def cycle(t):
        t[4] = 2  # child0 of the root is the root

    def shared_child(t):
        t[5] = t[4]  # both children of the root are one node

    def unknown_node_type(t):
        t[2] = 1  # hyperplane split

    def feature_out_of_range(t):
        t[6] = 99

    assert "outside" in str(_damage(tmp_path, child_out_of_range))
    assert "cycle" in str(_damage(tmp_path, cycle))
    assert "reached twice" in str(_damage(tmp_path, shared_child))
    assert "node type 0x1" in str(_damage(tmp_path, unknown_node_type))
    assert "feature column" in str(_damage(tmp_path, feature_out_of_range))


def test_single_leaf_trees(tmp_path):
    """A tree that is one leaf (all training samples of one class) predicts that leaf everywhere."""
    X, _ = _training_data(4)
    forest = from_sklearn([DecisionTreeClassifier().fit(X, np.full(len(X), 3))])
    assert len(forest.feature) == 0 and forest.roots()[0] == -1
    with h5py.File(tmp_path / "leaf.h5", "w") as f:
        write_vigra_forest(f.create_group("forest"), forest)
        np.testing.assert_array_equal(f["forest/Tree_0/topology"][()], [5, 1, LEAF_NODE, 0])
        again = read_vigra_forest(f["forest"])
    np.testing.assert_array_equal(again.predict_proba(X), np.ones((len(X), 1), np.float32))


def test_a_pickled_regression_forest_predicts_as_scikit_learn_and_a_damaged_one_is_refused():
    rng = np.random.default_rng(1)
    X, y = rng.random((300, 5), dtype=np.float32), rng.random(300)
    model = RandomForestRegressor(7, max_depth=12, random_state=0).fit(X, y)
    inert = read_pickle(pickle.dumps(model, protocol=3), "model")
    test = np.vstack([rng.random((1000, 5), dtype=np.float32), X])  # X itself: values on the thresholds
    assert np.array_equal(from_pickled(inert, "model").predict(test), model.predict(test))
    nodes = inert.state["estimators_"][0].state["tree_"].state["nodes"]
    nodes.state = nodes.state[:4] + (nodes.state[4][:-8],)  # a truncated node table
    with pytest.raises(ValueError, match="bytes for"):
        from_pickled(inert, "model")
    classifier = RandomForestClassifier(3).fit(X, y > 0.5)
    with pytest.raises(ValueError, match="not a scikit-learn RandomForestRegressor"):
        from_pickled(read_pickle(pickle.dumps(classifier, protocol=3), "classifier"), "classifier")
