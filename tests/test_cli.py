"""End to end: python -m audit run, its outputs, and its exit codes (0 pass, 1 fail, 2 user error, 4 inconclusive)."""

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import builders
from audit.cli import main

FAST = ["--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def audited(tmp_path):
    """One full run (with PDF) shared by the output tests."""
    data = builders.image_folder(tmp_path / "data", 10, confusers=1, metadata=True)
    model = builders.colour_model(tmp_path / "model.onnx")
    out = tmp_path / "out"
    proc = run_cli("run", "--model", model, "--data", data, "--out", out, *FAST, "--min-accuracy", "0.6")
    return proc, out


def test_passing_run_exits_0_and_writes_every_output(audited):
    proc, out = audited
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout
    for name in ("report.html", "report.pdf", "verdict.json", "predictions.csv", "junit.xml", "summary.md",
                 "config.json", "skipped.csv"):
        assert (out / name).stat().st_size > 0, name
    v = json.loads((out / "verdict.json").read_text())
    assert v["schema"] == "audit.verdict/v3" and v["passed"] is True and v["exit_code"] == 0
    assert v["outcome"] == "pass" and {c["status"] for c in v["criteria"] if c["judged"]} == {"pass"}
    assert v["data"]["found"] == v["data"]["processed"] + v["data"]["skipped"] == 30  # metadata.csv is no image
    assert "30 images, 0 skipped of 30 found (attributes from metadata.csv)" in proc.stdout
    assert "30 found; attributes from metadata.csv." in (out / "summary.md").read_text()
    acc = v["metrics"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"] and acc["value"] == pytest.approx(27 / 30)
    suite = ET.parse(out / "junit.xml").getroot()
    assert int(suite.get("tests")) == len(v["criteria"]) and suite.get("failures") == "0"


def test_predictions_csv_recomputes_the_numbers(audited):
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    _, out = audited
    df = pd.read_csv(out / "predictions.csv")
    v = json.loads((out / "verdict.json").read_text())
    assert len(df) == v["data"]["processed"]
    assert accuracy_score(df["label"], df["predicted"]) == pytest.approx(v["metrics"]["accuracy"]["value"])
    assert f1_score(df["label"], df["predicted"], average="macro") == pytest.approx(v["metrics"]["macro_f1"]["value"])
    probs = df[[c for c in df.columns if c.startswith("p:")]].to_numpy()
    assert (probs.argmax(axis=1) == df["predicted"].map({"red": 0, "green": 1, "blue": 2})).all()
    assert set(df["attr:site"]) == {"a", "b"}


def test_pdf_has_every_section(audited):
    from pypdf import PdfReader

    _, out = audited
    text = " ".join(page.extract_text() for page in PdfReader(out / "report.pdf").pages)
    for heading in ("Model audit", "Verdict", "Metrics", "Per class", "Calibration", "Data", "Model card", "Run"):
        assert heading in text, heading


def test_html_is_self_contained(audited):
    _, out = audited
    html = (out / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.I)
    assert refs and all(r.startswith("data:") or r.startswith("#") for r in refs), refs
    assert "@import" not in html and "url(http" not in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (.ci/run installs it)")
def test_html_renders_in_headless_chromium_without_network(audited, tmp_path):
    from PIL import Image

    _, out = audited
    shot = tmp_path / "shot.png"
    proc = subprocess.run([
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400",
        f"--screenshot={shot}", (out / "report.html").as_uri(),
    ], capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    img = Image.open(shot).convert("L")
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # a rendered page, not a blank one


def test_class_names_are_escaped(tmp_path):
    labels = ("<script>alert(1)</script>", "green", "blue")
    data = tmp_path / "data"
    for lab, colour in zip(labels, ("red", "green", "blue")):
        (data / lab.replace("/", "_")).mkdir(parents=True)
        for i in range(3):
            builders.colour_image(colour, seed=i).save(data / lab.replace("/", "_") / f"{i}.png")
    labels = tuple(lab.replace("/", "_") for lab in labels)
    model = builders.colour_model(tmp_path / "m.onnx", labels=labels)
    out = tmp_path / "out"
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--no-pdf", *FAST,
                 "--min-images-per-label", "3", "--min-accuracy", "0.5"]) == 0
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_failing_criterion_exits_1(tmp_path, capsys):
    data = builders.image_folder(tmp_path / "data", 10, confusers=5)  # half the images are painted wrong
    model = builders.colour_model(tmp_path / "m.onnx")
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"), "--no-pdf", *FAST])
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
    v = json.loads((tmp_path / "o" / "verdict.json").read_text())
    assert v["passed"] is False and [c["id"] for c in v["criteria"] if c["judged"] and not c["passed"]] == ["accuracy"]


def test_zero_f1_class_fails(tmp_path):
    data = builders.image_folder(tmp_path / "data", 6)
    w, b = builders.colour_weights()
    b[2] = -100.0  # never predicts blue
    model = builders.colour_model(tmp_path / "m.onnx", weights=(w, b))
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"), "--no-pdf",
                 "--min-accuracy", "0.5", *FAST]) == 1
    v = json.loads((tmp_path / "o" / "verdict.json").read_text())
    zero = next(c for c in v["criteria"] if c["id"] == "no_zero_f1")
    assert not zero["passed"] and "blue" in zero["detail"]


@pytest.mark.parametrize("threshold,extra,code,status", [
    ("0.85", [], 4, "inconclusive"),  # 0.85 lies inside accuracy's interval [0.74, 0.97]
    ("0.50", [], 0, "pass"), ("0.99", [], 1, "fail"),  # far below passes, far above fails
    ("0.85", ["--on-inconclusive", "fail"], 1, "inconclusive"), ("0.85", ["--on-inconclusive", "pass"], 0, "inconclusive"),
    ("0.85", ["--judge-on", "value"], 0, "pass"),  # the point estimate 0.9 alone
])
def test_a_threshold_inside_the_interval_is_inconclusive_exit_4(tmp_path, capsys, threshold, extra, code, status):
    data = builders.image_folder(tmp_path / "data", 10, confusers=1)  # accuracy 0.9 on 30 images
    model = builders.colour_model(tmp_path / "m.onnx")
    args = ["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"), "--no-pdf",
            "--min-accuracy", threshold, *FAST, *extra]
    assert main(args) == code
    v = json.loads((tmp_path / "o" / "verdict.json").read_text())
    acc = next(c for c in v["criteria"] if c["id"] == "accuracy")
    assert acc["status"] == status and v["outcome"] == status and v["exit_code"] == code
    assert acc["n"] == 30 and acc["mde"] is not None
    assert (acc["images_needed"] is not None) == (status == "inconclusive")
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith(status.upper())
    if status == "inconclusive":
        assert f"INCONCLUSIVE (needs about {acc['images_needed']:,} images)" in out
        suite = ET.parse(tmp_path / "o" / "junit.xml").getroot()
        case = next(c for c in suite.iter("testcase") if c.get("name") == "accuracy")
        mapped = extra == ["--on-inconclusive", "fail"]
        assert case.find("failure" if mapped else "skipped").get("message").startswith("inconclusive: the threshold")
        summary = (tmp_path / "o" / "summary.md").read_text()
        assert "INCONCLUSIVE" in summary.splitlines()[0] and f"about {acc['images_needed']:,} images" in summary
        html = (tmp_path / "o" / "report.html").read_text()
        assert 'class="badge inconclusive"' in html and '<tr class="inconclusive">' in html
        assert 'class="finding-inconclusive"' in html and "How much this test set can tell" in html
        assert f"{acc['images_needed']:,}</td>" in html.split('<section id="evidence">', 1)[1]


@pytest.mark.fast
def test_judge_on_ci_is_refused_naming_its_replacement(tmp_path, capsys):
    data = builders.image_folder(tmp_path / "data", 3)
    model = builders.colour_model(tmp_path / "m.onnx")
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"), *FAST,
                 "--judge-on", "ci"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--judge-on ci" in err and "'interval'" in err and "--on-inconclusive fail" in err


@pytest.mark.parametrize("case,pattern", [
    ("missing model", r"^error: model file not found: .*nope\.onnx \(pass --model"),
    ("missing data", r"^error: --data not found: "),
    ("empty folder", r"^error: --data .*: no usable image in the ImageFolder"),
    ("unknown label", r"^error: class 'purple' in .* is not one of the model's labels"),
    ("not onnx", r"^error: cannot load .* as an ONNX model"),
    ("bad flag", r"^error: .*--size"),
    ("bad config", r"^error: unknown config key 'criteria.min_acc'"),
    ("unknown engine", r"^error: --engine spark: config key 'engine.name' must be one of 'local', 'ray', got 'spark'$"),
    ("unreachable cluster", r"^error: --ray-address '127.0.0.1:1': cannot connect to a Ray cluster \(.+\) "
                            r"\(start one with `ray start --head`"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, case, pattern):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 2)
    args = ["--model", model, "--data", data]
    if case == "missing model":
        args[1] = tmp_path / "nope.onnx"
    elif case == "missing data":
        args[3] = tmp_path / "nowhere"
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        args[3] = tmp_path / "empty"
    elif case == "unknown label":
        (data / "purple").mkdir()
        builders.colour_image("red").save(data / "purple" / "p.png")
    elif case == "not onnx":
        (tmp_path / "x.onnx").write_text("not a model")
        args[1] = tmp_path / "x.onnx"
    elif case == "bad flag":
        args += ["--size", "abc"]
    elif case == "bad config":
        (tmp_path / "audit.toml").write_text("[audit.criteria]\nmin_acc = 0.9\n")
        args += ["--config", tmp_path / "audit.toml"]
    elif case == "unknown engine":
        args += ["--engine", "spark"]
    elif case == "unreachable cluster":
        pytest.importorskip("ray")
        args += ["--engine", "ray", "--ray-address", "127.0.0.1:1"]
    proc = run_cli("run", *args, "--out", tmp_path / "o", *FAST)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(pattern, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_same_seed_same_verdict(tmp_path):
    data = builders.image_folder(tmp_path / "data", 8, confusers=2)
    model = builders.colour_model(tmp_path / "m.onnx")
    verdicts = []
    for out in ("a", "b"):
        main(["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / out), "--no-pdf", *FAST])
        v = json.loads((tmp_path / out / "verdict.json").read_text())
        verdicts.append((v["criteria"], v["metrics"]))
    assert verdicts[0] == verdicts[1]


def test_config_file_sets_thresholds(tmp_path):
    data = builders.image_folder(tmp_path / "data", 10, confusers=1)
    model = builders.colour_model(tmp_path / "m.onnx")
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text("[tool.audit]\nn_boot = 30\n[tool.audit.criteria]\nmin_accuracy = 0.99\nmin_class_f1 = 0.5\n")
    out = tmp_path / "o"
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--config", str(cfg),
                 "--no-pdf", "--no-progress", "--no-latency", "--no-invariance"]) == 1
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["n_boot"] == 30 and resolved["criteria"]["min_accuracy"] == 0.99
    ids = [c["id"] for c in json.loads((out / "verdict.json").read_text())["criteria"]]
    assert "class_f1.red" in ids


def test_no_thumbnails_embeds_no_image_of_the_data(tmp_path):
    data = builders.sliced_folder(tmp_path / "data", 40, weak="site")  # a significant slice: error thumbnails
    model = builders.colour_model(tmp_path / "m.onnx")
    base = ["run", "--model", str(model), "--data", str(data), "--no-pdf", *FAST]
    main([*base, "--out", str(tmp_path / "with")])
    main([*base, "--out", str(tmp_path / "without"), "--no-thumbnails"])
    assert "data:image/jpeg" in (tmp_path / "with" / "report.html").read_text()
    html = (tmp_path / "without" / "report.html").read_text()
    assert "data:image/jpeg" not in html and "thumbnails = false" in html


@pytest.mark.fast
def test_stdout_colours_the_outcome_on_a_terminal_only(monkeypatch):
    import os
    import pty

    from audit.cli import paint

    assert paint("INCONCLUSIVE", "inconclusive") == "INCONCLUSIVE"  # captured: not a terminal
    main_fd, tty_fd = pty.openpty()
    try:
        with os.fdopen(tty_fd, "w") as tty:
            monkeypatch.setattr(sys, "stdout", tty)
            monkeypatch.delenv("NO_COLOR", raising=False)
            coloured = {s: paint("x", s) for s in ("pass", "fail", "inconclusive", "info")}
            monkeypatch.setenv("NO_COLOR", "1")
            plain = paint("x", "inconclusive")
    finally:
        os.close(main_fd)
    assert coloured["inconclusive"] == "\033[35mx\033[0m" and coloured["fail"] == "\033[31mx\033[0m"
    assert len({coloured["pass"], coloured["fail"], coloured["inconclusive"]}) == 3
    assert coloured["info"] == plain == "x"


@pytest.mark.fast
@pytest.mark.parametrize(("argv", "hint"), [(["--bogus"], "(see python -m audit --help)"),
                                           (["run", "--bogus"], "(see python -m audit run --help)"),
                                           (["compare", "--bogus"], "(see python -m audit compare --help)")])
def test_a_usage_error_is_one_line_naming_the_command_once(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and err.endswith(hint) and "\n" not in err
