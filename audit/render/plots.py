"""Plots for the report, drawn as SVG (``audit.svg``); templates call ``figure(name, ...)``.

Each helper takes finished results and returns a ``Canvas``; ``figure_uri`` inlines it as a data
URI so the HTML stays one self-contained file, and the PDF gets vector charts.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence

import numpy as np

from audit.checks.calibration import ReliabilityBin
from audit.checks.metrics import ClassMetrics
from audit.svg import ACCENT, BAD, Bar, Canvas, Panel, heatmap, intervals

AMBER = "#f59e0b"
GREEN = "#16a34a"


def figure_uri(name: str, *args, **kwargs) -> str:
    """Draw the plot helper ``name`` of this module and return it as an inline SVG (for templates)."""
    return globals()[name](*args, **kwargs).uri()


MAX_CLASSES = 40  # per-class charts show at most this many classes (the worst); names beyond that are unreadable


def _short(s: str, n: int = 24) -> str:
    s = "".join(repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in s)  # "\r", not a missing glyph
    return s if len(s) <= n else s[: n - 1] + "…"


def _ci(e) -> tuple[float, float, float]:
    """value, low, high of an Estimate, with undefined bounds collapsed onto the value."""
    low = e.low if math.isfinite(e.low) else e.value
    high = e.high if math.isfinite(e.high) else e.value
    return e.value, low, high


def confusion_heatmap(confusion: np.ndarray, labels: Sequence[str]) -> Canvas:
    """Row-normalised confusion matrix; cells show the share of the true class (and the count).

    Beyond ``MAX_CLASSES`` classes it shows the ``MAX_CLASSES`` classes with the most errors (as true
    or predicted class), still normalised by each true class's full count.
    """
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    keep = np.arange(len(labels))
    note = ""
    if len(labels) > MAX_CLASSES:
        errors = confusion.sum(axis=0) + confusion.sum(axis=1) - 2 * np.diagonal(confusion)
        keep = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES])
        note = f" ({MAX_CLASSES} of {len(labels)} classes: those with the most errors)"
    sub, counts = norm[np.ix_(keep, keep)], confusion[np.ix_(keep, keep)]
    texts = [[f"{sub[i, j]:.2f}\n{counts[i, j]}" if counts[i, j] and len(keep) <= 20 else ""
              for j in range(len(keep))] for i in range(len(keep))]
    return heatmap(sub.tolist(), texts, [_short(labels[k]) for k in keep], xlabel="predicted" + note, ylabel="true",
                   scale_label="share of true class")


def f1_bars(per_class: Sequence[ClassMetrics], threshold: float | None = None) -> Canvas:
    """Per-class F1 with 95% CI error bars, worst class first (the ``MAX_CLASSES`` worst)."""
    items = sorted(per_class, key=lambda pc: pc.f1.value)[:MAX_CLASSES]
    bars = []
    for pc in items:
        v, lo, hi = _ci(pc.f1)
        bars.append([Bar(v, lo, hi, BAD if (v == 0 or (threshold is not None and v < threshold)) else ACCENT)])
    lines = [(threshold, BAD, True)] if threshold is not None else []
    return intervals([_short(pc.label) for pc in items], bars, lo=0, hi=1, xlabel="F1 (95% CI)", lines=lines)


def reliability_diagram(bins: Sequence[ReliabilityBin]) -> Canvas:
    """Accuracy vs confidence per bin, with bin counts (log scale) underneath."""
    c = Canvas(520, 440)
    top = Panel(c, 62, 12, 440, 270, (0, 1), (0, 1))
    top.axes(None, "accuracy")
    ok = [b for b in bins if math.isfinite(b.accuracy)]
    pad = 0.05 * (bins[0].upper - bins[0].lower)
    top.bars([b.lower + pad for b in ok], [b.upper - pad for b in ok], [b.accuracy for b in ok], ACCENT, 0.8)
    c.line(top.x(0), top.y(0), top.x(1), top.y(1), "#111827", dash=True)
    for b in ok:
        c.circle(top.x(b.confidence), top.y(b.accuracy), 3, BAD)
    top.legend([("accuracy", ACCENT, "box"), ("perfect calibration", "#111827", "dash"),
                ("mean confidence", BAD, "dot")])
    most = max((b.count for b in bins), default=1)
    low = Panel(c, 62, 300, 440, 90, (0, 1), (0.8, max(10.0, most * 1.5)), log_y=True)
    low.axes("top-1 confidence", "images")
    low.bars([b.lower + pad for b in bins], [b.upper - pad for b in bins], [b.count for b in bins], "grey", 0.8)
    return c


def slice_forest(slices, metric: str = "accuracy", max_rows: int = 30) -> Canvas:
    """Gap to the rest of the data per slice with its 95% CI, worst first; significant ones in red.

    ``slices`` are ``audit.checks.slices.Slice`` records (judged ones are drawn, up to ``max_rows``).
    """
    items = [s for s in slices if s.judged][:max_rows]
    if not items:
        c = Canvas(680, 40)
        c.text(340, 24, "no slice large enough to judge", anchor="middle")
        return c
    gaps = [_ci(s.gap(metric)) for s in items]
    lo = min(min(g[1] for g in gaps), 0.0)
    hi = max(max(g[2] for g in gaps), 0.0)
    span = (hi - lo) or 0.1
    bars = [[Bar(v, low, high, BAD if s.significant else ACCENT)] for s, (v, low, high) in zip(items, gaps)]
    return intervals([_short(f"{s.name} (n={s.n})", 44) for s in items], bars, lo=lo - 0.05 * span,
                     hi=hi + 0.05 * span, dots=True, lines=[(0.0, "#111827", False)],
                     xlabel=f"{metric.replace('_', ' ')} gap: rest of data minus slice (95% CI); right = slice worse")


def flip_rates(runs, max_flip_rate: float | None = None) -> Canvas:
    """Flip rate (95% CI) per transform and severity (``audit.checks.invariance.InvarianceRun`` records)."""
    cis = [_ci(r.flip_rate) for r in runs]
    top = max(0.05, min(1.0, max((h for _, _, h in cis if math.isfinite(h)), default=0) * 1.15))
    bars = [[Bar(v, lo, hi, BAD if max_flip_rate is not None and v > max_flip_rate else ACCENT)] for v, lo, hi in cis]
    lines = [(max_flip_rate, BAD, True)] if max_flip_rate is not None else []
    return intervals([_short(f"{r.transform} {r.severity}: {r.description}", 40) for r in runs], bars, lo=0, hi=top,
                     lines=lines, xlabel="flip rate: share of images whose prediction changes (95% CI)")


def fairness_groups(cf) -> Canvas:
    """Selection rate and TPR per group for one target class (``audit.checks.fairness.ClassFairness``).

    Groups too small to judge are drawn hatched and labelled as such.
    """
    labels, bars = [], []
    for g in cf.groups:
        labels.append(_short(g.group) + ("" if g.judged else " (too small)") + f" n={g.n}")
        tpr = g.tpr if math.isfinite(g.tpr) else 0.0
        bars.append([Bar(g.selection_rate, math.nan, math.nan, ACCENT, not g.judged),
                     Bar(tpr, math.nan, math.nan, GREEN, not g.tpr_judged)])
    return intervals(labels, bars, lo=0, hi=1, xlabel=f"rate for class {_short(cf.target)} (one-vs-rest)",
                     legend=[("selection rate", ACCENT), ("TPR", GREEN)])


def latency_histogram(latency, threshold_ms: float | None = None) -> Canvas:
    """Request latencies of ``/predict`` per phase (``audit.checks.latency.LatencyResult``), p95 marked.

    The threshold is drawn only when it is within reach of the data, so it does not squash the bars.
    """
    phases = [p for p in latency.phases if len(p.latencies_ms)]
    c = Canvas(640, 290)
    if not phases:
        c.text(320, 140, "no successful request", anchor="middle")
        return c
    top = max(float(p.latencies_ms.max()) for p in phases) * 1.02
    edges = np.linspace(0, top, 41)
    counts = [np.histogram(p.latencies_ms, bins=edges)[0] for p in phases]
    show = threshold_ms is not None and threshold_ms <= 1.5 * top
    x_hi = max(top, 1.02 * threshold_ms) if show else top
    panel = Panel(c, 62, 12, 560, 220, (0, x_hi), (0, max(int(x.max()) for x in counts) * 1.1 or 1))
    panel.axes("latency of POST /predict (ms, client side)", "requests")
    items = []
    for p, n, color in zip(phases, counts, (ACCENT, AMBER)):
        panel.bars(edges[:-1], edges[1:], n, color, 0.45)
        c.line(panel.x(p.p95.value), panel.top, panel.x(p.p95.value), panel.top + panel.height, color, width=1.2)
        label = "one client" if p.concurrency == 1 else f"{p.concurrency} clients"
        items.append((f"{label} (p95 {p.p95.value:.1f} ms)", color, "box"))
    if show:
        c.line(panel.x(threshold_ms), panel.top, panel.x(threshold_ms), panel.top + panel.height, BAD, dash=True)
        items.append((f"threshold {threshold_ms:g} ms", BAD, "dash"))
    panel.legend(items)
    return c


def parity_histogram(per_image_diff: np.ndarray, threshold: float | None = None) -> Canvas:
    """Distribution of the per-image max abs probability difference, ONNX vs PyTorch (log x)."""
    d = np.maximum(np.asarray(per_image_diff, dtype=float), 1e-12)
    edges = np.logspace(-12, 0, 49)
    counts, _ = np.histogram(d, bins=edges)
    c = Canvas(600, 270)
    panel = Panel(c, 62, 12, 520, 200, (1e-12, 1.0), (0, max(int(counts.max()), 1) * 1.1), log_x=True)
    panel.axes("max |p_onnx - p_torch| per image", "images")
    panel.bars(edges[:-1], edges[1:], counts, ACCENT)
    if threshold is not None:
        c.line(panel.x(threshold), panel.top, panel.x(threshold), panel.top + panel.height, BAD, dash=True)
        panel.legend([(f"limit {threshold:g}", BAD, "dash")])
    return c
