import math

import pytest

from audit.config import Criteria
from audit.stats import Estimate, benjamini_hochberg
from audit.verdict import Verdict, judge


@pytest.mark.parametrize("op,threshold,judge_on,passed", [
    (">", 0.80, "value", True), (">", 0.80, "ci", False), (">", 0.75, "ci", True),
    ("<=", 0.86, "value", True), ("<=", 0.86, "ci", False), ("<", 0.85, "value", False),
])
def test_judge_reads_value_or_pessimistic_bound(op, threshold, judge_on, passed):
    assert judge("x", "x", Estimate(0.85, 0.78, 0.90), op, threshold, judge_on=judge_on).passed is passed


def test_undefined_value_fails():
    assert not judge("x", "x", Estimate(math.nan, math.nan, math.nan), ">", 0.5).passed


def test_unjudged_criteria_never_fail_the_verdict():
    bad_info = judge("info", "info", 0.9, "<=", 0.1, judged=False)
    good = judge("acc", "acc", 0.9, ">", 0.5)
    v = Verdict.of([good, bad_info], "value")
    assert v.passed and v.failed == () and v.judged == (good,)
    assert not Verdict.of([judge("acc", "acc", 0.4, ">", 0.5), bad_info], "value").passed


@pytest.mark.parametrize("classes,expected", [(2, 0.90), (6, 0.825), (10, 0.75), (100, 0.75)])
def test_default_accuracy_threshold_interpolates(classes, expected):
    assert Criteria().accuracy_threshold(classes) == pytest.approx(expected)
    assert Criteria(min_accuracy=0.5).accuracy_threshold(classes) == 0.5


def test_benjamini_hochberg_matches_scipy():
    from scipy.stats import false_discovery_control

    p = [0.001, 0.04, 0.03, 0.5, 0.2, 0.01, 0.049]
    assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p, method="bh"))
