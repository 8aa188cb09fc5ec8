import math

import pytest

from audit.config import Criteria
from audit.stats import Estimate, benjamini_hochberg
from audit.verdict import Measure, Verdict, decide, judge

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

EST = Estimate(0.85, 0.78, 0.90)


@pytest.mark.parametrize("higher,strict,threshold,judge_on,op,passed", [
    (True, True, 0.80, "value", ">", True), (True, True, 0.80, "ci", ">", False), (True, True, 0.75, "ci", ">", True),
    (False, False, 0.86, "value", "<=", True), (False, False, 0.86, "ci", "<=", False),
    (False, True, 0.85, "value", "<", False), (True, False, 0.85, "value", ">=", True),
])
def test_judge_reads_value_or_pessimistic_bound(higher, strict, threshold, judge_on, op, passed):
    (c,) = decide([judge(Measure("x", "x", EST, higher_is_better=higher), threshold, strict=strict)], judge_on)
    assert c.passed is passed and c.op == op and (c.value, c.low, c.high) == (0.85, 0.78, 0.90)


def test_exact_criteria_and_counts_stay_decided_on_their_value():
    exact = judge(Measure("agree", "agree", EST, higher_is_better=True), 0.80, exact=True)
    count = judge(Measure.count("n", "n", 0), 0)
    assert decide([exact, count], "ci") == [exact, count] and exact.passed and "exact" not in exact.to_dict()


def test_undefined_value_fails():
    assert not judge(Measure("x", "x", Estimate(math.nan, math.nan, math.nan), True), 0.5).passed


def test_counts_stay_integers_and_have_no_ci():
    c = judge(Measure.count("files", "Files", 3, detail="three"), 0)
    assert (c.value, c.low, c.high, c.op, c.passed, c.detail) == (3, None, None, "<=", False, "three")
    assert isinstance(c.to_dict()["value"], int)


def test_unjudged_criteria_never_fail_the_verdict():
    bad_info = judge(Measure("info", "info", Estimate(0.9, 0.9, 0.9), False), 0.1, judged=False)
    good = judge(Measure("acc", "acc", Estimate(0.9, 0.8, 0.95), True), 0.5)
    v = Verdict.of([good, bad_info], "value")
    assert v.passed and v.failed == () and v.judged == (good,)
    worse = judge(Measure("acc", "acc", Estimate(0.4, 0.3, 0.5), True), 0.5)
    assert not Verdict.of([worse, bad_info], "value").passed


@pytest.mark.parametrize("classes,expected", [(2, 0.90), (6, 0.825), (10, 0.75), (100, 0.75)])
def test_default_accuracy_threshold_interpolates(classes, expected):
    assert Criteria().accuracy_threshold(classes) == pytest.approx(expected)
    assert Criteria(min_accuracy=0.5).accuracy_threshold(classes) == 0.5


def test_benjamini_hochberg_matches_scipy():
    from scipy.stats import false_discovery_control

    p = [0.001, 0.04, 0.03, 0.5, 0.2, 0.01, 0.049]
    assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p, method="bh"))
