"""Confidence sequences: stopping a probe early keeps its coverage, where a fixed-n interval loses it.

Each simulation follows 2,000 simulated probes look by look (50, 100, 200, ... images, as the
invariance check looks) and stops each the first time it decides, as the checks do. The
sequence must hold the true rate at the stopping time (and at every look) in at least 95% of
them; Wilson's interval, used the same way, does not.
"""

import math

import numpy as np
import pytest

from audit.sequential import excludes, log_evidence, looks, quantile_sequence, rate_sequence
from audit.stats import proportion_ci

PROBES = 2000
BAR = math.log(20)  # alpha = 0.05

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def test_looks_double_from_the_first_and_end_at_the_total():
    assert looks(1000, 50) == [50, 100, 200, 400, 800, 1000]
    assert looks(40, 50) == [40] and looks(0, 50) == [] and looks(100, 100) == [100]


@pytest.mark.parametrize("s,t,p0", [(0, 50, 0.1), (3, 120, 0.1), (40, 100, 0.1), (500, 1000, 0.5), (7, 7, 0.9)])
def test_the_interval_is_every_rate_without_enough_evidence_against_it(s, t, p0):
    low, high = rate_sequence(s, t, p0)
    assert low <= s / t <= high
    grid = np.linspace(0.0005, 0.9995, 2000)
    inside = np.array([log_evidence(s, t, p, p0) < BAR for p in grid])
    assert np.all(inside == ((grid >= low - 1e-6) & (grid <= high + 1e-6)))
    assert excludes(s, t, p0) == (not low <= p0 <= high)
    wilson = proportion_ci(s, t)
    assert low <= wilson.low + 1e-9 and wilson.high <= high + 1e-9  # time-uniform, so wider than a fixed n


def _probes(p: float, total: int, seed: int) -> np.ndarray:
    """(PROBES, looks) running counts of flips at each look of ``looks(total, 50)``."""
    at = looks(total, 50)
    flips = np.random.default_rng(seed).random((PROBES, total)) < p
    return np.cumsum(flips, axis=1)[:, np.array(at) - 1]


@pytest.mark.parametrize("p", [0.1, 0.08, 0.13, 0.02, 0.4])
def test_stopping_when_the_sequence_excludes_the_limit_keeps_coverage(p):
    """Limit 0.1, 1,000 images at most: wherever the arm stops, the sequence still holds the true rate."""
    limit, at = 0.1, looks(1000, 50)
    counts = _probes(p, 1000, seed=int(p * 100))
    covered = ever = stopped = 0
    for row in counts:
        stop = next((k for k, (s, t) in enumerate(zip(row, at)) if excludes(int(s), t, limit)), len(at) - 1)
        stopped += at[stop] < 1000
        covered += log_evidence(int(row[stop]), at[stop], p, limit) < BAR
        ever += all(log_evidence(int(s), t, p, limit) < BAR for s, t in zip(row, at))
    assert covered / PROBES >= 0.95 and ever / PROBES >= 0.95
    if abs(p - limit) > 0.05:
        assert stopped / PROBES > 0.9  # far from the limit, nearly every arm stops early


def test_the_same_stopping_rule_with_wilson_intervals_breaks_their_coverage():
    """At a true rate on the limit, stopping when Wilson excludes it 'decides' far more than 5% of the time."""
    limit, at = 0.1, looks(1000, 50)
    counts = _probes(limit, 1000, seed=7)
    wrong = sum(any(not proportion_ci(int(s), t).contains(limit) for s, t in zip(row, at)) for row in counts)
    seq_wrong = sum(any(excludes(int(s), t, limit) for s, t in zip(row, at)) for row in counts)
    assert wrong / PROBES > 0.09 and seq_wrong / PROBES <= 0.05


def test_the_p95_sequence_holds_the_true_p95_at_every_look():
    """Log-normal latencies (true p95 known): the sequence holds it at all looks of nearly every phase."""
    rng = np.random.default_rng(3)
    mu, sigma = math.log(20.0), 0.5
    truth = math.exp(mu + sigma * 1.6448536269514722)
    at = looks(400, 70)
    missed = 0
    for _ in range(1000):
        lat = rng.lognormal(mu, sigma, 400)
        missed += any(not (lo <= truth <= hi) for lo, hi in (quantile_sequence(lat[:t]) for t in at))
    assert missed / 1000 <= 0.05


def test_the_p95_sequence_is_bounded_once_enough_requests_are_fast():
    lat = np.full(65, 10.0)
    assert quantile_sequence(lat)[1] == math.inf  # 65 fast requests cannot yet rule out a slow 5%
    low, high = quantile_sequence(np.full(66, 10.0))
    assert high == 10.0 and low == 10.0
    assert quantile_sequence([]) == (-math.inf, math.inf)
