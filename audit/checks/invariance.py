"""Label invariance (docs/ARCHITECTURE.md §4.3): do predictions survive label-preserving transforms?

The model is re-run on transformed copies of (a seeded sample of) the test images at graded
severities, through the same engine and batched path as the audit itself (``ctx.rerun(...,
transform=...)``; the transform acts on the decoded image, before resizing). Per transform and
severity: the *flip rate* (share of images whose top-1 prediction changes) and the *accuracy
drop* (accuracy on the originals minus on the copies), overall and per true class. Flip rates and
accuracies are proportions with Wilson intervals (no flip in 30 images is [0, 0.11], not [0, 0]);
the accuracy drop, a difference, has a percentile-bootstrap CI.

With ``early_stop`` (the default) each transform x severity arm runs its images in looks (50, 100,
200, ... images, in a seeded random order) and stops as soon as the anytime-valid confidence
sequence of its flip rate (``audit.sequential``) excludes the transform's limit: an arm far from
its limit decides after a few dozen images instead of the whole sample. Its flip rate is then
reported with that sequence, which holds at whatever size the arm stopped (a Wilson interval
would not: looking and stopping early breaks its coverage). Without ``early_stop`` every arm runs
the whole sample and flip rates get Wilson intervals on the effective sample size (duplicated
test images count once, ``audit.clusters``).

Which transforms run: ``invariance.transforms`` from the config, else the model card's
``audit.invariances``, else ``DEFAULT_TRANSFORMS``; minus ``invariance.exclude`` (e.g. a
vertical flip is not label-preserving for digits). Only claimed invariances (card or config)
are judged; the default set is evidence, not a contract.

Example::

    res = invariance(ctx)
    res.runs[0].flip_rate.value
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from audit.clusters import clustered_proportion
from audit.context import AuditContext
from audit.contract import CheckSpec
from audit.errors import ConfigError
from audit.findings import Finding
from audit.power import Sampling
from audit.sequential import excludes, looks, rate_sequence
from audit.settings import Section, setting, unit
from audit.stats import Estimate, _num, bootstrap, proportion_ci
from audit.svg import ACCENT, BAD, Bar, Canvas, ci_bounds, intervals, short_label
from audit.transforms import DEFAULT_TRANSFORMS, TRANSFORMS, TransformSpec
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig


@dataclass(frozen=True)
class FlipLimits(Section):
    """Per-transform maximum flip rate; ``None`` falls back to ``invariance.max_flip_rate``."""

    section: ClassVar[str] = "invariance.max_flip_rate_by"
    none: float | None = unit(None)
    hflip: float | None = unit(None)
    vflip: float | None = unit(None)
    rotate: float | None = unit(None)
    crop: float | None = unit(None)
    brightness: float | None = unit(None)
    contrast: float | None = unit(None)
    blur: float | None = unit(None)
    noise: float | None = unit(None)
    jpeg: float | None = unit(None)


@dataclass(frozen=True)
class InvarianceConfig(Section):
    """Label invariance (docs/ARCHITECTURE.md §4.3): re-run the model on transformed copies of test images."""

    section: ClassVar[str] = "invariance"
    enabled: bool = True
    transforms: tuple[str, ...] = setting((), choices=TRANSFORMS)  # empty: the card's, else the default set
    exclude: tuple[str, ...] = setting((), choices=TRANSFORMS)  # transforms that are not label-preserving here
    severities: tuple[int, ...] = setting((1, 3), choices=(1, 2, 3))  # 1 (mild), 2 (moderate), 3 (strong)
    max_images: int = setting(1000, ge=0)  # a seeded sample of the test images; 0 = all
    max_flip_rate: float = unit(0.1)
    max_flip_rate_by: FlipLimits = field(default_factory=FlipLimits)
    early_stop: bool = True  # stop each arm once its flip rate's confidence sequence excludes the limit
    first_look: int = setting(50, ge=1)  # images before an arm's first look; each later look doubles them

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.severities:
            raise ConfigError("config key 'invariance.severities' must name at least one of 1, 2, 3")

    def limit(self, transform: str) -> float:
        own = getattr(self.max_flip_rate_by, transform)
        return self.max_flip_rate if own is None else own


@dataclass(frozen=True)
class ClassFlips:
    label: str
    n: int
    flip_rate: float
    accuracy_drop: float


@dataclass(frozen=True)
class InvarianceRun:
    transform: str
    severity: int
    description: str
    n: int
    flip_rate: Estimate
    accuracy: Estimate  # on the transformed copies
    accuracy_drop: Estimate  # accuracy on originals minus on copies (positive = worse)
    per_class: tuple[ClassFlips, ...]
    flipped: tuple[str, ...] = ()  # a few paths whose prediction changed
    limit: float = math.nan  # the maximum flip rate that applies to this transform
    budget: int = 0  # images the arm would run without stopping early
    sequential: bool = False  # looked as it ran: flip_rate's interval is the anytime-valid sequence

    @property
    def over_limit(self) -> bool:
        return self.flip_rate.value > self.limit

    @property
    def stopped_early(self) -> bool:
        return self.n < self.budget

    def to_dict(self) -> dict:
        return {"transform": self.transform, "severity": self.severity, "description": self.description,
                "n": self.n, "budget": self.budget, "sequential": self.sequential, "flip_rate": self.flip_rate.to_dict(), "accuracy": self.accuracy.to_dict(),
                "accuracy_drop": self.accuracy_drop.to_dict(),
                "per_class": {c.label: {"n": c.n, "flip_rate": _num(c.flip_rate), "accuracy_drop": _num(c.accuracy_drop)}
                              for c in self.per_class}}


@dataclass(frozen=True)
class InvarianceResult:
    source: str  # where the transform list came from: "config", "model card" or "default"
    n_images: int  # images re-run per transform (a seeded sample)
    n_total: int
    accuracy: Estimate  # on the sampled originals
    runs: tuple[InvarianceRun, ...]
    excluded: tuple[str, ...]
    unknown: tuple[str, ...]  # names in the card that this audit does not implement

    @property
    def worst_run(self) -> InvarianceRun | None:
        """The run with the highest flip rate (the first of equals)."""
        return max(self.runs, key=lambda r: r.flip_rate.value) if self.runs else None

    def worst(self, transform: str) -> InvarianceRun:
        return max((r for r in self.runs if r.transform == transform), key=lambda r: r.flip_rate.value)

    @property
    def transforms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.transform for r in self.runs))

    @property
    def images_run(self) -> int:
        return sum(r.n for r in self.runs)

    @property
    def images_budget(self) -> int:
        return sum(r.budget for r in self.runs)

    def to_dict(self) -> dict:
        return {"source": self.source, "n_images": self.n_images, "n_total": self.n_total,
                "images_run": self.images_run, "images_budget": self.images_budget,
                "accuracy": self.accuracy.to_dict(), "excluded": list(self.excluded), "unknown": list(self.unknown),
                "runs": [r.to_dict() for r in self.runs]}


def choose_transforms(config: InvarianceConfig, card_invariances: Sequence[str]) -> tuple[list[str], str, list[str]]:
    """(transforms to run, where the list came from, unknown names from the card)."""
    if config.transforms:
        names, source, unknown = list(config.transforms), "config", []
    elif card_invariances:
        names = [t for t in card_invariances if t in TRANSFORMS]
        unknown = [t for t in card_invariances if t not in TRANSFORMS]
        source = "model card"
    else:
        names, source, unknown = list(DEFAULT_TRANSFORMS), "default", []
    return [t for t in dict.fromkeys(names) if t not in config.exclude], source, unknown


def invariance(ctx: AuditContext, max_flipped: int = 8) -> InvarianceResult:
    """Re-run the classifier on transformed copies of a seeded sample of the processed images."""
    config, preds = ctx.config.invariance, ctx.predictions
    names, source, unknown = choose_transforms(config, ctx.classifier.card.invariances)
    rows = ctx.sample_rows(config.max_images)
    if config.early_stop:  # every prefix must be a random sample, not the first classes of the folder
        rows = rows[np.random.default_rng(ctx.seed).permutation(len(rows))]
    usable = ctx.samples_at(rows)
    arms = _Arms(usable, preds.y_true[rows], preds.y_pred[rows],
                 None if preds.clusters is None else preds.clusters[rows], preds.labels)
    runs = []
    for name in names:
        spec = TRANSFORMS[name]
        for sev in spec.severities(config.severities):
            limit = config.limit(name)
            ran, new = _rerun(ctx, spec.at(sev), arms, limit, config, f"invariance {name}")
            runs.append(_compare(spec, sev, arms, ran, new, limit, config.early_stop, ctx, max_flipped))
    n = len(rows)
    acc = proportion_ci(int((arms.base == arms.y).sum()), n)
    return InvarianceResult(source, n, len(preds), acc, tuple(runs), tuple(config.exclude), tuple(unknown))


@dataclass(frozen=True)
class _Arms:
    """The sampled images every arm re-runs (in running order), with their labels and original predictions."""

    usable: list
    y: np.ndarray
    base: np.ndarray
    clusters: np.ndarray | None
    labels: tuple[str, ...]


def _rerun(ctx, transform, arms: _Arms, limit: float, config: InvarianceConfig, desc: str):
    """(rows of ``arms.usable`` that ran, their new predictions): at once, or look by look until the flip
    rate's confidence sequence excludes ``limit``. A transform could make an image undecodable only in
    theory; the rows both runs have are kept."""
    total = len(arms.usable)
    stops = looks(total, config.first_look) if config.early_stop else [total]
    ran, new, done = [], [], 0
    for upto in stops:
        chunk = arms.usable[done:upto]
        p2, _ = ctx.rerun(chunk, transform=transform, desc=desc)
        at = {s.path: done + i for i, s in enumerate(chunk)}
        ran += [at[p] for p in p2.paths]
        new.append(p2.y_pred)
        done = upto
        flips = int((np.concatenate(new) != arms.base[ran]).sum())
        if config.early_stop and excludes(flips, len(ran), limit):
            break
    return np.array(ran, dtype=np.int64), (np.concatenate(new) if new else np.zeros(0, np.int64))


def _compare(spec: TransformSpec, sev, arms: _Arms, ran: np.ndarray, new: np.ndarray, limit: float,
             sequential: bool, ctx, max_flipped) -> InvarianceRun:
    y, base = arms.y[ran], arms.base[ran]
    paths = [arms.usable[i].path for i in ran]
    flips = new != base
    base_ok, new_ok = (base == y).astype(float), (new == y).astype(float)
    n = len(flips)
    drop = base_ok - new_ok
    k = int(flips.sum())
    nan = Estimate(math.nan, math.nan, math.nan)
    if not n:
        flip_rate = nan
    elif sequential:
        flip_rate = Estimate(k / n, *rate_sequence(k, n, limit))
    else:
        flip_rate = clustered_proportion(flips, None if arms.clusters is None else arms.clusters[ran])[0]
    per_class = []
    for ci, lab in enumerate(arms.labels):
        m = y == ci
        if m.any():
            per_class.append(ClassFlips(lab, int(m.sum()), float(flips[m].mean()), float(drop[m].mean())))
    return InvarianceRun(
        transform=spec.name, severity=sev, description=spec.describe.format(spec.param(sev)), n=n,
        flip_rate=flip_rate, accuracy=proportion_ci(int(new_ok.sum()), n),
        accuracy_drop=bootstrap(lambda idx: drop[idx].mean(axis=1), n, n_boot=ctx.n_boot, seed=ctx.seed) if n else nan,
        per_class=tuple(per_class), flipped=tuple(paths[i] for i in np.flatnonzero(flips)[:max_flipped]),
        limit=limit, budget=len(arms.usable), sequential=sequential,
    )


def criteria(res: InvarianceResult, config: AuditConfig) -> list[Criterion]:
    """Per transform: the flip rate at its worst severity run must not exceed the maximum."""
    out = []
    judged = res.source != "default"
    for t in res.transforms:
        worst = res.worst(t)
        detail = (("" if judged else "not judged: neither the model card nor the config declares invariances; ")
                  + f"worst severity: {worst.description}; accuracy drop {worst.accuracy_drop.value:+.3f} on "
                  f"{worst.n} images")
        stop = (f"; stopped after {worst.n} of {worst.budget} images: its confidence sequence excludes the limit"
                if worst.stopped_early else "")
        m = Measure(f"invariance.{t}", f"Flip rate under {t} (worst severity)", worst.flip_rate, False, detail + stop,
                    sampling=Sampling(worst.n))
        out.append(judge(m, config.invariance.limit(t), judged=judged))
    return out


def measures(res: InvarianceResult, config: AuditConfig | None = None) -> list[Measure]:
    return [Measure(f"invariance.{r.transform}.{r.severity}.flip_rate", f"Flip rate under {r.description}",
                    r.flip_rate, False) for r in res.runs]


def findings(res: InvarianceResult, config: AuditConfig | None) -> list[Finding]:
    """The least stable transform: where most predictions change."""
    w = res.worst_run
    if w is None or not w.flip_rate.value:
        return []
    fr, drop = w.flip_rate, w.accuracy_drop
    text = (f"Least stable under {w.description}: {100 * fr.value:.1f}% of {w.n} predictions change "
            f"(95% CI {100 * fr.low:.1f}-{100 * fr.high:.1f}%), accuracy drops {drop.value:+.3f}.")
    return [Finding("warn" if w.over_limit else "info", text, "invariance", importance=fr.value,
                    criterion=f"invariance.{w.transform}")]


def charts(res: InvarianceResult, config: AuditConfig) -> dict[str, Canvas]:
    return {"flip_rates": flip_rates(res.runs, config.invariance.max_flip_rate)} if res.runs else {}


def flip_rates(runs, max_flip_rate: float | None = None) -> Canvas:
    """Flip rate (95% CI) per transform and severity."""
    cis = [ci_bounds(r.flip_rate) for r in runs]
    top = max(0.05, min(1.0, max((h for _, _, h in cis if math.isfinite(h)), default=0) * 1.15))
    bars = [[Bar(v, lo, hi, BAD if max_flip_rate is not None and v > max_flip_rate else ACCENT)] for v, lo, hi in cis]
    lines = [(max_flip_rate, BAD, True)] if max_flip_rate is not None else []
    return intervals([short_label(f"{r.transform} {r.severity}: {r.description}", 40) for r in runs], bars, lo=0,
                     hi=top, lines=lines, xlabel="flip rate: share of images whose prediction changes (95% CI)")


def thumbnails(res: InvarianceResult, ctx: AuditContext) -> list[tuple]:
    worst = res.worst_run
    return [(ctx.source, p) for p in worst.flipped] if worst else []


def _prepare(ctx: AuditContext) -> None:
    choose_transforms(ctx.config.invariance, ctx.classifier.card.invariances)


SPEC = CheckSpec("invariance", "invariance", invariance, config=InvarianceConfig,
                 enabled=lambda c: c.invariance.enabled, prepare=_prepare, criteria=criteria,
                 comparable=measures, thumbnails=thumbnails, findings=findings, charts=charts, toggle=True)
