"""The finished results the renderers read (docs/ARCHITECTURE.md §3): an audit's and a comparison's.

``AuditResult`` is what ``audit.pipeline.run_audit`` returns and ``ComparisonReport`` what
``audit.comparison.compare_folders`` returns. Both are frozen records below their users: the
renderers import this module, never the code that produced the records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit import __version__
from audit.errors import EXIT_BY_OUTCOME
from audit.findings import Finding
from audit.model import ModelCard
from audit.paired import PairedComparison
from audit.predictions import Predictions
from audit.sources.base import Skipped
from audit.verdict import INCONCLUSIVE, PASS, Criterion, Verdict

if TYPE_CHECKING:  # annotations only: a renderer reading a result needs none of the run's machinery
    from audit.config import AuditConfig
    from audit.contract import CheckSpec

COMPARISON_SCHEMA = "audit.comparison/v2"  # v2: outcome, on_inconclusive, the loss interval's status


@dataclass(frozen=True)
class DataSummary:
    source: str
    found: int  # image files found (a folder's metadata.csv is not one: see ``metadata``)
    processed: int
    skipped: tuple[Skipped, ...]
    class_counts: tuple[tuple[str, int], ...]  # processed images per model label
    attribute_names: tuple[str, ...]
    notes: tuple[str, ...]
    kind: str = "ImageFolder"
    metadata: str = ""  # the attribute file read besides the images ("metadata.csv"), if any

    @property
    def accounted(self) -> bool:
        return self.processed + len(self.skipped) == self.found


@dataclass(frozen=True)
class ModelSummary:
    path: str
    sha256: str
    size_bytes: int
    card: ModelCard
    fixed_batch: int | None
    input_shape: tuple[Any, ...]


@dataclass(frozen=True)
class Stage:
    """One stage of the run (the Run table, verdict.json ``run``): its wall seconds and the process's peak
    resident memory when it ended (None where the platform does not say); and the side process's
    (``audit.side_process``) when the run has one and it has answered."""

    name: str
    seconds: float
    peak_rss_mib: float | None = None
    side_peak_rss_mib: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"stage": self.name, "seconds": round(self.seconds, 3),
               "peak_rss_mib": None if self.peak_rss_mib is None else round(self.peak_rss_mib, 1)}
        if self.side_peak_rss_mib is not None:
            out["side_process_peak_rss_mib"] = round(self.side_peak_rss_mib, 1)
        return out


@dataclass(frozen=True)
class AuditResult:
    tool_version: str
    created: str
    model: ModelSummary
    data: DataSummary
    config: AuditConfig
    predictions: Predictions
    verdict: Verdict
    checks: tuple[CheckSpec, ...]  # the registry the run used, in order
    results: Mapping[str, Any]  # check name -> its frozen result, in registry order (enabled checks only)
    timings: tuple[Stage, ...] = ()  # the stages in the order they ran
    thumbnails: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (source, path) -> inline image
    engine: str = "local"
    findings: tuple[Finding, ...] = ()  # failing criteria, then the most important observations (findings.py)
    onnx_threads: int = 0  # ONNX Runtime's intra-op threads at the end of the run (0: its default, every core)
    check_threads: int = 1  # the threads the checks ran on side by side (their stage times overlap when over 1)

    @property
    def ran(self) -> tuple[CheckSpec, ...]:
        """The checks that ran, in registry order."""
        return tuple(s for s in self.checks if s.name in self.results)

    def __getattr__(self, name: str) -> Any:
        """A check's result by name (``result.metrics``); None when the check did not run."""
        if any(s.name == name for s in self.__dict__.get("checks", ())):
            return self.results.get(name)
        raise AttributeError(name)


@dataclass(frozen=True)
class ComparedData:
    source: str  # the audited data the thumbnails came from ("" when none were read)


@dataclass(frozen=True)
class ComparisonReport:
    candidate_dir: str
    baseline_dir: str
    paired: PairedComparison
    criterion: Criterion
    findings: tuple[Finding, ...]
    data: ComparedData
    thumbnails: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (source, path) -> inline image
    notes: tuple[str, ...] = ()
    created: str = ""
    tool_version: str = __version__
    on_inconclusive: str = INCONCLUSIVE  # what an inconclusive comparison counts as (exit code)

    @property
    def outcome(self) -> str:
        return self.criterion.status

    @property
    def gate(self) -> str:
        return self.on_inconclusive if self.outcome == INCONCLUSIVE else self.outcome

    @property
    def passed(self) -> bool:
        return self.gate == PASS

    @property
    def headline(self) -> str:
        mapped = f" (counted as {self.gate.upper()}: on_inconclusive = {self.on_inconclusive})" \
            if self.gate != self.outcome else ""
        return self.outcome.upper() + mapped

    def to_dict(self) -> dict:
        return {"schema": COMPARISON_SCHEMA, "outcome": self.outcome, "passed": self.passed,
                "exit_code": EXIT_BY_OUTCOME[self.gate], "on_inconclusive": self.on_inconclusive,
                "criterion": self.criterion.to_dict(), "findings": [f.to_dict() for f in self.findings],
                "candidate": self.candidate_dir, "baseline": self.baseline_dir, "comparison": self.paired.to_dict(),
                "notes": list(self.notes), "created": self.created, "tool_version": self.tool_version}
