"""report.html: one self-contained file (CSS and plots inlined, no request leaves the page).

The template reads the frozen ``AuditResult`` directly; this module only adds formatting
filters and the plots. Autoescaping is on, so class names and paths render as text.
Optional analyses add a section template ``templates/sections/<field>.html.j2`` that is
included when ``AuditResult.<field>`` is set.
"""

from __future__ import annotations

import collections
import os
from functools import cache
from pathlib import Path

import jinja2

from audit.pipeline import AuditResult
from audit.render import plots
from audit.render.text import fmt, fmt_ci, fmt_est

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MAX_SKIPPED_ROWS = 200
OPTIONAL_SECTIONS: tuple[str, ...] = ("slices", "fairness", "invariance", "parity", "integrity", "baseline", "latency")  # AuditResult fields with a section template, in report order


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, est=fmt_est, basename=os.path.basename)
    env.globals.update(fmt_ci=fmt_ci, figure=plots.figure_uri, thumbnail=plots.thumbnail_uri)
    return env


def _no_thumbnail(*_args, **_kwargs) -> None:
    return None


def render_html(r: AuditResult) -> str:
    """The report as one HTML string."""
    m = r.metrics
    headline = [
        ("Accuracy", m.accuracy),
        ("Balanced accuracy", m.balanced_accuracy),
        ("Macro F1", m.macro_f1),
        ("Weighted F1", m.weighted_f1),
        *[(f"Top-{k} accuracy", e) for k, e in m.top_k],
    ]
    f1_threshold = r.config.criteria.min_class_f1
    figures = {
        "f1": plots.f1_bars(m.per_class, f1_threshold),
        "confusion": plots.confusion_heatmap(m.confusion, r.predictions.labels),
        "reliability": plots.reliability_diagram(r.calibration.bins),
    }
    return _env().get_template("report.html.j2").render(
        r=r,
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
        headline=headline,
        f1_threshold=f1_threshold,
        plots={k: plots.to_data_uri(f) for k, f in figures.items()},
        skip_reasons=collections.Counter(s.reason for s in r.data.skipped).most_common(),
        max_skipped_rows=MAX_SKIPPED_ROWS,
        sections=[s for s in OPTIONAL_SECTIONS if getattr(r, s, None) is not None],
        thumbnail=plots.thumbnail_uri if r.config.thumbnails else _no_thumbnail,
    )


def write_html(r: AuditResult, path: Path) -> str:
    html = render_html(r)
    path.write_text(html, encoding="utf-8")
    return html
