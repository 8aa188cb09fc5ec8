"""verdict.json: the machine-readable verdict (versioned schema ``audit.verdict/v3``).

The run's ``outcome`` (pass, fail or inconclusive), ``exit_code`` and ``passed`` (the exit code is 0)
after ``on_inconclusive``; each criterion with its ``status``, value, CI, threshold and, for
proportions and paired differences, ``n``, ``n_eff``, ``mde`` and ``images_needed``. Besides the
criteria it carries every check's result (``to_dict()``, one key per registered
check that ran) and its comparable measures (``comparable``: measure id -> value and direction),
so a later run can compare against it (``--baseline``) and CI systems can read numbers without
parsing HTML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit.errors import EXIT_BY_OUTCOME
from audit.result import AuditResult
from audit.verdict import numbers, numbers_to_json


def verdict_dict(r: AuditResult) -> dict[str, Any]:
    ran = r.ran
    return {
        "schema": r.verdict.schema,
        "outcome": r.verdict.outcome,
        "passed": r.verdict.passed,
        "exit_code": EXIT_BY_OUTCOME[r.verdict.gate],
        "judge_on": r.verdict.judge_on,
        "on_inconclusive": r.verdict.on_inconclusive,
        "criteria": [c.to_dict() for c in r.verdict.criteria],
        "findings": [f.to_dict() for f in r.findings],
        "model": {"path": r.model.path, "sha256": r.model.sha256, "labels": list(r.model.card.labels),
                  "arch": r.model.card.arch},
        "data": {"source": r.data.source, "found": r.data.found, "processed": r.data.processed,
                 "skipped": len(r.data.skipped)},
        **{s.name: r.results[s.name].to_dict() for s in ran},
        # what a later --baseline compares: every check's comparable measures
        "comparable": numbers_to_json(numbers([m for s in ran for m in s.comparable(r.results[s.name], r.config)])),
        # where the time and the memory went: each stage's seconds and the peak RSS when it ended
        "run": {"engine": r.engine, "onnx_threads": r.onnx_threads, "check_threads": r.check_threads,
                "stages": [t.to_dict() for t in r.timings]},
        "seed": r.config.seed,
        "n_boot": r.config.n_boot,
        "tool_version": r.tool_version,
        "created": r.created,
    }


def write_verdict(r: AuditResult, path: Path, files: dict[str, str] | None = None) -> dict[str, Any]:
    """``files``: name -> SHA-256 of the files written beside it (``predictions.csv``), recorded as ``files`` so
    that a later ``compare`` or ``--baseline`` can tell an edited file from the one this run wrote."""
    d = verdict_dict(r)
    if files:
        d["files"] = {name: {"sha256": digest} for name, digest in files.items()}
    path.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return d
