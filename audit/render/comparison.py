"""The comparison report of ``python -m audit compare``: comparison.html, comparison.json, comparison.md.

The HTML is ``templates/compare.html.j2``: the same stylesheet, findings block and ``paired``
section as the audit report, so a comparison reads like the paired section of a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from audit.render.html import _env
from audit.render.markdown import _cell, findings_markdown
from audit.result import ComparisonReport
from audit.text import evidence, fmt, fmt_ci, fmt_est

_RESULT = {"pass": "pass", "fail": "FAIL", "inconclusive": "🟡 INCONCLUSIVE"}


def render_comparison_html(rep: ComparisonReport, templates: Path | None = None) -> str:
    env = _env(str(templates) if templates else None)
    css = env.loader.get_source(env, "report.css")[0]
    return env.get_template("compare.html.j2").render(r=rep, css=css,
                                                      thumbnail=lambda source, path: rep.thumbnails.get((source, path)))


def comparison_markdown(rep: ComparisonReport) -> str:
    pc, c = rep.paired, rep.criterion
    mark = "🟡 " if rep.outcome == "inconclusive" else ""
    nf = pc.negative_flips
    lines = [f"## Model comparison: {mark}{rep.headline}", "",
             *findings_markdown(rep.findings, "comparison.html"),
             f"Candidate `{_cell(pc.candidate)}` against baseline `{_cell(pc.baseline)}` on the same {pc.n} images.", "",
             "| | accuracy | 95% CI |", "|---|---|---|",
             f"| candidate | {fmt(pc.candidate_accuracy.value)} | {fmt_ci(pc.candidate_accuracy.low, pc.candidate_accuracy.high)} |",
             f"| baseline | {fmt(pc.baseline_accuracy.value)} | {fmt_ci(pc.baseline_accuracy.low, pc.baseline_accuracy.high)} |",
             f"| difference (paired) | {pc.difference.value:+.3f} | {fmt_ci(pc.difference.low, pc.difference.high)} |", "",
             f"McNemar exact p = {pc.mcnemar_p:.2g}: {pc.table.candidate_only} images only the candidate gets right, "
             f"{pc.table.baseline_only} only the baseline (negative flips: {100 * nf.value:.1f}% "
             f"[{100 * nf.low:.1f}%, {100 * nf.high:.1f}%]). {_cell(c.title)}: {c.value:+.4f} {fmt_ci(c.low, c.high, 4)}, "
             f"must be {c.op} {fmt(c.threshold)}: **{_RESULT[c.status]}**" + (f"; {_cell(evidence(c))}" if evidence(c)
                                                                            else "") + ".", "",
             "| class | images | only the candidate | only the baseline |", "|---|---|---|---|",
             *(f"| {_cell(x.label)} | {x.n} | {x.candidate_only} | {x.baseline_only} |" for x in pc.per_class), ""]
    if pc.slices:
        lines += ["| slice | images | difference | q |", "|---|---|---|---|",
                  *(f"| {_cell(s.attribute)} = {_cell(s.level)} | {s.n} | {fmt_est(s.difference)} | {s.q_value:.2g} |"
                    for s in sorted(pc.slices, key=lambda s: s.q_value)[:20]), ""]
    if pc.unsliced:
        lines += ["Not sliced (too many distinct values): " + ", ".join(f"`{_cell(n)}` ({k})" for n, k in pc.unsliced),
                  ""]
    return "\n".join(lines)


def write_comparison(rep: ComparisonReport, out: Path, templates: Path | None = None) -> list[Path]:
    """Write comparison.html, comparison.json and comparison.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "comparison.html", out / "comparison.json", out / "comparison.md"]
    paths[0].write_text(render_comparison_html(rep, templates), encoding="utf-8")
    paths[1].write_text(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths[2].write_text(comparison_markdown(rep), encoding="utf-8")
    return paths
