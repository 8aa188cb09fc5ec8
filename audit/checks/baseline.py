"""Baseline comparison (``--baseline old/verdict.json``): what got worse since an earlier run?

Every run writes its comparable numbers into ``verdict.json`` (key ``comparable``: a flat map of
``name -> {value, higher_is_better}``: headline metrics, per-class F1, calibration, every
judged slice's accuracy, fairness ratios, flip rates, parity), so the file alone is enough to
compare against. A number *regresses* when it moves in the wrong direction by more than
``baseline.tolerance`` (absolute). Numbers present on only one side are listed, not judged.

Example::

    res = compare(load_baseline(Path("old/verdict.json")), comparable_numbers(metrics, cal), BaselineConfig())
    [c.key for c in res.regressions]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.config import BaselineConfig
from audit.errors import UsageError
from audit.verdict import SCHEMA, Criterion


@dataclass(frozen=True)
class Comparison:
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
        """Positive = better, whatever the direction of the metric."""
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
    comparisons: tuple[Comparison, ...]  # regressions first (worst first), then the rest by key
    only_in_baseline: tuple[str, ...]
    only_in_current: tuple[str, ...]

    @property
    def regressions(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if c.regressed)

    def to_dict(self) -> dict:
        return {"source": self.source, "tolerance": self.tolerance, "baseline_created": self.baseline_created,
                "baseline_model": self.baseline_model,
                "regressions": [{"key": c.key, "old": c.old, "new": c.new} for c in self.regressions],
                "compared": len(self.comparisons), "only_in_baseline": list(self.only_in_baseline),
                "only_in_current": list(self.only_in_current)}


def _add(out: dict, key: str, value: float | None, higher: bool) -> None:
    if value is not None and math.isfinite(value):
        out[key] = (float(value), higher)


def comparable_numbers(metrics, calibration, slices=None, fairness=None, invariance=None,
                       parity=None) -> dict[str, tuple[float, bool]]:
    """The run's comparable numbers: ``name -> (value, higher_is_better)`` (typed results in, plain values out)."""
    out: dict[str, tuple[float, bool]] = {}
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"):
        _add(out, f"metrics.{name}", getattr(metrics, name).value, True)
    for k, e in metrics.top_k:
        _add(out, f"metrics.top_{k}_accuracy", e.value, True)
    for pc in metrics.per_class:
        if pc.support:
            _add(out, f"metrics.f1.{pc.label}", pc.f1.value, True)
    if calibration is not None:
        _add(out, "calibration.ece", calibration.ece.value, False)
        _add(out, "calibration.brier", calibration.brier.value, False)
    if slices is not None:
        for s in slices.slices:
            if s.judged:
                _add(out, f"slices.{s.name}.accuracy", s.accuracy.value, True)
    if fairness is not None:
        for a in fairness.attributes:
            for cf in a.per_class:
                _add(out, f"fairness.{a.attribute}.{cf.target}.disparate_impact", cf.disparate_impact.value, True)
                _add(out, f"fairness.{a.attribute}.{cf.target}.equal_opportunity_difference",
                     cf.equal_opportunity_difference.value, False)
    if invariance is not None:
        for r in invariance.runs:
            _add(out, f"invariance.{r.transform}.{r.severity}.flip_rate", r.flip_rate.value, False)
    if parity is not None:
        _add(out, "parity.max_abs_diff", parity.max_abs_diff, False)
        _add(out, "parity.agreement", parity.agreement.value, True)
    return out


def numbers_to_json(numbers: dict[str, tuple[float, bool]]) -> dict[str, dict[str, Any]]:
    return {k: {"value": v, "higher_is_better": h} for k, (v, h) in numbers.items()}


def load_baseline(path: Path) -> Baseline:
    """Read an earlier ``verdict.json``; older files without ``comparable`` give their headline metrics."""
    if not path.is_file():
        raise UsageError(f"baseline file not found: {path}", hint="pass --baseline path/to/verdict.json of an earlier run")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"baseline {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        found = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise UsageError(f"baseline {path} is not an audit verdict (schema {found!r}, expected {SCHEMA!r})",
                         hint="pass the verdict.json written by python -m audit run")
    if isinstance(d.get("comparable"), dict):
        numbers = {k: (float(v["value"]), bool(v["higher_is_better"])) for k, v in d["comparable"].items()
                   if isinstance(v, dict) and isinstance(v.get("value"), (int, float))}
    else:
        numbers = {}
        m = d.get("metrics", {})
        for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"):
            _add(numbers, f"metrics.{name}", (m.get(name) or {}).get("value"), True)
        for label, pc in (m.get("per_class") or {}).items():
            if pc.get("support"):
                _add(numbers, f"metrics.f1.{label}", (pc.get("f1") or {}).get("value"), True)
        for name in ("ece", "brier"):
            _add(numbers, f"calibration.{name}", ((d.get("calibration") or {}).get(name) or {}).get("value"), False)
    model = d.get("model") or {}
    return Baseline(str(path), numbers, model.get("sha256"), d.get("created"), d.get("passed"))


def compare(baseline: Baseline, current: dict[str, tuple[float, bool]], config: BaselineConfig) -> BaselineResult:
    """Every number present in both runs, with a regression flag (wrong direction by more than the tolerance)."""
    rows = []
    for key in sorted(set(baseline.numbers) & set(current)):
        old, _ = baseline.numbers[key]
        new, higher = current[key]
        worse = (old - new) if higher else (new - old)
        rows.append(Comparison(key, old, new, higher, bool(worse > config.tolerance + 1e-12)))
    rows.sort(key=lambda c: (not c.regressed, c.change if c.regressed else 0.0, c.key))
    return BaselineResult(
        source=baseline.source, tolerance=config.tolerance, baseline_created=baseline.created,
        baseline_model=baseline.model_sha256, baseline_passed=baseline.passed, comparisons=tuple(rows),
        only_in_baseline=tuple(sorted(set(baseline.numbers) - set(current))),
        only_in_current=tuple(sorted(set(current) - set(baseline.numbers))),
    )


def baseline_criteria(res: BaselineResult, config: BaselineConfig) -> list[Criterion]:
    reg = res.regressions
    ex = "; ".join(f"{c.key} {c.old:.3f} -> {c.new:.3f}" for c in reg[:5]) + (f"; and {len(reg) - 5} more" if len(reg) > 5 else "")
    return [Criterion(
        "baseline.regressions", f"Regressions against the baseline (tolerance {res.tolerance:g})", len(reg), None,
        None, "<=", config.max_regressions, len(reg) <= config.max_regressions,
        (f"{ex}" if reg else f"none of {len(res.comparisons)} numbers got worse by more than {res.tolerance:g}"),
    )]
