"""Plain-text formatting shared by the checks' texts and every renderer (one place decides how a number reads)."""

from __future__ import annotations

import html
import math
from typing import Any

from audit.stats import Estimate
from audit.verdict import Criterion


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int):
        return str(x)
    if x != 0 and abs(x) < 10 ** -digits:  # 1e-4 thresholds and 3e-06 differences must not read as 0.000
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def sci(x: float | None, digits: int = 2) -> str:
    """Scientific notation for tiny differences (parity, probability gaps): ``2.50e-06``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}e}"


def fmt_ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"[{_bound(float(low), digits)}, {_bound(float(high), digits)}]"


def _bound(x: float, digits: int) -> str:
    """A CI bound; a confidence sequence that cannot yet rule a side out has an infinite one."""
    return ("∞" if x > 0 else "-∞") if math.isinf(x) else fmt(x, digits)


def fmt_est(e: Estimate, digits: int = 3) -> str:
    return f"{fmt(e.value, digits)} {fmt_ci(e.low, e.high, digits)}"


def outcome(c: Criterion) -> str:
    """PASS, FAIL, INCONCLUSIVE, or INFO for a criterion that is reported but not judged."""
    return "INFO" if not c.judged else c.status.upper()


def images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def evidence(c: Criterion) -> str:
    """What the criterion's data can tell: 'with 60 images this test can tell it from 0.77 only by ±0.11'."""
    if c.n is None:
        return ""
    eff = f" ({c.n_eff:g} effective: duplicates count once)" if c.n_eff is not None and c.n_eff < c.n - 0.05 else ""
    out = (f"with {images(c.n)}{eff} this test can tell it from {fmt(c.threshold)} only by ±{fmt(c.mde)} (power 0.8)"
           if c.mde is not None else f"with {images(c.n)}{eff} no true value is far enough from {fmt(c.threshold)} "
                                     "to be told apart")
    if c.inconclusive:
        out += (f"; about {images(c.images_needed)} would decide it at the observed {fmt(c.value)}"
                if c.images_needed else "; the estimate sits on the threshold, so no test set size decides it")
    return out


def needed(c: Criterion) -> str:
    """'needs about 1,240 images' for an inconclusive criterion (empty otherwise)."""
    if not c.inconclusive:
        return ""
    return f"needs about {images(c.images_needed)}" if c.images_needed else "estimate on the threshold"


def describe(c: Criterion) -> str:
    """One line: 'accuracy: 0.912 [0.901, 0.922] (must be > 0.75) -> PASS'."""
    ci = fmt_ci(c.low, c.high)
    value = fmt(c.value) + ("" if ci == "n/a" else f" {ci}")
    more = needed(c) if c.judged else ""
    return (f"{c.title}: {value} ({'must be' if c.judged else 'limit'} {c.op} {fmt(c.threshold)}) -> {outcome(c)}"
            + (f" ({more})" if more else "") + (f"; {c.detail}" if c.detail else ""))


def md(x: Any) -> str:
    """Plain text made safe inside Markdown (and HTML): no tags, table cells or emphasis."""
    s = html.escape(str(x), quote=False).replace("\n", " ")
    for ch in "\\|*_`[]":
        s = s.replace(ch, "\\" + ch)
    return s


def code(x: Any) -> str:
    """A Markdown code span (escapes do not work inside one, so backticks are replaced)."""
    return "`" + str(x).replace("`", "'").replace("\n", " ") + "`"
