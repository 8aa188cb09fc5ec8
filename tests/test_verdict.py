import math

import pytest

from audit.config import Criteria
from audit.stats import Estimate, benjamini_hochberg
from audit.verdict import Measure, Verdict, decide, judge

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

EST = Estimate(0.85, 0.78, 0.90)


def decided(measure: Measure, threshold: float, judge_on: str, **kw):
    """A criterion as the pipeline decides it: judged on the value, then ``decide`` with the run's judge_on."""
    (c,) = decide([judge(measure, threshold, **kw)], judge_on)
    return c


@pytest.mark.parametrize("higher,strict,threshold,judge_on,op,status", [
    (True, True, 0.80, "value", ">", "pass"), (True, True, 0.80, "interval", ">", "inconclusive"),
    (True, True, 0.75, "interval", ">", "pass"), (True, True, 0.90, "interval", ">", "fail"),
    (True, True, 0.78, "interval", ">", "inconclusive"), (True, False, 0.78, "interval", ">=", "pass"),
    (True, False, 0.95, "value", ">=", "fail"), (True, False, 0.90, "interval", ">=", "inconclusive"),
    (False, False, 0.86, "value", "<=", "pass"), (False, False, 0.86, "interval", "<=", "inconclusive"),
    (False, False, 0.95, "interval", "<=", "pass"), (False, False, 0.70, "interval", "<=", "fail"),
    (False, True, 0.85, "value", "<", "fail"), (False, True, 0.90, "interval", "<", "inconclusive"),
    (True, False, 0.85, "value", ">=", "pass"),
])
def test_decide_reads_the_interval_or_the_value(higher, strict, threshold, judge_on, op, status):
    """Interval: pass when all of [0.78, 0.90] is on the good side, fail when all of it is on the bad side."""
    c = decided(Measure("x", "x", EST, higher_is_better=higher), threshold, judge_on, strict=strict)
    assert c.status == status and c.passed is (status == "pass") and c.op == op
    assert (c.value, c.low, c.high) == (0.85, 0.78, 0.90) and c.to_dict()["status"] == status


def test_judge_decides_on_the_value_until_the_run_decides():
    c = judge(Measure("x", "x", EST, True), 0.80, strict=True)
    assert c.status == "pass" and decide([c], "value") == [c] and decide([c], "interval")[0].inconclusive


def test_exact_measures_have_two_outcomes_on_either_judgement():
    for judge_on in ("interval", "value"):
        share = Measure("share", "share", Estimate(0.95, math.nan, math.nan), True)
        assert decided(share, 0.9, judge_on).status == "pass"
        assert decided(share, 0.96, judge_on).status == "fail"
        assert decided(Measure.count("n", "n", 2), 1, judge_on).status == "fail"


def test_exact_criteria_and_counts_stay_decided_on_their_value():
    exact = judge(Measure("agree", "agree", EST, higher_is_better=True), 0.80, exact=True)
    count = judge(Measure.count("n", "n", 0), 0)
    assert decide([exact, count], "interval") == [exact, count] and exact.passed
    assert not {"exact", "one_sided", "measure"} & set(exact.to_dict())


def test_a_one_sided_test_reads_its_pessimistic_bound_on_value():
    """The paired non-inferiority loss: under judge_on = "value" only its upper bound decides, as before."""
    loss = Measure("loss", "loss", Estimate(0.0, -0.02, 0.015), higher_is_better=False)
    assert decided(loss, 0.01, "value", strict=True).status == "pass"  # the point estimate alone would pass
    assert decided(loss, 0.01, "value", strict=True, one_sided=True).status == "fail"
    assert decided(loss, 0.01, "interval", strict=True, one_sided=True).status == "inconclusive"
    assert decided(loss, 0.02, "value", strict=True, one_sided=True).status == "pass"


def test_judge_on_ci_is_refused_with_its_replacement():
    with pytest.raises(ValueError, match="judge_on"):
        decide([judge(Measure("x", "x", EST, True), 0.5)], "ci")
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match="use 'interval'.*on_inconclusive = 'fail'"):
        Criteria(judge_on="ci")
    with pytest.raises(ConfigError, match="criteria.judge_on"):
        Criteria(judge_on="mean")
    assert Criteria().judge_on == "interval" and Criteria().on_inconclusive == "inconclusive"


def test_undefined_value_fails():
    for judge_on in ("interval", "value"):
        c = decided(Measure("x", "x", Estimate(math.nan, math.nan, math.nan), True), 0.5, judge_on)
        assert c.status == "fail" and not c.passed


def test_counts_stay_integers_and_have_no_ci():
    c = judge(Measure.count("files", "Files", 3, detail="three"), 0)
    assert (c.value, c.low, c.high, c.op, c.passed, c.detail) == (3, None, None, "<=", False, "three")
    assert isinstance(c.to_dict()["value"], int) and c.to_dict()["passed"] is False
    assert (c.n, c.mde, c.images_needed) == (None, None, None)


def _crit(status: str, judged: bool = True):
    est = {"pass": Estimate(0.9, 0.8, 0.95), "fail": Estimate(0.4, 0.3, 0.45),
           "inconclusive": Estimate(0.55, 0.45, 0.65)}[status]
    c = decided(Measure(status, status, est, True), 0.5, "interval", judged=judged)
    assert c.status == status
    return c


@pytest.mark.parametrize("statuses,outcome", [
    (("pass", "pass"), "pass"), (("pass", "inconclusive"), "inconclusive"), (("inconclusive", "fail"), "fail"),
    (("fail", "pass", "inconclusive"), "fail"), ((), "pass"),
])
def test_run_outcome_fail_before_inconclusive_before_pass(statuses, outcome):
    v = Verdict.of([_crit(s) for s in statuses], "interval")
    assert v.outcome == outcome and v.gate == outcome and v.passed is (outcome == "pass")
    assert len(v.failed) == statuses.count("fail") and len(v.undecided) == statuses.count("inconclusive")


@pytest.mark.parametrize("on,gate,code", [("inconclusive", "inconclusive", 4), ("fail", "fail", 1), ("pass", "pass", 0)])
def test_on_inconclusive_maps_only_an_inconclusive_run(on, gate, code):
    from audit.errors import EXIT_BY_OUTCOME

    v = Verdict.of([_crit("pass"), _crit("inconclusive")], "interval", on)
    assert (v.outcome, v.gate, EXIT_BY_OUTCOME[v.gate]) == ("inconclusive", gate, code)
    failed = Verdict.of([_crit("fail"), _crit("inconclusive")], "interval", on)
    assert failed.gate == "fail" and EXIT_BY_OUTCOME[failed.gate] == 1


def test_unjudged_criteria_never_decide_the_verdict():
    bad_info = judge(Measure("info", "info", Estimate(0.9, 0.9, 0.9), False), 0.1, judged=False)
    good = judge(Measure("acc", "acc", Estimate(0.9, 0.8, 0.95), True), 0.5)
    v = Verdict.of([good, bad_info, _crit("inconclusive", judged=False)], "value")
    assert v.passed and v.failed == () and v.undecided == () and v.judged == (good,)
    worse = judge(Measure("acc", "acc", Estimate(0.4, 0.3, 0.5), True), 0.5)
    assert not Verdict.of([worse, bad_info], "value").passed


def test_a_proportion_states_its_power_and_an_undecided_one_its_images():
    from audit.power import Sampling, proportion_images, proportion_mde
    from audit.stats import proportion_ci

    acc = Measure("accuracy", "Accuracy", proportion_ci(47, 60), True, sampling=Sampling(60))
    c = decided(acc, 0.77, "interval", strict=True)
    assert c.status == "inconclusive" and (c.n, c.n_eff) == (60, 60)
    assert c.mde == pytest.approx(proportion_mde(60, 0.77), abs=1e-4) and 0.14 < c.mde < 0.18  # (1.96 + 0.84) standard errors
    assert c.images_needed == math.ceil(proportion_images(47 / 60, 0.77)) and c.images_needed > 1000
    assert judge(acc, 0.77, strict=True).images_needed is None  # decided on the value: nothing undecided
    far = decided(acc, 0.5, "interval", strict=True)
    assert far.status == "pass" and far.images_needed is None and far.mde is not None
    duplicated = decided(Measure("accuracy", "Accuracy", acc.estimate, True, sampling=Sampling(60, 30)), 0.77,
                         "interval", strict=True)
    assert duplicated.mde > c.mde and duplicated.images_needed == pytest.approx(2 * c.images_needed, abs=2)


@pytest.mark.parametrize("classes,expected", [(2, 0.90), (6, 0.825), (10, 0.75), (100, 0.75)])
def test_default_accuracy_threshold_interpolates(classes, expected):
    assert Criteria().accuracy_threshold(classes) == pytest.approx(expected)
    assert Criteria(min_accuracy=0.5).accuracy_threshold(classes) == 0.5


def test_benjamini_hochberg_matches_scipy():
    from scipy.stats import false_discovery_control

    p = [0.001, 0.04, 0.03, 0.5, 0.2, 0.01, 0.049]
    assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p, method="bh"))
