"""Discovered slices: the discover/confirm protocol on planted and null features, and end to end on a real
CNN that has never seen a pose (``builders_slices``), through the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from audit.discovery import DiscoveryParams, discover, fit_mixture, newcombe_difference, split_halves
from audit.stats import proportion_ci

FAST = ["--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance", "--no-label-errors", "--no-pdf"]


def planted(seed: int, n: int = 3000, classes: int = 4, dim: int = 24):
    """Class blobs in feature space; two planted subgroups (a blob inside class 0, one inside class 2)
    with raised error rates (0.75 and 0.35) against 0.03 elsewhere. Returns z, y, y_pred, group."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    z = rng.normal(0, 4, (classes, dim))[y] + rng.normal(0, 1, (n, dim))
    group = np.zeros(n, int)
    err = np.full(n, 0.03)
    for g, (cls, rate) in enumerate(((0, 0.75), (2, 0.35)), start=1):
        pick = rng.choice(np.flatnonzero((y == cls) & (group == 0)), n // 25, replace=False)
        z[pick] += rng.normal(0, 1, dim) * 7 / np.sqrt(dim)
        group[pick], err[pick] = g, rate
    wrong = rng.random(n) < err
    y_pred = np.where(wrong, (y + rng.integers(1, classes, n)) % classes, y)
    return z.astype(np.float32), y, y_pred, group


def best_match(found, group: np.ndarray, g: int) -> tuple[float, float]:
    """(precision, recall) of the confirmed slice that best recovers planted group ``g``."""
    best = (0.0, 0.0)
    for c in found.confirmed:
        inside = found.inside(c)
        tp = (inside & (group == g)).sum()
        p, r = tp / inside.sum(), tp / (group == g).sum()
        if 2 * p * r / max(p + r, 1e-9) > 2 * best[0] * best[1] / max(sum(best), 1e-9):
            best = (float(p), float(r))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_planted_subgroups_are_recovered_and_confirmed(seed):
    z, y, y_pred, group = planted(seed)
    found = discover(z, y, y_pred, DiscoveryParams(), seed=seed)
    for g in (1, 2):
        precision, recall = best_match(found, group, g)
        assert precision >= 0.6 and recall >= 0.5, (seed, g, precision, recall)
    for c in found.confirmed:  # every reported number is from the confirm half
        inside = found.inside(c) & found.in_confirm
        assert c.confirm.n == inside.sum()
        assert c.confirm.correct == (y == y_pred)[inside].sum()


def test_errors_independent_of_the_features_give_no_confirmed_slice_in_95_percent_of_seeds():
    hits = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        y = rng.integers(0, 3, 900)
        z = (rng.normal(0, 3, (3, 8))[y] + rng.normal(0, 1, (900, 8))).astype(np.float32)
        wrong = rng.random(900) < 0.2  # errors that do not depend on the features at all
        found = discover(z, y, np.where(wrong, (y + 1) % 3, y), DiscoveryParams(), seed=seed)
        hits += bool(found.confirmed)
    assert hits <= 10, f"{hits} of 200 null data sets gave a confirmed slice"


def test_the_split_is_stratified_50_50_and_seeded():
    y = np.repeat([0, 1, 2], [101, 50, 7])
    a, b = split_halves(y, 3), split_halves(y, 4)
    assert np.array_equal(a, split_halves(y, 3)) and not np.array_equal(a, b)
    for c, n in ((0, 101), (1, 50), (2, 7)):
        assert abs(2 * a[y == c].sum() - n) <= 1
    assert abs(2 * a.sum() - len(y)) <= 1  # odd classes alternate, so the halves stay even


@pytest.mark.parametrize("k1,n1,k2,n2", [(45, 50, 10, 40), (97, 100, 60, 61), (5, 30, 5, 31), (0, 20, 3, 20)])
def test_gap_interval_is_newcombes_hybrid_score_interval(k1, n1, k2, n2):
    from statsmodels.stats.proportion import confint_proportions_2indep

    got = newcombe_difference(proportion_ci(k1, n1), proportion_ci(k2, n2))
    low, high = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
    assert got.value == pytest.approx(k1 / n1 - k2 / n2)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-9)


def test_the_mixture_likelihood_is_a_diagonal_gaussian_mixture_when_labels_and_errors_weigh_nothing():
    from sklearn.mixture import GaussianMixture

    z, y, y_pred, _ = planted(0, n=800, dim=6)
    params = DiscoveryParams(label_weight=0.0, error_weight=0.0)
    mix = fit_mixture(z, y, y != y_pred, 5, 4, params, seed=0)
    ref = GaussianMixture(5, covariance_type="diag")
    ref.weights_, ref.means_, ref.covariances_ = np.exp(mix.log_weights), mix.means, mix.variances
    ref.precisions_cholesky_ = 1 / np.sqrt(mix.variances)
    ll = mix.log_likelihood(z.astype(np.float64), y)
    ours = ll.max(1) + np.log(np.exp(ll - ll.max(1, keepdims=True)).sum(1))
    assert ours == pytest.approx(ref.score_samples(z.astype(np.float64)), rel=1e-9, abs=1e-9)
    # EM's fixed point: scikit-learn's EM started from our fit stays there
    ref2 = GaussianMixture(5, covariance_type="diag", reg_covar=1e-3, weights_init=np.exp(mix.log_weights),
                           means_init=mix.means, precisions_init=1 / mix.variances, max_iter=20, tol=1e-3).fit(z)
    assert ref2.means_ == pytest.approx(mix.means, abs=0.05)


def test_errors_on_the_confirm_half_change_no_membership():
    z, y, y_pred, _ = planted(1)
    found = discover(z, y, y_pred, DiscoveryParams(), seed=1)
    other = y_pred.copy()
    other[found.in_confirm] = (y[found.in_confirm] + 1) % 4  # every confirm-half answer wrong
    again = discover(z, y, other, DiscoveryParams(), seed=1)
    assert np.array_equal(found.assignment, again.assignment)  # fitted on the discover half, assigned without errors
    assert [c.components for c in again.candidates] == [c.components for c in found.candidates]
    assert all(c.confirm is None or c.confirm.accuracy.value == 0 for c in again.candidates)


# ----------------------------------------------------------------------------- end to end, real CNN


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def rows(out):
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_pose_the_model_never_saw_is_found_through_the_cli(shape_audit):
    (out, proc), groups = shape_audit
    assert proc.returncode == 0, proc.stderr
    ds = json.loads((out / "verdict.json").read_text())["discovered_slices"]
    assert ds["skipped"] == "" and ds["split"]["discover"] + ds["split"]["confirm"] == len(groups)
    table = rows(out)
    diamonds = {r["path"] for r in table if groups[r["path"]] == "diamond"}
    best = max(({r["path"] for r in table if r["discovered_slice"] == sid} for sid in ds["confirmed"]),
               key=lambda s: len(s & diamonds))
    precision, recall = len(best & diamonds) / len(best), len(best & diamonds) / len(diamonds)
    assert precision >= 0.6 and recall >= 0.5, (precision, recall)
    # no image property quartile names the subgroup: none holds half the diamonds at that precision
    for prop in [c for c in table[0] if c.startswith("prop:")]:
        values = np.array([float(r[prop]) for r in table])
        edges = np.quantile(values, [0.25, 0.5, 0.75])
        bins = np.searchsorted(edges, values, side="right")
        for b in range(4):
            members = {r["path"] for r, k in zip(table, bins) if k == b}
            hit = len(members & diamonds)
            assert not (hit / max(len(members), 1) >= 0.6 and hit / len(diamonds) >= 0.5), (prop, b)
    by_id = {s["id"]: s for s in ds["slices"]}
    sid = next(r["discovered_slice"] for r in table if r["path"] in best)
    assert by_id[sid]["confirmed"] and by_id[sid]["q_value"] <= ds["alpha"]
    assert by_id[sid]["classes"][0][0] == "square" and by_id[sid]["errors"][0][0] == "square"
    assert by_id[sid]["accuracy"]["high"] < 0.5  # the model misses this pose
    html = (out / "report.html").read_text()
    assert 'id="discovered_slices"' in html and f"{sid}:" in html
    assert any(f["section"] == "discovered_slices" for f in json.loads((out / "verdict.json").read_text())["findings"])


def test_judged_a_confirmed_slice_with_a_large_gap_fails_the_audit(shape_model, tmp_path):
    model, data, _ = shape_model
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[audit.discovered_slices]\njudge = true\nmin_gap = 0.2\n")
    proc = run_cli("run", "--model", model, "--data", data, "--out", tmp_path / "out", "--config", cfg,
                   "--no-thumbnails", *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    crit = [c for c in json.loads((tmp_path / "out" / "verdict.json").read_text())["criteria"]
            if c["id"] == "discovered_slices.confirmed"]
    assert crit and not crit[0]["passed"] and crit[0]["value"] >= 1


def test_switched_off_the_inference_pass_reads_no_features(shape_model, tmp_path):
    model, data, _ = shape_model
    proc = run_cli("run", "--model", model, "--data", data, "--out", tmp_path / "out", "--no-discovered-slices",
                   *FAST)
    assert proc.returncode == 0, proc.stderr
    v = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert "discovered_slices" not in v and "discovered_slice" not in rows(tmp_path / "out")[0]


def test_the_assignment_read_a_chunk_at_a_time_does_not_depend_on_the_chunk():
    from audit.discovery import DiscoveryParams, fit_mixture

    rng = np.random.default_rng(0)
    z, y, wrong = rng.normal(size=(300, 3)), rng.integers(0, 3, 300), rng.random(300) < 0.2
    mix = fit_mixture(z, y, wrong, 4, 3, DiscoveryParams(), 0)
    small, whole = mix.assign(z, y, second=True, chunk=7), mix.assign(z, y, second=True, chunk=300)
    assert all(np.array_equal(a, b) for a, b in zip(small, whole)) and len(small[0]) == 300


# --- the numpy parts against the libraries they replace (scipy and scikit-learn stay test references) ---------


@pytest.mark.fast
def test_fisher_exact_matches_scipy_on_small_large_tied_and_empty_tables():
    from scipy.stats import fisher_exact as reference

    from audit.stats import fisher_exact

    rng = np.random.default_rng(0)
    tables = [rng.integers(0, s, (2, 2)) for s in (3, 8, 60, 900, 40_000, 300_000) for _ in range(60)]
    tables += [np.array([[a, b], [b, a]]) for a, b in rng.integers(0, 500, (40, 2))]  # symmetric: exact ties
    tables += [np.array([[0, 5], [0, 7]]), np.array([[0, 0], [3, 4]]), np.array([[9, 0], [0, 9]])]
    for t in tables:
        for alternative in ("two-sided", "less"):
            want = reference(t, alternative=alternative)[1]
            got = fisher_exact(t, alternative)
            assert got == pytest.approx(want, rel=1e-8, abs=1e-300), (t.tolist(), alternative)
    with pytest.raises(ValueError):
        fisher_exact([[1, 2], [3, 4]], "greater")


@pytest.mark.fast
def test_kmeans_plusplus_picks_the_same_rows_as_scikit_learn():
    from sklearn.cluster import kmeans_plusplus as reference

    from audit.discovery import kmeans_plusplus

    rng = np.random.default_rng(1)
    for seed in range(12):
        n, d, k = int(rng.integers(30, 3000)), int(rng.integers(1, 24)), int(rng.integers(1, 25))
        z = rng.normal(0, rng.uniform(0.1, 10), (n, d))
        if seed % 3 == 0:
            z[: n // 2] = z[0]  # half the rows one point
        assert np.array_equal(kmeans_plusplus(z, k, seed), reference(z, k, random_state=seed)[0])


@pytest.mark.fast
def test_covariance_pca_matches_scikit_learns_signs_included():
    from sklearn.decomposition import PCA

    from audit.features import pca_covariance

    rng = np.random.default_rng(2)
    for i in range(10):
        n, d = int(rng.integers(20, 3000)), int(rng.integers(1, 60))
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(0, 5, d)
        k = max(1, min(int(rng.integers(1, 32)), d, n - 1))
        want = PCA(n_components=k, svd_solver="covariance_eigh").fit(x)
        mean, axes, variance, share = pca_covariance(x, k)
        np.testing.assert_allclose(mean, want.mean_)
        np.testing.assert_allclose(variance, want.explained_variance_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(share, want.explained_variance_ratio_, rtol=1e-9, atol=1e-12)
        distinct = variance > 1e-9 * variance[0]  # axes of (near) zero variance are any basis of that space
        np.testing.assert_allclose(axes[distinct], want.components_[distinct], atol=1e-8)
