"""Findings first: what a reader should know before the tables, in plain words.

Each check may name its most important observations with its ``findings(result, config)`` hook
(the largest significant slice gap, the weakest class, the least stable transform, suspected
label errors, a fairness gap, the paired comparison). ``rank`` puts every failing criterion
first, then every inconclusive one (the data cannot decide it; the finding says about how many
images would), then at most ``MAX_OBSERVATIONS`` observations: warnings before information,
larger effects first. An observation that restates such a criterion (same ``criterion`` id) is
left out, since the criterion's line already says it. Every finding links to its report section
(``#<section>``); the HTML report and ``summary.md`` open with them.

Example::

    Finding("warn", "Accuracy on site = b is 0.18 below the rest", "slices", importance=0.18)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from audit.text import evidence, fmt, fmt_ci
from audit.verdict import Criterion

SEVERITIES = ("fail", "inconclusive", "warn", "info")  # in reading order
MAX_OBSERVATIONS = 5


@dataclass(frozen=True)
class Finding:
    """One line of the findings block; ``section`` is the id of the report section it links to."""

    severity: str  # "fail", "inconclusive", "warn" or "info"
    text: str  # plain words, numbers with their CI
    section: str
    importance: float = 0.0  # within a severity, larger first (an effect size on a 0-1 scale)
    criterion: str = ""  # the id of the criterion this restates, if any

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def failing(criteria: Iterable[Criterion], section: str) -> list[Finding]:
    """A finding per judged criterion that failed or is inconclusive, linking to the section of its check."""
    def text(c: Criterion) -> str:
        ci = fmt_ci(c.low, c.high)
        value = fmt(c.value) + ("" if ci == "n/a" else f" {ci}")
        if c.inconclusive:
            return (f"Undecided: {c.title}: {value}; the threshold {c.op} {fmt(c.threshold)} lies inside the "
                    f"interval, {evidence(c)}.")
        return f"Fails: {c.title}: {value}, must be {c.op} {fmt(c.threshold)}." + (f" {c.detail}." if c.detail else "")

    return [Finding(c.status, text(c), section, criterion=c.id) for c in criteria
            if c.judged and c.status in ("fail", "inconclusive")]


def rank(failures: Iterable[Finding], observations: Iterable[Finding],
         limit: int = MAX_OBSERVATIONS) -> tuple[Finding, ...]:
    """Failing criteria first, then inconclusive ones (each in registry order), then the ``limit`` most
    important observations."""
    failures = sorted(failures, key=lambda f: SEVERITIES.index(f.severity))
    failed_ids = {f.criterion for f in failures}
    obs = [o for o in observations if not (o.criterion and o.criterion in failed_ids)]
    obs.sort(key=lambda o: (SEVERITIES.index(o.severity), -o.importance))
    return (*failures, *obs[:limit])
