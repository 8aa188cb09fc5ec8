"""The registry drives every output: a toy check, added to a registry of the test's own, reaches them all.

The toy check is declared the way a new check would be (one spec, one section template) and is named
nowhere in the code; a real audit with the registry ``(*CHECKS, TOY)`` must then show it in
report.html, report.pdf, verdict.json, junit.xml, summary.md, model_card.md, its chart and the
findings block.
"""

import base64
import json
import re
from dataclasses import dataclass

import pytest

import builders
from audit.checks import CHECKS
from audit.config import AuditConfig, load_config
from audit.contract import CardPart, CheckSpec
from audit.findings import Finding
from audit.pipeline import run_audit
from audit.render.outputs import write_outputs
from audit.svg import Canvas
from audit.verdict import Measure, judge

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

TEMPLATE = """<section id="toy">
<h2>Toy check section</h2>
<p>The toy check saw {{ r.toy.n }} images.</p>
{% for name, uri in chart.items() %}<figure class="plot"><img alt="toy chart {{ name }}" src="{{ uri }}"></figure>{% endfor %}
</section>
"""


@dataclass(frozen=True)
class ToyResult:
    n: int

    def to_dict(self) -> dict:
        return {"n": self.n}


def _measure(res: ToyResult) -> Measure:
    return Measure.count("toy.images", "Toy images seen", res.n, higher_is_better=True, detail="counted by the toy")


def _chart(res: ToyResult, config: AuditConfig) -> dict[str, Canvas]:
    c = Canvas(200, 40)
    c.text(10, 20, f"toy chart of {res.n} images")
    return {"count": c}


TOY = CheckSpec(
    "toy", "toy check", lambda ctx: ToyResult(len(ctx.predictions)),
    criteria=lambda res, config: [judge(_measure(res), 1)],
    comparable=lambda res, config: [_measure(res)],
    findings=lambda res, config: [Finding("warn", f"The toy check counted {res.n} images.", "toy", importance=9.0)],
    summary=lambda res, config: [_measure(res)],
    card=lambda res, config: CardPart(limitations=(f"Toy limitation over {res.n} images.",),
                                      sections=(("Toy card section", "Written by the toy check."),)),
    charts=_chart,
)


@pytest.fixture(scope="module")
def registry():
    """A registry of this test's own: the project's checks plus the toy (nothing global changes)."""
    return (*CHECKS, TOY)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, registry):
    root = tmp_path_factory.mktemp("toy")
    (root / "templates" / "sections").mkdir(parents=True)
    (root / "templates" / "sections" / "toy.html.j2").write_text(TEMPLATE)
    data = builders.image_folder(root / "data", 12, confusers=1)
    model = builders.colour_model(root / "model.onnx")
    config = load_config(None, {"n_boot": 30, "latency.enabled": False, "invariance.enabled": False})
    result = run_audit(model, data, config, progress=False, checks=registry)
    write_outputs(result, root / "out", pdf=True, templates=root / "templates")
    return root / "out", result.toy.n


def _pdf_text(path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def _html(out):
    return (out / "report.html").read_text(encoding="utf-8")


def _charts(out) -> list[str]:
    """The text inside the SVG charts of report.html."""
    uris = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', _html(out))
    return [base64.b64decode(u).decode() for u in uris]


CHECKED = {
    "report.html": lambda out, n: '<section id="toy">' in _html(out) and f"The toy check saw {n} images." in _html(out),
    "report.pdf": lambda out, n: "Toy check section" in _pdf_text(out / "report.pdf"),
    "verdict.json": lambda out, n: (lambda v: v["toy"] == {"n": n} and v["comparable"]["toy.images"]["value"] == n
                                    and any(c["id"] == "toy.images" for c in v["criteria"]))(
        json.loads((out / "verdict.json").read_text())),
    "junit.xml": lambda out, n: 'name="toy.images"' in (out / "junit.xml").read_text(),
    "summary.md": lambda out, n: f"| Toy images seen | {n} |" in (out / "summary.md").read_text()
    and f"Toy images seen {n}" in (out / "summary.md").read_text().rsplit("|", 1)[1],
    "model_card.md": lambda out, n: all(s in (out / "model_card.md").read_text() for s in (
        f"Toy limitation over {n} images.", "## Toy card section", "type: toy.images")),
    "chart": lambda out, n: any(f"toy chart of {n} images" in svg for svg in _charts(out)),
    "findings": lambda out, n: f"The toy check counted {n} images." in _html(out).split('<section id="verdict">')[0]
    and any(f["section"] == "toy" for f in json.loads((out / "verdict.json").read_text())["findings"]),
}


@pytest.mark.parametrize("output", CHECKED)
def test_a_new_check_reaches_every_output(outputs, output):
    out, n = outputs
    assert n > 0 and CHECKED[output](out, n), f"the toy check is missing from {output}"


def test_the_toy_is_not_registered_for_anyone_else():
    assert "toy" not in {s.name for s in CHECKS} and not hasattr(AuditConfig(), "toy")
