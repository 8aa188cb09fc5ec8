"""Findings first: the block that opens the report and summary.md, checked as a reader meets it.

One real audit with a failing criterion, a planted weak slice (site c), painted images (label
errors) and a sensitive column, rendered to HTML, to PDF (weasyprint, read back with pypdf) and in
headless Chromium at 1280 px.
"""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import builders
from audit.cli import main
from audit.findings import Finding, rank


# --- ranking --------------------------------------------------------------------------------------

@pytest.mark.fast
def test_failures_first_then_observations_by_severity_and_importance():
    fails = [Finding("fail", "accuracy fails", "metrics", criterion="accuracy")]
    obs = [Finding("info", "weak class", "metrics", 0.3), Finding("warn", "slice", "slices", 0.1),
           Finding("info", "label errors", "label_errors", 0.5),
           Finding("warn", "restates the failure", "metrics", 0.9, criterion="accuracy")]
    assert [f.text for f in rank(fails, obs)] == ["accuracy fails", "slice", "label errors", "weak class"]
    assert len(rank([], [Finding("info", str(i), "x", i) for i in range(9)], limit=5)) == 5
    assert [f.text for f in rank([], [Finding("info", str(i), "x", i) for i in range(9)], limit=2)] == ["8", "7"]


@pytest.mark.fast
def test_unknown_severity_is_named():
    with pytest.raises(ValueError,
                       match=r"Finding.severity must be one of \('fail', 'inconclusive', 'warn', 'info'\), got 'bad'"):
        Finding("bad", "x", "metrics")


def test_inconclusive_criteria_come_after_failures_and_before_observations():
    from audit.findings import failing
    from audit.power import Sampling
    from audit.stats import Estimate, proportion_ci
    from audit.verdict import Measure, decide, judge

    acc, ece = decide([judge(Measure("accuracy", "Accuracy", proportion_ci(47, 60), True, sampling=Sampling(60)),
                             0.77, strict=True),
                       judge(Measure("ece", "ECE", Estimate(0.2, 0.15, 0.25), False), 0.1)], "interval")
    found = failing([acc, ece], "metrics")
    assert [f.severity for f in found] == ["inconclusive", "fail"]
    assert found[0].text.startswith("Undecided: Accuracy: 0.783 [0.664, 0.869]; the threshold > 0.770 lies inside")
    assert f"about {acc.images_needed:,} images would decide it" in found[0].text
    ranked = rank(found, [Finding("warn", "slice", "slices", 0.5), Finding("warn", "restates", "metrics", 0.9,
                                                                         criterion="accuracy")])
    assert [f.severity for f in ranked] == ["fail", "inconclusive", "warn"] and ranked[-1].text == "slice"


# --- the rendered report ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    data = builders.sliced_folder(root / "data", 60, weak="site")
    model = builders.colour_model(root / "model.onnx")
    out = root / "out"
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--n-boot", "100",
                 "--no-progress", "--no-latency", "--min-accuracy", "0.99", "--sensitive", "camera"])
    assert code == 1
    return out, json.loads((out / "verdict.json").read_text())


class Anchors(HTMLParser):
    """Element ids, the ids of <section>s with their <h2> text, and the links inside #findings."""

    def __init__(self):
        super().__init__()
        self.ids, self.sections, self.links, self._stack, self._h2 = set(), {}, [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section":
            self._stack.append(a.get("id"))
        elif tag == "h2" and self._stack:
            self._h2 = self._stack[-1]
        elif tag == "a" and "findings" in self._stack:
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "section":
            self._stack.pop()
        elif tag == "h2":
            self._h2 = None

    def handle_data(self, data):
        if self._h2:
            self.sections[self._h2] = self.sections.get(self._h2, "") + data


def anchors(html: str) -> Anchors:
    p = Anchors()
    p.feed(html)
    return p


def test_the_block_opens_the_report_and_names_what_matters(report):
    out, v = report
    f = v["findings"]
    assert f[0]["severity"] == "fail" and f[0]["criterion"].startswith("accuracy")
    sections = [x["section"] for x in f]
    assert {"slices", "label_errors", "metrics"} <= set(sections) and len(f) <= 1 + len(v["criteria"]) + 5
    (sl,) = [x for x in f if x["section"] == "slices"]
    assert sl["severity"] == "warn" and "site = c" in sl["text"]
    html = (out / "report.html").read_text()
    assert html.index('<section id="findings">') < html.index('<section id="verdict">') < html.index("<section id=\"metrics\">")
    a = anchors(html)
    assert a.links == [f"#{s}" for s in sections]
    assert all(link[1:] in a.sections for link in a.links)  # every link lands on a section with a heading


def test_summary_md_starts_with_the_findings(report):
    out, v = report
    md = (out / "summary.md").read_text()
    assert md.startswith("## Model audit: FAIL\n\n**Findings**\n\n- **FAIL** ")
    links = re.findall(r"\(report\.html#([a-z_]+)\)", md.split("| criterion |")[0])
    assert links == [x["section"] for x in v["findings"]]
    assert set(links) <= anchors((out / "report.html").read_text()).ids


def test_pdf_opens_with_the_block_and_its_links_land_on_their_sections(report):
    from pypdf import PdfReader

    out, v = report
    reader = PdfReader(out / "report.pdf")
    first = reader.pages[0].extract_text()
    assert "Findings" in first and first.index("Findings") < first.index("Verdict")
    headings = anchors((out / "report.html").read_text()).sections
    dests = reader.named_destinations
    links = [a.get_object()["/Dest"] for a in reader.pages[0].get("/Annots", [])
             if a.get_object().get("/Subtype") == "/Link"]
    assert [str(d) for d in links] == [x["section"] for x in v["findings"]]
    for d in links:
        page = reader.pages[reader.get_destination_page_number(dests[str(d)])].extract_text()
        assert " ".join(headings[str(d)].split()) in " ".join(page.split()), d


def chromium(args, tmp_path):
    return subprocess.run([
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp_path / 'profile'}", *args,
    ], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (.ci/run installs it)")
def test_chromium_at_1280_px_shows_the_block_first_and_its_links_resolve(report, tmp_path):
    import numpy as np
    from PIL import Image

    out, v = report
    url = (out / "report.html").as_uri()
    dom = chromium(["--window-size=1280,900", "--dump-dom", url], tmp_path).stdout
    a = anchors(dom)
    assert a.links == [f"#{x['section']}" for x in v["findings"]]
    assert all(link[1:] in a.sections for link in a.links)
    shot = tmp_path / "first_screen.png"
    chromium(["--window-size=1280,900", f"--screenshot={shot}", url], tmp_path)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1280)
    for colour in ((220, 38, 38), (180, 83, 9)):  # the fail and warning borders of the block
        column = (img == colour).all(axis=2).sum(axis=0)
        assert column.max() >= 30, colour  # a 4 px border at least 30 px tall on the first screen
