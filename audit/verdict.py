"""Measures, thresholds and the verdict: one record per acceptance criterion, one rule to decide it.

A ``Measure`` is a number the audit reports: a stable id, a title, an estimate with its CI and
its direction (``higher_is_better``), declared once where the number is computed. ``judge``
turns a measure and a threshold into a ``Criterion``; with ``judge_on="value"`` the point
estimate must meet the threshold, with ``"ci"`` the pessimistic end of the CI must (the lower
bound when higher is better), which is what to use when a release must pass with 95%
confidence. The same measure ids key the baseline comparison (``--baseline``).

Example::

    acc = Measure("accuracy", "Accuracy", Estimate(0.91, 0.90, 0.92), higher_is_better=True)
    judge(acc, 0.75, strict=True).passed   # True: 0.91 > 0.75
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from audit.stats import Estimate

SCHEMA = "audit.verdict/v2"
OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


@dataclass(frozen=True)
class Measure:
    """A reported number: its id (unique in a run), what it is, its estimate and its direction."""

    id: str
    title: str
    estimate: Estimate
    higher_is_better: bool
    detail: str = ""

    @classmethod
    def count(cls, id: str, title: str, n: int, *, higher_is_better: bool = False, detail: str = "") -> Measure:
        """A count (no CI): files, classes, pairs, regressions."""
        return cls(id, title, Estimate(int(n), math.nan, math.nan), higher_is_better, detail)

    @property
    def value(self) -> float:
        return self.estimate.value


@dataclass(frozen=True)
class Criterion:
    id: str  # the measure's id, e.g. "accuracy", "class_f1.<label>"
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


def judge(measure: Measure, threshold: float, *, strict: bool = False, judge_on: str = "value", judged: bool = True,
          detail: str | None = None) -> Criterion:
    """Decide one criterion: the measure must be better than ``threshold`` (or equal, unless ``strict``).

    A measure without a finite value fails (nothing was measured, so nothing passes).
    """
    higher = measure.higher_is_better
    op = (">" if strict else ">=") if higher else ("<" if strict else "<=")
    est = measure.estimate
    x = est.value
    if judge_on == "ci" and math.isfinite(est.low) and math.isfinite(est.high):
        x = est.low if higher else est.high
    passed = x is not None and math.isfinite(x) and OPS[op](x, threshold)
    d = est.to_dict()
    return Criterion(measure.id, measure.title, d["value"], d["low"], d["high"], op, threshold, bool(passed),
                     measure.detail if detail is None else detail, judged)


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
