"""The comparison report of ``python -m audit compare``: comparison.html, comparison.json, comparison.md.

Written like a run's outputs: staged and swapped in whole (``audit.render.staging``), ``--out`` checked
before the runs are read. The HTML is ``templates/compare.html.j2``: the same stylesheet, findings block
and ``paired`` section as the audit report, so a comparison reads like the paired section of a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from audit.render.html import _env
from audit.render.markdown import _cell, findings_markdown
from audit.render.outputs import render_checked
from audit.render.staging import OutputError, Target, check_target, write_staged
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


ARTEFACTS = ("comparison.html", "comparison.json", "comparison.md")


def check_comparison_out(out: Path, candidate: Path, baseline: Path) -> Target:
    """Where the comparison goes, checked before the runs are read (``audit.render.staging.check_target``); the
    folder of an audit being compared is refused (its own outputs would be taken for someone else's)."""
    real = Path(os.path.realpath(out))
    for flag, folder in (("--candidate", candidate), ("--baseline", baseline)):
        folder = folder.parent if folder.name == "verdict.json" else folder
        if real == Path(os.path.realpath(folder)):
            raise OutputError(f"--out {out} is the {flag} folder", hint="choose a folder of its own for the comparison")
    return check_target(out, "compare", ARTEFACTS)


def write_comparison(rep: ComparisonReport, out: Path, templates: Path | None = None,
                     target: Target | None = None) -> list[Path]:
    """Write comparison.html, comparison.json and comparison.md into ``out``, all or nothing (as ``run`` does)."""
    target = target or check_comparison_out(out, Path(rep.candidate_dir), Path(rep.baseline_dir))

    def write(stage: Path) -> None:
        html = render_checked(lambda: render_comparison_html(rep, templates), templates)
        (stage / "comparison.html").write_text(html, encoding="utf-8")
        (stage / "comparison.json").write_text(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
        (stage / "comparison.md").write_text(comparison_markdown(rep), encoding="utf-8")

    return write_staged(target, write)
