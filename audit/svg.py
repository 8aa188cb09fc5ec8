"""A few SVG chart primitives for the report: interval rows, a heatmap, columns and histograms.

The report's charts are simple (bars and points with confidence intervals, one heatmap, two
histograms), and drawing them as SVG text takes milliseconds, where matplotlib took about a
second for the four default figures plus half a second to import (``benchmarks/fixed_costs.py``).
SVG is vector, so it stays sharp in the PDF, and the text in it stays text.
"""

from __future__ import annotations

import base64
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

ACCENT = "#2563eb"
BAD = "#dc2626"
GREY = "#6b7280"
AMBER = "#f59e0b"
GREEN = "#16a34a"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
CHAR = 6.2  # mean advance of an 11 px DejaVu Sans character, for sizing label columns


def short_label(s: str, n: int = 24) -> str:
    """A label that fits a chart: control characters spelled out ("\\r", not a missing glyph), cut at ``n``."""
    s = "".join(repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in s)
    return s if len(s) <= n else s[: n - 1] + "…"


def ci_bounds(e) -> tuple[float, float, float]:
    """value, low, high of an estimate (``audit.stats.Estimate``), undefined bounds collapsed onto the value."""
    low = e.low if math.isfinite(e.low) else e.value
    high = e.high if math.isfinite(e.high) else e.value
    return e.value, low, high


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


@dataclass
class Canvas:
    width: float
    height: float
    parts: list[str] = field(default_factory=list)

    def rect(self, x, y, w, h, fill, *, opacity=1.0, hatch=False, stroke=None) -> None:
        extra = f' fill-opacity="{opacity}"' if opacity != 1.0 else ""
        extra += f' stroke="{stroke}" stroke-width="0.6"' if stroke else ""
        self.parts.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" '
                          f'fill="{fill}"{extra}/>')
        if hatch:
            self.parts.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" '
                              'fill="url(#hatch)"/>')

    def line(self, x1, y1, x2, y2, color="#111827", *, width=1.0, dash=False) -> None:
        d = ' stroke-dasharray="4 3"' if dash else ""
        self.parts.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{color}" '
                          f'stroke-width="{width}"{d}/>')

    def circle(self, x, y, r, fill) -> None:
        self.parts.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r}" fill="{fill}"/>')

    def text(self, x, y, s: str, *, size=11, anchor="start", color="#111827", rotate=None, bold=False) -> None:
        t = f' transform="rotate({rotate} {_n(x)} {_n(y)})"' if rotate is not None else ""
        w = ' font-weight="bold"' if bold else ""
        self.parts.append(f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}" fill="{color}"'
                          f'{t}{w}>{escape(s)}</text>')

    def svg(self) -> str:
        defs = ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
                'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="white" stroke-width="2"/>'
                '</pattern></defs>')
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(self.width)}" height="{_n(self.height)}" '
                f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" font-family="{FONT}">{defs}'
                f'<rect width="100%" height="100%" fill="white"/>{"".join(self.parts)}</svg>')

    def uri(self) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg().encode()).decode("ascii")


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.0e}"


@dataclass(frozen=True)
class Bar:
    value: float
    low: float
    high: float
    color: str = ACCENT
    hatched: bool = False


def intervals(labels: Sequence[str], bars: Sequence[Sequence[Bar]], *, lo: float, hi: float, xlabel: str,
              dots: bool = False, lines: Sequence[tuple[float, str, bool]] = (),
              legend: Sequence[tuple[str, str]] = ()) -> Canvas:
    """One row per label with one or more horizontal bars (or dots) and their CI whiskers.

    ``lines``: vertical reference lines (x, colour, dashed); ``legend``: (text, colour) pairs.
    """
    per_row = max((len(b) for b in bars), default=1)
    row_h = 10 + 9 * per_row
    left = min(300.0, 12 + CHAR * max((len(s) for s in labels), default=4))
    width, top = 680.0, 12 + (16 if legend else 0)
    plot_w = width - left - 20
    height = top + row_h * max(len(labels), 1) + 42
    c = Canvas(width, height)

    def x_of(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    bottom = top + row_h * len(labels)
    for t in ticks(lo, hi):
        c.line(x_of(t), top, x_of(t), bottom, "#e5e7eb")
        c.text(x_of(t), bottom + 14, fmt_tick(t), size=10, anchor="middle", color=GREY)
    for x, color, dash in lines:
        if lo <= x <= hi:
            c.line(x_of(x), top - 4, x_of(x), bottom, color, width=1.2, dash=dash)
    for i, (label, row) in enumerate(zip(labels, bars)):
        y0 = top + i * row_h + 5
        c.text(left - 6, y0 + row_h / 2 + 1, label, size=10.5, anchor="end")
        for j, b in enumerate(row):
            y = y0 + j * 9
            if not math.isfinite(b.value):
                continue
            if dots:
                c.circle(x_of(b.value), y + 4.5, 3.2, b.color)
            else:
                c.rect(x_of(min(lo, 0) if lo < 0 else lo), y, x_of(b.value) - x_of(max(lo, 0)), 8, b.color,
                       opacity=0.85, hatch=b.hatched)
            if math.isfinite(b.low) and math.isfinite(b.high) and b.high > b.low:
                c.line(x_of(b.low), y + 4, x_of(b.high), y + 4, "#111827", width=0.9)
                c.line(x_of(b.low), y + 1.5, x_of(b.low), y + 6.5, "#111827", width=0.9)
                c.line(x_of(b.high), y + 1.5, x_of(b.high), y + 6.5, "#111827", width=0.9)
    c.line(left, bottom, left + plot_w, bottom, "#9ca3af")
    c.text(left + plot_w / 2, bottom + 32, xlabel, size=11, anchor="middle")
    x = left
    for text, color in legend:
        c.rect(x, 6, 10, 10, color, opacity=0.85)
        c.text(x + 14, 15, text, size=10)
        x += 26 + CHAR * len(text)
    return c


def heatmap(values: Sequence[Sequence[float]], cells: Sequence[Sequence[str]], labels: Sequence[str], *,
            xlabel: str, ylabel: str, scale_label: str) -> Canvas:
    """A square matrix of shares in [0, 1], blue scale; ``cells`` are the texts drawn in each cell ("" for none)."""
    n = len(labels)
    cell = max(8.0, min(52.0, 520.0 / max(n, 1)))
    left = 24 + min(200.0, CHAR * max((len(s) for s in labels), default=4))
    top = 10
    bottom_labels = min(150.0, 0.75 * CHAR * max((len(s) for s in labels), default=4)) + 30
    width = left + cell * n + 90
    height = top + cell * n + bottom_labels
    c = Canvas(width, height)
    small = cell < 26
    for i in range(n):
        c.text(left - 6, top + (i + 0.5) * cell + 4, labels[i], size=10, anchor="end")
        x = left + (i + 0.5) * cell
        c.text(x + 3, top + n * cell + 8, labels[i], size=10, anchor="end", rotate=-45)
        for j in range(n):
            v = values[i][j]
            c.rect(left + j * cell, top + i * cell, cell, cell, blue(v))
            if not small and cells[i][j]:
                color = "white" if v > 0.5 else "#111827"
                lines = cells[i][j].split("\n")
                for k, t in enumerate(lines):
                    dy = (k - (len(lines) - 1) / 2) * 10 + 3.5
                    c.text(left + (j + 0.5) * cell, top + (i + 0.5) * cell + dy, t, size=8.5, anchor="middle",
                           color=color)
    c.text(left + n * cell / 2, height - 6, xlabel, anchor="middle")
    c.text(12, top + n * cell / 2, ylabel, anchor="middle", rotate=-90)
    bar_x, steps = left + n * cell + 18, 20
    for s in range(steps):
        c.rect(bar_x, top + (steps - 1 - s) * n * cell / steps, 12, n * cell / steps + 0.5, blue((s + 0.5) / steps))
    for t in (0, 0.5, 1):
        c.text(bar_x + 16, top + (1 - t) * n * cell + 4, f"{t:g}", size=9.5, color=GREY)
    c.text(bar_x + 52, top + n * cell / 2, scale_label, size=10, anchor="middle", rotate=-90)
    return c


def blue(v: float) -> str:
    """White to dark blue, like matplotlib's "Blues"."""
    v = min(max(v if math.isfinite(v) else 0.0, 0.0), 1.0)
    stops = [(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)]
    pos = v * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    f = pos - i
    r, g, b = (round(a + (z - a) * f) for a, z in zip(stops[i], stops[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True)
class Panel:
    """A plotting area of a canvas with linear (or log10) axes; draws its own grid, ticks and labels."""

    c: Canvas
    left: float
    top: float
    width: float
    height: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_x: bool = False
    log_y: bool = False

    def x(self, v: float) -> float:
        lo, hi = (math.log10(r) for r in self.x_range) if self.log_x else self.x_range
        v = math.log10(max(v, self.x_range[0])) if self.log_x else v
        return self.left + (min(max(v, lo), hi) - lo) / (hi - lo) * self.width

    def y(self, v: float) -> float:
        lo, hi = (math.log10(r) for r in self.y_range) if self.log_y else self.y_range
        v = math.log10(max(v, self.y_range[0])) if self.log_y else v
        return self.top + self.height - (min(max(v, lo), hi) - lo) / (hi - lo) * self.height

    def axes(self, xlabel: str | None, ylabel: str, *, x_ticks: bool = True) -> None:
        c, bottom = self.c, self.top + self.height
        for t in self._ticks(self.y_range, self.log_y):
            c.line(self.left, self.y(t), self.left + self.width, self.y(t), "#e5e7eb")
            c.text(self.left - 5, self.y(t) + 3.5, fmt_tick(t), size=9.5, anchor="end", color=GREY)
        if x_ticks:
            for t in self._ticks(self.x_range, self.log_x):
                c.line(self.x(t), bottom, self.x(t), bottom + 4, "#9ca3af")
                c.text(self.x(t), bottom + 15, fmt_tick(t), size=9.5, anchor="middle", color=GREY)
        c.line(self.left, bottom, self.left + self.width, bottom, "#9ca3af")
        c.line(self.left, self.top, self.left, bottom, "#9ca3af")
        if xlabel:
            c.text(self.left + self.width / 2, bottom + 32, xlabel, anchor="middle")
        c.text(self.left - 40, self.top + self.height / 2, ylabel, anchor="middle", rotate=-90)

    @staticmethod
    def _ticks(rng: tuple[float, float], log: bool) -> list[float]:
        if not log:
            return ticks(*rng)
        lo, hi = math.ceil(math.log10(rng[0]) - 1e-9), math.floor(math.log10(rng[1]) + 1e-9)
        step = max(1, (hi - lo) // 6)
        return [10.0**e for e in range(lo, hi + 1, step)]

    def bars(self, left_edges, right_edges, heights, color: str, opacity: float = 0.85) -> None:
        base = self.y(self.y_range[0])
        for a, b, h in zip(left_edges, right_edges, heights):
            if math.isfinite(h) and h > (0 if not self.log_y else self.y_range[0]):
                self.c.rect(self.x(a), self.y(h), self.x(b) - self.x(a), base - self.y(h), color, opacity=opacity)

    def legend(self, items: Sequence[tuple[str, str, str]]) -> None:
        """(text, colour, kind) with kind "box", "line", "dash" or "dot", stacked at the top left."""
        for i, (text, color, kind) in enumerate(items):
            x, y = self.left + 8, self.top + 10 + 14 * i
            if kind == "box":
                self.c.rect(x, y - 8, 12, 9, color, opacity=0.85)
            elif kind == "dot":
                self.c.circle(x + 6, y - 3.5, 3, color)
            else:
                self.c.line(x, y - 3.5, x + 12, y - 3.5, color, width=1.3, dash=kind == "dash")
            self.c.text(x + 17, y, text, size=9.5)
