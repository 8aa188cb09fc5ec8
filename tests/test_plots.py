"""Report charts are well-formed SVG whose marks encode the numbers: bar lengths, cell colours, labels."""

import base64
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from audit import svg
from audit.checks.calibration import ReliabilityBin, reliability_diagram
from audit.checks.metrics import ClassMetrics, confusion_heatmap, f1_bars
from audit.stats import Estimate

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

NS = "{http://www.w3.org/2000/svg}"


def parse(uri: str) -> ET.Element:
    assert uri.startswith("data:image/svg+xml;base64,")
    return ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))


def texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter(f"{NS}text")]


def test_f1_bars_are_proportional_to_f1_worst_first():
    f1 = {"cat": 0.9, "dog": 0.45, "<script>": 0.0}
    per_class = [ClassMetrics(k, 10, 10, Estimate(v, 0, 1), Estimate(v, 0, 1), Estimate(v, max(v - 0.1, 0), v))
                 for k, v in f1.items()]
    root = parse(f1_bars(per_class, 0.5).uri())
    bars = [r for r in root.iter(f"{NS}rect") if r.get("fill-opacity") == "0.85"]
    widths = [float(r.get("width")) for r in bars]
    assert widths[0] == 0 and math.isclose(widths[2] / widths[1], 0.9 / 0.45, rel_tol=0.01)
    assert [r.get("fill") for r in bars] == [svg.BAD, svg.BAD, svg.ACCENT]  # F1 = 0 and 0.45 < 0.5 are red
    labels = [t for t in texts(root) if t in f1]
    assert labels == ["<script>", "dog", "cat"]  # worst first; the name is text, escaped in the SVG


def test_confusion_heatmap_cells_shade_with_the_row_share():
    cm = np.array([[8, 2], [0, 10]])
    root = parse(confusion_heatmap(cm, ("a", "b")).uri())
    fills = [r.get("fill") for r in root.iter(f"{NS}rect")][1:5]  # after the white background
    assert fills == [svg.blue(0.8), svg.blue(0.2), svg.blue(0.0), svg.blue(1.0)]
    assert {"0.80", "8", "0.20", "2", "1.00", "10"} <= set(texts(root))
    assert svg.blue(0) == "#f7fbff" and svg.blue(1) == "#08306b"


def test_reliability_diagram_draws_one_bar_per_non_empty_bin():
    bins = [ReliabilityBin(i / 4, (i + 1) / 4, c, (i + 0.5) / 4, a) for i, (c, a) in
            enumerate([(0, math.nan), (5, 0.2), (50, 0.6), (500, 0.9)])]
    root = parse(reliability_diagram(bins).uri())
    blue = [r for r in root.iter(f"{NS}rect") if r.get("fill") == svg.ACCENT and r.get("fill-opacity") == "0.8"]
    assert len(blue) == 3
    heights = [float(r.get("height")) for r in blue]
    assert heights == sorted(heights) and math.isclose(heights[2] / heights[0], 0.9 / 0.2, rel_tol=0.02)


def test_ticks_are_round_and_cover_the_range():
    assert svg.ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.ticks(-0.06, 0.12) == [-0.05, 0.0, 0.05, 0.1]
