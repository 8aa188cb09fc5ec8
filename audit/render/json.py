"""verdict.json: the machine-readable verdict (versioned schema ``audit.verdict/v1``).

Besides the criteria it carries every headline metric with its CI, so a later run can
compare against it (``--baseline``) and CI systems can read numbers without parsing HTML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit.checks.baseline import comparable_numbers, numbers_to_json
from audit.pipeline import AuditResult

ANALYSES = ("slices", "fairness", "invariance", "parity", "integrity", "baseline", "latency")  # optional AuditResult fields whose to_dict() joins the verdict


def verdict_dict(r: AuditResult) -> dict[str, Any]:
    m, cal = r.metrics, r.calibration
    return {
        "schema": r.verdict.schema,
        "passed": r.verdict.passed,
        "exit_code": 0 if r.verdict.passed else 1,
        "judge_on": r.verdict.judge_on,
        "criteria": [c.to_dict() for c in r.verdict.criteria],
        "model": {
            "path": r.model.path,
            "sha256": r.model.sha256,
            "labels": list(r.model.card.labels),
            "arch": r.model.card.arch,
        },
        "data": {
            "source": r.data.source,
            "found": r.data.found,
            "processed": r.data.processed,
            "skipped": len(r.data.skipped),
        },
        "metrics": {
            "n": m.n,
            "accuracy": m.accuracy.to_dict(),
            "balanced_accuracy": m.balanced_accuracy.to_dict(),
            "macro_f1": m.macro_f1.to_dict(),
            "weighted_f1": m.weighted_f1.to_dict(),
            **{f"top_{k}_accuracy": e.to_dict() for k, e in m.top_k},
            "per_class": {
                pc.label: {
                    "support": pc.support,
                    "precision": pc.precision.to_dict(),
                    "recall": pc.recall.to_dict(),
                    "f1": pc.f1.to_dict(),
                }
                for pc in m.per_class
            },
            "confusion": m.confusion.tolist(),
        },
        "calibration": {"ece": cal.ece.to_dict(), "brier": cal.brier.to_dict(), "log_loss": cal.log_loss.to_dict()},
        **{name: getattr(r, name).to_dict() for name in ANALYSES if getattr(r, name, None) is not None},
        "comparable": numbers_to_json(comparable_numbers(r.metrics, r.calibration, r.slices, r.fairness, r.invariance,
                                                       r.parity)),  # what a later --baseline compares
        "seed": r.config.seed,
        "n_boot": r.config.n_boot,
        "tool_version": r.tool_version,
        "created": r.created,
    }


def write_verdict(r: AuditResult, path: Path) -> None:
    path.write_text(json.dumps(verdict_dict(r), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
