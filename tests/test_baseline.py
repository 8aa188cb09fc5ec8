"""Baseline: a run compared with itself has no regression; a worse model fails the verdict with the regressions
named; the verdict.json alone is enough to compare against."""

import json
import re

import pytest

import builders
from audit.checks.baseline import Baseline, BaselineConfig, compare, load_baseline
from audit.cli import main
from audit.errors import UsageError

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

QUIET = ["--no-latency"]  # the latency check starts a server; these tests are about the comparison


def run(model, data, out, *extra):
    return main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--no-pdf", "--no-progress",
                 "--n-boot", "50", "--no-invariance", *QUIET, *extra])


@pytest.fixture
def runs(tmp_path):
    good = builders.colour_model(tmp_path / "good.onnx")
    w, b = builders.colour_weights(3)
    b[2] = -20.0  # never predicts blue
    bad = builders.colour_model(tmp_path / "bad.onnx", weights=(w, b))
    data = builders.sliced_folder(tmp_path / "data", 40, weak=None)
    assert run(good, data, tmp_path / "old") in (0, 1)
    return good, bad, data, tmp_path


def test_same_model_no_regression(runs, capsys):
    good, _, data, tmp = runs
    code = run(good, data, tmp / "new", "--baseline", str(tmp / "old" / "verdict.json"))
    v = json.loads((tmp / "new" / "verdict.json").read_text())
    crit = {c["id"]: c for c in v["criteria"]}
    assert crit["baseline.regressions"]["passed"] and crit["baseline.regressions"]["value"] == 0
    assert v["baseline"]["compared"] >= 10 and code == {"pass": 0, "fail": 1, "inconclusive": 4}[v["outcome"]]
    assert "accuracy" in v["comparable"] and any(k.startswith("slices.") for k in v["comparable"])
    assert set(v["comparable"]) >= {c["id"] for c in v["criteria"] if c["id"] in ("accuracy", "ece")} | {"accuracy"}
    assert "Comparison with the baseline" in (tmp / "new" / "report.html").read_text()


def test_worse_model_fails_with_regressions_named(runs, capsys):
    _, bad, data, tmp = runs
    code = run(bad, data, tmp / "new", "--baseline", str(tmp / "old" / "verdict.json"), "--min-accuracy", "0")
    assert code == 1
    v = json.loads((tmp / "new" / "verdict.json").read_text())
    crit = {c["id"]: c for c in v["criteria"]}
    assert not crit["baseline.regressions"]["passed"]
    keys = {r["key"] for r in v["baseline"]["regressions"]}
    assert {"accuracy", "macro_f1", "class_f1.blue"} <= keys
    assert "class_f1.red" not in keys  # red is as good as before
    assert re.search(r"Regressions against the baseline.*-> FAIL", capsys.readouterr().out)


def test_direction_and_tolerance():
    base = Baseline("old", {"acc": (0.90, True), "ece": (0.05, False), "gone": (1.0, True)}, None, None, True)
    res = compare(base, {"acc": (0.895, True), "ece": (0.07, False), "new": (1.0, True)}, BaselineConfig(tolerance=0.01))
    assert [c.key for c in res.regressions] == ["ece"]  # 0.005 worse accuracy is within the tolerance
    assert res.only_in_baseline == ("gone",) and res.only_in_current == ("new",)
    assert compare(base, {"acc": (0.95, True), "ece": (0.01, False)}, BaselineConfig()).regressions == ()


def test_bad_baseline_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="baseline file not found"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_baseline(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UsageError, match="is not an audit verdict \\(schema 'other'"):
        load_baseline(tmp_path / "y.json")


def test_a_schema_v1_verdict_is_refused_with_what_to_do(tmp_path):
    """The first release's verdicts (schema v1) are no longer read: re-run that audit to compare against it."""
    (tmp_path / "v.json").write_text(json.dumps({"schema": "audit.verdict/v1", "passed": True, "comparable": {}}))
    with pytest.raises(UsageError, match="is not an audit verdict \\(schema 'audit.verdict/v1'"):
        load_baseline(tmp_path / "v.json")

