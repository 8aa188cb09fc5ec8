import numpy as np
import pytest
from sklearn import metrics as skm

from audit.checks.calibration import calibration
import builders
from test_metrics import random_predictions

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def ece_reference(conf, correct, n_bins):
    """Textbook ECE with explicit bin edges (lower, upper]."""
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return total


@pytest.mark.parametrize("c,seed", [(2, 0), (10, 1)])
def test_calibration_matches_references(c, seed):
    p = random_predictions(1000, c, seed)
    cal = calibration(p, n_bins=15, n_boot=100, seed=0)
    conf = p.proba.max(axis=1).astype(float)
    correct = (p.y_pred == p.y_true).astype(float)
    assert cal.ece.value == pytest.approx(ece_reference(conf, correct, 15), abs=1e-9)
    onehot = np.eye(c)[p.y_true]
    assert cal.brier.value == pytest.approx(((p.proba - onehot) ** 2).sum(axis=1).mean(), rel=1e-6)
    if c == 2:
        # scikit-learn's binary Brier is the mean squared error of the positive class's probability:
        # half the two-column multiclass score
        assert cal.brier.value == pytest.approx(2 * skm.brier_score_loss(p.y_true, p.proba[:, 1]), rel=1e-5)
    assert cal.log_loss.value == pytest.approx(skm.log_loss(p.y_true, p.proba, labels=range(c)), rel=1e-5)
    assert sum(b.count for b in cal.bins) == 1000
    for e in (cal.ece, cal.brier, cal.log_loss):
        assert e.low <= e.value <= e.high


def test_perfectly_calibrated_model_has_small_ece():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf  # right exactly as often as it claims
    y = np.zeros(n, int)
    pred = np.where(correct, 0, 1)
    proba = np.where(pred[:, None] == 0, np.column_stack([conf, 1 - conf]), np.column_stack([1 - conf, conf]))
    from audit.predictions import Predictions

    p = Predictions(("a", "b"), tuple(map(str, range(n))), y, proba.astype(np.float32))
    assert calibration(p, n_boot=50).ece.value < 0.02


def test_the_brier_score_read_a_chunk_at_a_time_equals_the_whole_array_formula():
    from audit.checks.calibration import _brier

    p = builders.predictions(100, c=4, seed=3)
    whole = ((p.proba.astype(float) - np.eye(4)[p.y_true]) ** 2).sum(axis=1)
    assert np.array_equal(_brier(p.proba, p.y_true, chunk=7), whole)  # many chunks, the last one short
