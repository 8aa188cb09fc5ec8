"""Write every output of a run into one folder (DESIGN §7)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from audit.pipeline import AuditResult
from audit.render.html import write_html
from audit.render.json import write_verdict
from audit.render.junit import write_junit
from audit.render.markdown import write_summary


def write_outputs(r: AuditResult, out: Path, *, pdf: bool = True, templates: Path | None = None) -> list[Path]:
    """Write report.html/.pdf, verdict.json, predictions.csv, junit.xml, summary.md, config.json."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in
             ("report.html", "report.pdf", "verdict.json", "predictions.csv", "junit.xml", "summary.md",
              "config.json", "skipped.csv")}
    r.predictions.write_csv(paths["predictions.csv"])
    write_verdict(r, paths["verdict.json"])
    write_junit(r.verdict, paths["junit.xml"])
    write_summary(r, paths["summary.md"])
    paths["config.json"].write_text(json.dumps(r.config.to_dict(), indent=2) + "\n", encoding="utf-8")
    with paths["skipped.csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows((s.path, s.reason) for s in r.data.skipped)
    html = write_html(r, paths["report.html"], templates)
    if pdf:
        from audit.render.pdf import write_pdf

        write_pdf(html, paths["report.pdf"])
    else:
        paths.pop("report.pdf")
    return list(paths.values())
