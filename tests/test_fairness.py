"""Fairness: disparate impact and equal opportunity equal fairlearn's own functions; small groups are reported."""

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_ratio, equal_opportunity_difference

import builders
from audit.checks.fairness import FairnessConfig, _Cells, criteria, fairness, findings, resample_statistic
from audit.config import AuditConfig
from audit.errors import DataError

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def grouped(n, c, seed, groups="abc", weak=None):
    g = np.random.default_rng(seed + 1000).choice(list(groups), n).astype(object)  # independent of the labels
    return builders.predictions(n, c=c, seed=seed, error=0.2, attributes={"sex": g},
                                weak=(g == weak) if weak else None), g


@pytest.mark.parametrize("n,c,seed", [(600, 2, 0), (900, 3, 1), (1500, 5, 2)])
def test_equal_fairlearn_functions_on_the_same_arrays(n, c, seed):
    p, g = grouped(n, c, seed)
    res = fairness(p, FairnessConfig(sensitive=("sex",)), n_boot=100)
    (attr,) = res.attributes
    assert [cf.target for cf in attr.per_class] == (["c1"] if c == 2 else list(p.labels))
    for cf in attr.per_class:
        t = p.labels.index(cf.target)
        yt, yp = (p.y_true == t).astype(int), (p.y_pred == t).astype(int)
        assert cf.disparate_impact.value == pytest.approx(demographic_parity_ratio(yt, yp, sensitive_features=g))
        assert cf.equal_opportunity_difference.value == pytest.approx(
            equal_opportunity_difference(yt, yp, sensitive_features=g))
        for e in (cf.disparate_impact, cf.equal_opportunity_difference):
            assert e.low <= e.value <= e.high
        for gr in cf.groups:
            m = g == gr.group
            assert gr.n == m.sum() and gr.selection_rate == pytest.approx(yp[m].mean())
            assert gr.tpr == pytest.approx(yp[m & (yt == 1)].mean())
            assert gr.fpr == pytest.approx(yp[m & (yt == 0)].mean())
            assert gr.accuracy == pytest.approx((p.y_true[m] == p.y_pred[m]).mean())


@pytest.mark.parametrize("c,seed", [(2, 5), (4, 6)])
def test_a_resample_weighted_by_cell_equals_fairlearn_on_the_resampled_images(c, seed):
    p, g = grouped(800, c, seed, groups="abcd")
    names, codes = np.unique(g, return_inverse=True)
    tidx = np.arange(1 if c == 2 else 0, c)
    cells = _Cells.of(codes, p.y_true, p.y_pred, list(tidx), c)
    judged, tpr_ok = np.ones(len(names), bool), np.ones((len(tidx), len(names)), bool)
    stat = resample_statistic(cells, len(names), len(tidx), judged, tpr_ok)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        idx = rng.integers(0, len(g), len(g))  # images drawn with replacement, as a bootstrap does
        got = stat(np.bincount(cells.of_row[idx], minlength=len(cells.count))[None, :].astype(float))[0]
        for j, t in enumerate(tidx):
            yt, yp = (p.y_true[idx] == t).astype(int), (p.y_pred[idx] == t).astype(int)
            assert got[j] == pytest.approx(demographic_parity_ratio(yt, yp, sensitive_features=g[idx]), abs=1e-12)
            assert got[len(tidx) + j] == pytest.approx(
                equal_opportunity_difference(yt, yp, sensitive_features=g[idx]), abs=1e-12)


def test_fairlearn_in_the_side_process_gives_the_same_result():
    from audit.side_process import side_process

    p, _ = grouped(900, 3, 7, groups="abc")
    config = FairnessConfig(sensitive=("sex",))
    assert fairness(p, config, n_boot=50, side=side_process()) == fairness(p, config, n_boot=50)


def test_small_groups_reported_and_left_out_like_masked_fairlearn():
    p, g = grouped(700, 3, 3, groups="ab")
    g = g.copy()
    g[:12] = "tiny"
    p = builders.predictions(700, c=3, seed=3, error=0.2, attributes={"sex": g})
    res = fairness(p, FairnessConfig(sensitive=("sex",)), n_boot=50)
    (attr,) = res.attributes
    assert attr.too_small == (("tiny", 12),)
    keep = g != "tiny"
    for cf in attr.per_class:
        t = p.labels.index(cf.target)
        yt, yp = (p.y_true == t).astype(int), (p.y_pred == t).astype(int)
        tiny = next(gr for gr in cf.groups if gr.group == "tiny")
        assert not tiny.judged and not tiny.tpr_judged  # listed, with its rates, but not in the ratios
        assert cf.disparate_impact.value == pytest.approx(
            demographic_parity_ratio(yt[keep], yp[keep], sensitive_features=g[keep]))
    crits = criteria(res, AuditConfig(fairness=FairnessConfig(sensitive=("sex",))))
    assert all("too small to judge: tiny (12)" in c.detail for c in crits)


def test_criteria_fail_for_a_disadvantaged_group_and_pass_without_one():
    cfg = FairnessConfig(sensitive=("sex",))
    fair, _ = grouped(3000, 2, 4, groups="ab")
    unfair, _ = grouped(3000, 2, 4, groups="ab", weak="b")
    ok = {c.id: c for c in criteria(fairness(fair, cfg, n_boot=100), AuditConfig(fairness=cfg))}
    bad = {c.id: c for c in criteria(fairness(unfair, cfg, n_boot=100), AuditConfig(fairness=cfg))}
    assert ok["fairness.sex.disparate_impact"].passed and ok["fairness.sex.equal_opportunity"].passed
    assert not bad["fairness.sex.equal_opportunity"].passed
    assert "(b)" in bad["fairness.sex.equal_opportunity"].detail
    config = AuditConfig(fairness=cfg)
    (f,) = findings(fairness(unfair, cfg, n_boot=100), config)  # the findings block: the larger gap, over sex
    assert f.severity == "warn" and f.criterion == "fairness.sex.equal_opportunity" and "(b)" in f.text
    assert all(x.severity == "info" for x in findings(fairness(fair, cfg, n_boot=100), config))


def test_one_group_cannot_be_judged_and_says_so():
    p = builders.predictions(100, seed=0, attributes={"sex": np.array(["a"] * 100, dtype=object)})
    crits = criteria(fairness(p, FairnessConfig(sensitive=("sex",)), n_boot=20), AuditConfig())
    assert all(not c.passed and c.value is None and "cannot be judged" in c.detail for c in crits)


def test_unknown_sensitive_column_names_the_columns():
    p = builders.predictions(50, attributes={"site": np.array(["a"] * 50, dtype=object)})
    with pytest.raises(DataError, match=r"sensitive attribute 'sex' is not a metadata column \(columns: \['site'\]\)"):
        fairness(p, FairnessConfig(sensitive=("sex",)))
    with pytest.raises(DataError, match="positive_class 'dog'"):
        fairness(p, FairnessConfig(sensitive=("site",), positive_class="dog"))
