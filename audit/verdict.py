"""Measures, thresholds and the verdict: one record per acceptance criterion, one rule to decide it.

A ``Measure`` is a number the audit reports: a stable id, a title, an estimate with its CI and
its direction (``higher_is_better``), declared once where the number is computed. ``judge``
turns a measure and a threshold into a ``Criterion`` with one of three statuses:

* ``judge_on="interval"`` (the default): **pass** when the whole CI is on the good side of the
  threshold, **fail** when the whole CI is on the bad side, **inconclusive** when the threshold
  lies inside it (the data cannot tell);
* ``judge_on="value"``: the point estimate must meet the threshold (pass or fail).

A measure without a CI (a count, a share of files, a comparison of two implementations on the
same images) is exact: pass or fail on its value either way. Proportions and paired differences
carry their ``Sampling``, so their criteria state the minimum detectable effect and, when
inconclusive, about how many images would decide them (``audit.power``). A run fails when any
judged criterion fails, else is inconclusive when any is, else passes; ``on_inconclusive`` maps
an inconclusive run to a failure or a pass for teams that want two outcomes. The same measure
ids key the baseline comparison (``--baseline``).

Example::

    acc = Measure("accuracy", "Accuracy", Estimate(0.78, 0.66, 0.87), higher_is_better=True)
    judge(acc, 0.77, strict=True).status   # "inconclusive": 0.77 lies inside [0.66, 0.87]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from audit.power import Sampling, power_of
from audit.stats import Estimate

SCHEMA = "audit.verdict/v3"
READABLE = ("audit.verdict/v2", SCHEMA)  # schemas a --baseline or compare may read (v1: audit.checks.baseline)
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

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def inconclusive(self) -> bool:
        return self.status == INCONCLUSIVE

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def decide(measure: Measure, threshold: float, op: str, judge_on: str) -> str:
    """The status of ``measure`` against ``threshold`` (see the module docstring)."""
    est = measure.estimate
    x = est.value
    if x is None or not math.isfinite(x):
        return FAIL  # nothing was measured, so nothing passes
    if judge_on == "value" or math.isnan(est.low) or math.isnan(est.high):  # an infinite bound is a bound
        return PASS if OPS[op](x, threshold) else FAIL
    worst, best = (est.low, est.high) if measure.higher_is_better else (est.high, est.low)
    if OPS[op](worst, threshold):
        return PASS
    return INCONCLUSIVE if OPS[op](best, threshold) else FAIL


def judge(measure: Measure, threshold: float, *, strict: bool = False, judge_on: str = "value", judged: bool = True,
          detail: str | None = None) -> Criterion:
    """Decide one criterion: the measure must be better than ``threshold`` (or equal, unless ``strict``)."""
    if judge_on not in JUDGE_ON:
        raise ValueError(f"judge_on must be one of {JUDGE_ON}, got {judge_on!r}")
    higher = measure.higher_is_better
    op = (">" if strict else ">=") if higher else ("<" if strict else "<=")
    status = decide(measure, threshold, op, judge_on)
    d = measure.estimate.to_dict()
    power = {}
    if measure.sampling is not None and d["value"] is not None:
        est = measure.estimate
        half = (est.value - est.low) if est.value > threshold else (est.high - est.value)
        p = power_of(measure.sampling, est.value, threshold, level=est.level, undecided=status == INCONCLUSIVE,
                     half=half if math.isfinite(half) else None)
        power = {"n": p.n, "n_eff": p.n_eff, "mde": p.mde, "images_needed": p.images_needed}
    return Criterion(measure.id, measure.title, d["value"], d["low"], d["high"], op, threshold, status,
                     measure.detail if detail is None else detail, judged, **power)


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
