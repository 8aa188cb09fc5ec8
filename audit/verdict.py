"""Measures, thresholds and the verdict: one record per acceptance criterion, one rule to decide it.

A ``Measure`` is a number the audit reports: a stable id, a title, an estimate with its CI and
its direction (``higher_is_better``), declared once where the number is computed. ``judge``
turns a measure and a threshold into a ``Criterion`` decided on the point estimate; the
pipeline then applies the run's ``criteria.judge_on`` once to every check's criteria
(``decide``, docs/ARCHITECTURE.md §4.1), which gives each one of three statuses:

* ``judge_on="interval"`` (the default): **pass** when the whole CI is on the good side of the
  threshold, **fail** when the whole CI is on the bad side, **inconclusive** when the threshold
  lies inside it (the data cannot tell);
* ``judge_on="value"``: the point estimate must meet the threshold (pass or fail); a one-sided
  test (``one_sided``, the paired non-inferiority bound) is then judged on its pessimistic bound.

A measure without a CI (a count, a share of files) and a criterion that is a fact rather than an
estimate (``exact``: one image on which ONNX and PyTorch disagree) are pass or fail on their
value either way. Proportions and paired differences carry their ``Sampling``, so their criteria
state the minimum detectable effect and, when inconclusive, about how many images would decide
them (``audit.power``). A run fails when any judged criterion fails, else is inconclusive when
any is, else passes; ``on_inconclusive`` maps an inconclusive run to a failure or a pass for
teams that want two outcomes. The same measure ids key the baseline comparison (``--baseline``,
``numbers``).

Example::

    acc = Measure("accuracy", "Accuracy", Estimate(0.78, 0.66, 0.87), higher_is_better=True)
    judge(acc, 0.77, strict=True).status                              # "pass": 0.78 > 0.77
    decide([judge(acc, 0.77, strict=True)], "interval")[0].status    # "inconclusive": 0.77 is in [0.66, 0.87]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from audit.power import Sampling, power_of
from audit.stats import Estimate

SCHEMA = "audit.verdict/v3"
READABLE = ("audit.verdict/v2", SCHEMA)  # schemas a --baseline or compare may read
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
JUDGE_ON = ("interval", "value")
ON_INCONCLUSIVE = (INCONCLUSIVE, FAIL, PASS)
OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


@dataclass(frozen=True)
class Measure:
    """A reported number: its id (unique in a run), what it is, its estimate and its direction."""

    id: str
    title: str
    estimate: Estimate
    higher_is_better: bool
    detail: str = ""
    sampling: Sampling | None = None  # proportions and paired differences: what their power rests on

    @classmethod
    def count(cls, id: str, title: str, n: int, *, higher_is_better: bool = False, detail: str = "") -> Measure:
        """A count (no CI): files, classes, pairs, regressions."""
        return cls(id, title, Estimate(int(n), math.nan, math.nan), higher_is_better, detail)

    @property
    def value(self) -> float:
        return self.estimate.value


_HIDDEN = ("exact", "one_sided", "measure")  # how a criterion is decided, not a result: not in verdict.json


@dataclass(frozen=True)
class Criterion:
    id: str  # the measure's id, e.g. "accuracy", "class_f1.<label>"
    title: str  # what a person reads
    value: float | None
    low: float | None
    high: float | None
    op: str  # ">", ">=", "<", "<="  (value OP threshold passes)
    threshold: float | None
    status: str  # "pass", "fail" or "inconclusive"
    detail: str = ""
    judged: bool = True  # False: shown with its threshold for information, never decides the verdict
    n: int | None = None  # images behind a proportion or paired difference
    n_eff: float | None = None  # effective images (duplicates count once per cluster)
    mde: float | None = None  # minimum detectable distance from the threshold at n (power 0.8)
    images_needed: int | None = None  # inconclusive only: about how many images would decide it
    exact: bool = False  # decided on its value whatever judge_on says (a fact such as one disagreeing image)
    one_sided: bool = False  # a one-sided test: judge_on="value" reads its pessimistic bound, not the estimate
    measure: Measure | None = field(default=None, compare=False, repr=False)  # what ``decide`` reads again

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def inconclusive(self) -> bool:
        return self.status == INCONCLUSIVE

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name not in _HIDDEN},
                "passed": self.passed}


def status_of(measure: Measure, threshold: float, op: str, judge_on: str, one_sided: bool = False) -> str:
    """The status of ``measure`` against ``threshold`` (see the module docstring)."""
    est = measure.estimate
    x = est.value
    if x is None or not math.isfinite(x):
        return FAIL  # nothing was measured, so nothing passes
    if math.isnan(est.low) or math.isnan(est.high):  # no interval: an exact count; an infinite bound is a bound
        return PASS if OPS[op](x, threshold) else FAIL
    worst, best = (est.low, est.high) if measure.higher_is_better else (est.high, est.low)
    if judge_on == "value":
        return PASS if OPS[op](worst if one_sided else x, threshold) else FAIL
    if OPS[op](worst, threshold):
        return PASS
    return INCONCLUSIVE if OPS[op](best, threshold) else FAIL


def judge(measure: Measure, threshold: float, *, strict: bool = False, judged: bool = True,
          detail: str | None = None, exact: bool = False, one_sided: bool = False) -> Criterion:
    """Decide one criterion on the point estimate: the measure must be better than ``threshold`` (or equal,
    unless ``strict``); ``decide`` then applies the run's ``judge_on``. A measure without a finite value
    fails (nothing was measured, so nothing passes). ``exact``: ``decide`` leaves it decided on its value.
    """
    higher = measure.higher_is_better
    op = (">" if strict else ">=") if higher else ("<" if strict else "<=")
    status = status_of(measure, threshold, op, "value", one_sided)
    d = measure.estimate.to_dict()
    power = _power(measure, threshold, undecided=False)
    return Criterion(measure.id, measure.title, d["value"], d["low"], d["high"], op, threshold, status,
                     measure.detail if detail is None else detail, judged, **power, exact=exact,
                     one_sided=one_sided, measure=measure)


def decide(criteria: Iterable[Criterion], judge_on: str) -> list[Criterion]:
    """The criteria decided as the run says (``judge_on``: ``"interval"`` or ``"value"``, see the module
    docstring); an inconclusive one states the images that would decide it. A criterion made without
    ``judge`` or marked ``exact`` stays as it is."""
    if judge_on not in JUDGE_ON:
        raise ValueError(f"judge_on must be one of {JUDGE_ON}, got {judge_on!r}")
    out = []
    for c in criteria:
        if c.measure is not None and not c.exact:
            status = status_of(c.measure, c.threshold, c.op, judge_on, c.one_sided)
            needed = _power(c.measure, c.threshold, undecided=True).get("images_needed") \
                if status == INCONCLUSIVE else None
            c = replace(c, status=status, images_needed=needed)
        out.append(c)
    return out


def _power(measure: Measure, threshold: float, *, undecided: bool) -> dict[str, Any]:
    """n, n_eff, the MDE and (``undecided``) the images needed of a measure with a ``Sampling``; else nothing."""
    est = measure.estimate
    if measure.sampling is None or est.value is None or not math.isfinite(est.value):
        return {}
    half = (est.value - est.low) if est.value > threshold else (est.high - est.value)
    p = power_of(measure.sampling, est.value, threshold, level=est.level, undecided=undecided,
                 half=half if math.isfinite(half) else None)
    return {"n": p.n, "n_eff": p.n_eff, "mde": p.mde, "images_needed": p.images_needed}


def numbers(measures: Iterable[Measure]) -> dict[str, tuple[float, bool]]:
    """``id -> (value, higher_is_better)`` of the measures with a finite value (what ``--baseline`` compares)."""
    return {m.id: (float(m.value), m.higher_is_better) for m in measures
            if m.value is not None and math.isfinite(m.value)}


def numbers_to_json(nums: dict[str, tuple[float, bool]]) -> dict[str, dict[str, Any]]:
    return {k: {"value": v, "higher_is_better": h} for k, (v, h) in nums.items()}


@dataclass(frozen=True)
class Verdict:
    criteria: tuple[Criterion, ...]
    judge_on: str
    on_inconclusive: str = INCONCLUSIVE  # what an inconclusive run counts as: itself, a failure or a pass
    schema: str = SCHEMA

    @classmethod
    def of(cls, criteria: Iterable[Criterion], judge_on: str, on_inconclusive: str = INCONCLUSIVE) -> Verdict:
        return cls(criteria=tuple(criteria), judge_on=judge_on, on_inconclusive=on_inconclusive)

    @property
    def judged(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if c.judged)

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.judged if c.status == FAIL)

    @property
    def undecided(self) -> tuple[Criterion, ...]:
        """Judged criteria whose threshold lies inside their interval."""
        return tuple(c for c in self.judged if c.status == INCONCLUSIVE)

    @property
    def outcome(self) -> str:
        """fail if any judged criterion fails, else inconclusive if any is, else pass."""
        return FAIL if self.failed else INCONCLUSIVE if self.undecided else PASS

    @property
    def gate(self) -> str:
        """The outcome after ``on_inconclusive``: what the exit code reports."""
        return self.on_inconclusive if self.outcome == INCONCLUSIVE else self.outcome

    @property
    def passed(self) -> bool:
        return self.gate == PASS
