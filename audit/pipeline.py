"""The audit pipeline (docs/ARCHITECTURE.md §2): load -> prepare checks -> inference -> checks -> verdict.

``run_audit`` is the library call behind ``python -m audit run``; it is a loop over the check
registry (``audit.checks.CHECKS``). Renderers only read the finished ``AuditResult`` (``audit.result``).

Example::

    result = run_audit(Path("model.onnx"), Path("test/"), AuditConfig())
    result.verdict.passed, result.metrics.accuracy
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from audit import __version__, findings
from audit.checks import CHECKS
from audit.checks.integrity import duplicate_clusters, duplicate_pairs
from audit.config import AuditConfig
from audit.context import AuditContext, Reference
from audit.contract import CheckSpec
from audit.engines import Engine, make_engine
from audit.errors import ConfigError, DataError, ModelError
from audit.imaging import cpu_count
from audit.memory import peak_rss_mib, release_memory
from audit.model import OnnxClassifier
from audit.predictions import Predictions
from audit.result import AuditResult, DataSummary, ModelSummary, Stage
from audit.side_process import SideProcess, stop_unclaimed
from audit.sources import NON_FINITE, DataSource, Skipped, open_source
from audit.threads import DaemonThreads
from audit.thumbnails import capture_thumbnails
from audit.verdict import Verdict, decide


class _Timer:
    def __init__(self) -> None:
        self.timings: list[Stage] = []
        self.side: SideProcess | None = None  # the run's side process, whose peak memory each stage records too

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings.append(self._stage(stage, t0))

    def run(self, stage: str, fn, *args):
        """``fn(*args)`` and its ``Stage``, not recorded: for stages that run side by side, recorded in order."""
        t0 = time.perf_counter()
        out = fn(*args)
        return out, self._stage(stage, t0)

    def _stage(self, stage: str, t0: float) -> Stage:
        release_memory()
        side = None if self.side is None else self.side.peak_rss_mib
        return Stage(stage, time.perf_counter() - t0, peak_rss_mib(), side)


def run_audit(model_path: Path, data_path: Path, config: AuditConfig, *,
              card_overrides: Mapping[str, Any] | None = None, engine: Engine | None = None,
              progress: bool | None = None, checks: Sequence[CheckSpec] = CHECKS) -> AuditResult:
    """Audit the model at ``model_path`` on the data at ``data_path`` under ``config``.

    ``checks`` is the registry to run (``audit.checks.CHECKS``; a test may add a check of its own).
    """
    timed = _Timer()
    with timed("load + scan"):
        ctx = open_context(model_path, data_path, config, card_overrides=card_overrides, engine=engine,
                           progress=progress, checks=checks)
    timed.side = next((s for s in ctx.prepared.values() if isinstance(s, SideProcess)), None)
    try:
        return _audit(ctx, timed, checks)
    finally:
        close_prepared(ctx)


def _audit(ctx: AuditContext, timed: _Timer, checks: Sequence[CheckSpec]) -> AuditResult:
    config = ctx.config
    features = any(s.features for s in active_checks(config, checks))
    with timed("inference"):
        ctx, data = infer(ctx, features=features)
    if ctx.reference is not None:
        with timed("reference"):
            ctx = infer_reference(ctx, features=features)
    with timed("duplicate clusters"):
        ctx = find_duplicates(ctx)
    active = active_checks(config, checks)
    side_by_side = [s for s in active if not s.alone]
    threads = max(1, min(len(side_by_side), cpu_count()))
    results = run_side_by_side(ctx, timed, side_by_side, threads)
    criteria, failures, observations = [], [], []
    for spec in active:
        if spec.alone:  # after the others, by itself, with the measures of every check before it
            with timed(spec.title):
                results[spec.name] = spec.run(ctx)
        res = results[spec.name]
        judged = decide(spec.criteria(res, config), config.criteria.judge_on)
        criteria += judged
        failures += findings.failing(judged, spec.name)
        observations += spec.findings(res, config)
        ctx = replace(ctx, measures=ctx.measures + tuple(spec.comparable(res, config)))
    results = {s.name: results[s.name] for s in active}  # in registry order
    with timed("thumbnails"):
        ran = [(s, results[s.name]) for s in active]
        thumbs = capture_thumbnails(ctx, ran) if config.thumbnails else {}
    columns = {k: v for s, res in ran for k, v in s.columns(res, config).items()}
    return AuditResult(
        tool_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        model=summarize_model(ctx.classifier), data=data, config=config,
        predictions=replace(ctx.predictions, extra={**ctx.predictions.extra, **columns}),
        verdict=Verdict.of(criteria, config.criteria.judge_on, config.criteria.on_inconclusive),
        checks=tuple(checks), results=results,
        timings=tuple(timed.timings), thumbnails=thumbs, engine=ctx.engine.name,
        findings=findings.rank(failures, observations),
        onnx_threads=getattr(ctx.classifier, "threads", 0), check_threads=threads,
    )


def run_side_by_side(ctx: AuditContext, timed: _Timer, specs: Sequence[CheckSpec], threads: int) -> dict[str, Any]:
    """Each check's result by name, the checks run side by side on ``threads`` threads (a core each, at most one
    per check).

    They only read the context, and their large numpy steps (the bootstraps' draws, gathers and counts) release the
    GIL: on two cores the checks of a 100,000-image audit took about 2.5 s instead of 4.1 s (docs/ARCHITECTURE.md
    §12).
    Results and stages come back in registry order, and the first check (in that order) that raised raises here.
    """
    if threads <= 1:
        done = [timed.run(s.title, s.run, ctx) for s in specs]
    else:
        from threadpoolctl import threadpool_limits

        # one BLAS thread while the checks share the cores: a pool per product only fights them (a 10k-image PCA
        # fit took 0.19-0.32 s instead of 5 ms)
        pool = DaemonThreads(threads, "check")
        try:
            with threadpool_limits(1, user_api="blas"):
                futures = [pool.submit(lambda s: timed.run(s.title, s.run, ctx), s) for s in specs]
                done = [f.result() for f in futures]
        finally:
            pool.close()
    timed.timings += [stage for _, stage in done]
    return {s.name: res for s, (res, _) in zip(specs, done)}


def active_checks(config: AuditConfig, checks: Sequence[CheckSpec] = CHECKS) -> list[CheckSpec]:
    return [s for s in checks if s.enabled(config)]


def open_context(model_path: Path, data_path: Path, config: AuditConfig, *,
                 card_overrides: Mapping[str, Any] | None = None, engine: Engine | None = None,
                 progress: bool | None = None, checks: Sequence[CheckSpec] = CHECKS) -> AuditContext:
    """Load the model, scan the data and prepare every enabled check: all input errors surface here,
    before the first image is decoded."""
    clf = OnnxClassifier.load(model_path, overrides=card_overrides, threads=config.threads)
    source = open_source(Path(data_path), clf.labels, data_root=data_root(config))
    ctx = AuditContext(config, clf, source, engine or make_engine(config, progress), Path(model_path),
                       dict(card_overrides or {}))
    ctx = replace(ctx, reference=open_reference(ctx, checks))
    prepared: dict[str, Any] = {}
    try:
        for s in active_checks(config, checks):
            if s.prepare:
                prepared[s.name] = s.prepare(ctx)
    except BaseException:
        close_prepared(replace(ctx, prepared=prepared))
        raise
    finally:
        stop_unclaimed()  # started by ``python -m audit run`` before it knew whether a check needs it
    return replace(ctx, prepared=prepared)


def close_prepared(ctx: AuditContext) -> None:
    """Close what the checks prepared that holds a resource (``close()``: the latency check's server), however
    the run ends."""
    for state in ctx.prepared.values():
        close = getattr(state, "close", None)
        if callable(close):
            close()


def open_reference(ctx: AuditContext, checks: Sequence[CheckSpec]) -> Reference | None:
    """Scan the data the enabled checks compare the test set with (labels optional), or None."""
    wanted = sorted({r for s in active_checks(ctx.config, checks) if s.reference and (r := s.reference(ctx.config))},
                    key=lambda r: r.flag)
    if not wanted:
        return None
    req = wanted[0]
    src = open_source(Path(req.location), ctx.classifier.labels, flag=req.flag, data_root=data_root(ctx.config),
                      labels_optional=True)
    samples = src.samples
    if req.limit and len(samples) > req.limit:
        pick = np.sort(np.random.default_rng(ctx.config.seed).choice(len(samples), req.limit, replace=False))
        samples = tuple(samples[i] for i in pick)
    return Reference(req.flag, src, tuple(samples))


def infer_reference(ctx: AuditContext, *, features: bool = False) -> AuditContext:
    """The reference's own pass through the engine: hashes, and features when asked for."""
    ref = ctx.reference
    preds, rejected = ctx.engine.predict(ctx.classifier, ref.source, ref.samples, features=features, desc="reference")
    return replace(ctx, reference=replace(ref, predictions=preds, rejected=tuple(rejected)))


def infer(ctx: AuditContext, *, features: bool = False) -> tuple[AuditContext, DataSummary]:
    """The inference pass over every sample of the source: the context with its predictions (and the model's
    features when ``features``), and the data summary."""
    preds, rejected = ctx.engine.predict(ctx.classifier, ctx.source, features=features)
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
    pairs = duplicate_pairs(ctx.predictions, ctx.source, ctx.config.integrity)
    preds = replace(ctx.predictions, clusters=duplicate_clusters(ctx.predictions, pairs))
    return replace(ctx, predictions=preds, test_pairs=pairs)


def data_root(config: AuditConfig) -> Path | None:
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
        metadata=source.metadata,
    )


def summarize_model(clf: OnnxClassifier) -> ModelSummary:
    return ModelSummary(path=str(clf.path), sha256=clf.sha256, size_bytes=clf.size_bytes, card=clf.card,
                        fixed_batch=clf.graph.fixed_batch, input_shape=clf.graph.input_shape)
