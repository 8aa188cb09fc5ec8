"""report.html: one self-contained file (CSS, charts and thumbnails inlined, no request leaves the page).

The report is ``templates/report.html.j2`` plus one section template per check that ran
(``templates/sections/<check>.html.j2``), in registry order. Templates read the frozen
``AuditResult``; each check's charts come from its ``charts`` hook (SVG, inlined as data URIs:
a section places them by name, ``{{ chart.<name> }}``) and thumbnails were captured during the
run. Autoescaping is on, so class names and paths render as text. A ``--templates DIR`` folder
is searched first, to override or add sections.
"""

from __future__ import annotations

import collections
import contextlib
import os
from functools import cache
from pathlib import Path

import jinja2

from audit.power import sizes_to_detect
from audit.render.markdown import headline
from audit.result import AuditResult
from audit.text import evidence, fmt, fmt_ci, fmt_est, needed, sci

MAX_SKIPPED_ROWS = 200


def template_dir() -> Path:
    """The report templates: ``audit/templates`` in an installed wheel, ``templates/`` in a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for d in (here / "templates", here.parent / "templates"):
        if (d / "report.html.j2").is_file():
            return d
    raise FileNotFoundError(f"report templates not found next to {here}")


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """The templates compiled by an earlier run, in jinja's per-user folder under the temporary directory:
    compiling them took 0.1-0.2 s a run. Each entry is checked against its template's source, so an edited
    template is compiled again; a cache that cannot be read or written is passed over, never an error."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):  # jinja itself passes over code that does not unmarshal
            super().load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    try:
        return _BytecodeCache()
    except (OSError, RuntimeError):  # no temporary folder of our own can be made
        return None


@cache
def _env(extra: str | None = None) -> jinja2.Environment:
    dirs = [extra] if extra else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*dirs, str(template_dir())]),
        bytecode_cache=_bytecode_cache(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, est=fmt_est, sci=sci, basename=os.path.basename)
    env.globals.update(fmt_ci=fmt_ci, headline=headline, evidence=evidence, needed=needed)
    return env


def render_html(r: AuditResult, templates: Path | None = None) -> str:
    """The report as one HTML string (``templates``: a folder searched before the packaged one)."""
    env = _env(str(templates) if templates else None)
    css = env.loader.get_source(env, "report.css")[0]
    return env.get_template("report.html.j2").render(
        r=r,
        css=css,
        checks=r.ran,
        charts={s.name: {k: c.uri() for k, c in s.charts(r.results[s.name], r.config).items()} for s in r.ran},
        criterion={c.id: c for c in r.verdict.criteria}.get,
        skip_reasons=collections.Counter(s.reason for s in r.data.skipped).most_common(),
        max_skipped_rows=MAX_SKIPPED_ROWS,
        thumbnail=lambda source, path: r.thumbnails.get((source, path)),
        evidence_rows=[c for c in r.verdict.criteria if c.n is not None],
        accuracy_sizes=_accuracy_sizes(r),
    )


def _accuracy_sizes(r: AuditResult) -> tuple[tuple[float, int], ...]:
    """Test set sizes that tell accuracy from its threshold by 0.1 ... 0.01, at this set's duplicate rate."""
    acc = next((c for c in r.verdict.criteria if c.id == "accuracy"), None)
    if acc is None or acc.threshold is None or not acc.n_eff:
        return ()
    return sizes_to_detect(acc.threshold, acc.n / acc.n_eff)


def write_html(r: AuditResult, path: Path, templates: Path | None = None) -> str:
    html = render_html(r, templates)
    path.write_text(html, encoding="utf-8")
    return html
