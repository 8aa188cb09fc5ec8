"""Duplicate clusters: intervals that count a duplicated image once, proven by coverage simulations.

Each simulation draws 2,000 test sets from a known truth and counts how often the 95% interval
holds it: 94-96% is what a calibrated interval gives (the simulation's own error is about 0.5
points). Clustered sets copy a share of their images (pairs, triples) whose correctness is
strongly correlated, as copies of one picture are: intervals that ignore it cover about 90%.
"""

import shutil

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import builders
from audit import stats
from audit.checks.metrics import classification_metrics
from audit.clusters import (FAST_RATIO, Clusters, Exchangeable, _profiles, bootstrap_weighted, cluster_ids,
                            clustered_proportion, design_effect)
from audit.stats import proportion_ci

SETS = 2000


def resample_weights(strata, ids, n_boot, seed):
    """(k, N) multiplicities of every row: without keys every unit is its own group, stood for by all its rows."""
    ex = Exchangeable.of(None, strata, ids)
    assert np.array_equal(ex.rows, np.arange(len(strata)))
    return ex.resamples(n_boot, seed)


@pytest.mark.fast
@pytest.mark.parametrize("seed", range(3))
def test_cluster_ids_are_the_connected_components(seed):
    rng = np.random.default_rng(seed)
    n = 300
    i, j = rng.integers(0, n, 120), rng.integers(0, n, 120)
    ids = cluster_ids(n, i, j)
    k, want = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    assert ids.max() + 1 == k
    same = ids[:, None] == ids[None, :]
    assert np.array_equal(same, want[:, None] == want[None, :])
    assert ids[0] == 0 and np.all(np.diff(np.unique(ids, return_index=True)[1]) > 0)  # numbered by first row


@pytest.mark.fast
def test_a_chain_is_one_cluster_and_no_pairs_are_singletons():
    assert cluster_ids(6, np.array([4, 3, 2, 1]), np.array([5, 4, 3, 2])).tolist() == [0, 1, 1, 1, 1, 1]
    assert cluster_ids(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]
    c = Clusters(cluster_ids(5, np.array([0, 3]), np.array([1, 4])))
    assert (c.count, c.duplicated) == (3, 4) and c.to_dict()["clusters"] == 3


@pytest.mark.fast
def test_design_effect_is_one_without_duplicates_and_counts_clusters_when_all_agree():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.8
    assert design_effect(y, None) == design_effect(y, np.arange(500)) == 1.0
    ids = np.repeat(np.arange(250), 2)
    assert design_effect(np.ones(500, bool), ids) == 2.0  # 250 pairs, every answer right: each pair counts once
    copies = np.repeat(rng.random(250) < 0.8, 2)  # both copies of each picture get the same answer
    assert design_effect(copies, ids) == pytest.approx(2.0, rel=0.02)
    e, n_eff = clustered_proportion(copies, ids)
    plain = proportion_ci(int(copies.sum()), 500)
    assert n_eff == pytest.approx(250, rel=0.02) and e.value == plain.value and e.high - e.low > plain.high - plain.low


def _clustered_set(rng, singles: int, pairs: int, triples: int, mu: float, weight: float):
    """A test set whose clusters' chance of being right varies around ``mu`` (small ``weight``: copies agree)."""
    sizes = np.r_[np.ones(singles, int), np.full(pairs, 2), np.full(triples, 3)]
    ids = np.repeat(np.arange(len(sizes)), sizes)
    q = rng.beta(mu * weight, (1 - mu) * weight, len(sizes))
    return rng.random(len(ids)) < q[ids], ids


@pytest.mark.fast
@pytest.mark.parametrize("singles,pairs,triples,mu,weight", [
    (500, 0, 0, 0.85, np.inf),  # independent images: the plain Wilson interval
    (800, 60, 27, 0.85, 0.2),  # 20% of 1,001 images are copies
    (400, 50, 0, 0.8, 0.05),  # 20% of 500, copies nearly always agree
])
def test_accuracy_intervals_cover_95_percent_of_simulated_test_sets(singles, pairs, triples, mu, weight):
    rng = np.random.default_rng(0)
    covered = naive = 0
    for _ in range(SETS):
        if np.isinf(weight):
            y, ids = rng.random(singles) < mu, None
        else:
            y, ids = _clustered_set(rng, singles, pairs, triples, mu, weight)
        e, _ = clustered_proportion(y, ids)
        covered += e.low <= mu <= e.high
        plain = proportion_ci(int(y.sum()), len(y))
        naive += plain.low <= mu <= plain.high
    assert 0.94 <= covered / SETS <= 0.96
    if ids is not None:  # the same data with its copies counted as independent images claims too much
        assert naive / SETS < 0.93


def _balanced_accuracy_coverage(dup_share: float, weight: float, clustered: bool) -> float:
    """2,000 test sets of five classes at once: the balanced accuracy's stratified bootstrap interval.

    The resample weights depend on the classes and clusters only, which every set shares, so one
    draw of 1,000 resamples serves all 2,000 sets (each set's interval is still its own bootstrap).
    """
    rng = np.random.default_rng(1)
    sizes, recall = [150, 200, 250, 300, 350], np.array([0.9, 0.8, 0.85, 0.7, 0.95])
    y = np.repeat(np.arange(5), sizes)
    ids, start = [], 0
    for m in sizes:
        dup = int(m * dup_share) // 2
        cs = np.r_[np.full(dup, 2), np.ones(m - 2 * dup, int)]
        ids.append(np.repeat(np.arange(len(cs)) + start, cs))
        start += len(cs)
    ids = np.concatenate(ids)
    mu = recall[y[np.unique(ids, return_index=True)[1]]]
    q = rng.beta(mu * weight, (1 - mu) * weight, size=(SETS, start)) if np.isfinite(weight) else np.tile(mu, (SETS, 1))
    right = (rng.random((SETS, len(y))) < q[:, ids]).astype(float)
    masks = [y == c for c in range(5)]
    reps = [np.mean([(w[:, m] @ right[:, m].T) / w[:, m].sum(1, keepdims=True) for m in masks], axis=0)
            for w in resample_weights(y, ids if clustered else None, 1000, seed=0)]
    low, high = np.quantile(np.concatenate(reps), [0.025, 0.975], axis=0)
    truth = recall.mean()
    return float(np.mean((low <= truth) & (truth <= high)))


def test_macro_metrics_bootstrap_by_class_covers_95_percent():
    assert 0.94 <= _balanced_accuracy_coverage(0.0, np.inf, clustered=True) <= 0.96


def test_macro_metrics_bootstrap_by_cluster_covers_95_percent_of_clustered_sets():
    assert 0.94 <= _balanced_accuracy_coverage(0.4, 0.1, clustered=True) <= 0.96
    assert _balanced_accuracy_coverage(0.4, 0.1, clustered=False) < 0.92  # resampling images: too narrow


@pytest.mark.fast
def test_resampling_keeps_each_class_size_and_moves_clusters_whole():
    y = np.repeat(np.arange(3), [5, 7, 9])
    for w in resample_weights(y, None, 50, seed=0):
        assert np.array_equal(np.stack([w[:, y == c].sum(1) for c in range(3)], 1), np.tile([5, 7, 9], (len(w), 1)))
    ids = cluster_ids(21, np.array([0, 5, 6]), np.array([1, 6, 7]))
    for w in resample_weights(y, ids, 50, seed=0):
        assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 5] == w[:, 7])
        assert np.all(w[:, y == 0].sum(1) % 1 == 0) and np.all(w.sum(1) > 0)


@pytest.mark.fast
def test_resample_step_size_changes_no_draw(monkeypatch):
    y = np.repeat(np.arange(4), 250)
    ids = np.repeat(np.arange(500), 2)
    before = np.concatenate(list(resample_weights(y, ids, 120, seed=3)))
    monkeypatch.setattr(stats, "INDEX_BYTES", 8 * 1000 * 7)
    steps = list(resample_weights(y, ids, 120, seed=3))
    assert len(steps[0]) == 7 and np.array_equal(np.concatenate(steps), before)


@pytest.mark.fast
def test_units_with_the_same_keys_share_a_profile():
    keys = np.array([3, 1, 1, 3, 2, 2, 1, 3, 5])
    unit = np.array([0, 0, 1, 1, 2, 3, 3, 4, 5])  # units 0 and 1 hold {1, 3}; 3 holds {1, 2}; 2, 4, 5 one key each
    first = np.unique(unit, return_index=True)[1]
    p = _profiles(keys, unit, first)
    assert p[0] == p[1] and len(set(p.tolist())) == 5
    assert p[2] == 2 and p[4] == 3 and p[5] == 5 and p[3] > keys.max()  # a single key is its own profile


def _grouped_vs_rows(ids, n_boot=20_000):
    """Balanced accuracy's bootstrap replicates drawn by group (keys: true and predicted class) and by unit."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), [300, 500, 400, 800])
    pred = np.where(rng.random(len(y)) < np.array([0.9, 0.7, 0.8, 0.95])[y], y, (y + 1) % 4)
    if ids is not None:
        pred = pred[np.unique(ids, return_index=True)[1]][np.unique(ids, return_inverse=True)[1]]  # copies agree

    def bal(rows, w):
        right = (y[rows] == pred[rows]).astype(float)
        return np.mean([(w[:, y[rows] == c] @ right[y[rows] == c]) / w[:, y[rows] == c].sum(1) for c in range(4)],
                       axis=0)
    grouped = Exchangeable.of(y * 4 + pred, y, ids)
    assert len(grouped.units) * FAST_RATIO <= len(grouped.unit_group)  # the multinomial route
    by_group = np.concatenate([bal(grouped.rows, w) for w in grouped.resamples(n_boot, 1)])
    by_unit = np.concatenate([bal(np.arange(len(y)), w) for w in resample_weights(y, ids, n_boot, 2)])
    point = bal(grouped.rows, grouped.point())[0]
    assert point == pytest.approx(bal(np.arange(len(y)), np.ones((1, len(y))))[0])
    return by_group, by_unit


@pytest.mark.parametrize("clustered", [False, True])
def test_multinomial_draws_per_group_are_the_bootstrap_of_units(clustered):
    """The shortcut changes the draws, not their distribution: 20,000 replicates each way agree in mean, spread
    and tails well within their Monte Carlo error."""
    ids = np.repeat(np.arange(1000), 2) if clustered else None  # pairs of copies within each class
    by_group, by_unit = _grouped_vs_rows(ids)
    sd = by_unit.std()
    assert abs(by_group.mean() - by_unit.mean()) < 0.05 * sd
    assert by_group.std() == pytest.approx(sd, rel=0.04)
    assert np.quantile(by_group, [0.025, 0.975]) == pytest.approx(np.quantile(by_unit, [0.025, 0.975]), abs=0.1 * sd)


@pytest.mark.fast
def test_grouped_draws_keep_stratum_sizes_and_do_not_depend_on_the_step(monkeypatch):
    y = np.repeat(np.arange(3), [400, 700, 900])
    keys = y * 3 + np.random.default_rng(0).integers(0, 3, len(y))
    ex = Exchangeable.of(keys, y, None)
    before = np.concatenate(list(ex.resamples(120, seed=3)))
    for c, size in enumerate([400, 700, 900]):
        assert np.all(before[:, y[ex.rows] == c].sum(1) == size)
    monkeypatch.setattr(stats, "INDEX_BYTES", 8 * 9 * 7)
    steps = list(ex.resamples(120, seed=3))
    assert len(steps[0]) == 7 and np.array_equal(np.concatenate(steps), before)


@pytest.mark.fast
@pytest.mark.parametrize("n", [300, 5000])  # drawn by index, then as multinomial counts
def test_rows_numbered_by_group_draw_as_grouping_them_would(n):
    group = np.random.default_rng(2).integers(0, 60, n)
    group = np.unique(group, return_inverse=True)[1]  # every number present
    grouped = Exchangeable.of(group, np.zeros(n, np.int8), None)
    numbered = Exchangeable.of_groups(group, int(group.max()) + 1)
    in_group_order = np.argsort(grouped.group_of_row)
    assert np.array_equal(numbered.point(), grouped.point()[:, in_group_order])
    for a, b in zip(numbered.resamples(300, 4), grouped.resamples(300, 4)):
        assert np.array_equal(a, b[:, in_group_order])


@pytest.mark.fast
def test_bootstrap_weighted_point_is_the_unweighted_statistic():
    y = np.repeat(np.arange(2), 50)
    x = np.random.default_rng(0).random(100)
    est = bootstrap_weighted(lambda rows, w: (w @ x[rows] / w.sum(1))[:, None], y, None, n_boot=200, seed=0)[0]
    assert est.value == pytest.approx(x.mean()) and est.low < x.mean() < est.high


@pytest.mark.fast
def test_an_audit_counts_copied_test_images_once(tmp_path):
    """Copies planted in the test folder form clusters before the metrics run; accuracy's interval widens."""
    data = builders.image_folder(tmp_path / "data", n_per_class=12, confusers=3)
    for cls in builders.COLOURS:
        for i in range(8):
            shutil.copy(data / cls / f"{i:03d}.png", data / cls / f"copy{i}.png")
    ctx = builders.context(builders.colour_model(tmp_path / "m.onnx"), data)
    preds = ctx.predictions
    assert preds.clusters is not None and len(np.unique(preds.clusters)) == len(preds) - 8 * len(builders.COLOURS)
    assert len(ctx.test_pairs) >= 8 * len(builders.COLOURS)
    m = classification_metrics(preds, n_boot=200, seed=0)
    plain = proportion_ci(int((preds.y_true == preds.y_pred).sum()), len(preds))
    assert m.n == len(preds) and m.n_eff < 0.9 * m.n and m.clusters == len(preds) - 24
    assert m.accuracy.value == plain.value and m.accuracy.high - m.accuracy.low > plain.high - plain.low
