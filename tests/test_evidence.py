"""Evidence: the gate never passes without enough test images, on mostly skipped data, against an empty
baseline, or with images counted twice; proportions carry intervals that do not collapse on small samples."""

import csv
import json

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

import builders
from audit.checks.metrics import classification_metrics
from audit.cli import main
from audit.config import load_config
from audit.errors import DataError
from audit.sources import open_source
from audit.stats import proportion_ci

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

FAST = ["--no-pdf", "--no-progress", "--n-boot", "50", "--no-latency", "--no-invariance"]


def audit(model, data, out, *extra) -> tuple[int, dict]:
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST, *extra])
    return code, json.loads((out / "verdict.json").read_text())


def criterion(verdict: dict, cid: str) -> dict:
    return next(c for c in verdict["criteria"] if c["id"] == cid)


@pytest.mark.parametrize("judge_on", ["value", "interval"])
def test_one_image_of_one_class_fails_a_ten_class_model(tmp_path, judge_on):
    labels = builders.class_labels(10)
    model = builders.colour_model(tmp_path / "m.onnx", labels=labels)
    (tmp_path / "data" / "c0").mkdir(parents=True)
    builders.colour_image("red").save(tmp_path / "data" / "c0" / "0.png")
    code, v = audit(model, tmp_path / "data", tmp_path / "out", "--judge-on", judge_on)
    assert code == 1 and not v["passed"]
    short = criterion(v, "evidence.images_per_label")
    assert not short["passed"] and short["value"] == 0 and short["threshold"] == 10
    assert "10 of 10 labels below 10: c0 (1), c1 (0)" in short["detail"]
    acc = criterion(v, "accuracy")  # 1 of 1 correct: the interval says how little that shows
    assert acc["value"] == 1.0 and acc["low"] < 0.25 and acc["high"] == 1.0


def test_enough_images_per_label_passes_and_the_minimum_is_configurable(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    code, v = audit(model, data, tmp_path / "a")
    assert code == 0 and criterion(v, "evidence.images_per_label")["value"] == 10
    code, v = audit(model, data, tmp_path / "b", "--min-images-per-label", "11")
    assert code == 1 and not criterion(v, "evidence.images_per_label")["passed"]


def test_mostly_empty_files_fail_the_processed_share(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    for i in range(300):
        (data / "red" / f"empty{i}.png").write_bytes(b"")
    code, v = audit(model, data, tmp_path / "out")
    share = criterion(v, "evidence.processed_share")
    assert code == 1 and not share["passed"] and share["value"] == pytest.approx(30 / 330)
    assert "300 empty file (0 bytes)" in share["detail"]


def test_manifest_of_missing_files_fails_the_processed_share(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    rows = [(p.relative_to(tmp_path).as_posix(), p.parent.name) for p in sorted(data.rglob("*.png"))]
    rows += [(f"data/red/missing{i}.png", "red") for i in range(5000)]
    with (tmp_path / "list.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    code, v = audit(model, tmp_path / "list.csv", tmp_path / "out")
    share = criterion(v, "evidence.processed_share")
    assert code == 1 and not share["passed"] and share["value"] == pytest.approx(30 / 5030)


def test_a_baseline_without_comparable_numbers_fails(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    (tmp_path / "old.json").write_text(json.dumps({"schema": "audit.verdict/v2", "passed": True, "comparable": {}}))
    code, v = audit(model, data, tmp_path / "out", "--baseline", str(tmp_path / "old.json"))
    compared = criterion(v, "baseline.compared")
    assert code == 1 and not compared["passed"] and compared["value"] == 0 and compared["threshold"] == 1


def test_duplicate_manifest_rows_are_counted_once_and_said(tmp_path):
    builders.image_folder(tmp_path / "data", 2)
    lines = ["path,label,site", "data/red/000.png,red,a", "data/red/000.png,red,a", "./data/red/001.png,red,b",
             "data/red/001.png,red,b", "data/green/000.png,green,a", "data/blue/000.png,blue,a"]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    src = open_source(tmp_path / "list.csv", tuple(builders.COLOURS))
    assert sorted(s.path for s in src.samples) == ["data/blue/000.png", "data/green/000.png", "data/red/000.png",
                                                   "data/red/001.png"]
    assert src.found == 6 and len(src.samples) + len(src.skipped) == 6
    assert [s.reason for s in src.skipped] == ["duplicate row: this image is listed earlier (counted once)"] * 2
    assert any("2 duplicate row(s)" in n for n in src.notes)


def test_conflicting_duplicate_rows_are_refused(tmp_path):
    data = builders.image_folder(tmp_path / "data", 2)
    (tmp_path / "list.csv").write_text("path,label\ndata/red/000.png,red\ndata/red/000.png,green\n")
    with pytest.raises(DataError, match=r"lists 'data/red/000.png' twice with different values \(rows 2 and 3\)"):
        open_source(tmp_path / "list.csv", tuple(builders.COLOURS))
    (data / "metadata.csv").write_text("path,site\nred/000.png,a\nred/000.png,b\n")
    with pytest.raises(DataError, match=r"metadata.csv lists 'red/000.png' twice with different values"):
        open_source(data, tuple(builders.COLOURS))


def test_identical_duplicate_metadata_rows_are_merged_with_a_note(tmp_path):
    data = builders.image_folder(tmp_path / "data", 2)
    (data / "metadata.csv").write_text("path,site\nred/000.png,a\nred/000.png,a\nred/001.png,b\n")
    src = open_source(data, tuple(builders.COLOURS))
    assert dict(next(s for s in src.samples if s.path == "red/000.png").attributes) == {"site": "a"}
    assert any("1 duplicate row(s) of metadata.csv" in n for n in src.notes)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (5, 5), (0, 7), (3, 10), (97, 100), (9990, 10000)])
def test_proportion_ci_is_wilson_like_statsmodels(k, n):
    e = proportion_ci(k, n)
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (e.value, e.low, e.high) == pytest.approx((k / n, low, high), abs=1e-12)
    assert e.low < e.high  # never a point, even for 0/n or n/n


def test_proportions_in_the_metrics_use_wilson_intervals():
    p = builders.predictions(12, 3, error=0.0)  # a perfect tiny sample: the bootstrap would say [1, 1]
    m = classification_metrics(p, n_boot=200, seed=0)
    low, high = proportion_confint(12, 12, method="wilson")
    assert (m.accuracy.low, m.accuracy.high) == pytest.approx((low, high))
    for pc in m.per_class:
        assert pc.recall.low == pytest.approx(proportion_confint(pc.support, pc.support, method="wilson")[0])
        assert pc.precision.low < 1.0 and pc.f1.value == 1.0
    for _, e in m.top_k:
        assert e.low < e.high


def test_config_bounds_of_the_evidence_section():
    with pytest.raises(Exception, match=r"config key 'evidence.min_processed_share' must be >= 0 and <= 1, got 1.5"):
        load_config(None, {"evidence.min_processed_share": 1.5})
    with pytest.raises(Exception, match=r"config key 'evidence.min_images_per_label' must be >= 0"):
        load_config(None, {"evidence.min_images_per_label": -1})
    assert np.isfinite(load_config(None, {}).evidence.min_processed_share)


@pytest.mark.parametrize("method", ["wilson", "exact"])
def test_proportion_ci_contains_its_estimate_even_at_zero_and_all(method):
    """At k = 0 and k = n the Wilson bounds are exactly 0 and 1; rounding once put them past the estimate
    (2.8e-17 above 0/10), which crashed the error bars of the flip-rate plot."""
    for n in (1, 7, 10, 13, 100, 999):
        for k in {0, 1, n // 2, n - 1, n}:
            e = proportion_ci(k, n, method=method)
            assert e.low <= e.value <= e.high, (k, n, e)
        assert proportion_ci(0, n, method=method).low == 0.0 and proportion_ci(n, n, method=method).high == 1.0
