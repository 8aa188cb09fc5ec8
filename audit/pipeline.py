"""The audit pipeline (DESIGN §5): load -> prepare checks -> inference -> checks -> verdict -> AuditResult.

``run_audit`` is the library call behind ``python -m audit run``; it is a loop over the check
registry (``audit.checks.CHECKS``). Renderers only read the finished ``AuditResult``.

Example::

    result = run_audit(Path("model.onnx"), Path("test/"), AuditConfig())
    result.verdict.passed, result.metrics.accuracy
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from audit import __version__, findings
from audit.checks import CHECKS
from audit.checks.integrity import duplicate_clusters, duplicate_pairs
from audit.context import AuditContext
from audit.engines import Engine, make_engine
from audit.errors import ConfigError, DataError, ModelError
from audit.findings import Finding
from audit.model import ModelCard, OnnxClassifier
from audit.predictions import Predictions
from audit.sources import NON_FINITE, DataSource, Skipped, open_source
from audit.thumbnails import capture_thumbnails
from audit.verdict import Verdict


@dataclass(frozen=True)
class DataSummary:
    source: str
    found: int
    processed: int
    skipped: tuple[Skipped, ...]
    class_counts: tuple[tuple[str, int], ...]  # processed images per model label
    attribute_names: tuple[str, ...]
    notes: tuple[str, ...]
    kind: str = "ImageFolder"

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
class AuditResult:
    tool_version: str
    created: str
    model: ModelSummary
    data: DataSummary
    config: Any  # AuditConfig
    predictions: Predictions
    verdict: Verdict
    results: Mapping[str, Any]  # check name -> its frozen result, in registry order (enabled checks only)
    timings: tuple[tuple[str, float], ...] = ()
    thumbnails: Mapping[str, str] = field(default_factory=dict)  # "role:path" -> inline image, see thumbnails.py
    engine: str = "local"
    findings: tuple[Finding, ...] = ()  # failing criteria, then the most important observations (findings.py)

    def __getattr__(self, name: str) -> Any:
        """A check's result by name (``result.metrics``); None when the check did not run."""
        if name in _CHECK_NAMES:
            return self.results.get(name)
        raise AttributeError(name)


_CHECK_NAMES = frozenset(s.name for s in CHECKS)


class _Timer:
    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings.append((stage, time.perf_counter() - t0))


def run_audit(model_path: Path, data_path: Path, config, *, card_overrides: Mapping[str, Any] | None = None,
              engine: Engine | None = None, progress: bool | None = None) -> AuditResult:
    """Audit the model at ``model_path`` on the data at ``data_path`` under ``config`` (an ``AuditConfig``)."""
    timed = _Timer()
    with timed("load + scan"):
        ctx = open_context(model_path, data_path, config, card_overrides=card_overrides, engine=engine,
                           progress=progress)
    with timed("inference"):
        ctx, data = infer(ctx)
    with timed("duplicate clusters"):
        ctx = find_duplicates(ctx)
    results, criteria, failures, observations = {}, [], [], []
    for spec in active_checks(config):
        with timed(spec.title):
            res = spec.run(ctx) if spec.probe else spec.run(ctx.predictions, config)
        results[spec.name] = res
        judged = spec.criteria(res, config)
        criteria += judged
        failures += findings.failing(judged, spec.name)
        observations += spec.findings(res, config)
        ctx = replace(ctx, measures=ctx.measures + tuple(spec.comparable(res)))
    with timed("thumbnails"):
        ran = [(s, results[s.name]) for s in active_checks(config)]
        thumbs = capture_thumbnails(ctx, ran) if config.thumbnails else {}
    return AuditResult(
        tool_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        model=summarize_model(ctx.classifier), data=data, config=config, predictions=ctx.predictions,
        verdict=Verdict.of(criteria, config.criteria.judge_on, config.criteria.on_inconclusive), results=results,
        timings=tuple(timed.timings), thumbnails=thumbs, engine=ctx.engine.name,
        findings=findings.rank(failures, observations),
    )


def active_checks(config) -> list:
    return [s for s in CHECKS if s.enabled(config)]


def open_context(model_path: Path, data_path: Path, config, *, card_overrides: Mapping[str, Any] | None = None,
                 engine: Engine | None = None, progress: bool | None = None) -> AuditContext:
    """Load the model, scan the data and prepare every enabled check: all input errors surface here,
    before the first image is decoded."""
    clf = OnnxClassifier.load(model_path, overrides=card_overrides, threads=config.threads)
    source = open_source(Path(data_path), clf.labels, data_root=data_root(config))
    ctx = AuditContext(config, clf, source, engine or make_engine(config, progress), Path(model_path),
                       dict(card_overrides or {}))
    return replace(ctx, prepared={s.name: s.prepare(ctx) for s in active_checks(config) if s.prepare})


def infer(ctx: AuditContext) -> tuple[AuditContext, DataSummary]:
    """The inference pass over every sample of the source: the context with its predictions, and the data summary."""
    preds, rejected = ctx.engine.predict(ctx.classifier, ctx.source)
    data = summarize_data(ctx.source, preds, rejected)
    if len(preds) == 0:
        non_finite = [s.path for s in rejected if s.reason == NON_FINITE]
        if non_finite and len(non_finite) == len(rejected):
            raise ModelError(f"the model output NaN or Inf for every one of the {len(non_finite)} image(s) "
                             f"(e.g. {non_finite[0]!r}), so nothing can be scored",
                             hint="check the export (fp16 overflow, a division by zero) and --mean/--std")
        reasons = collections.Counter(s.reason for s in data.skipped).most_common(2)
        raise DataError(f"none of the {data.found} file(s) in {ctx.source.description} could be used ("
                        + "; ".join(f"{n} {r}" for r, n in reasons) + ")", hint="every image was rejected")
    return replace(ctx, predictions=preds, rejected=tuple(rejected)), data


def find_duplicates(ctx: AuditContext) -> AuditContext:
    """Duplicate pairs inside the test set (integrity settings) and the clusters they make, before any check:
    duplicated images are not independent evidence, so the metrics' intervals count them by cluster."""
    pairs = tuple(duplicate_pairs(ctx.predictions, ctx.source, ctx.config.integrity))
    preds = replace(ctx.predictions, clusters=duplicate_clusters(ctx.predictions, list(pairs)))
    return replace(ctx, predictions=preds, test_pairs=pairs)


def data_root(config) -> Path | None:
    """The extra folder a manifest may point into (``--data-root``), checked to exist."""
    if config.data_root is None:
        return None
    root = Path(config.data_root)
    if not root.is_dir():
        raise ConfigError(f"config key 'data_root' must be an existing folder, got {config.data_root!r}",
                          hint="pass --data-root DIR with the folder that holds the manifest's images")
    return root


def summarize_data(source: DataSource, preds: Predictions, rejected: list[Skipped]) -> DataSummary:
    counts = dict.fromkeys(preds.labels, 0)
    for i in preds.y_true:
        counts[preds.labels[i]] += 1
    notes = list(source.notes)
    empty = [c for c in source.classes if counts.get(c, 0) == 0]
    if empty:
        notes.append("class folder(s) with no usable image: " + ", ".join(empty))
    missing = [lab for lab in preds.labels if lab not in source.classes]
    if missing:
        notes.append("model label(s) with no folder in the data: " + ", ".join(missing))
    return DataSummary(
        source=source.description,
        found=source.found,
        processed=len(preds),
        skipped=tuple(sorted([*source.skipped, *rejected], key=lambda s: s.path)),
        class_counts=tuple(counts.items()),
        attribute_names=source.attribute_names,
        notes=tuple(notes),
        kind=source.kind,
    )


def summarize_model(clf: OnnxClassifier) -> ModelSummary:
    return ModelSummary(path=str(clf.path), sha256=clf.sha256, size_bytes=clf.size_bytes, card=clf.card,
                        fixed_batch=clf.graph.fixed_batch, input_shape=clf.graph.input_shape)
