"""model_card.md: a Hugging Face model card built from the audit's result and the ONNX model card.

The card is made with ``huggingface_hub``'s ``ModelCard`` / ``ModelCardData`` / ``EvalResult``,
so its YAML header is the Hub's ``model-index`` format: one eval result per measure the checks
report for the card (each check's ``card`` hook: the metrics with per-class F1, calibration) and
per criterion, each with its confidence interval in ``args`` (``ci_low``, ``ci_high``,
``ci_level``; counts have none) and, for criteria, the threshold, the status (pass, fail or
inconclusive) and the evidence behind it (``n_eff``, ``mde``, ``images_needed``).
The body says what the model is (labels, preprocessing, architecture, provenance, intended
invariances), the verdict, the sections checks add (the paired comparison with a baseline run),
and the limitations the audit found: failing and inconclusive criteria (with the images that
would decide them), then each check's own (significant
slices, fairness gaps, suspected label errors). Nothing touches the network: the template is the
string below, never the Hub's default.

Example::

    write_model_card(build_model_card(result), out / "model_card.md")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from audit.model import model_name
from audit.result import AuditResult
from audit.text import code, fmt, fmt_ci, md
from audit.verdict import Criterion, Measure

if TYPE_CHECKING:
    from audit.contract import CardPart

TASK = "image-classification"
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
{% for heading, text in sections %}
## {{ heading }}

{{ text }}

{% endfor %}
## Limitations

{% for line in limitations %}- {{ line }}
{% endfor %}
"""


def build_model_card(r: AuditResult, *, name: str | None = None, license: str | None = None):
    """A ``huggingface_hub.ModelCard`` for the audited model (see the module docstring)."""
    from huggingface_hub import ModelCard

    return ModelCard(model_card_text(card_fields(r, name=name, license=license)))


def card_fields(r: AuditResult, *, name: str | None = None, license: str | None = None) -> dict:
    """Everything the card says, as plain data (no huggingface_hub): ``model_card_text`` makes the card of it,
    here or in the side process."""
    parts = [s.card(r.results[s.name], r.config) for s in r.ran]
    measures = [m for part in parts for m in part.measures]
    name = name or model_name(Path(r.model.path))
    data = dict(model_name=name, library_name="onnx", pipeline_tag=TASK, license=license,
                tags=["onnx", TASK, "model-audit"], eval_results=list(eval_results(r, measures)),
                metrics=sorted({m.id for m in measures if "." not in m.id}))
    return {"data": data, "template": dict(
        title=md(name), summary=_summary(r), details=_details(r), evaluation=_evaluation(r), ci="95%",
        measures=[_row(m) for m in measures], outcome=r.verdict.outcome.upper(),
        criteria=[_criterion_row(c) for c in r.verdict.criteria], limitations=list(limitations(r, parts)),
        sections=[s for part in parts for s in part.sections])}


def model_card_text(fields: dict) -> str:
    """The card's Markdown, as ``str(ModelCard.from_template(ModelCardData(**data), template_str=TEMPLATE,
    **template))`` gives it (tested), made from huggingface_hub's card data module and jinja2 alone:
    ``huggingface_hub.repocard`` imports the Hub's client too (0.25 s, against 0.08 s). A module-level
    function, so the side process can run it."""
    import jinja2
    import yaml
    from huggingface_hub.repocard_data import EvalResult, ModelCardData

    results = [EvalResult(**e) for e in fields["data"]["eval_results"]]
    data = ModelCardData(**{**fields["data"], "eval_results": results})
    text = jinja2.Template(TEMPLATE).render(card_data=data.to_yaml(), **{**data.to_dict(), **fields["template"]})
    # ``ModelCard`` reads its YAML header back and writes it again, in the order it was read: the same here
    head, body = text.removeprefix("---\n").split("\n---\n", 1)
    header = yaml.safe_load(head)
    return f"---\n{ModelCardData(**header).to_yaml(original_order=list(header))}\n---\n{body}"


def write_model_card(card, path: Path) -> Path:
    """Save ``card`` (a ``ModelCard``, or its text) at ``path`` atomically (written beside it, then moved into
    place); the text as it is, newlines included, as ``ModelCard.save`` writes it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(str(card))
    os.replace(tmp, path)
    return path


def eval_results(r: AuditResult, measures: Sequence[Measure]) -> Iterator[dict]:
    """The arguments of one ``EvalResult`` per measure of the checks' card parts, then per criterion not among
    them."""
    source = r.data.source
    dataset = str(r.model.card.provenance.get("dataset") or Path(source).parent.name or source)
    common = {"task_type": TASK, "dataset_type": dataset, "dataset_name": f"{dataset} ({source})",
              "dataset_split": Path(source).name or "test", "verified": False}

    def result(metric_type: str, name: str, est: dict, **args):
        ci = {"ci_low": est["low"], "ci_high": est["high"], "ci_level": 0.95} if est.get("low") is not None else {}
        return dict(metric_type=metric_type, metric_value=est["value"], metric_name=name,
                    metric_args={**ci, **args} or None, **common)

    for m in measures:
        est = m.estimate.to_dict()
        if est["value"] is not None:
            yield result(m.id, m.title, est)
    shown = {m.id for m in measures}
    for c in r.verdict.criteria:
        if c.value is not None and c.id not in shown:
            power = {k: getattr(c, k) for k in ("n_eff", "mde", "images_needed") if getattr(c, k) is not None}
            yield result(c.id, c.title, c.to_dict(), threshold=c.threshold, op=c.op, passed=c.passed,
                         status=c.status, judged=c.judged, **power)


def limitations(r: AuditResult, parts: Sequence[CardPart]) -> Iterator[str]:
    """Failing criteria, inconclusive ones, then what each check found; then the scope."""
    for c in r.verdict.failed:
        yield (f"Fails **{md(c.title)}**: {fmt(c.value)} {fmt_ci(c.low, c.high)}, must be {md(c.op)} "
               f"{fmt(c.threshold)}." + (f" {md(c.detail)}" if c.detail else ""))
    for c in r.verdict.undecided:
        need = f" About {c.images_needed:,} test images would decide it." if c.images_needed else ""
        yield (f"Inconclusive **{md(c.title)}**: {fmt(c.value)} {fmt_ci(c.low, c.high)}; the threshold "
               f"{md(c.op)} {fmt(c.threshold)} lies inside the interval.{need}")
    for part in parts:
        yield from part.limitations
    yield (f"Measured on {r.data.processed} images of {code(r.data.source)} only; "
           "other data (sites, devices, populations) may behave differently.")


def _summary(r: AuditResult) -> str:
    v = r.verdict
    failed = [md(c.title) for c in v.failed]
    undecided = [f"{md(c.title)} (about {c.images_needed:,} images would decide it)" if c.images_needed
                 else md(c.title) for c in v.undecided]
    met = sum(c.passed for c in v.judged)
    head = f"Audit verdict: **{v.outcome.upper()}** ({met} of {len(v.judged)} acceptance criteria met). "
    acc = next((c for c in v.criteria if c.id == "accuracy"), None)
    if acc is not None:
        head += f"Test accuracy {fmt(acc.value)} {fmt_ci(acc.low, acc.high)}. "
    return (head + (f"Failing: {'; '.join(failed)}. " if failed else "")
            + (f"Inconclusive (the test set cannot decide them): {'; '.join(undecided)}." if undecided else "")).strip()


def _details(r: AuditResult) -> list[tuple[str, str]]:
    card = r.model.card.to_dict()
    pre, prov, labels = card.get("preprocess", {}), dict(card.get("provenance", {})), list(card["labels"])
    rows = [
        ("Architecture", md(card.get("arch") or prov.get("model") or "not recorded")),
        ("Format", f"ONNX, outputs {md(card.get('output', 'logits'))}; sha256 {code(r.model.sha256)}"),
        (f"Classes ({len(labels)})", ", ".join(md(x) for x in labels)),
        ("Preprocessing", md(", ".join(f"{k} {v}" for k, v in pre.items())) or "not recorded"),
        ("Intended invariances", ", ".join(md(x) for x in card.get("invariances", ())) or "none declared"),
    ]
    rows += [(f"Provenance: {md(k)}", md(v if isinstance(v, str) else json.dumps(v))) for k, v in prov.items()]
    return rows


def _evaluation(r: AuditResult) -> str:
    d = r.data
    judge = ("point estimate" if r.verdict.judge_on == "value"
             else "interval (pass, fail, or inconclusive when the threshold lies inside it)")
    return (f"Audited on {code(d.source)}: {d.processed} images processed, {len(d.skipped)} skipped, {d.found} "
            f"found. Intervals are 95% (Wilson for proportions, percentile bootstrap with {r.config.n_boot} "
            f"resamples, seed {r.config.seed}, for the rest); criteria are judged on the {judge}. Tool version "
            f"{md(r.tool_version)}, {md(r.created)}.")


def _row(m: Measure) -> list[str]:
    return [md(m.title), fmt(m.estimate.to_dict()["value"]), fmt_ci(m.estimate.low, m.estimate.high)]


_RESULT = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "🟡 **INCONCLUSIVE**"}


def _criterion_row(c: Criterion) -> list[str]:
    result = "info (not judged)" if not c.judged else _RESULT[c.status]
    return [md(c.title), fmt(c.value), fmt_ci(c.low, c.high), f"{md(c.op)} {fmt(c.threshold)}", result]
