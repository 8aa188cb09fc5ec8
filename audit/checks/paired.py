"""Paired comparison with the baseline run (``--baseline old/verdict.json`` with ``old/predictions.csv``).

The ``baseline`` check compares point estimates with a tolerance; this one pairs the two runs'
predictions image by image (``audit.paired``): the accuracy difference with a paired interval,
McNemar's exact test on the images only one model gets right, those images per class (the
baseline's alone are the *negative flips*, counted with their interval and shown), per-slice
changes, and the criterion "candidate not worse by more than ``paired.margin``": pass when the
(1 - 2 alpha) paired interval of the accuracy the candidate loses lies below the margin, fail
when it lies at or above it, inconclusive (with the images needed at the observed share of
discordant images) when it holds the margin. The criterion is a one-sided test
(``judge(..., one_sided=True)``): with ``judge_on = "value"`` only the upper bound is read, as
before: below the margin passes, anything else fails.

It runs whenever the baseline's folder holds a ``predictions.csv`` (every run writes one) and
refuses runs on other data (other images, other bytes, other labels) with exit code 2 before
the first image is decoded where it can; ``--no-paired`` keeps only the tolerance comparison.
``python -m audit compare`` runs the same comparison between two finished output folders.

Example::

    python -m audit run --model new.onnx --data test/ --baseline reports/old/verdict.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from audit.context import AuditContext
from audit.contract import CardPart, CheckSpec, Option
from audit.errors import UsageError
from audit.findings import Finding
from audit.model import model_name
from audit.paired import PairedComparison, PairedRun, compare_runs, load_run, rows_file, run_of
from audit.power import Sampling
from audit.settings import Section, setting
from audit.sources import NON_FINITE
from audit.stats import Estimate
from audit.text import code, fmt, fmt_ci
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

HINT = "audit both models on the same --data, or pass --no-paired to compare point estimates only"


@dataclass(frozen=True)
class PairedConfig(Section):
    """``[audit.paired]``: the per-image comparison with the baseline run."""

    section: ClassVar[str] = "paired"
    enabled: bool = True  # runs when --baseline's folder holds predictions.parquet or predictions.csv
    margin: float = setting(0.01, ge=0.0, lt=1.0)  # the candidate may lose less than this accuracy
    alpha: float = setting(0.05, gt=0.0, lt=0.5)  # one-sided level of the non-inferiority test
    max_thumbnails: int = setting(12, ge=0, le=1000)  # images each model alone gets right, shown per side


def beside(baseline_path: str | None) -> Path | None:
    """The ``predictions.parquet`` (or ``predictions.csv``) next to a baseline ``verdict.json``, if there is one."""
    if not baseline_path:
        return None
    p = Path(baseline_path)
    return rows_file(p if p.is_dir() else p.parent)


def _prepare(ctx: AuditContext) -> PairedRun:
    """Read the baseline's rows and refuse other data before inference, where the paths already tell."""
    base = load_run(beside(ctx.config.baseline.path).parent, flag="--baseline")
    if set(base.labels) != set(ctx.classifier.labels):
        raise UsageError(f"--baseline {ctx.config.baseline.path}: its model has other classes "
                         f"({sorted(base.labels)} vs {sorted(ctx.classifier.labels)})", hint=HINT)
    here = {s.path for s in ctx.source.samples}
    unknown = [p for p in base.paths if p not in here]
    if unknown:
        raise UsageError(f"--baseline {ctx.config.baseline.path}: {len(unknown)} of its images are not in "
                         f"{ctx.source.description} (e.g. {', '.join(unknown[:3])})", hint=HINT)
    return base


def _run(ctx: AuditContext) -> PairedComparison:
    cfg = ctx.config.paired
    try:
        aside = [s.path for s in ctx.rejected if s.reason == NON_FINITE]
        return compare_runs(run_of(ctx.predictions, model_name(ctx.model_path), aside), ctx.state("paired"),
                            margin=cfg.margin, alpha=cfg.alpha, max_levels=ctx.config.slices.max_levels,
                            examples=cfg.max_thumbnails)
    except UsageError as e:
        raise UsageError(f"--baseline {ctx.config.baseline.path}: {e.message}", hint=HINT) from None


def measure(res: PairedComparison) -> Measure:
    """The judged number: the accuracy the candidate loses, with its (1 - 2 alpha) paired interval (whose
    upper bound is the one-sided (1 - alpha) bound of the classical non-inferiority test)."""
    ni, d, t = res.non_inferiority, res.difference, res.table
    detail = (f"accuracy {res.candidate_accuracy.value:.3f} vs {res.baseline_accuracy.value:.3f} ({res.baseline}), "
              f"difference {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]; McNemar exact p = {res.mcnemar_p:.2g} "
              f"({t.candidate_only} images right only for the candidate, {t.baseline_only} only for the baseline: "
              f"negative flips)")
    level = 100 * (1 - ni.alpha)
    title = (f"Candidate not worse than the baseline by more than the margin: accuracy lost, "
             f"{100 * (1 - 2 * ni.alpha):g}% paired CI (one-sided {level:g}% bounds)")
    return Measure("paired.not_worse", title, Estimate(-d.value, ni.lower_bound, ni.upper_bound, 1 - 2 * ni.alpha),
                   False, detail, sampling=Sampling(res.n, discordant=res.discordant))


def criteria(res: PairedComparison, config: AuditConfig | None) -> list[Criterion]:
    return [judge(measure(res), res.non_inferiority.margin, strict=True, one_sided=True)]


def findings(res: PairedComparison, config: AuditConfig | None) -> list[Finding]:
    d, t = res.difference, res.table
    nf = res.negative_flips
    out = [Finding("info", f"Against the baseline {res.baseline}, the candidate is {res.direction} on the "
                           f"same {res.n} images: accuracy {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}], McNemar "
                           f"p = {res.mcnemar_p:.2g} ({t.candidate_only} images only it gets right, "
                           f"{t.baseline_only} only the baseline: negative flips, {100 * nf.value:.1f}% "
                           f"[{100 * nf.low:.1f}%, {100 * nf.high:.1f}%]).",
                   "paired", importance=1.0, criterion="paired.not_worse")]
    worse = [s for s in res.slices if s.q_value < res.non_inferiority.alpha and s.difference.value < 0]
    if worse:
        s = min(worse, key=lambda s: s.difference.value)
        out.append(Finding("warn", f"On {s.attribute} = {s.level} ({s.n} images) the candidate is significantly "
                                   f"worse than the baseline: accuracy {s.difference.value:+.3f} "
                                   f"[{s.difference.low:+.3f}, {s.difference.high:+.3f}], q = {s.q_value:.2g}.",
                           "paired", importance=-s.difference.value))
    return out


def _number(flag: str):
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{flag} expects a number, got {text!r}") from None

    return parse


def card(res: PairedComparison, config: AuditConfig | None) -> CardPart:
    """model_card.md's comparison with the baseline run, in one paragraph."""
    d, ni, t, nf = res.difference, res.non_inferiority, res.table, res.negative_flips
    text = (f"Paired with the baseline {code(res.baseline)} on the same {res.n} images: accuracy "
            f"{fmt(res.candidate_accuracy.value)} vs {fmt(res.baseline_accuracy.value)}, difference "
            f"{d.value:+.3f} {fmt_ci(d.low, d.high)} (Newcombe, paired), McNemar exact p = {res.mcnemar_p:.2g} "
            f"({t.candidate_only} images only this model gets right, {t.baseline_only} only the baseline: negative "
            f"flips, {100 * nf.value:.1f}% [{100 * nf.low:.1f}%, {100 * nf.high:.1f}%]). The candidate is "
            f"{res.direction}; not worse by more than the margin {ni.margin:g}: **{ni.status}** (accuracy lost, "
            f"one-sided {100 * (1 - ni.alpha):g}% bounds {fmt_ci(ni.lower_bound, ni.upper_bound, 4)}).")
    return CardPart(sections=(("Comparison with the baseline", text),))


def thumbnails(res: PairedComparison, ctx: AuditContext) -> list[tuple]:
    return [(ctx.source, p) for p in (*res.candidate_examples, *res.baseline_examples)]


SPEC = CheckSpec(
    "paired", "paired comparison", _run, config=PairedConfig,
    enabled=lambda c: c.paired.enabled and beside(c.baseline.path) is not None, prepare=_prepare,
    criteria=criteria, thumbnails=thumbnails, findings=findings, card=card, toggle=True,
    options=(Option("--paired-margin", "paired.margin", "accuracy the candidate may lose against --baseline "
                    "(default 0.01)", "X", _number("--paired-margin")),
             Option("--paired-alpha", "paired.alpha", "one-sided level of that test (default 0.05)", "A",
                    _number("--paired-alpha"))),
)
