"""The latency check: a real server on 127.0.0.1, real base64 requests, percentiles with CIs.

Nothing here asserts how fast anything is (timings live in benchmarks/); thresholds are set
far below or above any real latency to exercise both outcomes of the criterion.
"""

from __future__ import annotations

import json
import math
from contextlib import closing

import numpy as np
import pytest
from builders import COLOURS, colour_model, image_folder

from audit.checks import latency
from audit.checks.latency import LatencyConfig, LatencyResult, PhaseLatency, ServedAnswer, measure_latency
from audit.cli import main
from audit.config import AuditConfig, Criteria, load_config
from audit.errors import ConfigError
from audit.loadgen import ServerError, connect, request, running_server
from audit.stats import Estimate
from audit.verdict import decide
from builders import context


def criteria(result, config):
    """The check's criteria as the pipeline decides them (judge_on applied)."""
    return decide(latency.criteria(result, config), config.criteria.judge_on)


CONFIG = LatencyConfig(requests=12, concurrency=3, warmup=1, max_images=6, early_stop=False)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("latency")
    model = colour_model(root / "model.onnx")
    data = image_folder(root / "data", 4)
    ctx = context(model, data)
    return model, data, ctx.predictions, ctx.source


@pytest.fixture(scope="module")
def result(audited) -> LatencyResult:
    model, _, preds, source = audited
    return measure_latency(model, preds, source, CONFIG, n_boot=200, seed=0)


def test_measures_both_phases_against_the_real_server(result):
    seq, conc = result.sequential, result.concurrent
    assert (seq.name, seq.concurrency, seq.n, seq.errors) == ("sequential", 1, 12, 0)
    assert (conc.name, conc.concurrency, conc.n, conc.errors) == ("concurrent", 3, 12, 0)
    for p in result.phases:
        assert len(p.latencies_ms) == 12 and np.all(p.latencies_ms > 0)
        assert p.p50.value <= p.p95.value <= p.p99.value <= p.latencies_ms.max()
        assert p.p95.value == pytest.approx(np.quantile(p.latencies_ms, 0.95))
        assert p.p95.low <= p.p95.high
        assert p.throughput > 0 and p.wall_s > 0
    assert result.requests == 24 and result.errors == 0 and result.first_error is None
    assert result.images == 6 and result.model == "model.onnx" and result.startup_s > 0


def test_served_answers_equal_the_audits_predictions(result, audited):
    _, _, preds, _ = audited
    assert len(result.answers) == 6
    for a in result.answers:
        i = preds.paths.index(a.path)
        assert a.agrees and a.served_class == preds.labels[preds.y_pred[i]]
        assert abs(a.served_prob - float(preds.proba[i].max())) <= 1e-6 and a.prob_diff <= 1e-6
    assert {a.audit_class for a in result.answers} == set(COLOURS)  # spread over the table, not one class


def test_criteria_report_value_threshold_and_ci(result):
    by_id = {c.id: c for c in criteria(result, AuditConfig(latency=CONFIG))}
    assert set(by_id) == {"latency.p95", "latency.p95_concurrent", "latency.errors", "latency.matches_audit"}
    p95 = by_id["latency.p95"]
    assert (p95.value, p95.low, p95.high) == (result.sequential.p95.value, result.sequential.p95.low,
                                              result.sequential.p95.high)
    assert p95.op == "<" and p95.threshold == 500.0
    assert by_id["latency.errors"].passed and by_id["latency.matches_audit"].passed


@pytest.mark.parametrize(("max_p95_ms", "status"), [(1e-9, "fail"), (1e9, "pass")])
def test_p95_criterion_follows_the_threshold(result, max_p95_ms, status):
    config = AuditConfig(latency=LatencyConfig(max_p95_ms=max_p95_ms))
    judged = [c for c in criteria(result, config) if c.id.startswith("latency.p95")]
    assert len(judged) == 2 and all(c.status == status for c in judged)


def test_a_limit_inside_the_ci_is_inconclusive_unless_judged_on_the_value(result):
    p95 = result.sequential.p95
    between = (p95.value + p95.high) / 2
    if not p95.value < between < p95.high:
        pytest.skip("degenerate CI")
    config = AuditConfig(latency=LatencyConfig(max_p95_ms=between))
    assert next(c for c in criteria(result, config) if c.id == "latency.p95").status == "inconclusive"
    config = AuditConfig(latency=LatencyConfig(max_p95_ms=between), criteria=Criteria(judge_on="value"))
    assert next(c for c in criteria(result, config) if c.id == "latency.p95").status == "pass"


@pytest.mark.parametrize(("max_p95_ms", "status"), [(1e9, "pass"), (1e-9, "fail")])
def test_early_stop_ends_a_phase_once_the_p95_sequence_decides(audited, max_p95_ms, status):
    """A limit far from every latency is decided at the first look (70 requests), not after the 400 budgeted."""
    from audit.sequential import quantile_sequence

    model, _, preds, source = audited
    config = LatencyConfig(requests=400, concurrency=1, warmup=1, max_images=6, max_p95_ms=max_p95_ms)
    res = measure_latency(model, preds, source, config, n_boot=100, seed=0)
    seq = res.sequential
    assert seq.sequential and seq.budget == 400 and seq.n == 70 and len(seq.latencies_ms) == 70
    assert (seq.p95.low, seq.p95.high) == quantile_sequence(seq.latencies_ms, 0.95)
    assert seq.p95.value == pytest.approx(np.quantile(seq.latencies_ms, 0.95))
    (c,) = [c for c in criteria(res, AuditConfig(latency=config)) if c.id == "latency.p95"]
    assert c.status == status and "stopped after 70 of 400 requests" in c.detail
    assert len(res.answers) == 6 and all(a.agrees for a in res.answers)


def _phase(errors: int) -> PhaseLatency:
    lat = np.array([10.0, 11.0, 12.0])
    e = Estimate(11.0, 10.0, 12.0)
    return PhaseLatency("sequential", 1, 3 + errors, errors, e, e, e, 11.0, 50.0, 0.1, lat)


def test_errors_and_mismatches_fail():
    answers = (
        ServedAnswer("red/000.png", "red", 0.9, "red", 0.9, 0.0),
        ServedAnswer("blue/000.png", "green", 0.6, "blue", 0.7, 0.3),
        ServedAnswer("green/000.png", None, math.nan, "green", 0.8, math.nan),
    )
    res = LatencyResult("m.onnx", 0, 3, 100, 1.0, (_phase(errors=2),), answers, first_error="HTTP 500: boom")
    by_id = {c.id: c for c in criteria(res, AuditConfig())}
    assert "latency.p95_concurrent" not in by_id
    assert not by_id["latency.errors"].passed and "HTTP 500: boom" in by_id["latency.errors"].detail
    m = by_id["latency.matches_audit"]
    assert not m.passed and m.value == 2 and "blue/000.png" in m.detail and "green/000.png" in m.detail
    assert res.max_prob_diff == 0.3
    d = res.to_dict()
    assert d["errors"] == 2 and d["served_vs_audit"] == {"compared": 3, "class_disagreements": 2, "max_prob_diff": 0.3}
    json.dumps(d)  # plain JSON all the way down


def test_a_tiny_prob_diff_within_tolerance_passes():
    answers = (ServedAnswer("a.png", "red", 0.9, "red", 0.9, 5e-5),)
    res = LatencyResult("m.onnx", 0, 1, 100, 1.0, (_phase(errors=0),), answers)
    m = next(c for c in criteria(res, AuditConfig()) if c.id == "latency.matches_audit")
    assert m.passed
    tight = AuditConfig(latency=LatencyConfig(max_prob_diff=1e-6))
    assert not next(c for c in criteria(res, tight) if c.id == "latency.matches_audit").passed


def test_server_that_cannot_start_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx file")
    with pytest.raises(ServerError, match="exited with code 2.*cannot load") as info:
        with running_server(bad, startup_timeout_s=60):
            pass
    assert info.value.exit_code == 3 and "--no-latency" in str(info.value)


def test_card_overrides_reach_the_server(tmp_path):
    """A model without a card, audited with --labels/--size/--mean/--std, is served with the same card."""
    model = colour_model(tmp_path / "bare.onnx", card=False)
    overrides = {"labels": ["r", "g", "b"], "output": None,
                 "preprocess": {"size": [16, 16], "mean": [0.5], "std": [0.25]}}
    with running_server(model, card_overrides=overrides) as server, closing(connect(server.url)) as conn:
        status, body = request(conn, "GET", "/model")
    assert status == 200
    card = json.loads(body)
    assert card["labels"] == ["r", "g", "b"]
    assert card["preprocess"]["mean"] == [0.5] * 3 and card["preprocess"]["std"] == [0.25] * 3


@pytest.mark.parametrize(("key", "value", "words"), [
    ("latency.requests", 0, "latency.requests"),
    ("latency.concurrency", 0, "latency.concurrency"),
    ("latency.max_p95_ms", -1.0, "latency.max_p95_ms"),
    ("latency.warmup", -1, "latency.warmup"),
    ("latency.bogus", 1, "latency.bogus"),
])
def test_latency_config_is_validated(key, value, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, {key: value})


def test_audit_run_reports_latency_end_to_end(audited, tmp_path, capsys):
    model, data, preds, _ = audited
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[audit]\nn_boot = 50\n[audit.latency]\nrequests = 8\nconcurrency = 2\nwarmup = 1\n"
                   "max_images = 4\n")
    out = tmp_path / "out"
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--config", str(cfg),
                 "--no-pdf", "--no-progress"])
    stdout = capsys.readouterr().out
    assert "p95 latency of /predict" in stdout
    verdict = json.loads((out / "verdict.json").read_text())
    ids = {c["id"]: c for c in verdict["criteria"]}
    assert {"latency.p95", "latency.p95_concurrent", "latency.errors", "latency.matches_audit"} <= set(ids)
    assert ids["latency.errors"]["passed"] and ids["latency.matches_audit"]["passed"]
    lat = verdict["latency"]
    assert lat["sequential"]["n"] == 8 and lat["concurrent"]["concurrency"] == 2
    assert set(lat["sequential"]["p95_ms"]) == {"value", "low", "high"}
    assert lat["served_vs_audit"]["compared"] == 4 and lat["served_vs_audit"]["class_disagreements"] == 0
    assert code == (0 if verdict["passed"] else 1)
    html = (out / "report.html").read_text()
    assert 'id="latency"' in html and "Served answers against the audit" in html
    assert html.count("data:image/svg+xml;base64,") >= 4  # the latency histogram is inlined too


def test_no_latency_flag_skips_the_server(audited, tmp_path):
    model, data, _, _ = audited
    out = tmp_path / "out"
    main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--no-pdf", "--no-progress",
          "--n-boot", "50", "--no-latency"])
    verdict = json.loads((out / "verdict.json").read_text())
    assert "latency" not in verdict and not any(c["id"].startswith("latency.") for c in verdict["criteria"])
    assert 'id="latency"' not in (out / "report.html").read_text()


def test_latency_config_round_trips_through_toml(tmp_path):
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[audit.latency]\nenabled = false\nmax_p95_ms = 250\n")
    c = load_config(cfg)
    assert c.latency == LatencyConfig(enabled=False, max_p95_ms=250.0)
    assert load_config(cfg, {"latency.enabled": True}).latency.enabled


def test_html_escapes_paths_in_the_latency_section(tmp_path):
    from audit.render.html import _env

    res = LatencyResult("m.onnx", 0, 1, 100, 1.0, (_phase(errors=0),),
                        (ServedAnswer("<script>x</script>.png", "red", 0.9, "red", 0.9, 0.0),))

    class R:  # the section template reads only r.latency and r.config (and its chart)
        latency = res
        config = AuditConfig()

    html = _env().get_template("sections/latency.html.j2").render(r=R, chart={"histogram": ""})
    assert "<script>x" not in html and "&lt;script&gt;x" in html


def test_the_server_starts_before_inference_and_is_stopped_however_the_run_ends(tmp_path):
    """The latency check's prepare starts the server (it loads while the model runs); the pipeline stops it when a
    later step fails, as when the run ends."""
    from audit.checks import CHECKS
    from audit.config import load_config
    from audit.contract import CheckSpec
    from audit.pipeline import close_prepared, open_context, run_audit

    model, data = colour_model(tmp_path / "m.onnx"), image_folder(tmp_path / "data", 4)
    config = load_config(None, {"invariance.enabled": False})
    ctx = open_context(model, data, config, progress=False)
    start = ctx.state("latency")
    assert start._held[0].poll() is None  # running before any image was decoded
    close_prepared(ctx)
    assert start._held[0].poll() is not None

    seen = []

    def boom(ctx):
        seen.append(ctx.state("latency")._held[0])
        raise RuntimeError("a check failed")

    failing = CheckSpec("boom", "boom", boom)
    with pytest.raises(RuntimeError, match="a check failed"):
        run_audit(model, data, config, checks=(failing, *CHECKS), progress=False)
    assert seen and seen[0].poll() is not None
