"""Calibration (DESIGN §6.6): expected calibration error, Brier score, log loss, reliability bins.

ECE uses equal-width bins on the top-1 confidence: sum over bins of |accuracy - mean
confidence| weighted by the bin's share of samples. Brier is the multiclass score of Brier
(1950): the mean over samples of the squared distance between the probability vector and the
one-hot truth (range 0..2; scikit-learn's ``brier_score_loss(..., scale_by_half=False)``).

Example::

    cal = calibration(preds, n_bins=15)
    cal.ece.value, [(b.confidence, b.accuracy) for b in cal.bins]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.checks import CheckSpec
from audit.predictions import Predictions
from audit.stats import Estimate, bootstrap_many
from audit.verdict import Criterion, Measure, judge

EPS = 1e-15


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean top-1 probability in the bin (nan when empty)
    accuracy: float  # fraction correct in the bin (nan when empty)


@dataclass(frozen=True)
class CalibrationResult:
    ece: Estimate
    brier: Estimate
    log_loss: Estimate
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict:
        return {"ece": self.ece.to_dict(), "brier": self.brier.to_dict(), "log_loss": self.log_loss.to_dict()}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE of one set of predictions (the reference the bootstrap vectorises)."""
    b = _bin_index(confidence, n_bins)
    n = len(confidence)
    total = 0.0
    for i in range(n_bins):
        m = b == i
        if m.any():
            total += m.sum() / n * abs(correct[m].mean() - confidence[m].mean())
    return float(total)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins are (lower, upper]; a confidence of exactly 0 joins the first bin.
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def calibration(preds: Predictions, *, n_bins: int = 15, n_boot: int = 1000, seed: int = 0) -> CalibrationResult:
    """ECE, Brier score and log loss with bootstrap CIs, plus the reliability diagram's bins."""
    conf = preds.confidence.astype(float)
    correct = (preds.y_pred == preds.y_true).astype(float)
    n = len(conf)
    bins = _bin_index(conf, n_bins)
    onehot = np.eye(len(preds.labels))[preds.y_true]
    brier_i = ((preds.proba.astype(float) - onehot) ** 2).sum(axis=1)
    nll_i = -np.log(np.clip(preds.proba[np.arange(n), preds.y_true].astype(float), EPS, 1.0))
    gap = correct - conf

    def statistic(idx: np.ndarray) -> np.ndarray:  # ECE, Brier and log loss of each resample in one pass
        k = idx.shape[0]
        code = (bins[idx] + (np.arange(k) * n_bins)[:, None]).ravel()
        per_bin = np.bincount(code, weights=gap[idx].ravel(), minlength=k * n_bins)
        ece = np.abs(per_bin).reshape(k, n_bins).sum(axis=1) / n  # |sum(correct - conf)| per bin / n
        return np.column_stack([ece, brier_i[idx].mean(axis=1), nll_i[idx].mean(axis=1)])

    rel = []
    for i in range(n_bins):
        m = bins == i
        rel.append(ReliabilityBin(
            lower=i / n_bins,
            upper=(i + 1) / n_bins,
            count=int(m.sum()),
            confidence=float(conf[m].mean()) if m.any() else float("nan"),
            accuracy=float(correct[m].mean()) if m.any() else float("nan"),
        ))
    ece, brier, log_loss = bootstrap_many(statistic, n, n_boot=n_boot, seed=seed)
    return CalibrationResult(ece=ece, brier=brier, log_loss=log_loss, bins=tuple(rel))


def measures(cal: CalibrationResult) -> list[Measure]:
    return [Measure("ece", "Expected calibration error", cal.ece, higher_is_better=False),
            Measure("brier", "Brier score", cal.brier, higher_is_better=False)]


def criteria(cal: CalibrationResult, config) -> list[Criterion]:
    """ECE at most ``criteria.max_ece`` (not judged unless configured)."""
    c = config.criteria
    return [] if c.max_ece is None else [judge(measures(cal)[0], c.max_ece, judge_on=c.judge_on)]


def _run(preds: Predictions, config) -> CalibrationResult:
    return calibration(preds, n_bins=config.ece_bins, n_boot=config.n_boot, seed=config.seed)


SPEC = CheckSpec("calibration", "calibration", _run, criteria=criteria, comparable=measures)
