"""Write every output of a run into one folder (docs/ARCHITECTURE.md §9), all or nothing.

The artefacts are written into a staging folder and swapped in whole (``audit.render.staging``: the folder
is exchanged with ``--out`` in one atomic step, or, where ``--out`` is a mount point or sits in a folder we
cannot write, its contents are). So ``--out`` holds either the complete previous run or the complete new
one: an error, a signal or a full disk while writing leaves the previous outputs as they were.

The folder records what the tool wrote (``.audit-outputs.json``). The next run removes exactly those files
and keeps everything else in the folder; a folder written by an earlier version without the record is
recognised by its ``verdict.json``. ``check_out`` refuses, before any image is decoded, an ``--out`` that is
a file, cannot be created, is (or is inside) the data folder, contains the data or the current folder,
has a name the file system refuses, or holds files named like the outputs that the tool did not write.
``verdict.json`` records the SHA-256 of ``predictions.parquet`` (and of ``predictions.csv`` when it is written),
so that ``compare`` and ``--baseline`` can tell an edited file from the one this run wrote.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

from audit.errors import UsageError
from audit.predictions_file import write_parquet
from audit.render.html import write_html
from audit.render.json import write_verdict
from audit.render.junit import write_junit
from audit.render.markdown import write_summary
from audit.render.model_card import card_fields, model_card_text, write_model_card
from audit.render.pdf import PdfWorker
from audit.render.staging import OutputError, Target, check_names, check_target, write_staged
from audit.result import AuditResult
from audit.run_folder import file_sha256
from audit.side_process import running
from audit.threads import in_background

__all__ = ["ARTEFACTS", "OutputError", "check_out", "write_all", "write_outputs"]

ARTEFACTS = ("report.html", "report.pdf", "verdict.json", "predictions.parquet", "predictions.csv", "junit.xml",
             "summary.md", "model_card.md", "config.json", "skipped.csv")


def write_outputs(r: AuditResult, out: Path, *, pdf: bool | PdfWorker = True,
                  templates: Path | None = None) -> list[Path]:
    """Write report.html/.pdf, verdict.json, predictions.parquet (and .csv), junit.xml, summary.md, model_card.md,
    config.json, skipped.csv into ``out``, replacing the previous run's outputs in one step.

    ``pdf``: False for none, True for a PDF laid out by a worker started now, or a ``PdfWorker`` started earlier
    (``python -m audit run`` starts it before the audit, so weasyprint loads while the model runs)."""
    target = check_out(out, Path(r.data.source))
    return write_staged(target, lambda stage: write_all(r, stage, pdf=pdf, templates=templates))


def write_all(r: AuditResult, folder: Path, *, pdf: bool | PdfWorker = True,
              templates: Path | None = None) -> list[str]:
    """Write every artefact into ``folder``; returns the names written. The report is rendered first, so the PDF
    is laid out (in its worker process) while the other files are written."""
    paths = {name: folder / name for name in ARTEFACTS}
    fields, side = card_fields(r), running()  # the model card is made in the side process when there is one
    card = in_background(side.call, model_card_text, fields) if side else None  # (huggingface_hub), meanwhile
    render_checked(lambda: write_html(r, paths["report.html"], templates), templates)
    worker = pdf if isinstance(pdf, PdfWorker) else PdfWorker() if pdf else None
    try:
        if worker is not None:
            worker.submit(paths["report.html"], paths["report.pdf"])
        _write_tables(r, paths, card.result if card else lambda: model_card_text(fields))
        if worker is not None:
            worker.wait()
    finally:
        if worker is not None:
            worker.close()
    return sorted(p.name for p in folder.iterdir())


def _write_tables(r: AuditResult, paths: dict[str, Path], card: Callable[[], str]) -> None:
    write_parquet(r.predictions, paths["predictions.parquet"])
    written = ["predictions.parquet"]
    if csv_written(r):
        r.predictions.write_csv(paths["predictions.csv"])
        written.append("predictions.csv")
    write_verdict(r, paths["verdict.json"], files={name: file_sha256(paths[name]) for name in written})
    write_model_card(card(), paths["model_card.md"])
    write_junit(r.verdict, paths["junit.xml"])
    write_summary(r, paths["summary.md"])
    paths["config.json"].write_text(json.dumps(r.config.to_dict(), indent=2) + "\n", encoding="utf-8")
    with paths["skipped.csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)  # RFC 4180: CRLF rows, so a \r or \n inside a name is quoted
        w.writerow(["path", "reason"])
        w.writerows((s.path, s.reason) for s in r.data.skipped)


def csv_written(r: AuditResult) -> bool:
    """predictions.csv is written up to ``csv_rows`` images; predictions.parquet always."""
    return len(r.predictions) <= r.config.csv_rows


def render_checked(render, templates: Path | None):
    """``render()``, with a broken ``--templates`` folder (syntax, an undefined name, a template that includes
    itself) reported as the user's error (exit 2), not ours."""
    import jinja2

    try:
        return render()
    except (jinja2.TemplateError, RecursionError) as e:
        if templates is None:
            raise
        what = "a template includes itself" if isinstance(e, RecursionError) else f"{type(e).__name__}: {e}"
        raise UsageError(f"cannot render the report with --templates {templates}: {what}",
                         hint="fix the template or drop --templates; the previous outputs are unchanged") from None


def check_templates(templates: Path | None) -> None:
    """``--templates`` must be a folder (a missing one would silently render the packaged report)."""
    if templates is not None and not templates.is_dir():
        raise UsageError(f"--templates {templates} is not a folder" if templates.exists() else
                         f"--templates {templates} not found", hint="pass a folder of report templates (*.j2)")


def check_out(out: Path, data: Path | None = None) -> Target:
    """The ``Target`` of the outputs, or ``OutputError`` when ``out`` cannot take them; called before the first
    image is decoded."""
    shown = Path(os.path.abspath(out))
    check_names(shown)
    real = Path(os.path.realpath(out))
    if data is not None and data.exists() and not (shown.exists() and not shown.is_dir()):
        folder = Path(os.path.realpath(data))
        if folder.is_dir() and (real == folder or folder in real.parents):
            raise OutputError(f"--out {shown} is {'the' if real == folder else 'inside the'} data folder {data}",
                              hint="reports there would be read as data next time; choose a folder outside it")
        if real in folder.parents:
            raise OutputError(f"--out {shown} contains the data ({data})",
                              hint="choose a folder of its own for reports")
    return check_target(out, "run", ARTEFACTS)
