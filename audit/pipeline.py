"""The audit pipeline (DESIGN §5): scan -> inference -> checks -> verdict -> AuditResult.

``run_audit`` is the library call behind ``python -m audit run``; renderers only read the
finished ``AuditResult``.

Example::

    result = run_audit(Path("model.onnx"), Path("test/"), AuditConfig())
    result.verdict.passed
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import __version__, imaging
from audit.checks import baseline as baseline_check
from audit.checks import calibration as calibration_check
from audit.checks import fairness as fairness_check
from audit.checks import integrity as integrity_check
from audit.checks import invariance as invariance_check
from audit.checks import latency as latency_check
from audit.checks import metrics as metrics_check
from audit.checks import parity as parity_check
from audit.checks import slices as slices_check
from audit.config import AuditConfig
from audit.data import Dataset, Skipped, scan
from audit.inference import Predictions, predict
from audit.model import ModelCard, OnnxClassifier
from audit.verdict import Criterion, Verdict, judge


@dataclass(frozen=True)
class DataSummary:
    source: str
    found: int
    processed: int
    skipped: tuple[Skipped, ...]
    class_counts: tuple[tuple[str, int], ...]  # processed images per model label
    attribute_names: tuple[str, ...]
    notes: tuple[str, ...]

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
    config: AuditConfig
    predictions: Predictions
    metrics: metrics_check.MetricsResult
    calibration: calibration_check.CalibrationResult
    verdict: Verdict
    timings: tuple[tuple[str, float], ...] = field(default=())
    slices: slices_check.SliceResult | None = None
    fairness: fairness_check.FairnessResult | None = None
    invariance: invariance_check.InvarianceResult | None = None
    parity: parity_check.ParityResult | None = None
    integrity: integrity_check.IntegrityResult | None = None
    baseline: baseline_check.BaselineResult | None = None
    latency: latency_check.LatencyResult | None = None


def run_audit(
    model_path: Path,
    data_path: Path,
    config: AuditConfig,
    *,
    card_overrides: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> AuditResult:
    """Audit the model at ``model_path`` on the data at ``data_path`` under ``config``."""
    timings = []
    t0 = time.perf_counter()
    clf = OnnxClassifier.load(model_path, overrides=card_overrides, threads=config.threads)
    dataset = scan(data_path, clf.labels)
    timings.append(("load + scan", time.perf_counter() - t0))

    t0 = time.perf_counter()
    limits = imaging.Limits(max_bytes=config.max_file_bytes, max_pixels=config.max_pixels)
    preds, rejected = predict(clf, dataset.samples, batch_size=config.batch_size, workers=config.workers,
                              limits=limits, progress=progress)
    timings.append(("inference", time.perf_counter() - t0))
    data = summarize_data(dataset, preds, rejected, data_path)
    if len(preds) == 0:
        from audit.errors import DataError

        raise DataError(f"none of the {data.found} file(s) in {data_path} could be decoded",
                        hint="see the skipped reasons with --debug; every image was rejected")

    t0 = time.perf_counter()
    metrics = metrics_check.classification_metrics(preds, n_boot=config.n_boot, seed=config.seed,
                                                   top_k=config.top_k)
    cal = calibration_check.calibration(preds, n_bins=config.ece_bins, n_boot=config.n_boot, seed=config.seed)
    timings.append(("metrics + bootstrap", time.perf_counter() - t0))

    criteria = [*metric_criteria(metrics, config), *calibration_criteria(cal, config)]
    slices = None
    if config.slices.enabled:
        t0 = time.perf_counter()
        slices = slices_check.find_slices(preds, config.slices, n_boot=config.n_boot, seed=config.seed)
        criteria += slices_check.slice_criteria(slices, config.slices)
        timings.append(("slices", time.perf_counter() - t0))
    fairness = None
    if config.fairness.sensitive:
        t0 = time.perf_counter()
        fairness = fairness_check.fairness(preds, config.fairness, n_boot=config.n_boot, seed=config.seed)
        criteria += fairness_check.fairness_criteria(fairness, config.fairness, config.criteria.judge_on)
        timings.append(("fairness", time.perf_counter() - t0))
    run_kw = dict(batch_size=config.batch_size, workers=config.workers, limits=limits, n_boot=config.n_boot,
                  seed=config.seed)
    invariance = None
    if config.invariance.enabled:
        t0 = time.perf_counter()
        invariance = invariance_check.invariance(clf, dataset.samples, preds, config.invariance, **run_kw)
        criteria += invariance_check.invariance_criteria(invariance, config.invariance, config.criteria.judge_on)
        timings.append(("invariance", time.perf_counter() - t0))
    parity = None
    if config.parity.torch_model:
        t0 = time.perf_counter()
        parity = parity_check.parity(clf, dataset.samples, preds, config.parity, **run_kw)
        criteria += parity_check.parity_criteria(parity, config.parity)
        timings.append(("parity (PyTorch)", time.perf_counter() - t0))
    integrity = None
    if config.integrity.enabled:
        t0 = time.perf_counter()
        train = scan(Path(config.integrity.train), clf.labels, flag="--train").samples if config.integrity.train else None
        integrity = integrity_check.integrity(preds, config.integrity, root=dataset.root, train=train,
                                              train_source=config.integrity.train, workers=config.workers,
                                              limits=limits)
        criteria += integrity_check.integrity_criteria(integrity, config.integrity)
        timings.append(("integrity", time.perf_counter() - t0))
    baseline = None
    if config.baseline.path:
        numbers = baseline_check.comparable_numbers(metrics, cal, slices, fairness, invariance, parity)
        baseline = baseline_check.compare(baseline_check.load_baseline(Path(config.baseline.path)), numbers,
                                          config.baseline)
        criteria += baseline_check.baseline_criteria(baseline, config.baseline)
    latency = None
    if config.latency.enabled:
        t0 = time.perf_counter()
        files = {s.path: s.file for s in dataset.samples}
        latency = latency_check.measure_latency(model_path, preds, files, config.latency, threads=config.threads,
                                                card_overrides=card_overrides, n_boot=config.n_boot, seed=config.seed)
        criteria += latency_check.criteria(latency, config)
        timings.append(("latency (server)", time.perf_counter() - t0))
    verdict = Verdict.of(criteria, config.criteria.judge_on)
    return AuditResult(
        tool_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        model=summarize_model(clf),
        data=data,
        config=config,
        predictions=preds,
        metrics=metrics,
        calibration=cal,
        verdict=verdict,
        timings=tuple(timings),
        slices=slices,
        fairness=fairness,
        invariance=invariance,
        parity=parity,
        integrity=integrity,
        baseline=baseline,
        latency=latency,
    )


def metric_criteria(m: metrics_check.MetricsResult, config: AuditConfig) -> list[Criterion]:
    c = config.criteria
    n_classes = len(m.per_class)
    out = [judge("accuracy", f"Accuracy ({n_classes} classes)", m.accuracy, ">", c.accuracy_threshold(n_classes),
                 judge_on=c.judge_on)]
    judged = [pc for pc in m.per_class if pc.support > 0]
    if c.fail_on_zero_f1:
        zero = [pc.label for pc in judged if pc.f1.value == 0]
        out.append(Criterion(
            "no_zero_f1", "Classes with F1 = 0", len(zero), None, None, "<=", 0, not zero,
            detail="classes with F1 = 0: " + (", ".join(zero) if zero else "none"),
        ))
    if c.min_class_f1 is not None:
        for pc in judged:
            out.append(judge(f"class_f1.{pc.label}", f"F1 of class {pc.label}", pc.f1, ">=", c.min_class_f1,
                             judge_on=c.judge_on))
    return out


def calibration_criteria(cal: calibration_check.CalibrationResult, config: AuditConfig) -> list[Criterion]:
    c = config.criteria
    if c.max_ece is None:
        return []
    return [judge("ece", "Expected calibration error", cal.ece, "<=", c.max_ece, judge_on=c.judge_on)]


def summarize_data(dataset: Dataset, preds: Predictions, rejected: list[Skipped], source: Path) -> DataSummary:
    counts = dict.fromkeys(preds.labels, 0)
    for i in preds.y_true:
        counts[preds.labels[i]] += 1
    notes = list(dataset.notes)
    empty = [c for c in dataset.classes if counts.get(c, 0) == 0]
    if empty:
        notes.append("class folder(s) with no usable image: " + ", ".join(empty))
    missing = [lab for lab in preds.labels if lab not in dataset.classes]
    if missing:
        notes.append("model label(s) with no folder in the data: " + ", ".join(missing))
    return DataSummary(
        source=str(source),
        found=dataset.found,
        processed=len(preds),
        skipped=tuple(sorted([*dataset.skipped, *rejected], key=lambda s: s.path)),
        class_counts=tuple(counts.items()),
        attribute_names=dataset.attribute_names,
        notes=tuple(notes),
    )


def summarize_model(clf: OnnxClassifier) -> ModelSummary:
    data = clf.path.read_bytes()
    return ModelSummary(
        path=str(clf.path),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        card=clf.card,
        fixed_batch=clf.graph.fixed_batch,
        input_shape=clf.graph.input_shape,
    )
