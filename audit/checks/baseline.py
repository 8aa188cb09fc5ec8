"""Baseline comparison (``--baseline old/verdict.json``): what got worse since an earlier run?

Every run writes its comparable measures into ``verdict.json`` (key ``comparable``: a flat map of
measure id -> ``{value, higher_is_better}``: headline metrics, per-class F1, calibration, every
judged slice's accuracy, fairness ratios, flip rates, parity), so the file alone is enough to
compare against. A measure *regresses* when it moves in the wrong direction by more than
``baseline.tolerance`` (absolute). Measures present on only one side are listed, not judged.

Example::

    res = compare(load_baseline(Path("old/verdict.json")), measures, BaselineConfig())
    [c.key for c in res.regressions]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from audit.context import AuditContext
from audit.contract import CheckSpec, Option
from audit.errors import UsageError
from audit.settings import Section, setting
from audit.verdict import READABLE, SCHEMA, Criterion, Measure, judge, numbers

if TYPE_CHECKING:
    from audit.config import AuditConfig

@dataclass(frozen=True)
class BaselineConfig(Section):
    """Comparison with an earlier run's verdict.json (``--baseline``)."""

    section: ClassVar[str] = "baseline"
    path: str | None = None
    tolerance: float = setting(0.01, ge=0.0)  # a measure may get this much worse (absolute) before it regresses
    max_regressions: int = setting(0, ge=0)
    min_compared: int = setting(1, ge=0)  # a comparison of nothing proves nothing: at least this many numbers


@dataclass(frozen=True)
class MeasureChange:
    key: str
    old: float
    new: float
    higher_is_better: bool
    regressed: bool

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def change(self) -> float:
        """Positive = better, whatever the direction of the measure."""
        return self.delta if self.higher_is_better else -self.delta


@dataclass(frozen=True)
class Baseline:
    source: str
    numbers: dict[str, tuple[float, bool]]
    model_sha256: str | None
    created: str | None
    passed: bool | None


@dataclass(frozen=True)
class BaselineResult:
    source: str
    tolerance: float
    baseline_created: str | None
    baseline_model: str | None
    baseline_passed: bool | None
    comparisons: tuple[MeasureChange, ...]  # regressions first (worst first), then the rest by key
    only_in_baseline: tuple[str, ...]
    only_in_current: tuple[str, ...]

    @property
    def regressions(self) -> tuple[MeasureChange, ...]:
        return tuple(c for c in self.comparisons if c.regressed)

    def to_dict(self) -> dict:
        return {"source": self.source, "tolerance": self.tolerance, "baseline_created": self.baseline_created,
                "baseline_model": self.baseline_model,
                "regressions": [{"key": c.key, "old": c.old, "new": c.new} for c in self.regressions],
                "compared": len(self.comparisons), "only_in_baseline": list(self.only_in_baseline),
                "only_in_current": list(self.only_in_current)}


def load_baseline(path: Path) -> Baseline:
    """Read an earlier ``verdict.json`` (schema v2 or v3)."""
    if not path.is_file():
        raise UsageError(f"baseline file not found: {path}", hint="pass --baseline path/to/verdict.json of an earlier run")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"baseline {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("schema") not in READABLE:
        found = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise UsageError(f"baseline {path} is not an audit verdict (schema {found!r}, expected {SCHEMA!r})",
                         hint="pass the verdict.json written by python -m audit run")
    comparable = d.get("comparable") if isinstance(d.get("comparable"), dict) else {}
    nums = {k: (float(v["value"]), bool(v["higher_is_better"])) for k, v in comparable.items()
            if isinstance(v, dict) and isinstance(v.get("value"), (int, float))}
    model = d.get("model") or {}
    return Baseline(str(path), nums, model.get("sha256"), d.get("created"), d.get("passed"))


def compare(baseline: Baseline, current: dict[str, tuple[float, bool]], config: BaselineConfig) -> BaselineResult:
    """Every measure present in both runs, with a regression flag (wrong direction by more than the tolerance)."""
    rows = []
    for key in sorted(set(baseline.numbers) & set(current)):
        old, _ = baseline.numbers[key]
        new, higher = current[key]
        worse = (old - new) if higher else (new - old)
        rows.append(MeasureChange(key, old, new, higher, bool(worse > config.tolerance + 1e-12)))
    rows.sort(key=lambda c: (not c.regressed, c.change if c.regressed else 0.0, c.key))
    return BaselineResult(
        source=baseline.source, tolerance=config.tolerance, baseline_created=baseline.created,
        baseline_model=baseline.model_sha256, baseline_passed=baseline.passed, comparisons=tuple(rows),
        only_in_baseline=tuple(sorted(set(baseline.numbers) - set(current))),
        only_in_current=tuple(sorted(set(current) - set(baseline.numbers))),
    )


def criteria(res: BaselineResult, config: AuditConfig) -> list[Criterion]:
    reg, config = res.regressions, config.baseline
    more = f"; and {len(reg) - 5} more" if len(reg) > 5 else ""
    ex = "; ".join(f"{c.key} {c.old:.3f} -> {c.new:.3f}" for c in reg[:5]) + more
    detail = ex if reg else f"none of {len(res.comparisons)} numbers got worse by more than {res.tolerance:g}"
    m = Measure.count("baseline.regressions", f"Regressions against the baseline (tolerance {res.tolerance:g})",
                      len(reg), detail=detail)
    only = len(res.only_in_baseline)
    compared = Measure.count("baseline.compared", "Numbers compared with the baseline", len(res.comparisons),
                             higher_is_better=True,
                             detail=f"{len(res.comparisons)} measure(s) in both runs" + (
                                 f"; {only} only in the baseline" if only else "") + (
                                 "" if res.comparisons else "; the baseline shares no measure id with this run"))
    return [judge(m, config.max_regressions), judge(compared, config.min_compared)]


def _run(ctx: AuditContext) -> BaselineResult:
    return compare(ctx.state("baseline"), numbers(ctx.measures), ctx.config.baseline)


SPEC = CheckSpec(
    "baseline", "baseline", _run, config=BaselineConfig, enabled=lambda c: bool(c.baseline.path),
    prepare=lambda ctx: load_baseline(Path(ctx.config.baseline.path)), criteria=criteria,
    options=(Option("--baseline", "baseline.path", "verdict.json of an earlier run: fail on regressions", "FILE"),),
    alone=True,  # it compares the measures of every check before it
)
