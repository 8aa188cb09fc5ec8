"""Measures, thresholds and the verdict: one record per acceptance criterion, one rule to decide it.

A ``Measure`` is a number the audit reports: a stable id, a title, an estimate with its CI and
its direction (``higher_is_better``), declared once where the number is computed. ``judge``
turns a measure and a threshold into a ``Criterion`` decided on the point estimate; the
pipeline then applies the run's ``criteria.judge_on`` once to every check's criteria
(``decide``): with ``"ci"`` the pessimistic end of the CI must meet the threshold (the lower
bound when higher is better), which is what to use when a release must pass with 95%
confidence. The same measure ids key the baseline comparison (``--baseline``, ``numbers``).

Example::

    acc = Measure("accuracy", "Accuracy", Estimate(0.91, 0.90, 0.92), higher_is_better=True)
    judge(acc, 0.75, strict=True).passed   # True: 0.91 > 0.75
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

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
    exact: bool = False  # decided on its value whatever judge_on says (a fact such as one disagreeing image)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["exact"]  # how it was decided, not a result: verdict.json keeps its shape
        return d


def judge(measure: Measure, threshold: float, *, strict: bool = False, judged: bool = True,
          detail: str | None = None, exact: bool = False) -> Criterion:
    """Decide one criterion on the point estimate: the measure must be better than ``threshold`` (or equal,
    unless ``strict``). A measure without a finite value fails (nothing was measured, so nothing passes).
    ``exact``: ``decide`` leaves it decided on its value.
    """
    higher = measure.higher_is_better
    op = (">" if strict else ">=") if higher else ("<" if strict else "<=")
    d = measure.estimate.to_dict()
    return Criterion(measure.id, measure.title, d["value"], d["low"], d["high"], op, threshold,
                     _passes(d["value"], op, threshold), measure.detail if detail is None else detail, judged, exact)


def decide(criteria: Iterable[Criterion], judge_on: str) -> list[Criterion]:
    """The criteria decided as the run says: on the point estimate (``"value"``, as ``judge`` did) or on
    the pessimistic end of the CI (``"ci"``; a criterion without a CI, or ``exact``, stays decided on its value)."""
    criteria = list(criteria)
    if judge_on == "value":
        return criteria
    out = []
    for c in criteria:
        if c.low is not None and c.high is not None and not c.exact:
            bound = c.low if c.op in (">", ">=") else c.high
            c = replace(c, passed=_passes(bound, c.op, c.threshold))
        out.append(c)
    return out


def _passes(x: float | None, op: str, threshold: float) -> bool:
    return bool(x is not None and math.isfinite(x) and OPS[op](x, threshold))


def numbers(measures: Iterable[Measure]) -> dict[str, tuple[float, bool]]:
    """``id -> (value, higher_is_better)`` of the measures with a finite value (what ``--baseline`` compares)."""
    return {m.id: (float(m.value), m.higher_is_better) for m in measures
            if m.value is not None and math.isfinite(m.value)}


def numbers_to_json(nums: dict[str, tuple[float, bool]]) -> dict[str, dict[str, Any]]:
    return {k: {"value": v, "higher_is_better": h} for k, (v, h) in nums.items()}


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
