"""Calibration (docs/ARCHITECTURE.md §4.3): expected calibration error, Brier score, log loss, reliability bins.

ECE uses equal-width bins on the top-1 confidence: sum over bins of |accuracy - mean
confidence| weighted by the bin's share of samples. Brier is the multiclass score of Brier
(1950): the mean over samples of the squared distance between the probability vector and the
one-hot truth (range 0..2; scikit-learn's ``brier_score_loss(..., scale_by_half=False)``).

Example::

    cal = calibration(preds, n_bins=15)
    cal.ece.value, [(b.confidence, b.accuracy) for b in cal.bins]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from audit.context import AuditContext
from audit.contract import CardPart, CheckSpec
from audit.predictions import Predictions
from audit.stats import Estimate, bootstrap_many
from audit.svg import ACCENT, BAD, Canvas, Panel
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

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


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins are (lower, upper]; a confidence of exactly 0 joins the first bin.
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def calibration(preds: Predictions, *, n_bins: int = 15, n_boot: int = 1000, seed: int = 0) -> CalibrationResult:
    """ECE, Brier score and log loss with bootstrap CIs, plus the reliability diagram's bins."""
    conf = preds.confidence.astype(float)
    correct = (preds.y_pred == preds.y_true).astype(float)
    n = len(conf)
    bins = _bin_index(conf, n_bins).astype(np.int16)  # ece_bins is at most 1,000
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
    gap = correct - conf
    del conf, correct  # the resamples read 26 bytes an image: the bin, the gap and the two terms below
    # the Brier and log-loss terms as one complex number, whose mean holds both means: one gather a resample, not
    # two (with the int16 bins, a quarter of the statistic's time at 100,000 images)
    both = _brier(preds.proba, preds.y_true) + 1j * -np.log(
        np.clip(preds.proba[np.arange(n), preds.y_true].astype(float), EPS, 1.0))

    def statistic(idx: np.ndarray) -> np.ndarray:  # ECE, Brier and log loss of each resample in one pass
        k = idx.shape[0]
        code = (bins[idx] + (np.arange(k) * n_bins)[:, None]).ravel()
        per_bin = np.bincount(code, weights=gap[idx].ravel(), minlength=k * n_bins)
        del code  # before the complex gather: one resample step's arrays at a time
        ece = np.abs(per_bin).reshape(k, n_bins).sum(axis=1) / n  # |sum(correct - conf)| per bin / n
        means = both[idx].mean(axis=1)
        return np.column_stack([ece, means.real, means.imag])

    # two streams: the longest of the checks at 100,000 images and more runs on both cores once the others are done
    ece, brier, log_loss = bootstrap_many(statistic, n, n_boot=n_boot, seed=seed, streams=2)
    return CalibrationResult(ece=ece, brier=brier, log_loss=log_loss, bins=tuple(rel))


def _brier(proba: np.ndarray, y_true: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Each image's Brier score, sum over classes of (p - onehot)^2, a chunk of rows at a time: N x C float64
    at once took 40 MB per copy at 500k images and 10 classes."""
    out = np.empty(len(y_true))
    for lo in range(0, len(y_true), chunk):
        p = proba[lo:lo + chunk].astype(float)
        p[np.arange(len(p)), y_true[lo:lo + chunk]] -= 1.0
        out[lo:lo + chunk] = (p**2).sum(axis=1)
    return out


def measures(cal: CalibrationResult, config: AuditConfig | None = None) -> list[Measure]:
    return [Measure("ece", "Expected calibration error", cal.ece, higher_is_better=False),
            Measure("brier", "Brier score", cal.brier, higher_is_better=False)]


def criteria(cal: CalibrationResult, config: AuditConfig) -> list[Criterion]:
    """ECE at most ``criteria.max_ece`` (not judged unless configured)."""
    c = config.criteria
    return [] if c.max_ece is None else [judge(measures(cal)[0], c.max_ece)]


def summary(cal: CalibrationResult, config: AuditConfig | None) -> list[Measure]:
    return measures(cal)[:1]


def card(cal: CalibrationResult, config: AuditConfig | None) -> CardPart:
    return CardPart(measures=(*measures(cal), Measure("log_loss", "Log loss", cal.log_loss, higher_is_better=False)))


def charts(cal: CalibrationResult, config: AuditConfig | None) -> dict[str, Canvas]:
    return {"reliability": reliability_diagram(cal.bins)}


def reliability_diagram(bins: Sequence[ReliabilityBin]) -> Canvas:
    """Accuracy vs confidence per bin, with bin counts (log scale) underneath."""
    c = Canvas(520, 440)
    top = Panel(c, 62, 12, 440, 270, (0, 1), (0, 1))
    top.axes(None, "accuracy")
    ok = [b for b in bins if math.isfinite(b.accuracy)]
    pad = 0.05 * (bins[0].upper - bins[0].lower)
    top.bars([b.lower + pad for b in ok], [b.upper - pad for b in ok], [b.accuracy for b in ok], ACCENT, 0.8)
    c.line(top.x(0), top.y(0), top.x(1), top.y(1), "#111827", dash=True)
    for b in ok:
        c.circle(top.x(b.confidence), top.y(b.accuracy), 3, BAD)
    top.legend([("accuracy", ACCENT, "box"), ("perfect calibration", "#111827", "dash"),
                ("mean confidence", BAD, "dot")])
    most = max((b.count for b in bins), default=1)
    low = Panel(c, 62, 300, 440, 90, (0, 1), (0.8, max(10.0, most * 1.5)), log_y=True)
    low.axes("top-1 confidence", "images")
    low.bars([b.lower + pad for b in bins], [b.upper - pad for b in bins], [b.count for b in bins], "grey", 0.8)
    return c


def _run(ctx: AuditContext) -> CalibrationResult:
    c = ctx.config
    return calibration(ctx.predictions, n_bins=c.ece_bins, n_boot=c.n_boot, seed=c.seed)


SPEC = CheckSpec("calibration", "calibration", _run, criteria=criteria, comparable=measures, summary=summary, card=card,
                 charts=charts)
