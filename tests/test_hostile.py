"""The hostile-user cases of the reliability review, re-run through the command line.

Every user mistake ends in exit 2 with one line on stderr and no traceback; nothing ends in exit 3; no run
passes on missing evidence or non-finite outputs; and the output folder holds either the complete previous
run (left byte for byte as it was) or the complete new one. Signals, a full disk, a read-only disk and
CSV round trips have their own tests (test_signals.py, test_outputs.py).
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import builders
from audit.cli import main

RECORD = ".audit-outputs.json"  # what the audit wrote into --out (audit.render.outputs.RECORD)

FAST = ["--no-pdf", "--no-progress", "--n-boot", "20", "--no-latency", "--no-invariance"]


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """A complete earlier run, copied into each case's --out before the case runs."""
    root = tmp_path_factory.mktemp("previous")
    model = builders.colour_model(root / "m.onnx")
    data = builders.image_folder(root / "data", 10)
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(root / "out"), *FAST]) == 0
    return root / "out"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def complete(out: Path) -> bool:
    """A whole run: the record lists exactly the files there, and the verdict parses."""
    names = json.loads((out / RECORD).read_text())["files"]
    json.loads((out / "verdict.json").read_text())
    return sorted(names) == sorted(p.name for p in out.iterdir() if p.name != RECORD)


def toml(tmp: Path, text: str) -> list[str]:
    (tmp / "audit.toml").write_text(text)
    return ["--config", str(tmp / "audit.toml")]


def manifest(tmp: Path, rows: list[str]) -> Path:
    builders.image_folder(tmp / "lists" / "img", 10)
    path = tmp / "lists" / "test.csv"
    path.write_text("path,label\n" + "".join(f"{r}\n" for r in rows))
    return path


def card(tmp: Path, **values: str) -> Path:
    return builders.set_metadata(builders.dynamic_size(builders.colour_model(tmp / "card.onnx")), **values)


GOOD_ROWS = [f"img/{c}/{i:03d}.png,{c}" for c in builders.COLOURS for i in range(10)]

# case id -> (what to change, a pattern the one stderr line must contain)
MISTAKES = {
    "config workers = -1": (lambda t: toml(t, "[audit]\nworkers = -1\n"), "config key 'workers' must be >= 0 and <= 256, got -1"),
    "--workers -1": (lambda t: ["--workers", "-1"], "--workers -1: config key 'workers' must be >= 0 and <= 256"),
    "config seed = -1": (lambda t: toml(t, "[audit]\nseed = -1\n"), "config key 'seed' must be >= 0 and <= 4294967295"),
    "--seed -1": (lambda t: ["--seed", "-1"], "--seed -1: config key 'seed' must be >= 0"),
    "config threads = -3": (lambda t: toml(t, "[audit]\nthreads = -3\n"), "config key 'threads' must be >= 0 and <= 1024"),
    "config top_k = [0, 50]": (lambda t: toml(t, "[audit]\ntop_k = [0, 50]\n"), "config key 'top_k' must be >= 2, got 0"),
    "config baseline.tolerance = -5": (lambda t: toml(t, "[audit.baseline]\ntolerance = -5\n"),
                                       "config key 'baseline.tolerance' must be >= 0, got -5.0"),
    "--n-boot 0": (lambda t: ["--n-boot", "0"], "--n-boot 0: config key 'n_boot' must be >= 1 and <= 100000"),
    "--batch-size 0": (lambda t: ["--batch-size", "0"], "config key 'batch_size' must be >= 1"),
    "--min-accuracy 2": (lambda t: ["--min-accuracy", "2"], "config key 'criteria.min_accuracy' must be >= 0 and <= 1"),
    "--min-images-per-label -1": (lambda t: ["--min-images-per-label", "-1"],
                                  "config key 'evidence.min_images_per_label' must be >= 0, got -1"),
    "--min-images-per-label x": (lambda t: ["--min-images-per-label", "x"], "--min-images-per-label expects N, got 'x'"),
    "config evidence.min_processed_share = 1.5": (lambda t: toml(t, "[audit.evidence]\nmin_processed_share = 1.5\n"),
                                                  "config key 'evidence.min_processed_share' must be >= 0 and <= 1"),
    "--seed abc": (lambda t: ["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    "--judge-on mean": (lambda t: ["--judge-on", "mean"],
                        "config key 'criteria.judge_on' must be one of 'interval', 'value', got 'mean'"),
    "--judge-on ci": (lambda t: ["--judge-on", "ci"], "no longer takes 'ci': use 'interval'"),
    "--on-inconclusive maybe": (lambda t: ["--on-inconclusive", "maybe"],
                                "config key 'criteria.on_inconclusive' must be one of 'inconclusive', 'fail', 'pass'"),
    "--data-root missing": (lambda t: ["--data-root", str(t / "nowhere")], "config key 'data_root' must be an existing folder"),
    "metadata.csv is a folder": (lambda t: (t / "data" / "metadata.csv").mkdir() or [], "metadata.csv is not a file"),
    "manifest names /etc/shadow": (lambda t: ["--data", str(manifest(t, [*GOOD_ROWS, "/etc/shadow,red"]))],
                                   "lists '/etc/shadow', which is outside"),
    "manifest names ../../x": (lambda t: ["--data", str(manifest(t, [*GOOD_ROWS, "../../x,red"]))],
                               "lists '../../x', which is outside"),
    "manifest lists an image twice, differently": (
        lambda t: ["--data", str(manifest(t, [*GOOD_ROWS, "img/red/000.png,blue"]))],
        "test.csv lists 'img/red/000.png' twice with different values (rows 2 and 32)"),
    "card size 20000 x 20000": (lambda t: ["--model", str(card(t, preprocess='{"size": [20000, 20000]}'))],
                                "card key 'audit.preprocess.size' must be [H, W]"),
    "card preprocess is a list": (lambda t: ["--model", str(card(t, preprocess="[16, 16]"))],
                                  "card key 'audit.preprocess' must be an object"),
    "card invariances = 5": (lambda t: ["--model", str(card(t, invariances="5"))],
                             "card key 'audit.invariances' must be a list of transform names, got 5"),
    "card size '28'": (lambda t: ["--model", str(card(t, preprocess='{"size": "28"}'))],
                       "card key 'audit.preprocess.size' must be [H, W] (or one side) with integers >= 1 and <= 4096, got '28'"),
    "card labels one string": (lambda t: ["--model", str(card(t, labels='"redgreenblue"'))],
                               "card key 'audit.labels' must be a list of class names"),
    "model outputs only NaN": (lambda t: ["--model", str(builders.nan_model(t / "nan.onnx", everywhere=True))],
                               "the model output NaN or Inf for every one of the 30 image(s)"),
    "model outputs only +Inf": (lambda t: ["--model", str(builders.nan_model(t / "inf.onnx", everywhere=True, inf=True))],
                                "the model output NaN or Inf for every one of the 30 image(s)"),
    "--out is a file": (lambda t: (t / "file").write_text("x") and ["--out", str(t / "file")], "is a file, not a folder"),
    "--out is the data folder": (lambda t: ["--out", str(t / "data")], "is the data folder"),
    "--out inside the data folder": (lambda t: ["--out", str(t / "data" / "reports")], "is inside the data folder"),
    "--out holds the user's summary.md": (
        lambda t: (t / "mine").mkdir() or (t / "mine" / "summary.md").write_text("notes") and ["--out", str(t / "mine")],
        "already holds summary.md, which the audit did not write"),
    "--templates with an error": (
        lambda t: (t / "tpl").mkdir() or (t / "tpl" / "report.html.j2").write_text("{{ r.nope.nope }}") and
        ["--templates", str(t / "tpl")], "cannot render the report with --templates"),
}


@pytest.mark.parametrize("case", list(MISTAKES), ids=list(MISTAKES))
def test_every_user_mistake_is_exit_2_with_one_line_and_the_previous_outputs_intact(tmp_path, previous, case,
                                                                                     capsys):
    change, expected = MISTAKES[case]
    model = builders.colour_model(tmp_path / "m.onnx")
    builders.image_folder(tmp_path / "data", 10)
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = snapshot(out)
    args = {"--model": str(model), "--data": str(tmp_path / "data"), "--out": str(out)}
    extra = change(tmp_path)
    for flag in ("--model", "--data", "--out"):  # a case may replace one of the three
        if flag in extra:
            i = extra.index(flag)
            args[flag] = extra[i + 1]
            extra = extra[:i] + extra[i + 2:]
    argv = ["run", *[x for kv in args.items() for x in kv], *FAST, *extra]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert snapshot(out) == before


@pytest.mark.parametrize("case", ["--workers -1", "card size '28'", "manifest names /etc/shadow"])
def test_the_same_mistakes_in_a_real_process(tmp_path, case):
    change, expected = MISTAKES[case]
    model = builders.colour_model(tmp_path / "m.onnx")
    builders.image_folder(tmp_path / "data", 10)
    extra = change(tmp_path)
    args = ["--model", str(model), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    for flag in ("--model", "--data"):
        if flag in extra:
            i = extra.index(flag)
            args[args.index(flag) + 1] = extra[i + 1]
            extra = extra[:i] + extra[i + 2:]
    proc = subprocess.run([sys.executable, "-m", "audit", "run", *args, *FAST, *extra], capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def run_case(tmp_path, model, data, *extra) -> tuple[int, dict]:
    out = tmp_path / "out"
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST, *extra])
    assert code in (0, 1) and complete(out)
    return code, json.loads((out / "verdict.json").read_text())


def failed(verdict: dict) -> set[str]:
    return {c["id"] for c in verdict["criteria"] if c["judged"] and not c["passed"]}


@pytest.mark.parametrize("judge_on", ["value", "interval"])
def test_one_image_of_one_class_never_passes(tmp_path, judge_on):
    model = builders.colour_model(tmp_path / "m.onnx", labels=builders.class_labels(10))
    (tmp_path / "data" / "c0").mkdir(parents=True)
    builders.colour_image("red").save(tmp_path / "data" / "c0" / "0.png")
    code, v = run_case(tmp_path, model, tmp_path / "data", "--judge-on", judge_on)
    assert code == 1 and "evidence.images_per_label" in failed(v)


def test_rows_for_missing_files_and_empty_files_never_pass(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    for i in range(200):
        (data / "blue" / f"empty{i}.png").write_bytes(b"")
    code, v = run_case(tmp_path, model, data)
    assert code == 1 and failed(v) == {"evidence.processed_share"}
    rows = [f"data/{c}/{i:03d}.png,{c}" for c in builders.COLOURS for i in range(10)]
    rows += [f"data/red/gone{i}.png,red" for i in range(2000)]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    shutil.rmtree(tmp_path / "out")
    code, v = run_case(tmp_path, model, tmp_path / "list.csv")
    assert code == 1 and failed(v) == {"evidence.processed_share"}


def test_an_empty_baseline_never_passes(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    (tmp_path / "old.json").write_text(json.dumps({"schema": "audit.verdict/v2", "comparable": {}}))
    code, v = run_case(tmp_path, model, data, "--baseline", str(tmp_path / "old.json"))
    assert code == 1 and failed(v) == {"baseline.compared"}


def test_some_nan_outputs_never_pass(tmp_path):
    model = builders.nan_model(tmp_path / "nan.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    code, v = run_case(tmp_path, model, data)
    assert code == 1 and "evidence.non_finite" in failed(v)


def test_duplicate_rows_are_counted_once(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = manifest(tmp_path, GOOD_ROWS + GOOD_ROWS[:10])  # the red rows twice
    code, v = run_case(tmp_path, model, data)
    assert code == 0 and v["data"]["processed"] == 30 and v["metrics"]["per_class"]["red"]["support"] == 10
    assert v["evidence"]["candidates"] == 30 and v["data"]["found"] == 40


def test_top_k_beyond_the_classes_is_noted_not_silently_dropped(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    code, v = run_case(tmp_path, model, data, *toml(tmp_path, "[audit]\ntop_k = [2, 50]\n"))
    assert code == 0 and v["metrics"]["top_k_not_computed"] == [50] and "top_2_accuracy" in v["metrics"]
    assert "Top-k accuracy is not computed for k = 50" in (tmp_path / "out" / "report.html").read_text()


def test_an_fp16_model_works(tmp_path):
    model = builders.fp16_model(tmp_path / "half.onnx")
    code, v = run_case(tmp_path, model, builders.image_folder(tmp_path / "data", 10))
    assert code == 0 and v["metrics"]["accuracy"]["value"] == 1.0


def test_a_new_run_replaces_the_previous_one_whole(tmp_path, previous):
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10, confusers=5)  # a failing run this time
    code, v = run_case(tmp_path, model, data)
    assert code == 1 and v["passed"] is False
    with (out / "predictions.csv").open(newline="") as f:
        assert sum(1 for _ in csv.reader(f)) == 31
    assert "FAIL" in (out / "summary.md").read_text() and "FAIL" in (out / "report.html").read_text()
