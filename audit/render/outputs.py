"""Write every output of a run into one folder (docs/ARCHITECTURE.md §9), all or nothing.

The artefacts are written into a staging folder beside ``--out`` (same file system) and swapped
in at the end with one atomic exchange of the two folders (``renameat2(RENAME_EXCHANGE)`` on
Linux; elsewhere two renames, which leave ``--out`` absent for an instant but never mixed). So
``--out`` always holds either the complete previous run or the complete new one: an error, a
signal or a full disk while writing leaves the previous outputs as they were.

The folder records what the tool wrote (``.audit-outputs.json``). The next run removes exactly
those files and keeps everything else in the folder (moved across with signals held off); a
folder written by an earlier version without the record is recognised by its ``verdict.json``.
``check_out`` refuses, before any image is decoded, an ``--out`` that is a file, cannot be
created, is (or is inside) the data folder, contains the data or the current folder, or holds
files named like the outputs that the tool did not write.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from audit.errors import UsageError
from audit.predictions_file import write_parquet
from audit.render.html import write_html
from audit.render.json import write_verdict
from audit.render.junit import write_junit
from audit.render.markdown import write_summary
from audit.render.model_card import build_model_card, write_model_card
from audit.render.pdf import PdfWorker
from audit.result import AuditResult

RECORD = ".audit-outputs.json"
ARTEFACTS = ("report.html", "report.pdf", "verdict.json", "predictions.parquet", "predictions.csv", "junit.xml",
             "summary.md", "model_card.md", "config.json", "skipped.csv")


class OutputError(UsageError):
    """The outputs cannot be written where --out says (exit 2; the previous outputs are unchanged)."""


def write_outputs(r: AuditResult, out: Path, *, pdf: bool | PdfWorker = True,
                  templates: Path | None = None) -> list[Path]:
    """Write report.html/.pdf, verdict.json, predictions.parquet (and .csv), junit.xml, summary.md, model_card.md,
    config.json, skipped.csv into ``out``, replacing the previous run's outputs in one step.

    ``pdf``: False for none, True for a PDF laid out by a worker started now, or a ``PdfWorker`` started earlier
    (``python -m audit run`` starts it before the audit, so weasyprint loads while the model runs)."""
    out = Path(os.path.realpath(out))  # a symbolic link to a folder: swap the folder, keep the link
    check_out(out, Path(r.data.source))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.audit-", dir=out.parent))
    try:
        names = write_all(r, stage, pdf=pdf, templates=templates)
        (stage / RECORD).write_text(json.dumps({"written_by": f"audit {r.tool_version}", "files": names},
                                               indent=1) + "\n", encoding="utf-8")
        _set_mode(stage, out)
        _swap(stage, out)
    except OSError as e:
        raise OutputError(f"cannot write the outputs into {out}: {e.strerror or e}",
                          hint="free some space or choose another --out; the previous outputs are unchanged") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / n for n in names]


def write_all(r: AuditResult, folder: Path, *, pdf: bool | PdfWorker = True,
              templates: Path | None = None) -> list[str]:
    """Write every artefact into ``folder``; returns the names written. The report is rendered first, so the PDF
    is laid out (in its worker process) while the other files are written."""
    paths = {name: folder / name for name in ARTEFACTS}
    _render(r, paths["report.html"], templates)
    worker = pdf if isinstance(pdf, PdfWorker) else PdfWorker() if pdf else None
    try:
        if worker is not None:
            worker.submit(paths["report.html"], paths["report.pdf"])
        _write_tables(r, paths)
        if worker is not None:
            worker.wait()
    finally:
        if worker is not None:
            worker.close()
    return sorted(p.name for p in folder.iterdir())


def _write_tables(r: AuditResult, paths: dict[str, Path]) -> None:
    write_parquet(r.predictions, paths["predictions.parquet"])
    if csv_written(r):
        r.predictions.write_csv(paths["predictions.csv"])
    write_verdict(r, paths["verdict.json"])
    write_model_card(build_model_card(r), paths["model_card.md"])
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


def _render(r: AuditResult, path: Path, templates: Path | None) -> str:
    import jinja2

    try:
        return write_html(r, path, templates)
    except jinja2.TemplateError as e:
        if templates is None:
            raise
        raise UsageError(f"cannot render the report with --templates {templates}: {type(e).__name__}: {e}",
                         hint="fix the template or drop --templates; the previous outputs are unchanged") from None


def check_out(out: Path, data: Path | None = None) -> None:
    """Raise ``OutputError`` when ``out`` cannot take the outputs; called before the first image is decoded."""
    out = Path(os.path.abspath(out))
    real = Path(os.path.realpath(out))
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder", hint="pass a folder for the reports")
    if data is not None and data.exists():
        folder = Path(os.path.realpath(data))
        if folder.is_dir() and (real == folder or folder in real.parents):
            raise OutputError(f"--out {out} is {'the' if real == folder else 'inside the'} data folder {data}",
                              hint="reports there would be read as data next time; choose a folder outside it")
        if real in folder.parents:
            raise OutputError(f"--out {out} contains the data ({data})", hint="choose a folder of its own for reports")
    if real == Path.cwd().resolve() or real in Path.cwd().resolve().parents:
        raise OutputError(f"--out {out} contains the current folder", hint="choose a folder of its own for reports")
    _check_writable(out)
    if out.is_dir():
        theirs = sorted((set(ARTEFACTS) & {p.name for p in out.iterdir()}) - set(previous_outputs(out)))
        if theirs:
            raise OutputError(f"--out {out} already holds {', '.join(theirs)}, which the audit did not write",
                              hint="choose another folder, or move those files away")


def _check_writable(out: Path) -> None:
    """The staging folder goes beside ``out``: its parent (or the nearest existing ancestor) must take a folder."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".audit-probe-", dir=parent))
    except OSError as e:
        raise OutputError(f"--out {out}: cannot create a folder in {parent} ({e.strerror or e})",
                          hint="choose an --out on a writable disk") from None


def previous_outputs(out: Path) -> list[str]:
    """Names of the files the audit wrote into ``out`` last time (from its record, or an older verdict.json)."""
    with contextlib.suppress(OSError, ValueError):
        files = json.loads((out / RECORD).read_text(encoding="utf-8"))["files"]
        return [str(f) for f in files if isinstance(f, str) and "/" not in f]
    with contextlib.suppress(OSError, ValueError, AttributeError):
        schema = json.loads((out / "verdict.json").read_text(encoding="utf-8")).get("schema", "")
        if str(schema).startswith("audit.verdict/"):
            return [n for n in ARTEFACTS if (out / n).is_file()]
    return []


def _swap(stage: Path, out: Path) -> None:
    """Put ``stage`` in the place of ``out``; the files in ``out`` the audit did not write move across."""
    with _signals_held():
        if not out.exists():
            os.rename(stage, out)
            return
        ours = set(previous_outputs(out)) | {RECORD}
        keep = [p.name for p in out.iterdir() if p.name not in ours]
        clash = [n for n in keep if (stage / n).exists()]
        if clash:
            raise OutputError(f"--out {out} already holds {', '.join(clash)}, which the audit did not write",
                              hint="choose another folder, or move those files away")
        _exchange(stage, out)
        for name in keep:  # stage now holds the previous outputs and the user's files
            os.rename(stage / name, out / name)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (a cancelled CI job must not split the swap)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):  # not the main thread, or no pthread_sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders atomically where the system can (Linux renameat2), else with three renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    aside = a.with_name(a.name + ".previous")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _set_mode(stage: Path, out: Path) -> None:
    """mkdtemp makes a private folder; give it the mode the folder it replaces had (or the umask's)."""
    if out.is_dir():
        shutil.copymode(out, stage)
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)
