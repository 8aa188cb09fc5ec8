"""summary.md: the verdict table for a README or a pull-request comment.

The findings, the criteria of every check, then each check's ``summary`` numbers in one line.
"""

from __future__ import annotations

from pathlib import Path

from audit.result import AuditResult
from audit.text import evidence, fmt, fmt_ci, fmt_est, outcome


_RESULT = {"PASS": "pass", "FAIL": "**FAIL**", "INCONCLUSIVE": "🟡 **INCONCLUSIVE**", "INFO": "info (not judged)"}
HEADLINE = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


_SEVERITY = {"fail": "**FAIL**", "inconclusive": "🟡 **INCONCLUSIVE**", "warn": "**warning**", "info": "note"}


def findings_markdown(findings, report: str = "report.html") -> list[str]:
    """The findings block as Markdown lines: each links to its section of ``report``."""
    if not findings:
        return ["**Findings.** Every criterion passes and no check reported anything that stands out.", ""]
    lines = ["**Findings**", ""]
    lines += [f"- {_SEVERITY[f.severity]} {_cell(f.text)} ([{f.section.replace('_', ' ')}]({report}#{f.section}))"
              for f in findings]
    return [*lines, ""]


def headline(v) -> str:
    """'PASS', 'FAIL', 'INCONCLUSIVE', or 'INCONCLUSIVE (counted as FAIL: on_inconclusive = fail)'."""
    mapped = f" (counted as {HEADLINE[v.gate]}: on_inconclusive = {v.on_inconclusive})" if v.gate != v.outcome else ""
    return HEADLINE[v.outcome] + mapped


def judged_on(v) -> str:
    if v.judge_on == "value":
        return "judged on the point estimate"
    return ("judged on the interval: pass when all of it is on the good side of the threshold, fail when all of it "
            "is on the bad side, inconclusive when the threshold lies inside it")


def _number(e) -> str:
    """An estimate with its CI, or a count alone."""
    ci = fmt_ci(e.low, e.high)
    return fmt(e.value) if ci == "n/a" else fmt_est(e)


def summary_markdown(r: AuditResult) -> str:
    v = r.verdict
    lines = [
        f"## Model audit: {'🟡 ' if v.outcome == 'inconclusive' else ''}{headline(v)}",
        "",
        *findings_markdown(r.findings),
        f"Model `{_cell(r.model.path)}` (sha256 `{r.model.sha256[:12]}`) on `{_cell(r.data.source)}`: "
        f"{r.data.processed} images processed, {len(r.data.skipped)} skipped, {r.data.found} found"
        f"{f'; attributes from {_cell(r.data.metadata)}' if r.data.metadata else ''}. "
        f"95% CIs: Wilson for proportions (on the effective sample size when test images are duplicated), "
        f"percentile bootstrap ({r.config.n_boot} resamples, seed {r.config.seed}) for the rest; {judged_on(v)}.",
        "",
        "| criterion | value | 95% CI | threshold | result | evidence |",
        "|---|---|---|---|---|---|",
    ]
    for c in v.criteria:
        lines.append(f"| {_cell(c.title)} | {fmt(c.value)} | {fmt_ci(c.low, c.high)} | {c.op} {fmt(c.threshold)} | "
                     f"{_RESULT[outcome(c)]}{' — ' + _cell(c.detail) if c.detail else ''} | {_cell(evidence(c))} |")
    numbers = [m for s in r.ran for m in s.summary(r.results[s.name], r.config)]
    if numbers:
        lines += ["", ", ".join(f"{_cell(m.title)} {_number(m.estimate)}" for m in numbers) + "."]
    return "\n".join([*lines, ""])


def write_summary(r: AuditResult, path: Path) -> None:
    path.write_text(summary_markdown(r), encoding="utf-8")
