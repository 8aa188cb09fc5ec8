"""The check registry (docs/ARCHITECTURE.md §4): every consumer loops over ``CHECKS``.

Each entry is a check module's ``SPEC`` (``audit.contract.CheckSpec``), in the order the checks
run and the report shows them. The pipeline, the config loader, the command line and every
output read this tuple (or the specs a result carries), so adding a check is one module, one
template and one line below.
"""

from __future__ import annotations

from audit.checks import (baseline, calibration, discovered_slices, evidence, fairness, integrity, invariance,
                          label_errors, latency, metrics, paired, parity, shift, slices)
from audit.contract import CheckSpec

CHECKS: tuple[CheckSpec, ...] = (
    evidence.SPEC,
    metrics.SPEC,
    calibration.SPEC,
    slices.SPEC,
    discovered_slices.SPEC,
    fairness.SPEC,
    invariance.SPEC,
    parity.SPEC,
    integrity.SPEC,
    shift.SPEC,
    latency.SPEC,
    label_errors.SPEC,
    paired.SPEC,  # the per-image comparison with --baseline's predictions.csv
    baseline.SPEC,  # last: it compares the measures of every check before it
)

