"""report.pdf: the same HTML, laid out by weasyprint (print CSS lives in report.css)."""

from __future__ import annotations

import logging
from pathlib import Path

from audit.errors import UsageError


def write_pdf(html: str, path: Path) -> None:
    try:
        from weasyprint import HTML
    except OSError as e:  # missing system libraries (pango, harfbuzz-subset)
        raise UsageError(f"weasyprint cannot load its system libraries: {str(e).splitlines()[0]}",
                         hint="apt-get install -y libpango-1.0-0 libharfbuzz-subset0, or pass --no-pdf") from None
    # weasyprint and fontTools log every font subsetting step at INFO/WARNING
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    HTML(string=html, base_url=None).write_pdf(str(path))
