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
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{fmt(float(low), digits)}, {fmt(float(high), digits)}]"


def fmt_est(e: Estimate, digits: int = 3) -> str:
    return f"{fmt(e.value, digits)} {fmt_ci(e.low, e.high, digits)}"


def outcome(c: Criterion) -> str:
    """PASS, FAIL, or INFO for a criterion that is reported but not judged."""
    return "INFO" if not c.judged else "PASS" if c.passed else "FAIL"


def describe(c: Criterion) -> str:
    """One line: 'accuracy: 0.912 [0.901, 0.922] > 0.75 -> PASS'."""
    ci = fmt_ci(c.low, c.high)
    value = fmt(c.value) + ("" if ci == "n/a" else f" {ci}")
    return f"{c.title}: {value} ({'must be' if c.judged else 'limit'} {c.op} {fmt(c.threshold)}) -> {outcome(c)}" + (
        f"; {c.detail}" if c.detail else "")


def md(x: Any) -> str:
    """Plain text made safe inside Markdown (and HTML): no tags, table cells or emphasis."""
    s = html.escape(str(x), quote=False).replace("\n", " ")
    for ch in "\\|*_`[]":
        s = s.replace(ch, "\\" + ch)
    return s


def code(x: Any) -> str:
    """A Markdown code span (escapes do not work inside one, so backticks are replaced)."""
    return "`" + str(x).replace("`", "'").replace("\n", " ") + "`"
