"""Slices (docs/ARCHITECTURE.md §4.3): where does the model underperform, and is that more than noise?

A *slicing variable* is a metadata column (each value is a slice) or an image property
(brightness, contrast, ... binned into quantiles; each bin is a slice). For every slice we
report accuracy and macro F1 and the gap to its complement (the rest of the data):
``accuracy_gap = accuracy(complement) - accuracy(slice)``, so a positive gap means the slice
is worse. A slice's accuracy, a proportion, has a Wilson interval; its macro F1 and the gaps carry
a percentile-bootstrap CI; the p-value of "gap = 0" is a two-sided Wald
test with the bootstrap standard error (unlike a bootstrap tail count it is not floored at
1/n_boot, which matters once Benjamini–Hochberg divides alpha by the number of slices). The
p-values of all judged slices are corrected together (BH). A slice is a *significant
underperformer* when its q-value is below ``alpha``, its gap is positive and at least
``min_gap``.

Speed: one partition (all slices of a variable) costs one ``bincount`` over the rows per chunk
of 100 bootstrap replicates: it counts the rows of each (slice, true, predicted) cell present
in the data, which gives every slice's per-class counts in every replicate at once;
complements are the total minus the slice.

Example::

    res = find_slices(preds, SlicesConfig(), n_boot=1000, seed=0)
    [s.name for s in res.significant]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from audit.clusters import Exchangeable, column_sums
from audit.context import AuditContext
from audit.contract import CardPart, CheckSpec
from audit.findings import Finding
from audit.predictions import MISSING, Predictions
from audit.settings import Section, setting, unit
from audit.stats import Estimate, _estimate, benjamini_hochberg, proportion_ci, unique_codes
from audit.svg import ACCENT, BAD, Bar, Canvas, ci_bounds, intervals, short_label
from audit.text import fmt, fmt_ci, md
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class SlicesConfig(Section):
    """Slices (docs/ARCHITECTURE.md §4.3): metadata columns and binned image properties, BH-corrected."""

    section: ClassVar[str] = "slices"
    enabled: bool = True
    attributes: tuple[str, ...] | None = None  # metadata columns to slice on; None = all of them
    properties: tuple[str, ...] = ("brightness", "contrast", "sharpness", "ink_coverage", "aspect_ratio",
                                   "resolution")
    bins: int = setting(4, ge=2, le=100)  # quantile bins per property
    metric: str = setting("accuracy", choices=METRICS)  # the gap that ranks and is tested
    alpha: float = unit(0.05)  # Benjamini-Hochberg false discovery rate
    min_gap: float = unit(0.02)  # a significant slice must also be this much worse than the rest
    min_size: int = setting(30, ge=1)  # smaller slices are listed as too small to judge, not tested
    max_levels: int = setting(50, ge=2)  # columns with more distinct values (ids, file names) are not sliced
    # "report": name them, never fail; "require": fail if none; "forbid": fail if any
    criterion: str = setting("report", choices=("report", "require", "forbid"))


@dataclass(frozen=True)
class Slice:
    variable: str  # metadata column or image property
    kind: str  # "attribute" or "property"
    level: str  # the attribute's value, or the property's bin such as "Q1 [0.102, 0.254)"
    n: int
    accuracy: Estimate
    macro_f1: Estimate
    accuracy_gap: Estimate  # complement minus slice: positive = the slice is worse
    f1_gap: Estimate
    p_value: float  # of the gap in the ranking metric; nan when not judged
    q_value: float  # Benjamini–Hochberg over every judged slice; nan when not judged
    significant: bool  # a significant underperformer
    judged: bool  # False: fewer than min_size images, reported but not tested
    errors: tuple[str, ...] = ()  # paths of a few misclassified images in the slice

    @property
    def name(self) -> str:
        return f"{self.variable} = {self.level}" if self.kind == "attribute" else f"{self.variable} {self.level}"

    def gap(self, metric: str) -> Estimate:
        return self.accuracy_gap if metric == "accuracy" else self.f1_gap

    def to_dict(self) -> dict:
        return {
            "variable": self.variable, "kind": self.kind, "level": self.level, "n": self.n,
            "accuracy": self.accuracy.to_dict(), "macro_f1": self.macro_f1.to_dict(),
            "accuracy_gap": self.accuracy_gap.to_dict(), "f1_gap": self.f1_gap.to_dict(),
            "p_value": _num(self.p_value), "q_value": _num(self.q_value),
            "significant": self.significant, "judged": self.judged,
        }


@dataclass(frozen=True)
class SliceResult:
    metric: str  # the ranking metric: "accuracy" or "macro_f1"
    alpha: float
    min_gap: float
    min_size: int
    n_tests: int  # judged slices corrected together
    slices: tuple[Slice, ...]  # judged slices by gap (worst first), then the too-small ones
    skipped: tuple[tuple[str, str], ...]  # (variable, why it was not sliced)

    @property
    def significant(self) -> tuple[Slice, ...]:
        return tuple(s for s in self.slices if s.significant)

    @property
    def too_small(self) -> tuple[Slice, ...]:
        return tuple(s for s in self.slices if not s.judged)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric, "alpha": self.alpha, "min_gap": self.min_gap, "min_size": self.min_size,
            "n_tests": self.n_tests, "significant": [s.name for s in self.significant],
            "slices": [s.to_dict() for s in self.slices], "skipped": [list(x) for x in self.skipped],
        }


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class _Partition:
    variable: str
    kind: str
    levels: tuple[str, ...]
    codes: np.ndarray  # (N,) int level index


def partitions(preds: Predictions, config: SlicesConfig) -> tuple[list[_Partition], list[tuple[str, str]]]:
    """The slicing variables: metadata columns as they are, properties binned into quantiles."""
    parts, skipped = [], []
    names = sorted(preds.attributes) if config.attributes is None else list(config.attributes)
    for name in names:
        if name not in preds.attributes:
            skipped.append((name, "not a metadata column"))
            continue
        values = np.asarray([str(v) if str(v) != "" else MISSING for v in preds.attributes[name]], dtype=object)
        levels, codes = np.unique(values, return_inverse=True)
        if len(levels) < 2:
            skipped.append((name, "a single value"))
        elif len(levels) > config.max_levels:
            skipped.append((name, f"{len(levels)} distinct values (> max_levels {config.max_levels})"))
        else:
            parts.append(_Partition(name, "attribute", tuple(str(v) for v in levels), codes.astype(np.int64)))
    for name in config.properties:
        if name not in preds.properties:
            skipped.append((name, "not a measured image property"))
            continue
        part = _quantile_bins(name, np.asarray(preds.properties[name], dtype=float), config.bins)
        if part is None:
            skipped.append((name, "constant over the data"))
        else:
            parts.append(part)
    return parts, skipped


def _quantile_bins(name: str, x: np.ndarray, bins: int) -> _Partition | None:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return None
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return None
    # Interior edges split the data; equal values always fall into the same bin.
    codes = np.searchsorted(edges[1:-1], np.nan_to_num(x, nan=edges[0]), side="right")
    levels = []
    for i in range(len(edges) - 1):
        close = "]" if i == len(edges) - 2 else ")"
        levels.append(f"Q{i + 1}/{len(edges) - 1} [{_g(edges[i])}, {_g(edges[i + 1])}{close}")
    return _Partition(name, "property", tuple(levels), codes.astype(np.int64))


def _g(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def _slice_metrics(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-class counts (k, L, C) -> (k, L, 2): accuracy and macro F1 of every slice (nan when empty).

    The same conventions as ``metrics.summarize_counts`` (macro F1 over the classes present in
    the slice's truth or predictions), from O(classes) counts instead of a classes x classes matrix.
    """
    n = support.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = tp.sum(axis=2) / n
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        present = denom > 0
        macro = (f1 * present).sum(axis=2) / present.sum(axis=2)
    out = np.stack([accuracy, macro], axis=2)
    out[n == 0] = np.nan
    return out


@dataclass(frozen=True)
class _Cells:
    """A partition's rows grouped by (level, true class, predicted class): the only thing its metrics need."""

    levels: int
    cells: np.ndarray  # (N,) index of each row's cell among the cells present
    true_lc: np.ndarray  # (m,) level * C + true class of each cell
    pred_lc: np.ndarray  # (m,) level * C + predicted class of each cell
    diagonal: np.ndarray  # (m,) bool: the cell's rows are correct

    @classmethod
    def of(cls, p: _Partition, y_true: np.ndarray, y_pred: np.ndarray, c: int) -> _Cells:
        # int32 cells: one per row and partition, held for the whole bootstrap (half of intp's memory)
        present, cells = unique_codes((p.codes * c + y_true) * c + y_pred, len(p.levels) * c * c)
        level, yt, yp = present // (c * c), present // c % c, present % c
        return cls(len(p.levels), cells, level * c + yt, level * c + yp, yt == yp)

    def counts(self, per_cell: np.ndarray, c: int) -> list[np.ndarray]:
        """(k, levels, C) counts of correct, true and predicted classes per level, from (k, m) rows per cell."""
        shape = (len(per_cell), self.levels, c)
        return [column_sums(per_cell, lc, self.levels * c).reshape(shape)
                for lc in (np.where(self.diagonal, self.true_lc, -1), self.true_lc, self.pred_lc)]


def _replicates(parts: list[_Partition], preds: Predictions, n_boot: int, seed: int):
    """Point values and bootstrap replicates, per partition (k, L, 4): accuracy, F1, accuracy gap, F1 gap."""
    c = len(preds.labels)
    point, reps = [], []
    for p in parts:
        cells = _Cells.of(p, preds.y_true, preds.y_pred, c)

        def stats(per_cell: np.ndarray) -> np.ndarray:
            inside = cells.counts(per_cell, c)  # correct, true, predicted per (level, class)
            outside = [x.sum(axis=1, keepdims=True) - x for x in inside]  # every row falls in one level
            m_in, m_out = _slice_metrics(*inside), _slice_metrics(*outside)
            return np.concatenate([m_in, m_out - m_in], axis=2)

        # the rows resampled as counts per cell, the same distribution as drawing rows (docs/ARCHITECTURE.md §4.3)
        ex = Exchangeable.of_groups(cells.cells, len(cells.true_lc))  # weights in cell order
        point.append(stats(ex.point()))
        draws = [stats(w) for w in ex.resamples(n_boot, seed)]
        reps.append(np.concatenate(draws) if n_boot else np.zeros((0,) + point[-1].shape[1:]))
    return point, reps


def find_slices(preds: Predictions, config: SlicesConfig, *, n_boot: int = 1000, seed: int = 0,
                max_errors: int = 8) -> SliceResult:
    """Every slice's metrics and gap to its complement, ranked; BH-corrected significance.

    ``max_errors`` misclassified paths are kept per slice for the report's thumbnails.
    """
    parts, skipped = partitions(preds, config)
    n = len(preds)
    metric_col = METRICS.index(config.metric)
    point, reps = _replicates(parts, preds, n_boot, seed)
    wrong = preds.y_true != preds.y_pred
    rows = []
    for p, pt, rp in zip(parts, point, reps):
        sizes = np.bincount(p.codes, minlength=len(p.levels))
        right = np.bincount(p.codes, weights=(~wrong).astype(float), minlength=len(p.levels)).round().astype(int)
        for li, level in enumerate(p.levels):
            ests = [_estimate(pt[0, li, m], rp[:, li, m], 0.95) for m in range(4)]
            ests[0] = proportion_ci(int(right[li]), int(sizes[li]))
            gap_reps = rp[:, li, 2 + metric_col]
            judged = sizes[li] >= config.min_size and sizes[li] <= n - config.min_size
            p_value = _wald_p(pt[0, li, 2 + metric_col], gap_reps[np.isfinite(gap_reps)]) if judged else math.nan
            err = np.flatnonzero(wrong & (p.codes == li))[:max_errors]
            rows.append(dict(variable=p.variable, kind=p.kind, level=level, n=int(sizes[li]),
                             accuracy=ests[0], macro_f1=ests[1], accuracy_gap=ests[2], f1_gap=ests[3],
                             p_value=p_value, judged=bool(judged),
                             errors=tuple(preds.paths[i] for i in err)))
    return _ranked(rows, config, skipped)


def _ranked(rows: list[dict], config: SlicesConfig, skipped) -> SliceResult:
    """BH-correct the tested slices, flag the significant underperformers and sort worst first."""
    tested = [r for r in rows if r["judged"]]
    q = benjamini_hochberg(np.array([r["p_value"] for r in tested]))
    for r, qv in zip(tested, q):
        r["q_value"] = float(qv)
    slices = []
    for r in rows:
        qv = r.setdefault("q_value", math.nan)
        gap = (r["accuracy_gap"] if config.metric == "accuracy" else r["f1_gap"]).value
        r["significant"] = bool(r["judged"] and qv < config.alpha and gap > 0 and gap >= config.min_gap)
        slices.append(Slice(**r))
    key_col = "accuracy_gap" if config.metric == "accuracy" else "f1_gap"
    slices.sort(key=lambda s: (not s.judged, -_finite(getattr(s, key_col).value), s.variable, s.level))
    return SliceResult(config.metric, config.alpha, config.min_gap, config.min_size, len(tested),
                       tuple(slices), tuple(skipped))


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _wald_p(gap: float, reps: np.ndarray) -> float:
    if not math.isfinite(gap) or reps.size < 2:
        return 1.0
    se = float(reps.std(ddof=1))
    if se == 0:
        return 1.0 if gap == 0 else 0.0
    return math.erfc(abs(gap) / se / math.sqrt(2))  # two-sided normal tail, 2 * sf(|z|)


def criteria(res: SliceResult, config: AuditConfig) -> list[Criterion]:
    """The slice criterion. ``report`` (default) always passes and names what was found;
    ``require`` passes only when a significant underperformer is found; ``forbid`` fails when one is."""
    sig, rule = res.significant, config.slices.criterion
    names = "; ".join(f"{s.name} (gap {s.gap(res.metric).value:+.3f}, q={s.q_value:.2g})" for s in sig[:5])
    if len(sig) > 5:
        names += f"; and {len(sig) - 5} more"
    detail = (f"significant underperforming slices: {names}" if sig else
              f"no slice underperforms significantly (BH q < {res.alpha:g} over {res.n_tests} slices)")
    title, higher, threshold = {
        "report": ("Significant underperforming slices (reported, not judged)", True, 0),
        "require": ("A significant underperforming slice is identified", True, 1),
        "forbid": ("No significant underperforming slice", False, 0)}[rule]
    found = Measure.count("slices.significant", title, len(sig), higher_is_better=higher, detail=detail)
    return [judge(found, threshold, judged=rule != "report")]


def measures(res: SliceResult, config: AuditConfig | None = None) -> list[Measure]:
    return [Measure(f"slices.{s.name}.accuracy", f"Accuracy of slice {s.name}", s.accuracy, True)
            for s in res.slices if s.judged]


def findings(res: SliceResult, config: AuditConfig | None) -> list[Finding]:
    """The largest significant slice gap, or plainly that there is none."""
    sig = res.significant
    metric = res.metric.replace("_", " ")
    if not sig:
        return [Finding("info", f"No slice underperforms significantly: none of the {res.n_tests} slices tested is "
                                f"worse than the rest beyond chance (BH q < {res.alpha:g}, gap >= {res.min_gap:g}).",
                        "slices")]
    s = max(sig, key=lambda x: x.gap(res.metric).value)
    g = s.gap(res.metric)
    more = f"; {len(sig) - 1} more significant slice(s)" if len(sig) > 1 else ""
    text = (f"Largest significant slice gap: on {s.name} ({s.n} images) {metric} is {g.value:.3f} "
            f"[{g.low:.3f}, {g.high:.3f}] lower than on the rest of the data (q = {s.q_value:.2g}){more}.")
    return [Finding("warn", text, "slices", importance=g.value, criterion="slices.significant")]


def card(res: SliceResult, config: AuditConfig | None) -> CardPart:
    """model_card.md names every significantly underperforming slice as a limitation."""
    return CardPart(limitations=tuple(
        f"Underperforms on the slice **{md(s.variable)} {md(s.level)}** ({s.n} images): accuracy "
        f"{fmt(s.accuracy.value)}, {fmt(s.accuracy_gap.value)} {fmt_ci(s.accuracy_gap.low, s.accuracy_gap.high)} "
        f"below the rest (BH q = {s.q_value:.2g})." for s in res.significant))


def charts(res: SliceResult, config: AuditConfig | None) -> dict[str, Canvas]:
    return {"forest": slice_forest(res.slices, res.metric)}


def slice_forest(slices, metric: str = "accuracy", max_rows: int = 30) -> Canvas:
    """Gap to the rest of the data per slice with its 95% CI, worst first; significant ones in red."""
    items = [s for s in slices if s.judged][:max_rows]
    if not items:
        c = Canvas(680, 40)
        c.text(340, 24, "no slice large enough to judge", anchor="middle")
        return c
    gaps = [ci_bounds(s.gap(metric)) for s in items]
    lo, hi = min(min(g[1] for g in gaps), 0.0), max(max(g[2] for g in gaps), 0.0)
    span = (hi - lo) or 0.1
    bars = [[Bar(v, low, high, BAD if s.significant else ACCENT)] for s, (v, low, high) in zip(items, gaps)]
    return intervals([short_label(f"{s.name} (n={s.n})", 44) for s in items], bars, lo=lo - 0.05 * span,
                     hi=hi + 0.05 * span, dots=True, lines=[(0.0, "#111827", False)],
                     xlabel=f"{metric.replace('_', ' ')} gap: rest of data minus slice (95% CI); right = slice worse")


def thumbnails(res: SliceResult, ctx: AuditContext) -> list[tuple]:
    return [(ctx.source, p) for s in res.significant[:6] for p in s.errors]


def _run(ctx: AuditContext) -> SliceResult:
    return find_slices(ctx.predictions, ctx.config.slices, n_boot=ctx.config.n_boot, seed=ctx.config.seed)


SPEC = CheckSpec("slices", "slices", _run, config=SlicesConfig, enabled=lambda c: c.slices.enabled,
                 criteria=criteria, comparable=measures, thumbnails=thumbnails, findings=findings, card=card,
                 charts=charts, toggle=True)
