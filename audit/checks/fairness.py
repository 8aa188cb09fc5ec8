"""Fairness (docs/ARCHITECTURE.md §4.3): per-group rates through fairlearn, disparate impact and equal opportunity.

For every declared sensitive attribute and every target class (the positive class of a binary
model; each class one-vs-rest for a multiclass model) the per-group selection rate, TPR, FPR
and accuracy come from fairlearn's ``MetricFrame`` (``audit.group_rates``, in the side process).

* disparate impact = min over groups of the selection rate / max over groups (fairlearn's
  ``demographic_parity_ratio``); 1 is parity, the "four-fifths rule" asks for >= 0.8;
* equal opportunity difference = max - min TPR over groups (``equal_opportunity_difference``).

Groups with fewer than ``min_group_size`` images are listed as too small to judge and left out
of both ratios; for the TPR a group also needs ``min_group_positives`` images of the class.
fairlearn gets each group's 2 x 2 table per target class as rows weighted by their counts, and the
percentile CIs resample images as counts per (group, true, predicted class) cell (``Exchangeable``),
which groups are judged fixed by the point estimate: the cost grows with cells, not images (§4.3).

Example::

    res = fairness(preds, FairnessConfig(sensitive=("sex",)), n_boot=1000, seed=0)
    res.attributes[0].worst_disparate_impact.disparate_impact.value
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from audit.clusters import Exchangeable, column_sums
from audit.context import AuditContext
from audit.contract import CardPart, CheckSpec, Option, comma_list
from audit.errors import DataError
from audit.findings import Finding
from audit.group_rates import fairlearn_rates
from audit.predictions import MISSING, Predictions
from audit.settings import Section, setting, unit
from audit.side_process import SUPPORTED as side_process_supported
from audit.side_process import SideProcess, side_process
from audit.stats import Estimate, _estimate, unique_codes
from audit.svg import ACCENT, GREEN, Bar, Canvas, intervals, short_label
from audit.text import fmt, fmt_ci, md
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig


@dataclass(frozen=True)
class FairnessConfig(Section):
    """Fairness (docs/ARCHITECTURE.md §4.3) over the declared sensitive attributes, through fairlearn."""

    section: ClassVar[str] = "fairness"
    sensitive: tuple[str, ...] = ()  # metadata columns; none declared = no fairness section
    positive_class: str | None = None  # binary models: the positive label (default: the second label)
    min_group_size: int = setting(30, ge=1)  # smaller groups are reported as too small, left out of the ratios
    min_group_positives: int = setting(10, ge=1)  # a group needs this many true positives for its TPR to count
    min_disparate_impact: float = unit(0.8)
    max_equal_opportunity_difference: float = unit(0.1)


@dataclass(frozen=True)
class GroupRates:
    group: str
    n: int
    positives: int  # images of the target class in the group
    selection_rate: float  # share of the group predicted as the target class
    tpr: float  # nan when the group has no image of the class
    fpr: float
    accuracy: float  # multiclass accuracy of the group
    judged: bool  # n >= min_group_size: counts in the disparate impact
    tpr_judged: bool  # judged and positives >= min_group_positives: counts in the TPR gap

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ClassFairness:
    target: str  # the class treated as positive (one-vs-rest)
    groups: tuple[GroupRates, ...]
    disparate_impact: Estimate  # nan when fewer than two judged groups
    equal_opportunity_difference: Estimate

    def to_dict(self) -> dict:
        return {"target": self.target, "disparate_impact": self.disparate_impact.to_dict(),
                "equal_opportunity_difference": self.equal_opportunity_difference.to_dict(),
                "groups": [g.to_dict() for g in self.groups]}


@dataclass(frozen=True)
class AttributeFairness:
    attribute: str
    per_class: tuple[ClassFairness, ...]
    too_small: tuple[tuple[str, int], ...]  # (group, images) below min_group_size

    @property
    def worst_disparate_impact(self) -> ClassFairness | None:
        ok = [c for c in self.per_class if math.isfinite(c.disparate_impact.value)]
        return min(ok, key=lambda c: c.disparate_impact.value) if ok else None

    @property
    def worst_equal_opportunity(self) -> ClassFairness | None:
        ok = [c for c in self.per_class if math.isfinite(c.equal_opportunity_difference.value)]
        return max(ok, key=lambda c: c.equal_opportunity_difference.value) if ok else None

    @property
    def shown(self) -> ClassFairness:
        """The class whose groups the report shows: the largest TPR gap, else the lowest ratio, else the first."""
        return self.worst_equal_opportunity or self.worst_disparate_impact or self.per_class[0]

    def to_dict(self) -> dict:
        return {"attribute": self.attribute, "too_small": [list(x) for x in self.too_small],
                "per_class": [c.to_dict() for c in self.per_class]}


@dataclass(frozen=True)
class FairnessResult:
    min_group_size: int
    min_group_positives: int
    attributes: tuple[AttributeFairness, ...]

    def to_dict(self) -> dict:
        return {"min_group_size": self.min_group_size, "min_group_positives": self.min_group_positives,
                "attributes": [a.to_dict() for a in self.attributes]}


def targets(labels: tuple[str, ...], positive_class: str | None) -> list[int]:
    """The classes judged one-vs-rest: the positive class of a binary model, else every class."""
    if positive_class is not None:
        if positive_class not in labels:
            raise DataError(f"fairness.positive_class {positive_class!r} is not one of the labels {list(labels)}",
                            hint="set it to one of the model's labels")
        return [labels.index(positive_class)]
    return [1] if len(labels) == 2 else list(range(len(labels)))


def check_columns(sensitive, columns) -> None:
    """Every sensitive attribute must be a metadata column (checked before inference)."""
    missing = [a for a in sensitive if a not in columns]
    if missing:
        raise DataError(f"sensitive attribute {missing[0]!r} is not a metadata column "
                        f"(columns: {sorted(columns) or 'none'})",
                        hint="fix --sensitive or add the column to metadata.csv")


def fairness(preds: Predictions, config: FairnessConfig, *, n_boot: int = 1000, seed: int = 0,
             side: SideProcess | None = None) -> FairnessResult:
    """Per-group rates, disparate impact and equal opportunity difference for each sensitive attribute; fairlearn
    runs in the side process ``side`` when given (``audit.group_rates``)."""
    check_columns(config.sensitive, preds.attributes)
    return FairnessResult(
        config.min_group_size, config.min_group_positives,
        tuple(_attribute(preds, a, config, n_boot, seed, side) for a in config.sensitive),
    )


def _attribute(preds: Predictions, name: str, config: FairnessConfig, n_boot: int, seed: int,
               side: SideProcess | None) -> AttributeFairness:
    groups = np.asarray([str(v) if str(v) != "" else MISSING for v in preds.attributes[name]], dtype=object)
    names, codes = np.unique(groups, return_inverse=True)
    names = [str(x) for x in names]
    sizes = np.bincount(codes, minlength=len(names))
    judged = sizes >= config.min_group_size
    tlist = targets(preds.labels, config.positive_class)
    cells = _Cells.of(codes, preds.y_true, preds.y_pred, tlist, len(preds.labels))
    cell_rows, tables, positives = _counts(cells, len(names), len(tlist))
    acc, rates = fairlearn_rates(cell_rows, tables, tlist, len(names), side=side)
    point = [_class_rows(j, names, positives[:, j], sizes, judged, acc, rates, config) for j in range(len(tlist))]
    tpr_ok = np.asarray([ok for _, _, _, ok in point])  # (T, G)
    ests = _bootstrap(cells, len(names), len(tlist), judged, tpr_ok, n_boot, seed)
    nan = Estimate(math.nan, math.nan, math.nan)
    per_class = []
    for j, (t, (rows, di, eod, _)) in enumerate(zip(tlist, point)):
        d, e = ests[j], ests[len(tlist) + j]  # point values from fairlearn's MetricFrame, CIs from the bootstrap
        per_class.append(ClassFairness(
            target=preds.labels[t], groups=tuple(rows),
            disparate_impact=Estimate(di, d.low, d.high) if math.isfinite(di) else nan,
            equal_opportunity_difference=Estimate(eod, e.low, e.high) if math.isfinite(eod) else nan,
        ))
    too_small = tuple((g, int(s)) for g, s, j in zip(names, sizes, judged) if not j)
    return AttributeFairness(name, tuple(per_class), too_small)


@dataclass(frozen=True)
class _Cells:
    """The images counted by (group, true class, predicted class) cell, each cell present at least once."""

    of_row: np.ndarray  # (N,) each image's cell, 0..K-1
    count: np.ndarray  # (K,) images per cell
    group: np.ndarray  # (K,) the group code of each cell, and its classes:
    y_true: np.ndarray
    y_pred: np.ndarray
    target: np.ndarray  # (C,) each class's place among the target classes, -1 for none

    @classmethod
    def of(cls, codes: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, tlist: list[int], c: int) -> _Cells:
        groups = int(codes.max(initial=0)) + 1
        cells, of_row = unique_codes((codes.astype(np.int64) * c + y_true) * c + y_pred, groups * c * c)
        target = np.full(c, -1)
        target[tlist] = np.arange(len(tlist))
        return cls(of_row, np.bincount(of_row), cells // (c * c), cells // c % c, cells % c, target)

    def column(self, y: np.ndarray, t: int, where: np.ndarray | bool = True) -> np.ndarray:
        """Each cell's (group, target ``y``) column of a (G x T) table; -1 if ``y`` is no target, or not ``where``."""
        return np.where(where & (self.target[y] >= 0), self.group * t + self.target[y], -1)


def _counts(cells: _Cells, g: int, t: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
    """What fairlearn reads (``audit.group_rates.fairlearn_rates``): the cells, each group's 2 x 2 table per target
    (at most 4 G T rows, whatever N), and the (G, T) positives."""
    def count(column: np.ndarray) -> np.ndarray:  # (G, T) images by (group, target) column
        return np.bincount(column[column >= 0], cells.count[column >= 0], minlength=g * t).reshape(g, t)

    tp, pos = count(cells.column(cells.y_true, t, cells.y_true == cells.y_pred)), count(cells.column(cells.y_true, t))
    pred, n = count(cells.column(cells.y_pred, t)), np.bincount(cells.group, cells.count, minlength=g)[:, None]
    table = np.stack([n - pos - pred + tp, pred - tp, pos - tp, tp], axis=2)  # (true, predicted): 00, 01, 10, 11
    gi, ti, k = np.nonzero(table)
    tables = (np.flatnonzero(cells.target >= 0)[ti], gi, k // 2, k % 2, table[gi, ti, k])
    return (cells.group, cells.y_true, cells.y_pred, cells.count), tables, pos.astype(int)


def _class_rows(j: int, names: list[str], pos: np.ndarray, sizes, judged, acc, rates, config: FairnessConfig):
    """Target ``j``'s rows of fairlearn's rates (one-vs-rest): rows, DI, TPR gap, TPR-judged mask."""
    ok = judged & (pos >= config.min_group_positives)
    sel_all, tpr_all, fpr_all = rates["selection_rate"][j], rates["tpr"][j], rates["fpr"][j]
    rows = [GroupRates(
        group=g, n=int(sizes[gi]), positives=int(pos[gi]), selection_rate=float(sel_all[gi]),
        tpr=float(tpr_all[gi]) if pos[gi] else math.nan, fpr=float(fpr_all[gi]) if sizes[gi] > pos[gi] else math.nan,
        accuracy=float(acc[gi]), judged=bool(judged[gi]), tpr_judged=bool(ok[gi]),
    ) for gi, g in enumerate(names)]
    sel, tpr = sel_all[judged], tpr_all[ok]
    di = float(sel.min() / sel.max()) if sel.size >= 2 and sel.max() > 0 else math.nan
    eod = float(tpr.max() - tpr.min()) if tpr.size >= 2 else math.nan
    return rows, di, eod, ok


def _bootstrap(cells: _Cells, g: int, t: int, judged, tpr_ok, n_boot: int, seed: int) -> list[Estimate]:
    """Percentile CIs of disparate impact and TPR gap per target class. The images are resampled as counts per
    cell (``Exchangeable``: the same distribution as drawing images), so the cost grows with cells, not images."""
    stat = resample_statistic(cells, g, t, judged, tpr_ok)
    ex = Exchangeable.of_groups(cells.of_row, len(cells.count))  # weights in cell order
    point = stat(ex.point())[0]
    reps = np.concatenate([stat(w) for w in ex.resamples(n_boot, seed)]) if n_boot else np.zeros((0, len(point)))
    return [_estimate(point[j], reps[:, j], 0.95) for j in range(len(point))]


def resample_statistic(cells: _Cells, g: int, t: int, judged, tpr_ok):
    """(k, K) cell weights -> (k, 2T): each target's disparate impact, then its TPR gap, from a resample's counts
    per (group, target) column (``column_sums``: no cells x columns matrix)."""
    predicted, positives = cells.column(cells.y_pred, t), cells.column(cells.y_true, t)
    tp = cells.column(cells.y_true, t, cells.y_true == cells.y_pred)

    def stat(w: np.ndarray) -> np.ndarray:
        k = len(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            sel = column_sums(w, predicted, g * t).reshape(k, g, t) / column_sums(w, cells.group, g)[:, :, None]
            tpr = column_sums(w, tp, g * t).reshape(k, g, t) / column_sums(w, positives, g * t).reshape(k, g, t)
        return np.concatenate([_ratio(sel, judged[None, :, None]), _spread(tpr, tpr_ok.T[None])], axis=1)
    return stat


def _ratio(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """min/max over axis 1 of x where mask; nan with fewer than two valid groups or a zero max."""
    valid = mask & np.isfinite(x)
    lo = np.where(valid, x, np.inf).min(axis=1)
    hi = np.where(valid, x, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = lo / hi
    return np.where((valid.sum(axis=1) >= 2) & (hi > 0), out, np.nan)


def _spread(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    valid = mask & np.isfinite(x)
    lo = np.where(valid, x, np.inf).min(axis=1)
    hi = np.where(valid, x, -np.inf).max(axis=1)
    return np.where(valid.sum(axis=1) >= 2, hi - lo, np.nan)


def criteria(res: FairnessResult, config: AuditConfig) -> list[Criterion]:
    """Per attribute: the worst class's disparate impact >= min and TPR gap <= max."""
    cfg, out = config.fairness, []
    for a in res.attributes:
        di, eo = a.worst_disparate_impact, a.worst_equal_opportunity
        small = f"; too small to judge: {', '.join(f'{g} ({n})' for g, n in a.too_small)}" if a.too_small else ""
        nan = Estimate(math.nan, math.nan, math.nan)
        di_detail = (f"worst class {di.target}: {_extremes(di, 'selection_rate', True)}{small}" if di else
                     f"cannot be judged: fewer than two groups with >= {res.min_group_size} images{small}")
        eo_detail = (f"worst class {eo.target}: {_extremes(eo, 'tpr', False)}{small}" if eo else
                     f"cannot be judged: fewer than two groups with >= {res.min_group_size} images "
                     f"and >= {res.min_group_positives} of a class{small}")
        out.append(judge(Measure(f"fairness.{a.attribute}.disparate_impact", f"Disparate impact over {a.attribute}",
                                 di.disparate_impact if di else nan, True, di_detail),
                         cfg.min_disparate_impact))
        out.append(judge(Measure(f"fairness.{a.attribute}.equal_opportunity",
                                 f"Equal opportunity difference over {a.attribute}",
                                 eo.equal_opportunity_difference if eo else nan, False, eo_detail),
                         cfg.max_equal_opportunity_difference))
    return out


def measures(res: FairnessResult, config: AuditConfig | None = None) -> list[Measure]:
    out = []
    for a in res.attributes:
        for cf in a.per_class:
            key = f"fairness.{a.attribute}.{cf.target}"
            out.append(Measure(f"{key}.disparate_impact", f"Disparate impact over {a.attribute}, class {cf.target}",
                               cf.disparate_impact, True))
            out.append(Measure(f"{key}.equal_opportunity_difference",
                               f"Equal opportunity difference over {a.attribute}, class {cf.target}",
                               cf.equal_opportunity_difference, False))
    return out


def _extremes(cf: ClassFairness, field: str, selection: bool) -> str:
    gs = [g for g in cf.groups if (g.judged if selection else g.tpr_judged)]
    lo = min(gs, key=lambda g: getattr(g, field))
    hi = max(gs, key=lambda g: getattr(g, field))
    name = "selection rate" if selection else "TPR"
    return f"{name} {getattr(lo, field):.3f} ({lo.group}) vs {getattr(hi, field):.3f} ({hi.group})"


def findings(res: FairnessResult, config: AuditConfig) -> list[Finding]:
    """Per sensitive attribute, its larger fairness gap: disparate impact below 1, or a TPR difference."""
    cfg, out = config.fairness, []
    for a in res.attributes:
        di, eo = a.worst_disparate_impact, a.worst_equal_opportunity
        di_gap = 1 - di.disparate_impact.value if di else -1.0
        eo_gap = eo.equal_opportunity_difference.value if eo else -1.0
        if max(di_gap, eo_gap) <= 0:
            continue
        if di_gap >= eo_gap:
            cf, e, name, key = di, di.disparate_impact, "disparate impact", "disparate_impact"
            bad, rates = e.value < cfg.min_disparate_impact, _extremes(di, "selection_rate", True)
        else:
            cf, e, name, key = eo, eo.equal_opportunity_difference, "equal opportunity difference", "equal_opportunity"
            bad, rates = e.value > cfg.max_equal_opportunity_difference, _extremes(eo, "tpr", False)
        text = (f"Largest fairness gap over {a.attribute}: class {cf.target}, {name} {e.value:.3f} "
                f"[{e.low:.3f}, {e.high:.3f}] ({rates}).")
        out.append(Finding("warn" if bad else "info", text, "fairness", importance=max(di_gap, eo_gap),
                           criterion=f"fairness.{a.attribute}.{key}"))
    return out


def card(res: FairnessResult, config: AuditConfig | None) -> CardPart:
    """model_card.md states both gaps of every class over every sensitive attribute."""
    return CardPart(limitations=tuple(
        f"Fairness over **{md(a.attribute)}** (class {md(cf.target)}): disparate impact "
        f"{fmt(cf.disparate_impact.value)} {fmt_ci(cf.disparate_impact.low, cf.disparate_impact.high)}, equal "
        f"opportunity difference {fmt(cf.equal_opportunity_difference.value)} "
        f"{fmt_ci(cf.equal_opportunity_difference.low, cf.equal_opportunity_difference.high)}."
        for a in res.attributes for cf in a.per_class))


def charts(res: FairnessResult, config: AuditConfig | None) -> dict[str, Canvas]:
    return {f"groups.{a.attribute}": fairness_groups(a.shown) for a in res.attributes if a.per_class}


def fairness_groups(cf: ClassFairness) -> Canvas:
    """Selection rate and TPR per group for one target class; groups too small to judge are hatched."""
    labels, bars = [], []
    for g in cf.groups:
        labels.append(short_label(g.group) + ("" if g.judged else " (too small)") + f" n={g.n}")
        tpr = g.tpr if math.isfinite(g.tpr) else 0.0
        bars.append([Bar(g.selection_rate, math.nan, math.nan, ACCENT, not g.judged),
                     Bar(tpr, math.nan, math.nan, GREEN, not g.tpr_judged)])
    return intervals(labels, bars, lo=0, hi=1, xlabel=f"rate for class {short_label(cf.target)} (one-vs-rest)",
                     legend=[("selection rate", ACCENT), ("TPR", GREEN)])


def _prepare(ctx: AuditContext) -> SideProcess | None:
    """Check the columns and the positive class; start the side process (fairlearn runs there), None if none."""
    check_columns(ctx.config.fairness.sensitive, ctx.source.attribute_names)
    targets(ctx.classifier.labels, ctx.config.fairness.positive_class)
    return side_process("fairlearn.metrics") if side_process_supported else None


def _run(ctx: AuditContext) -> FairnessResult:
    return fairness(ctx.predictions, ctx.config.fairness, n_boot=ctx.config.n_boot, seed=ctx.config.seed,
                    side=ctx.prepared.get("fairness"))


SPEC = CheckSpec(
    "fairness", "fairness", _run, config=FairnessConfig, enabled=lambda c: bool(c.fairness.sensitive),
    prepare=_prepare, criteria=criteria, comparable=measures, findings=findings, card=card, charts=charts,
    options=(Option("--sensitive", "fairness.sensitive", "sensitive metadata columns for the fairness check",
                    "COL[,COL]", comma_list),),
)
