"""model_card.md: a Hugging Face model card built from the verdict and the ONNX model card.

The card is made with ``huggingface_hub``'s ``ModelCard`` / ``ModelCardData`` / ``EvalResult``,
so its YAML header is the Hub's ``model-index`` format: one eval result per headline metric,
per-class F1, calibration measure and criterion, each with its confidence interval in
``args`` (``ci_low``, ``ci_high``, ``ci_level``; counts have none) and, for criteria, the
threshold and outcome.
The body says what the model is (labels, preprocessing, architecture, provenance, intended
invariances), the verdict, and the limitations the audit found: failing criteria, significantly
underperforming slices, fairness gaps and suspected label errors, and, when the audit ran
against a baseline with its predictions, the paired comparison.

Inputs are plain values: the dict ``audit.render.json.verdict_dict`` writes to ``verdict.json``
and the card as ``audit.model.ModelCard.to_dict()`` gives it. Nothing touches the network: the
template is the string below, never the Hub's default.

Example::

    card = build_model_card(json.loads(Path("verdict.json").read_text()), model_card.to_dict())
    write_model_card(card, out / "model_card.md")
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from audit.render.text import fmt, fmt_ci

TASK = "image-classification"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
CALIBRATION = ("ece", "brier", "log_loss")
TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## Model details

{% for k, v in details %}- **{{ k }}**: {{ v }}
{% endfor %}
## Evaluation

{{ evaluation }}

| measure | value | {{ ci }} CI |
|---|---|---|
{% for row in measures %}| {{ row | join(" | ") }} |
{% endfor %}
## Acceptance criteria: {{ outcome }}

| criterion | value | {{ ci }} CI | threshold | result |
|---|---|---|---|---|
{% for row in criteria %}| {{ row | join(" | ") }} |
{% endfor %}
{% if comparison %}
## Comparison with the baseline

{{ comparison }}

{% endif %}
## Limitations

{% for line in limitations %}- {{ line }}
{% endfor %}
"""


def md(x: Any) -> str:
    """Plain text made safe inside Markdown (and HTML): no tags, table cells or emphasis."""
    s = html.escape(str(x), quote=False).replace("\n", " ")
    for ch in "\\|*_`[]":
        s = s.replace(ch, "\\" + ch)
    return s


def code(x: Any) -> str:
    """A Markdown code span (escapes do not work inside one, so backticks are replaced)."""
    return "`" + str(x).replace("`", "'").replace("\n", " ") + "`"


def build_model_card(verdict: Mapping[str, Any], card: Mapping[str, Any], *, model_name: str | None = None,
                     license: str | None = None):
    """A ``huggingface_hub.ModelCard`` for the audited model (see the module docstring)."""
    from huggingface_hub import ModelCard, ModelCardData

    model = verdict.get("model", {})
    name = model_name or _default_name(model.get("path", "model.onnx"))
    data = ModelCardData(
        model_name=name, library_name="onnx", pipeline_tag=TASK, license=license,
        tags=["onnx", TASK, "model-audit"], eval_results=list(eval_results(verdict, card)),
        metrics=sorted({m for m in METRICS if m in verdict.get("metrics", {})} | {"f1"}),
    )
    ci = f"{round(100 * verdict.get('ci_level', 0.95))}%"
    return ModelCard.from_template(
        data, template_str=TEMPLATE, title=md(name), summary=_summary(verdict), details=_details(card, model),
        evaluation=_evaluation(verdict), ci=ci, measures=_measure_rows(verdict),
        outcome=(verdict.get("outcome") or ("pass" if verdict["passed"] else "fail")).upper(),
        criteria=_criterion_rows(verdict),
        limitations=list(limitations(verdict)), comparison=comparison(verdict),
    )


def write_model_card(card, path: Path) -> Path:
    """Save ``card`` at ``path`` atomically (written beside it, then moved into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    card.save(tmp)
    os.replace(tmp, path)
    return path


def eval_results(verdict: Mapping[str, Any], card: Mapping[str, Any]) -> Iterator:
    """One ``EvalResult`` per metric, per-class F1, calibration measure and criterion (not repeated)."""
    from huggingface_hub import EvalResult

    data = verdict.get("data", {})
    source = str(data.get("source", "test data"))
    dataset = str(card.get("provenance", {}).get("dataset") or Path(source).parent.name or source)
    common = {"task_type": TASK, "dataset_type": dataset, "dataset_name": f"{dataset} ({source})",
              "dataset_split": Path(source).name or "test", "verified": False}

    def result(metric_type, est, name, config=None, **args):
        ci = {"ci_low": est["low"], "ci_high": est["high"], "ci_level": 0.95} if est.get("low") is not None else {}
        return EvalResult(metric_type=metric_type, metric_value=est["value"], metric_name=name,
                          metric_config=config, metric_args={**ci, **args} or None, **common)

    metrics = verdict.get("metrics", {})
    for key, est in metrics.items():
        if isinstance(est, Mapping) and "value" in est and est["value"] is not None:
            yield result(key, est, key.replace("_", " ").capitalize())
    for label, pc in metrics.get("per_class", {}).items():
        yield result("f1", pc["f1"], f"F1 of class {label}", config=str(label), support=pc["support"])
    for key in CALIBRATION:
        est = verdict.get("calibration", {}).get(key)
        if est and est.get("value") is not None:
            yield result(key, est, f"Calibration: {key}")
    for c in verdict.get("criteria", ()):
        if c["value"] is None or c["id"] in metrics:
            continue
        power = {k: c[k] for k in ("n_eff", "mde", "images_needed") if c.get(k) is not None}
        yield result(c["id"], c, c["title"], threshold=c["threshold"], op=c["op"], passed=c["passed"],
                     status=_status(c), judged=c["judged"], **power)


def limitations(verdict: Mapping[str, Any]) -> Iterator[str]:
    """Failing and inconclusive criteria, underperforming slices, fairness gaps; then the scope."""
    for c in verdict.get("criteria", ()):
        if c["judged"] and _status(c) == "fail":
            yield (f"Fails **{md(c['title'])}**: {fmt(c['value'])} {fmt_ci(c['low'], c['high'])}, "
                   f"must be {md(c['op'])} {fmt(c['threshold'])}." + (f" {md(c['detail'])}" if c["detail"] else ""))
        elif c["judged"] and _status(c) == "inconclusive":
            need = f" About {c['images_needed']:,} test images would decide it." if c.get("images_needed") else ""
            yield (f"Inconclusive **{md(c['title'])}**: {fmt(c['value'])} {fmt_ci(c['low'], c['high'])}; the "
                   f"threshold {md(c['op'])} {fmt(c['threshold'])} lies inside the interval.{need}")
    for s in verdict.get("slices", {}).get("slices", ()):
        if s.get("significant"):
            gap = s["accuracy_gap"]
            yield (f"Underperforms on the slice **{md(s['variable'])} {md(s['level'])}** ({s['n']} images): "
                   f"accuracy {fmt(s['accuracy']['value'])}, {fmt(gap['value'])} "
                   f"{fmt_ci(gap['low'], gap['high'])} below the rest (BH q = {s['q_value']:.2g}).")
    for a in verdict.get("fairness", {}).get("attributes", ()):
        for pc in a.get("per_class", ()):
            di, eo = pc["disparate_impact"], pc["equal_opportunity_difference"]
            yield (f"Fairness over **{md(a['attribute'])}** (class {md(pc['target'])}): disparate impact "
                   f"{fmt(di['value'])} {fmt_ci(di['low'], di['high'])}, equal opportunity difference "
                   f"{fmt(eo['value'])} {fmt_ci(eo['low'], eo['high'])}.")
    le = verdict.get("label_errors")
    if le and le.get("n_flagged"):
        yield (f"cleanlab flags {le['n_flagged']} of {le['n']} test images as possibly mislabeled; accuracy "
               f"without them {fmt(le['accuracy_without']['value'])} instead of {fmt(le['accuracy']['value'])}. "
               "Suspected, not confirmed: about half of such flags are real label errors in published studies.")
    data = verdict.get("data", {})
    yield (f"Measured on {data.get('processed', '?')} images of {code(data.get('source', '?'))} only; "
           "other data (sites, devices, populations) may behave differently.")


def comparison(verdict: Mapping[str, Any]) -> str:
    """The paired comparison with the baseline run, in one paragraph (empty when there was none)."""
    pc = verdict.get("paired")
    if not pc:
        return ""
    d, ni, t = pc["difference"], pc["non_inferiority"], pc["table"]
    return (f"Paired with the baseline {code(pc['baseline'])} on the same {pc['n']} images: accuracy "
            f"{fmt(pc['candidate_accuracy']['value'])} vs {fmt(pc['baseline_accuracy']['value'])}, difference "
            f"{d['value']:+.3f} {fmt_ci(d['low'], d['high'])} (Newcombe, paired), McNemar exact p = "
            f"{pc['mcnemar_p']:.2g} ({t['candidate_only']} images only this model gets right, {t['baseline_only']} "
            f"only the baseline). The candidate is {pc['direction']}; not significantly worse at margin "
            f"{ni['margin']:g}: **{'yes' if ni['passed'] else 'no'}** (one-sided {100 * (1 - ni['alpha']):g}% upper "
            f"bound of the loss {ni['upper_bound']:+.4f}).")


def _default_name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.stem == "model" and p.parent.name else p.stem


def _summary(verdict: Mapping[str, Any]) -> str:
    judged = [c for c in verdict.get("criteria", ()) if c["judged"]]
    failed = [md(c["title"]) for c in judged if _status(c) == "fail"]
    undecided = [f"{md(c['title'])} (about {c['images_needed']:,} images would decide it)" if c.get("images_needed")
                 else md(c["title"]) for c in judged if _status(c) == "inconclusive"]
    acc = verdict.get("metrics", {}).get("accuracy", {})
    outcome = verdict.get("outcome") or ("pass" if verdict["passed"] else "fail")
    met = sum(_status(c) == "pass" for c in judged)
    head = f"Audit verdict: **{outcome.upper()}** ({met} of {len(judged)} acceptance criteria met). "
    if acc:
        head += f"Test accuracy {fmt(acc['value'])} {fmt_ci(acc.get('low'), acc.get('high'))}. "
    return (head + (f"Failing: {'; '.join(failed)}. " if failed else "")
            + (f"Inconclusive (the test set cannot decide them): {'; '.join(undecided)}." if undecided else "")).strip()


def _status(c: Mapping[str, Any]) -> str:
    """A criterion's status; verdicts of schema v2 had only ``passed``."""
    return c.get("status") or ("pass" if c["passed"] else "fail")


def _details(card: Mapping[str, Any], model: Mapping[str, Any]) -> list[tuple[str, str]]:
    pre = card.get("preprocess", {})
    prov = dict(card.get("provenance", {}))
    labels = list(card.get("labels", model.get("labels", ())))
    rows = [
        ("Architecture", md(card.get("arch") or prov.get("model") or "not recorded")),
        ("Format", f"ONNX, outputs {md(card.get('output', 'logits'))}; sha256 {code(model.get('sha256', '?'))}"),
        (f"Classes ({len(labels)})", ", ".join(md(x) for x in labels)),
        ("Preprocessing", md(", ".join(f"{k} {v}" for k, v in pre.items())) or "not recorded"),
        ("Intended invariances", ", ".join(md(x) for x in card.get("invariances", ())) or "none declared"),
    ]
    rows += [(f"Provenance: {md(k)}", md(v if isinstance(v, str) else json.dumps(v))) for k, v in prov.items()]
    return rows


def _evaluation(verdict: Mapping[str, Any]) -> str:
    data = verdict.get("data", {})
    judge = {"value": "point estimate", "ci": "pessimistic CI bound"}.get(
        verdict.get("judge_on", "value"), "interval (pass, fail, or inconclusive when the threshold lies inside it)")
    return (f"Audited on {code(data.get('source', '?'))}: {data.get('processed', '?')} images processed, "
            f"{data.get('skipped', 0)} skipped, {data.get('found', '?')} found. Intervals are 95% percentile "
            f"bootstrap ({verdict.get('n_boot', '?')} resamples, seed {verdict.get('seed', '?')}); criteria are "
            f"judged on the {judge}. Tool version {md(verdict.get('tool_version', '?'))}, "
            f"{md(verdict.get('created', ''))}.")


def _measure_rows(verdict: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for key, est in verdict.get("metrics", {}).items():
        if isinstance(est, Mapping) and "value" in est:
            rows.append([md(key.replace("_", " ")), fmt(est["value"]), fmt_ci(est["low"], est["high"])])
    for label, pc in verdict.get("metrics", {}).get("per_class", {}).items():
        rows.append([f"F1, class {md(label)} ({pc['support']} images)", fmt(pc["f1"]["value"]),
                     fmt_ci(pc["f1"]["low"], pc["f1"]["high"])])
    for key in CALIBRATION:
        est = verdict.get("calibration", {}).get(key)
        if est:
            rows.append([md(key.replace("_", " ")), fmt(est["value"]), fmt_ci(est["low"], est["high"])])
    return rows


def _criterion_rows(verdict: Mapping[str, Any]) -> list[list[str]]:
    def result(c):
        return ("info (not judged)" if not c["judged"] else
                {"pass": "pass", "fail": "**FAIL**", "inconclusive": "🟡 **INCONCLUSIVE**"}[_status(c)])

    return [[md(c["title"]), fmt(c["value"]), fmt_ci(c["low"], c["high"]), f"{md(c['op'])} {fmt(c['threshold'])}",
             result(c)] for c in verdict.get("criteria", ())]
