"""model_card.md: built with huggingface_hub, parsed back with it, numbers equal to verdict.json.

The verdicts are the committed reports' real ``verdict.json`` files; the ONNX card is read from a
real ONNX file written by ``tests/builders.py``.
"""

import json
import socket
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import builders
from audit.model import ModelCard as OnnxCard
from audit.model import read_metadata
from audit.render.model_card import build_model_card, write_model_card

REPORTS = Path(__file__).resolve().parent.parent / "reports"
VERDICTS = sorted(REPORTS.glob("*/verdict.json"))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model card must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def onnx_card(tmp_path):
    path = builders.colour_model(tmp_path / "model.onnx")
    return OnnxCard.from_dict(read_metadata(path)).to_dict()


def verdict_number(verdict: dict, metric_type: str, config: str | None) -> dict:
    """Where an eval result's number lives in verdict.json."""
    metrics = verdict["metrics"]
    if metric_type == "f1" and config is not None:
        return metrics["per_class"][config]["f1"]
    if metric_type in metrics:
        return metrics[metric_type]
    if metric_type in verdict["calibration"]:
        return verdict["calibration"][metric_type]
    (criterion,) = [c for c in verdict["criteria"] if c["id"] == metric_type]
    return criterion


@pytest.mark.parametrize("verdict_path", VERDICTS, ids=lambda p: p.parent.name)
def test_card_parses_back_with_the_verdict_numbers(verdict_path, onnx_card, tmp_path, no_network):
    verdict = json.loads(verdict_path.read_text())
    out = write_model_card(build_model_card(verdict, onnx_card), tmp_path / "model_card.md")
    loaded = ModelCard.load(out)
    results = loaded.data.eval_results
    seen = set()
    for r in results:
        expected = verdict_number(verdict, r.metric_type, r.metric_config)
        assert r.metric_value == expected["value"], r.metric_type
        args = r.metric_args or {}
        assert (args.get("ci_low"), args.get("ci_high")) == (expected["low"], expected["high"]), r.metric_type
        assert r.task_type == "image-classification" and r.dataset_split == "test"
        seen.add((r.metric_type, r.metric_config))
    headline = {k for k, v in verdict["metrics"].items() if isinstance(v, dict) and "value" in v}
    assert {(k, None) for k in headline} <= seen
    assert {("f1", label) for label in verdict["metrics"]["per_class"]} <= seen
    assert {(k, None) for k in verdict["calibration"]} <= seen
    criteria = {c["id"] for c in verdict["criteria"] if c["value"] is not None} - headline
    assert {(c, None) for c in criteria} <= seen
    for c in verdict["criteria"]:
        if c["id"] in criteria:
            (r,) = [r for r in results if r.metric_type == c["id"]]
            assert (r.metric_args["threshold"], r.metric_args["passed"]) == (c["threshold"], c["passed"])
    assert loaded.data.model_name == Path(verdict["model"]["path"]).parent.name
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_body_states_the_verdict_and_the_limitations(onnx_card, no_network):
    verdict = json.loads((REPORTS / "elpv_lite0" / "verdict.json").read_text())
    text = str(build_model_card(verdict, onnx_card))
    failing = [c for c in verdict["criteria"] if c["judged"] and not c["passed"]]
    assert failing and "Audit verdict: **FAIL**" in text and "## Acceptance criteria: FAIL" in text
    limits = text.split("## Limitations", 1)[1]
    for c in failing:
        assert f"Fails **{c['title'].replace('_', chr(92) + '_')}**" in limits
    significant = [s for s in verdict["slices"]["slices"] if s["significant"]]
    assert significant
    for s in significant:
        assert f"slice **{s['variable'].replace('_', chr(92) + '_')} {s['level']}** ({s['n']} images)" in limits
    di = next(c for c in verdict["criteria"] if c["id"] == "fairness.module_type.disparate_impact")
    assert (f"Fairness over **module\\_type** (class defective): disparate impact {di['value']:.3f} "
            f"[{di['low']:.3f}, {di['high']:.3f}]") in limits
    for label in onnx_card["labels"]:
        assert label in text.split("## Model details", 1)[1].split("##", 1)[0]


def test_an_inconclusive_criterion_is_named_with_the_images_it_needs(tmp_path, onnx_card, no_network):
    from audit.cli import main

    data = builders.image_folder(tmp_path / "data", 20, confusers=2)  # accuracy 0.9 [0.80, 0.95] on 60 images
    model = builders.colour_model(tmp_path / "model.onnx")
    assert main(["run", "--model", str(model), "--data", str(data), "--n-boot", "30", "--no-progress", "--no-pdf",
                 "--no-latency", "--no-invariance", "--min-accuracy", "0.85", "--out", str(tmp_path / "o")]) == 4
    verdict = json.loads((tmp_path / "o" / "verdict.json").read_text())
    acc = next(c for c in verdict["criteria"] if c["id"] == "accuracy")
    text = (tmp_path / "o" / "model_card.md").read_text()
    assert "Audit verdict: **INCONCLUSIVE**" in text and "## Acceptance criteria: INCONCLUSIVE" in text
    assert f"about {acc['images_needed']:,} images would decide it" in text.split("## Limitations", 1)[0]
    assert "Inconclusive **Accuracy (3 classes)**" in text and f"About {acc['images_needed']:,} test images" in text
    share = next(c for c in verdict["criteria"] if c["id"] == "label_errors.flagged_share")  # reported, not judged
    (r,) = [r for r in ModelCard.load(tmp_path / "o" / "model_card.md").data.eval_results
            if r.metric_type == "label_errors.flagged_share"]
    assert (r.metric_args["status"], r.metric_args["images_needed"], r.metric_args["mde"]) == (
        share["status"], share["images_needed"], share["mde"])


def test_text_from_the_data_is_escaped(onnx_card, no_network):
    verdict = json.loads((REPORTS / "elpv_lite0" / "verdict.json").read_text())
    card = {**onnx_card, "labels": ["<script>alert(1)</script>", "a|b"]}
    verdict["criteria"][0] = {**verdict["criteria"][0], "title": "acc | <b>bold</b>"}
    text = str(build_model_card(verdict, card))
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "a\\|b" in text and "acc \\| &lt;b&gt;bold&lt;/b&gt;" in text


def test_every_run_writes_a_card_with_the_verdict_numbers(tmp_path, no_network):
    """model_card.md next to the report of a real run against a baseline: label errors and the paired comparison."""
    from audit.cli import main

    data = builders.image_folder(tmp_path / "data", 20, confusers=2)
    model = builders.colour_model(tmp_path / "model.onnx")
    run = ["run", "--model", str(model), "--data", str(data), "--n-boot", "30", "--no-progress", "--no-pdf",
           "--no-latency", "--no-invariance", "--min-accuracy", "0.5"]
    assert main([*run, "--out", str(tmp_path / "old")]) == 0
    main([*run, "--out", str(tmp_path / "new"), "--baseline", str(tmp_path / "old" / "verdict.json")])
    verdict = json.loads((tmp_path / "new" / "verdict.json").read_text())
    loaded = ModelCard.load(tmp_path / "new" / "model_card.md")
    for r in loaded.data.eval_results:
        expected = verdict_number(verdict, r.metric_type, r.metric_config)
        assert r.metric_value == expected["value"], r.metric_type
        assert ((r.metric_args or {}).get("ci_low"), (r.metric_args or {}).get("ci_high")) == \
            (expected["low"], expected["high"]), r.metric_type
    types = {r.metric_type for r in loaded.data.eval_results}
    assert {"accuracy", "label_errors.flagged_share", "paired.not_worse"} <= types
    text = loaded.text
    assert "cleanlab flags 6 of 60 test images" in text.split("## Limitations", 1)[1]
    comparison = text.split("## Comparison with the baseline", 1)[1].split("##", 1)[0]
    assert "on the same 60 images" in comparison and "McNemar exact p = 1" in comparison
