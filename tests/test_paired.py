"""The paired comparison as a check (``run --baseline``) and as a command (``compare``), end to end.

Two real ONNX colour models audit the same real PNG files: the candidate reads colours as they
are; the baseline carries a bias towards "green" that turns the darker images of the other two
classes green. The numbers are checked against statsmodels on the contingency table rebuilt with
pandas from the two predictions.csv files.
"""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

import builders
from audit.cli import main

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

FAST = ["--n-boot", "30", "--no-progress", "--no-latency", "--no-invariance", "--no-pdf", "--no-label-errors"]


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    data = builders.sliced_folder(root / "data", 40, base_error=0.0)
    good = builders.colour_model(root / "good.onnx")
    w, b = builders.colour_weights()
    biased = builders.colour_model(root / "biased.onnx", weights=(w, b + np.array([0, 8, 0], np.float32)))
    run = ["run", "--data", str(data), "--min-accuracy", "0", *FAST]
    assert main([*run, "--model", str(biased), "--out", str(root / "biased")]) == 0
    assert main([*run, "--model", str(good), "--out", str(root / "good")]) == 0
    return root, data, good, biased


def table_from_csv(cand, base) -> np.ndarray:
    a = pd.read_csv(cand / "predictions.csv")
    b = pd.read_csv(base / "predictions.csv").set_index("path").loc[a["path"]]
    rc, rb = a["correct"].to_numpy(), b["correct"].to_numpy()
    return np.array([[np.sum(rc & rb), np.sum(rc & ~rb)], [np.sum(~rc & rb), np.sum(~rc & ~rb)]])


def test_compare_exits_0_when_the_candidate_is_better_and_matches_statsmodels(audits, capsys):
    root, *_ = audits
    out = root / "cmp"
    assert main(["compare", "--candidate", str(root / "good"), "--baseline", str(root / "biased"),
                 "--out", str(out)]) == 0
    assert "PASS: Candidate not worse than the baseline by more than the margin" in capsys.readouterr().out
    d = json.loads((out / "comparison.json").read_text())
    table = table_from_csv(root / "good", root / "biased")
    assert table[0, 1] >= 10 and table[1, 0] == 0  # the bias only costs the baseline
    t = d["comparison"]["table"]
    assert [[t["both_right"], t["candidate_only"]], [t["baseline_only"], t["both_wrong"]]] == table.tolist()
    assert d["comparison"]["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert d["passed"] is True and d["exit_code"] == 0 and d["comparison"]["direction"] == "significantly better"
    assert d["outcome"] == "pass" and d["comparison"]["non_inferiority"]["status"] == "pass"
    assert d["comparison"]["negative_flips"] == {"count": 0, "share": {"value": 0.0, "low": 0.0,
                                                                       "high": pytest.approx(3.84 / 123.84, abs=1e-3)}}
    assert d["criterion"]["n"] == 120 and d["criterion"]["mde"] > 0
    per_class = {c["label"]: c for c in d["comparison"]["per_class"]}
    assert per_class["green"]["candidate_only"] == 0 and per_class["red"]["candidate_only"] > 0
    html = (out / "comparison.html").read_text()
    assert html.count('src="data:image/jpeg') == min(12, table[0, 1])  # thumbnails of what only it gets right
    assert '<section id="findings">' in html and '<section id="paired">' in html
    md = (out / "comparison.md").read_text()
    assert md.startswith("## Model comparison: PASS\n\n**Findings**") and "(comparison.html#paired)" in md


def test_compare_exits_1_when_the_candidate_may_be_worse(audits, capsys):
    root, *_ = audits
    assert main(["compare", "--candidate", str(root / "biased"), "--baseline", str(root / "good"),
                 "--out", str(root / "cmp_rev"), "--no-thumbnails"]) == 1
    d = json.loads((root / "cmp_rev" / "comparison.json").read_text())
    assert d["passed"] is False and d["findings"][0]["severity"] == "fail"
    assert d["comparison"]["direction"] == "significantly worse"
    assert "data:image/jpeg" not in (root / "cmp_rev" / "comparison.html").read_text()



def test_compare_keeps_the_data_out_when_an_audit_did(audits, tmp_path):
    root, data, good, _ = audits
    private = tmp_path / "private"
    assert main(["run", "--model", str(good), "--data", str(data), "--out", str(private), "--min-accuracy", "0",
                 "--no-thumbnails", *FAST]) == 0
    assert main(["compare", "--candidate", str(private), "--baseline", str(root / "biased"),
                 "--out", str(tmp_path / "c")]) == 0
    html = (tmp_path / "c" / "comparison.html").read_text()
    assert "data:image/jpeg" not in html and "ran with thumbnails = false" in html


def test_run_with_baseline_runs_the_paired_check(audits):
    root, data, good, _ = audits
    out = root / "with_baseline"
    assert main(["run", "--model", str(good), "--data", str(data), "--out", str(out), "--min-accuracy", "0",
                 "--baseline", str(root / "biased" / "verdict.json"), *FAST]) == 0
    v = json.loads((out / "verdict.json").read_text())
    standalone = json.loads((root / "cmp" / "comparison.json").read_text())["comparison"]
    assert {k: v["paired"][k] for k in ("table", "mcnemar_p", "difference", "per_class", "slices")} == \
        {k: standalone[k] for k in ("table", "mcnemar_p", "difference", "per_class", "slices")}
    ids = {c["id"]: c for c in v["criteria"]}
    assert ids["paired.not_worse"]["passed"] and "baseline.regressions" in ids  # the tolerance check stays
    html = (out / "report.html").read_text()
    assert '<section id="paired">' in html and "Only the candidate gets right" in html and "Negative flips" in html
    card = (out / "model_card.md").read_text()
    assert "## Comparison with the baseline" in card and "significantly better" in card


def test_margin_and_alpha_flags(audits):
    root, data, good, biased = audits
    out = root / "strict"
    # the biased model against itself: no discordant pair, but 120 images cannot show a loss below 0.001:
    # the margin lies inside the loss's interval, so the comparison is inconclusive (exit 4) and says what it needs
    assert main(["run", "--model", str(biased), "--data", str(data), "--out", str(out), "--min-accuracy", "0",
                 "--baseline", str(root / "biased" / "verdict.json"), "--paired-margin", "0.001", *FAST]) == 4
    (c,) = [c for c in json.loads((out / "verdict.json").read_text())["criteria"] if c["id"] == "paired.not_worse"]
    assert c["status"] == "inconclusive" and c["low"] < 0.001 < c["high"] and c["images_needed"] > 10_000
    assert main(["run", "--model", str(biased), "--data", str(data), "--out", str(out), "--min-accuracy", "0",
                 "--baseline", str(root / "biased" / "verdict.json"), "--paired-margin", "0.2",
                 "--paired-alpha", "0.01", *FAST]) == 0
    (c,) = [c for c in json.loads((out / "verdict.json").read_text())["criteria"] if c["id"] == "paired.not_worse"]
    assert c["threshold"] == 0.2 and "98% paired CI (one-sided 99% bounds)" in c["title"] and c["status"] == "pass"
    assert main(["run", "--model", str(biased), "--data", str(data), "--out", str(out), "--min-accuracy", "0",
                 "--baseline", str(root / "biased" / "verdict.json"), "--paired-margin", "0.001",
                 "--judge-on", "value", *FAST]) == 1  # as before: only the upper bound, below the margin or not
    (c,) = [c for c in json.loads((out / "verdict.json").read_text())["criteria"] if c["id"] == "paired.not_worse"]
    assert c["status"] == "fail" and c["low"] < 0.001 <= c["high"] and "one-sided 95% bounds" in c["title"]


@pytest.mark.parametrize("flag,code", [([], 4), (["--on-inconclusive", "fail"], 1), (["--on-inconclusive", "pass"], 0)])
def test_compare_is_inconclusive_when_the_margin_lies_inside_the_loss_interval(audits, tmp_path, capsys, flag, code):
    """A v2 verdict still reads; candidate = baseline on 120 images cannot show a loss below 0.001."""
    root, *_ = audits
    old = tmp_path / "old"
    shutil.copytree(root / "biased", old)
    v = json.loads((old / "verdict.json").read_text())
    (old / "verdict.json").write_text(json.dumps({**v, "schema": "audit.verdict/v2"}))
    out = tmp_path / "c"
    assert main(["compare", "--candidate", str(root / "biased"), "--baseline", str(old), "--margin", "0.001",
                 "--no-thumbnails", "--out", str(out), *flag]) == code
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("INCONCLUSIVE") and (("counted as" in last) == bool(flag))
    d = json.loads((out / "comparison.json").read_text())
    assert (d["outcome"], d["exit_code"], d["criterion"]["status"]) == ("inconclusive", code, "inconclusive")
    assert d["findings"][0]["severity"] == "inconclusive" and "would decide it" in d["findings"][0]["text"]
    md = (out / "comparison.md").read_text()
    assert md.startswith("## Model comparison: 🟡 INCONCLUSIVE") and "INCONCLUSIVE**" in md


def test_runs_on_other_data_are_refused_with_one_line(audits, tmp_path, capsys):
    root, data, good, _ = audits
    other = shutil.copytree(data, tmp_path / "other")
    (other / "red" / "000.png").write_bytes((other / "red" / "001.png").read_bytes())  # same path, other bytes
    run = ["run", "--model", str(good), "--data", str(other), "--out", str(tmp_path / "o"), *FAST]
    assert main([*run, "--baseline", str(root / "biased" / "verdict.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "same path but different content (sha256) (e.g. red/000.png)" in err
    assert "--no-paired" in err
    assert main([*run, "--baseline", str(root / "biased" / "verdict.json"), "--no-paired"]) == 0
    (other / "red" / "001.png").unlink()
    assert main([*run, "--baseline", str(root / "biased" / "verdict.json")]) == 2
    assert "1 of its images are not in" in capsys.readouterr().err  # refused before inference


@pytest.mark.parametrize("case,pattern", [
    ("missing", r"--candidate .*nowhere: verdict.json not found there"),
    ("margin", r"margin must be in \[0, 1\) \(an accuracy difference\), got 1.5"),
    ("not_a_number", r"argument --alpha: invalid float value"),
    ("other_images", r"the runs are on different images: 0 only in .*, 40 only in"),
])
def test_compare_input_errors_exit_2(audits, tmp_path, capsys, case, pattern):
    root, data, good, _ = audits
    cand, base, extra = str(root / "good"), str(root / "biased"), []
    if case == "missing":
        cand = str(tmp_path / "nowhere")
    elif case == "margin":
        extra = ["--margin", "1.5"]
    elif case == "not_a_number":
        extra = ["--alpha", "x"]
    else:
        few = shutil.copytree(data, tmp_path / "few")
        shutil.rmtree(few / "red")
        cand = str(tmp_path / "few_out")
        assert main(["run", "--model", str(good), "--data", str(few), "--out", cand, "--min-accuracy", "0",
                     "--min-images-per-label", "0",
                     *FAST]) == 0
        capsys.readouterr()
    assert exit_code(["compare", "--candidate", cand, "--baseline", base, "--out", str(tmp_path / "c"), *extra]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists()


def exit_code(argv) -> int:
    """main's return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code
