"""report.pdf: the same HTML, laid out by weasyprint (print CSS lives in report.css), in a process of its own.

Importing weasyprint and laying out the report are the largest fixed costs of a run. ``PdfWorker`` starts a
process that imports weasyprint at once, so ``python -m audit run`` starts it before the audit and the
import overlaps the model's work; the outputs then hand it the finished ``report.html`` and write the other
files while it lays the PDF out. A worker that cannot load weasyprint's system libraries fails with the
same one-line error as before (exit 2).

Example::

    worker = PdfWorker()            # early: weasyprint loads meanwhile
    ...
    worker.submit(Path("stage/report.html"), Path("stage/report.pdf"))
    ...                             # other outputs
    worker.wait()
"""

from __future__ import annotations

import logging
import subprocess
import sys
import weakref
from pathlib import Path

from audit.errors import UsageError

LIBRARY_HINT = "apt-get install -y libpango-1.0-0 libharfbuzz-subset0, or pass --no-pdf"
NO_LIBRARIES = 3  # the worker's exit code when weasyprint cannot load its system libraries


def write_pdf(html: str, path: Path) -> None:
    """Lay out ``html`` as ``path`` in this process."""
    HTML = _weasyprint()
    HTML(string=html, base_url=None).write_pdf(str(path))


def _weasyprint():
    try:
        from weasyprint import HTML
    except OSError as e:  # missing system libraries (pango, harfbuzz-subset)
        raise UsageError(f"weasyprint cannot load its system libraries: {str(e).splitlines()[0]}",
                         hint=LIBRARY_HINT) from None
    # weasyprint and fontTools log every font subsetting step at INFO/WARNING
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return HTML


class PdfWorker:
    """A process that imports weasyprint now and writes one PDF later (``submit``, then ``wait``)."""

    def __init__(self) -> None:
        from audit.side_process import python_env

        env = python_env()  # the child imports this process's audit
        self.proc = subprocess.Popen([sys.executable, "-c", "from audit.render.pdf import _serve; _serve()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env)
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        self.submitted = False

    def submit(self, html: Path, pdf: Path) -> None:
        """Lay ``html`` (a file) out as ``pdf``; returns at once."""
        try:
            self.proc.stdin.write(f"{html}\n{pdf}\n".encode("utf-8", "surrogateescape"))
            self.proc.stdin.close()
        except OSError:  # the worker died early: wait() says why
            pass
        self.submitted = True

    def wait(self) -> None:
        """Until the PDF is written; a worker that failed raises its error here."""
        err = self.proc.stderr.read().decode("utf-8", "replace").strip()
        code = self.proc.wait()
        if code == NO_LIBRARIES:
            raise UsageError(err.splitlines()[-1] if err else "weasyprint cannot load its system libraries",
                             hint=LIBRARY_HINT)
        if code != 0:
            raise OSError(f"the PDF worker exited with code {code}: {err.splitlines()[-1] if err else 'no output'}")

    def close(self) -> None:
        """Stop the worker if it is still running (a run that ended early)."""
        self._finalizer()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stderr):
        if f is not None:
            f.close()


def _serve() -> None:
    """The worker: import weasyprint, then read the HTML and PDF paths from stdin and lay the report out."""
    try:
        HTML = _weasyprint()
    except UsageError as e:
        print(f"{e.message}", file=sys.stderr)
        sys.exit(NO_LIBRARIES)
    lines = sys.stdin.buffer.read().decode("utf-8", "surrogateescape").splitlines()
    if len(lines) != 2:
        sys.exit(0)  # the run ended before it had a report to lay out
    html, pdf = (Path(x) for x in lines)
    HTML(string=html.read_text(encoding="utf-8"), base_url=None).write_pdf(str(pdf))
