"""Plots for the report. Each helper takes ``ax=None`` and returns the figure; no pyplot state.

``to_data_uri`` turns a figure into an inline PNG so the HTML stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
import unicodedata
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from audit.checks.calibration import ReliabilityBin
from audit.checks.metrics import ClassMetrics

ACCENT = "#2563eb"
BAD = "#dc2626"


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


MAX_TICK_LABELS = 40  # beyond this many classes the axes show positions, not names (names cost seconds each 100)
MAX_BARS = 40  # per-class bar charts show the worst classes only


def confusion_heatmap(confusion: np.ndarray, labels: Sequence[str], ax: Axes | None = None) -> Figure:
    """Row-normalised confusion matrix; cells show the share of the true class (and the count)."""
    c = len(labels)
    side = min(9.0, 2.0 + 0.55 * c)
    fig, ax = _axes(ax, (side + 1.0, side))
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if c <= MAX_TICK_LABELS:
        ax.set_xticks(range(c), [_short(x) for x in labels], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(c), [_short(x) for x in labels], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    else:
        ax.set_xlabel("predicted (class index, label order)")
        ax.set_ylabel("true (class index)")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if confusion[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}\n{confusion[i, j]}", ha="center", va="center", fontsize=6.5,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    return fig


def f1_bars(per_class: Sequence[ClassMetrics], threshold: float | None = None, ax: Axes | None = None) -> Figure:
    """Per-class F1 with 95% CI error bars, worst class first (the ``MAX_BARS`` worst)."""
    items = sorted(per_class, key=lambda pc: pc.f1.value)[:MAX_BARS]
    fig, ax = _axes(ax, (7.0, 1.0 + 0.28 * len(items)))
    y = np.arange(len(items))
    vals = np.array([pc.f1.value for pc in items])
    lo = np.array([pc.f1.low if np.isfinite(pc.f1.low) else pc.f1.value for pc in items])
    hi = np.array([pc.f1.high if np.isfinite(pc.f1.high) else pc.f1.value for pc in items])
    colors = [BAD if (v == 0 or (threshold is not None and v < threshold)) else ACCENT for v in vals]
    ax.barh(y, vals, color=colors, alpha=0.85)
    ax.errorbar(vals, y, xerr=[vals - lo, hi - vals], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_yticks(y, [_short(pc.label) for pc in items], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (95% CI)")
    if threshold is not None:
        ax.axvline(threshold, color=BAD, ls="--", lw=1)
    ax.grid(axis="x", alpha=0.3)
    return fig


def reliability_diagram(bins: Sequence[ReliabilityBin], ax: Axes | None = None) -> Figure:
    """Accuracy vs confidence per bin, with bin counts underneath."""
    fig = Figure(figsize=(5.5, 5.0), dpi=110, layout="constrained") if ax is None else ax.figure
    if ax is None:
        ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax2 = None
    mids = np.array([(b.lower + b.upper) / 2 for b in bins])
    width = bins[0].upper - bins[0].lower
    acc = np.array([b.accuracy for b in bins])
    ok = np.isfinite(acc)
    ax.bar(mids[ok], acc[ok], width=width * 0.9, color=ACCENT, alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    conf = np.array([b.confidence for b in bins])
    ax.plot(conf[ok], acc[ok], "o", color=BAD, ms=3, label="mean confidence")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="upper left")
    if ax2 is not None:
        ax2.bar(mids, [b.count for b in bins], width=width * 0.9, color="grey")
        ax2.set_yscale("symlog")
        ax2.set_ylabel("images")
        ax2.set_xlabel("top-1 confidence")
        ax2.set_xlim(0, 1)
    return fig


def _short(s: str, n: int = 24) -> str:
    s = "".join(repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in s)  # "\r", not a missing glyph
    return s if len(s) <= n else s[: n - 1] + "…"


# --- analyses (slices, fairness, invariance, parity, latency) ---------------------------------------------

def figure_uri(name: str, *args, **kwargs) -> str:
    """Draw the plot helper ``name`` of this module and return it as an inline PNG (for templates)."""
    return to_data_uri(globals()[name](*args, **kwargs))


def slice_forest(slices, metric: str = "accuracy", max_rows: int = 30, ax: Axes | None = None) -> Figure:
    """Gap to the rest of the data per slice with its 95% CI, worst first; significant ones in red.

    ``slices`` are ``audit.checks.slices.Slice`` records (judged ones are drawn, up to ``max_rows``).
    """
    items = [s for s in slices if s.judged][:max_rows]
    fig, ax = _axes(ax, (7.5, 1.0 + 0.26 * max(len(items), 1)))
    if not items:
        ax.text(0.5, 0.5, "no slice large enough to judge", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    gaps = [s.gap(metric) for s in items]
    y = np.arange(len(items))[::-1]
    vals = np.array([g.value for g in gaps])
    lo = np.array([g.low if np.isfinite(g.low) else g.value for g in gaps])
    hi = np.array([g.high if np.isfinite(g.high) else g.value for g in gaps])
    colors = [BAD if s.significant else ACCENT for s in items]
    ax.errorbar(vals, y, xerr=[vals - lo, hi - vals], fmt="none", ecolor="grey", capsize=2, lw=0.8)
    ax.scatter(vals, y, c=colors, s=18, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [_short(f"{s.name} (n={s.n})", 44) for s in items], fontsize=7.5)
    ax.set_xlabel(f"{metric.replace('_', ' ')} gap: rest of data minus slice (95% CI); right = slice worse")
    ax.grid(axis="x", alpha=0.3)
    return fig


def latency_histogram(latency, threshold_ms: float | None = None, ax: Axes | None = None) -> Figure:
    """Request latencies of ``/predict`` per phase (``audit.checks.latency.LatencyResult``), p95 marked.

    The threshold is drawn only when it is within reach of the data, so it does not squash the bars.
    """
    fig, ax = _axes(ax, (7.0, 3.0))
    phases = [p for p in latency.phases if len(p.latencies_ms)]
    if not phases:
        ax.text(0.5, 0.5, "no successful request", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    top = max(float(p.latencies_ms.max()) for p in phases)
    bins = np.linspace(0, top * 1.02, 40)
    for p, color in zip(phases, (ACCENT, "#f59e0b")):
        label = "one client" if p.concurrency == 1 else f"{p.concurrency} clients"
        ax.hist(p.latencies_ms, bins=bins, histtype="stepfilled", alpha=0.45, color=color,
                label=f"{label} (p95 {p.p95.value:.1f} ms)")
        ax.axvline(p.p95.value, color=color, lw=1.2)
    if threshold_ms is not None and threshold_ms <= 1.5 * top:
        ax.axvline(threshold_ms, color=BAD, ls="--", lw=1, label=f"threshold {threshold_ms:g} ms")
    ax.set_xlabel("latency of POST /predict (ms, client side)")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def fairness_groups(cf, ax: Axes | None = None) -> Figure:
    """Selection rate and TPR per group for one target class (``audit.checks.fairness.ClassFairness``).

    Groups too small to judge are drawn hatched and labelled as such.
    """
    groups = cf.groups
    fig, ax = _axes(ax, (7.0, 1.2 + 0.45 * len(groups)))
    y = np.arange(len(groups))[::-1]
    h = 0.38
    sel = np.array([g.selection_rate for g in groups])
    tpr = np.nan_to_num(np.array([g.tpr for g in groups]))
    for i, g in enumerate(groups):
        hatch = None if g.judged else "//"
        ax.barh(y[i] + h / 2, sel[i], h, color=ACCENT, alpha=0.85, hatch=hatch, label="selection rate" if i == 0 else None)
        ax.barh(y[i] - h / 2, tpr[i], h, color="#16a34a", alpha=0.85, hatch=None if g.tpr_judged else "//",
                label="TPR" if i == 0 else None)
    ax.set_yticks(y, [_short(g.group) + ("" if g.judged else " (too small)") + f"\nn={g.n}" for g in groups],
                  fontsize=7.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"rate for class {_short(cf.target)} (one-vs-rest)")
    ax.legend(fontsize=7.5, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def flip_rates(runs, max_flip_rate: float | None = None, ax: Axes | None = None) -> Figure:
    """Flip rate (95% CI) per transform and severity (``audit.checks.invariance.InvarianceRun`` records)."""
    fig, ax = _axes(ax, (7.0, 1.0 + 0.26 * max(len(runs), 1)))
    y = np.arange(len(runs))[::-1]
    vals = np.array([r.flip_rate.value for r in runs])
    lo = np.array([r.flip_rate.low if np.isfinite(r.flip_rate.low) else r.flip_rate.value for r in runs])
    hi = np.array([r.flip_rate.high if np.isfinite(r.flip_rate.high) else r.flip_rate.value for r in runs])
    colors = [BAD if max_flip_rate is not None and v > max_flip_rate else ACCENT for v in vals]
    ax.barh(y, vals, color=colors, alpha=0.85)
    ax.errorbar(vals, y, xerr=[vals - lo, hi - vals], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_yticks(y, [_short(f"{r.transform} {r.severity}: {r.description}", 40) for r in runs], fontsize=7.5)
    ax.set_xlim(0, max(0.05, min(1.0, float(np.nanmax(hi, initial=0)) * 1.15)))
    ax.set_xlabel("flip rate: share of images whose prediction changes (95% CI)")
    if max_flip_rate is not None:
        ax.axvline(max_flip_rate, color=BAD, ls="--", lw=1)
    ax.grid(axis="x", alpha=0.3)
    return fig


def parity_histogram(per_image_diff: np.ndarray, threshold: float | None = None, ax: Axes | None = None) -> Figure:
    """Distribution of the per-image max abs probability difference, ONNX vs PyTorch (log x)."""
    fig, ax = _axes(ax, (6.0, 2.8))
    d = np.maximum(np.asarray(per_image_diff, dtype=float), 1e-12)
    bins = np.logspace(-12, 0, 49)
    ax.hist(d, bins=bins, color=ACCENT, alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("max |p_onnx - p_torch| per image")
    ax.set_ylabel("images")
    if threshold is not None:
        ax.axvline(threshold, color=BAD, ls="--", lw=1, label=f"limit {threshold:g}")
        ax.legend(fontsize=8)
    return fig
