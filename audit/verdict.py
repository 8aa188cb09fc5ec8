"""Thresholds -> Verdict: one record per acceptance criterion, one generic pass/fail rule.

A criterion is a value (with its CI), a threshold and a direction. With ``judge_on="value"``
the point estimate must meet the threshold; with ``"ci"`` the pessimistic end of the CI must
(the lower bound for "higher is better", the upper bound otherwise), which is what to use
when a release must pass with 95% confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from audit.stats import Estimate

SCHEMA = "audit.verdict/v1"
OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


@dataclass(frozen=True)
class Criterion:
    id: str  # stable machine name, e.g. "accuracy", "class_f1.<label>"
    title: str  # what a person reads
    value: float | None
    low: float | None
    high: float | None
    op: str  # ">", ">=", "<", "<="  (value OP threshold passes)
    threshold: float | None
    passed: bool
    detail: str = ""
    judged: bool = True  # False: shown with its threshold for information, never fails the verdict

    def to_dict(self) -> dict:
        return asdict(self)


def judge(
    id: str, title: str, est: Estimate | float, op: str, threshold: float, *, judge_on: str = "value", detail: str = "",
    judged: bool = True,
) -> Criterion:
    """Decide one criterion. ``op`` reads "value OP threshold passes"."""
    if not isinstance(est, Estimate):
        est = Estimate(float(est), float(est), float(est))
    higher_is_better = op in (">", ">=")
    x = est.value
    if judge_on == "ci" and math.isfinite(est.low) and math.isfinite(est.high):
        x = est.low if higher_is_better else est.high
    passed = math.isfinite(x) and OPS[op](x, threshold)
    d = est.to_dict()
    return Criterion(id, title, d["value"], d["low"], d["high"], op, threshold, bool(passed), detail, judged)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    criteria: tuple[Criterion, ...]
    judge_on: str
    schema: str = SCHEMA

    @classmethod
    def of(cls, criteria: Iterable[Criterion], judge_on: str) -> Verdict:
        criteria = tuple(criteria)
        return cls(passed=all(c.passed or not c.judged for c in criteria), criteria=criteria, judge_on=judge_on)

    @property
    def judged(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if c.judged)

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if c.judged and not c.passed)
