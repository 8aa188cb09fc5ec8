"""Paired comparison: the statistics against scipy/statsmodels and published values, pairing and refusals.

The models are real: a logistic regression and a naive Bayes classifier trained on one half of
scikit-learn's digits, predicting the other half.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from audit.paired import PairedRun, compare_runs
from audit.errors import UsageError
from audit.stats import bootstrap, mcnemar_exact, paired_difference_ci, proportion_ci

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

LABELS = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def runs():
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    strong = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(x_tr, y_tr).predict(x_te)
    weak = GaussianNB().fit(x_tr, y_tr).predict(x_te)
    n = len(y_te)
    paths = [f"{y_te[i]}/img{i:04d}.png" for i in range(n)]
    shas = [f"{i:064x}" for i in range(n)]
    attrs = {"scanner": np.where(np.arange(n) % 3 == 0, "a", "b"), "site": np.array(["x", "y", "z", ""] * n)[:n]}
    cand = PairedRun("candidate", LABELS, paths, y_te, strong, sha256=shas, attributes=attrs)
    base = PairedRun("baseline", LABELS, paths, y_te, weak, sha256=shas, attributes=attrs)
    return cand, base


def shuffled(run: PairedRun, seed: int = 0) -> PairedRun:
    p = np.random.default_rng(seed).permutation(len(run.paths))
    return PairedRun(run.name, run.labels, [run.paths[i] for i in p], run.y_true[p], run.y_pred[p],
                     [run.sha256[i] for i in p], {k: v[p] for k, v in run.attributes.items()})


# --- the statistics ---------------------------------------------------------------------------

def test_newcombe_interval_equals_the_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8:
    # Cavo et al. (2012) table, Newcombe square-and-add: -0.0621 (95% CI -0.1186 to -0.0046)
    est = paired_difference_ci(np.array([[59, 6], [16, 80]]))
    assert round(est.value, 4) == -0.0621
    assert (round(est.low, 4), round(est.high, 4)) == (-0.1186, -0.0046)


@pytest.mark.parametrize("cells,n,low,high", [
    ((0.75, 0.10, 0.05, 0.10), 200, 0.93, 0.97),  # measured 0.955 (Wald: 0.943)
    ((0.60, 0.10, 0.10, 0.20), 50, 0.93, 0.97),  # measured 0.953 (Wald: 0.926)
    ((0.90, 0.02, 0.01, 0.07), 200, 0.95, 1.0),  # few discordant pairs: conservative, measured 0.981
])
def test_newcombe_interval_covers_the_true_difference(cells, n, low, high):
    # 4,000 simulated paired samples; cells are P(both right), P(only 1), P(only 2), P(neither)
    counts = np.random.default_rng(0).multinomial(n, cells, size=4000)
    truth = cells[1] - cells[2]
    coverage = np.mean([paired_difference_ci(c.reshape(2, 2)).contains(truth) for c in counts])
    assert low <= coverage <= high, coverage


def test_newcombe_interval_agrees_with_a_paired_bootstrap_at_large_n():
    rng = np.random.default_rng(1)
    a = rng.random(20_000) < 0.9
    b = np.where(rng.random(20_000) < 0.8, a, rng.random(20_000) < 0.85)
    d = a.astype(float) - b
    boot = bootstrap(lambda idx: d[idx].mean(axis=1), len(d), n_boot=2000, seed=0)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    est = paired_difference_ci(table)
    assert est.value == pytest.approx(d.mean())
    assert (est.low, est.high) == pytest.approx((boot.low, boot.high), abs=1.5e-3)


@pytest.mark.parametrize("b,c", [(6, 16), (0, 5), (3, 3), (40, 25), (1, 0), (0, 0)])
def test_mcnemar_exact_equals_statsmodels_and_scipy(b, c):
    table = [[50, b], [c, 20]]
    p = mcnemar_exact(b, c)
    assert p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    if b + c:
        assert p == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (7, 23), (890, 899)])
def test_wilson_interval_equals_statsmodels(k, n):
    est = proportion_ci(k, n)
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (est.value, est.low, est.high) == pytest.approx((k / n, low, high), abs=1e-12)
    exact = proportion_ci(k, n, method="exact")
    assert (exact.low, exact.high) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="beta"), abs=1e-12)


# --- the comparison ---------------------------------------------------------------------------

def test_compare_two_real_models(runs):
    cand, base = runs
    res = compare_runs(cand, base)
    right_c, right_b = cand.y_pred == cand.y_true, base.y_pred == base.y_true
    table = confusion_matrix(right_c, right_b, labels=[True, False])  # rows: candidate right / wrong
    np.testing.assert_array_equal(res.table.array(), table)
    assert res.candidate_accuracy.value == pytest.approx(accuracy_score(cand.y_true, cand.y_pred))
    assert res.baseline_accuracy.value == pytest.approx(accuracy_score(base.y_true, base.y_pred))
    assert res.difference.value == pytest.approx(res.candidate_accuracy.value - res.baseline_accuracy.value)
    assert res.mcnemar_p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert res.mcnemar_p < 1e-6 and res.difference.low > 0  # logistic regression beats naive Bayes on digits
    assert res.hashes_checked and res.n == len(cand.paths)
    assert set(res.candidate_only_paths) == {p for p, c, b in zip(cand.paths, right_c, right_b) if c and not b}
    frame = pd.DataFrame({"y": cand.y_true, "c": right_c & ~right_b, "b": right_b & ~right_c})
    per_class = frame.groupby("y").agg(n=("y", "size"), c=("c", "sum"), b=("b", "sum"))
    assert [(x.n, x.candidate_only, x.baseline_only) for x in res.per_class] == \
        [tuple(r) for r in per_class.to_numpy().tolist()]


def test_slices_equal_masked_computations(runs):
    cand, base = runs
    res = compare_runs(cand, base)
    assert {(s.attribute, s.level) for s in res.slices} == {("scanner", "a"), ("scanner", "b"), ("site", "x"),
                                                            ("site", "y"), ("site", "z"), ("site", "(missing)")}
    right_c, right_b = cand.y_pred == cand.y_true, base.y_pred == base.y_true
    for s in res.slices:
        m = cand.attributes[s.attribute] == ("" if s.level == "(missing)" else s.level)
        assert s.n == m.sum()
        assert s.candidate.value == pytest.approx(right_c[m].mean())
        assert s.baseline.value == pytest.approx(right_b[m].mean())
        b, c = int((right_c & ~right_b)[m].sum()), int((right_b & ~right_c)[m].sum())
        assert s.p_value == pytest.approx(mcnemar([[0, b], [c, 0]], exact=True).pvalue)
    q = multipletests([s.p_value for s in res.slices], method="fdr_bh")[1]
    np.testing.assert_allclose([s.q_value for s in res.slices], q)


def test_pairing_is_by_path_not_by_row_order(runs):
    cand, base = runs
    a = compare_runs(cand, base).to_dict()
    b = compare_runs(cand, shuffled(base)).to_dict()
    assert a == b


def test_class_order_may_differ_between_models(runs):
    cand, base = runs
    flipped = tuple(reversed(LABELS))
    to_new = {lab: i for i, lab in enumerate(flipped)}
    remap = np.array([to_new[lab] for lab in LABELS])
    other = PairedRun(base.name, flipped, base.paths, remap[base.y_true], remap[base.y_pred], base.sha256,
                      base.attributes)
    assert compare_runs(cand, other).to_dict() == compare_runs(cand, base).to_dict()


def test_non_inferiority_is_the_one_sided_upper_bound(runs):
    cand, base = runs
    worse = compare_runs(base, cand, margin=0.02, alpha=0.05)  # naive Bayes as the candidate
    assert not worse.non_inferiority.passed
    better = compare_runs(cand, base, margin=0.0)
    assert better.non_inferiority.passed and better.non_inferiority.upper_bound < 0
    same = compare_runs(cand, PairedRun("same", cand.labels, cand.paths, cand.y_true, cand.y_pred, cand.sha256))
    assert same.table.candidate_only == same.table.baseline_only == 0 and same.mcnemar_p == 1.0
    assert same.difference.value == 0 and same.non_inferiority.passed
    # the bound is the upper end of a two-sided (1 - 2 alpha) interval of baseline - candidate
    ni = compare_runs(base, cand, margin=0.5, alpha=0.1).non_inferiority
    flipped = paired_difference_ci(np.array([[worse.table.both_right, worse.table.baseline_only],
                                             [worse.table.candidate_only, worse.table.both_wrong]]), level=0.8)
    assert ni.upper_bound == pytest.approx(flipped.high) and ni.passed and (ni.margin, ni.alpha) == (0.5, 0.1)


# --- refusals ---------------------------------------------------------------------------------

def replace(run: PairedRun, **kw) -> PairedRun:
    fields = dict(name=run.name, labels=run.labels, paths=run.paths, y_true=run.y_true, y_pred=run.y_pred,
                  sha256=run.sha256, attributes=run.attributes)
    return PairedRun(**{**fields, **kw})


def test_refuses_different_image_sets(runs):
    cand, base = runs
    other = replace(base, paths=[*base.paths[:-2], "new/a.png", "new/b.png"])
    with pytest.raises(UsageError, match=r"the runs are on different images: 2 only in candidate \(e\.g\. "
                                         r".*\), 2 only in baseline \(e\.g\. new/a\.png, new/b\.png\)") as e:
        compare_runs(cand, other)
    assert "audit both models on the same --data" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="0 only in candidate, 1 only in baseline"):
        compare_runs(replace(cand, paths=cand.paths[:-1], y_true=cand.y_true[:-1], y_pred=cand.y_pred[:-1],
                             sha256=cand.sha256[:-1], attributes={}), base)


def test_refuses_same_path_with_other_bytes(runs):
    cand, base = runs
    shas = list(base.sha256)
    shas[3] = "f" * 64
    with pytest.raises(UsageError, match=rf"1 image\(s\) have the same path but different content \(sha256\) "
                                         rf"\(e\.g\. {cand.paths[3]}\)"):
        compare_runs(cand, replace(base, sha256=shas))
    assert not compare_runs(cand, replace(base, sha256=())).hashes_checked  # one side without hashes: not checked


def test_refuses_other_true_labels_or_classes(runs):
    cand, base = runs
    y = base.y_true.copy()
    y[:4] = (y[:4] + 1) % 10
    with pytest.raises(UsageError, match=r"4 image\(s\) have different true labels in the two runs"):
        compare_runs(cand, replace(base, y_true=y))
    with pytest.raises(UsageError, match=r"different classes: only in candidate \['9'\], only in baseline \['nine'\]"):
        compare_runs(cand, replace(base, labels=(*LABELS[:9], "nine")))


def test_refuses_duplicates_conflicting_attributes_and_bad_settings(runs):
    cand, base = runs
    with pytest.raises(UsageError, match=r"run 'baseline' lists 1 path\(s\) more than once"):
        compare_runs(cand, replace(base, paths=[base.paths[1], *base.paths[1:]]))
    attrs = {"scanner": np.where(np.arange(len(base.paths)) < 5, "c", base.attributes["scanner"])}
    with pytest.raises(UsageError, match=r"attribute 'scanner' differs between the runs for \d+ image\(s\)"):
        compare_runs(cand, replace(base, attributes=attrs))
    with pytest.raises(UsageError, match=r"margin must be in \[0, 1\)"):
        compare_runs(cand, base, margin=-0.1)
    with pytest.raises(UsageError, match=r"alpha must be in \(0, 0.5\)"):
        compare_runs(cand, base, alpha=0.5)


def test_id_like_attributes_are_not_sliced(runs):
    cand, base = runs
    ids = np.array([f"id{i}" for i in range(len(cand.paths))], dtype=object)
    with_ids = replace(cand, attributes={**cand.attributes, "source": ids})
    res = compare_runs(with_ids, base, max_levels=50)
    assert res.unsliced == (("source", len(ids)),) and {s.attribute for s in res.slices} == {"scanner", "site"}
    assert res.to_dict()["unsliced"] == {"source": len(ids)}
    assert {s.attribute for s in compare_runs(with_ids, base, max_levels=len(ids)).slices} == {"scanner", "site",
                                                                                                "source"}


def test_thumbnail_examples_take_each_class_in_turn(runs):
    cand, base = runs
    res = compare_runs(cand, base, examples=10)
    only = [p for p, c, b in zip(cand.paths, cand.y_pred == cand.y_true, base.y_pred == base.y_true) if c and not b]
    classes = sorted({p.split("/")[0] for p in only})
    assert len(res.candidate_examples) == min(10, len(only)) and set(res.candidate_examples) <= set(only)
    assert {p.split("/")[0] for p in res.candidate_examples} == set(classes[:10])  # one per class first
    assert res.baseline_examples == () or set(res.baseline_examples) <= set(res.baseline_only_paths)
