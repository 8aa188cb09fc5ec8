"""model_card.md: built with huggingface_hub, parsed back with it, numbers equal to verdict.json.

One real audit (a planted weak slice, a sensitive column, painted images that look mislabeled)
run against an earlier run of itself, so every check that contributes to the card does.
"""

import dataclasses
import socket
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import builders
from audit.config import load_config
from audit.pipeline import run_audit
from audit.render.json import verdict_dict
from audit.render.model_card import TEMPLATE, build_model_card, card_fields, model_card_text, write_model_card
from audit.render.outputs import write_outputs
from audit.text import md
from audit.verdict import decide, judge

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model card must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    data = builders.sliced_folder(root / "data", 60, weak="site")
    model = builders.colour_model(root / "model.onnx")
    flags = {"n_boot": 50, "latency.enabled": False, "invariance.enabled": False, "fairness.sensitive": ["camera"]}
    write_outputs(run_audit(model, data, load_config(None, flags), progress=False), root / "old", pdf=False)
    result = run_audit(model, data, load_config(None, {**flags, "baseline.path": str(root / "old" / "verdict.json")}),
                       progress=False)
    return result, verdict_dict(result)


def test_the_card_text_is_what_huggingface_hubs_from_template_makes(audited):
    from huggingface_hub import EvalResult, ModelCardData

    fields = card_fields(audited[0])
    data = {**fields["data"], "eval_results": [EvalResult(**e) for e in fields["data"]["eval_results"]]}
    made = ModelCard.from_template(ModelCardData(**data), template_str=TEMPLATE, **fields["template"])
    assert model_card_text(fields) == str(made) and "model-index" in str(made)


def test_card_parses_back_with_the_verdict_numbers(audited, tmp_path, no_network):
    result, verdict = audited
    loaded = ModelCard.load(write_model_card(build_model_card(result), tmp_path / "model_card.md"))
    numbers = {**{k: v for k, v in verdict["metrics"].items() if isinstance(v, dict) and "value" in v},
               **{f"class_f1.{k}": v["f1"] for k, v in verdict["metrics"]["per_class"].items()},
               **verdict["calibration"], **{c["id"]: c for c in verdict["criteria"]}}
    seen = set()
    for r in loaded.data.eval_results:
        expected = numbers[r.metric_type]
        assert r.metric_value == expected["value"], r.metric_type
        args = r.metric_args or {}
        assert (args.get("ci_low"), args.get("ci_high")) == (expected["low"], expected["high"]), r.metric_type
        assert r.task_type == "image-classification" and r.dataset_split == "data"
        seen.add(r.metric_type)
    criteria = {c["id"] for c in verdict["criteria"] if c["value"] is not None}
    assert {"accuracy", "balanced_accuracy", "ece", "brier", "log_loss", "paired.not_worse"} | criteria <= seen
    assert {f"class_f1.{k}" for k in verdict["metrics"]["per_class"]} <= seen
    for c in verdict["criteria"]:
        (r,) = [r for r in loaded.data.eval_results if r.metric_type == c["id"]] or [None]
        if r is not None and "threshold" in (r.metric_args or {}):
            assert (r.metric_args["threshold"], r.metric_args["passed"]) == (c["threshold"], c["passed"])
    assert loaded.data.model_name == Path(result.model.path).resolve().parent.name  # model.onnx: its folder's name
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_body_states_the_verdict_the_limitations_and_the_comparison(audited, no_network):
    result, verdict = audited
    text = str(build_model_card(result))
    assert f"Audit verdict: **{verdict['outcome'].upper()}**" in text
    limits = text.split("## Limitations", 1)[1]
    for c in verdict["criteria"]:
        if c["judged"] and c["status"] != "pass":
            word = {"fail": "Fails", "inconclusive": "Inconclusive"}[c["status"]]
            assert f"{word} **{c['title'].replace('_', chr(92) + '_')}**" in limits
    significant = [s for s in verdict["slices"]["slices"] if s["significant"]]
    assert significant, "the planted weak slice (site c) must be found"
    for s in significant:
        assert f"slice **{s['variable']} {s['level']}** ({s['n']} images)" in limits
    (attribute,) = verdict["fairness"]["attributes"]
    for cf in attribute["per_class"]:
        di = cf["disparate_impact"]
        assert (f"Fairness over **camera** (class {cf['target']}): disparate impact {di['value']:.3f} "
                f"[{di['low']:.3f}, {di['high']:.3f}]") in limits
    le = verdict["label_errors"]
    assert le["n_flagged"] and f"cleanlab flags {le['n_flagged']} of {le['n']} test images" in limits
    comparison = text.split("## Comparison with the baseline", 1)[1].split("##", 1)[0]
    assert f"on the same {verdict['paired']['n']} images" in comparison and "McNemar exact p = 1" in comparison
    for label in result.model.card.labels:
        assert label in text.split("## Model details", 1)[1].split("##", 1)[0]


def test_text_from_the_data_is_escaped(audited, no_network):
    result, _ = audited
    card = dataclasses.replace(result.model.card, labels=("<script>alert(1)</script>", "a|b", "c"))
    first = dataclasses.replace(result.verdict.criteria[0], title="acc | <b>bold</b>")
    result = dataclasses.replace(result, model=dataclasses.replace(result.model, card=card),
                                 verdict=dataclasses.replace(result.verdict,
                                                             criteria=(first, *result.verdict.criteria[1:])))
    text = str(build_model_card(result))
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "a\\|b" in text and "acc \\| &lt;b&gt;bold&lt;/b&gt;" in text


def test_an_inconclusive_criterion_is_named_with_the_images_it_needs(audited, tmp_path, no_network):
    """The accuracy threshold moved inside its interval (and the failing criteria left out): the card says
    INCONCLUSIVE, names the criterion with the images that would decide it, and its eval result the evidence."""
    result, _ = audited
    acc = next(c for c in result.verdict.criteria if c.id == "accuracy")
    (undecided,) = decide([judge(acc.measure, round(acc.value, 2), strict=True)], "interval")
    assert undecided.inconclusive and undecided.images_needed > acc.n
    kept = tuple(undecided if c.id == "accuracy" else c for c in result.verdict.criteria
                 if c.id == "accuracy" or not (c.judged and c.status == "fail"))
    result = dataclasses.replace(result, verdict=dataclasses.replace(result.verdict, criteria=kept))
    loaded = ModelCard.load(write_model_card(build_model_card(result), tmp_path / "model_card.md"))
    text = loaded.text
    assert "Audit verdict: **INCONCLUSIVE**" in text and "## Acceptance criteria: INCONCLUSIVE" in text
    assert f"about {undecided.images_needed:,} images would decide it" in text.split("## Limitations", 1)[0]
    assert f"Inconclusive **{md(undecided.title)}**" in text and f"About {undecided.images_needed:,} test images" in text
    share = next(c for c in kept if c.id == "label_errors.flagged_share")  # reported, not judged
    (r,) = [r for r in loaded.data.eval_results if r.metric_type == "label_errors.flagged_share"]
    assert (r.metric_args["status"], r.metric_args.get("images_needed"), r.metric_args["mde"]) == (
        share.status, share.images_needed, share.mde)
