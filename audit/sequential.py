"""Anytime-valid confidence sequences: look at the data as it comes and stop once the answer is clear
(docs/ARCHITECTURE.md §4.3).

A fixed-n interval (Wilson, bootstrap) is valid at one sample size chosen in advance; looking
after every batch and stopping when it excludes the threshold makes its coverage fall well below
95%. A confidence sequence holds at every sample size at once (Howard, Ramdas, McAuliffe and
Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences"), so an expensive
probe may stop the moment it excludes the threshold.

This is their beta-binomial (conjugate mixture) sequence for a Bernoulli rate: for a candidate
rate ``p`` after ``t`` observations with ``s`` successes,
``M_t(p) = B(a + s, b + t - s) / (B(a, b) p^s (1 - p)^(t - s))`` is a nonnegative martingale when
``p`` is the truth, so by Ville's inequality it ever reaches ``1 / alpha`` with probability at most
``alpha``; the sequence is every ``p`` with ``M_t(p) < 1 / alpha``. The mixing prior Beta(a, b) is
centred on the threshold the sequence is meant to decide (mean ``p0``, weight 2), which makes it
decide soonest near there; any prior fixed in advance keeps the guarantee.

A quantile (p95 latency) is decided by the same sequence on the exceedance indicators: the p95 is
below ``x`` exactly when fewer than 5% of requests exceed ``x``.

Example::

    rate_sequence(3, 120, p0=0.1)      # (low, high) after 3 flips in 120 images
    excludes(3, 120, p0=0.1)           # True: the flip rate is below 0.1 at any stopping time
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PRIOR_WEIGHT = 2.0


def _prior(p0: float) -> tuple[float, float]:
    p0 = min(max(p0, 1e-3), 1 - 1e-3)
    return PRIOR_WEIGHT * p0, PRIOR_WEIGHT * (1 - p0)


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def log_evidence(s: int, t: int, p: float, p0: float) -> float:
    """log M_t(p): the mixture's evidence against the rate ``p`` after ``s`` successes in ``t``."""
    a, b = _prior(p0)
    if p <= 0:
        return math.inf if s > 0 else _lbeta(a + s, b + t - s) - _lbeta(a, b)
    if p >= 1:
        return math.inf if s < t else _lbeta(a + s, b + t - s) - _lbeta(a, b)
    return _lbeta(a + s, b + t - s) - _lbeta(a, b) - s * math.log(p) - (t - s) * math.log1p(-p)


def excludes(s: int, t: int, p0: float, alpha: float = 0.05) -> bool:
    """Whether the sequence after ``s`` successes in ``t`` excludes the rate ``p0`` (its threshold)."""
    return t > 0 and log_evidence(s, t, p0, p0) >= math.log(1 / alpha)


def rate_sequence(s: int, t: int, p0: float, alpha: float = 0.05) -> tuple[float, float]:
    """The sequence's interval for the rate after ``s`` successes in ``t`` (prior centred on ``p0``)."""
    if t == 0:
        return 0.0, 1.0
    bar, mid = math.log(1 / alpha), s / t

    def edge(inside: float, outside: float) -> float:
        if log_evidence(s, t, outside, p0) < bar:
            return outside
        for _ in range(60):  # the evidence grows monotonically away from s / t
            m = (inside + outside) / 2
            inside, outside = (m, outside) if log_evidence(s, t, m, p0) < bar else (inside, m)
        return inside

    return edge(mid, 0.0), edge(mid, 1.0)


def quantile_sequence(values: Sequence[float], q: float = 0.95, alpha: float = 0.05) -> tuple[float, float]:
    """Anytime-valid interval for the ``q`` quantile of the distribution ``values`` come from.

    ``x`` stays in it while the sequence of the exceedance rate ``P(X > x)`` still holds ``1 - q``; the
    bounds are order statistics (``-inf`` / ``inf`` while too few values rule a side out).
    """
    x = np.sort(np.asarray(values, dtype=float))
    t = len(x)
    p0, bar = 1 - q, math.log(1 / alpha)

    def held(s: int) -> bool:  # s values above x is still a plausible count at rate p0
        return log_evidence(s, t, p0, p0) < bar

    mode = min(max(round(p0 * t), 0), t)  # the evidence is convex in s, lowest near p0 t
    if t == 0 or not held(mode):
        return -math.inf, math.inf
    s_lo = _edge(held, mode, 0)
    s_hi = _edge(held, mode, t)
    low = x[t - s_hi - 1] if t - s_hi - 1 >= 0 else -math.inf  # more than s_hi values above it is ruled out
    high = x[t - s_lo] if s_lo > 0 else math.inf  # fewer than s_lo values above it is ruled out
    return float(low), float(high)


def _edge(held, inside: int, end: int) -> int:
    """The last integer from ``inside`` towards ``end`` for which ``held`` is true (it holds on an interval)."""
    if held(end):
        return end
    while abs(end - inside) > 1:
        mid = (inside + end) // 2
        inside, end = (mid, end) if held(mid) else (inside, mid)
    return inside


def looks(total: int, first: int) -> list[int]:
    """Sample sizes at which a sequential probe looks: ``first``, doubling, and ``total`` last."""
    out, n = [], max(1, first)
    while n < total:
        out.append(n)
        n *= 2
    return [*out, total] if total else []
