"""Confidence intervals and multiple-testing correction.

Every number in the report carries a percentile-bootstrap 95% interval: the statistic is
recomputed on ``n_boot`` resamples (with replacement) of the N rows, all replicates at once
where the statistic is vectorised. Seeded, so the same inputs give the same intervals.

Example::

    est = bootstrap(lambda idx: correct[idx].mean(axis=1), len(correct), seed=0)
    est.value, est.low, est.high
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from audit.threads import in_background

DEFAULT_N_BOOT = 1000
CHUNK = 100  # at most this many replicates per vectorised step
INDEX_BYTES = 4 * 2**20  # and at most this many bytes of resample indices per step, whatever N
# bootstrap_many(streams=s): the resamples come from s seeded streams (the same draws however they run), which run on
# threads side by side from STREAMS_APART draws (N x n_boot) up: the longest check then shares its work
# (docs/ARCHITECTURE.md §12)
STREAMS_APART = 20_000_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``nan`` bounds when undefined)."""

    value: float
    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float | None]:
        return {"value": _num(self.value), "low": _num(self.low), "high": _num(self.high)}

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _num(x: float) -> float | None:
    """A JSON-ready number: None when undefined, ints stay ints (counts)."""
    if x is None or not math.isfinite(x):
        return None
    return int(x) if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else float(x)


def resample_indices(n: int, n_boot: int, seed: int | np.random.SeedSequence, *, share: int = 1):
    """Yield (k, n) index arrays totalling ``n_boot`` bootstrap resamples of range(n).

    k is at most ``CHUNK`` and at most ``INDEX_BYTES / share`` of int64 indices (one row at the least), so
    memory stays bounded as N grows. The chunking does not change the draws: the generator fills
    arrays element by element, so the resamples are the same for any chunk size (tested).
    """
    rng = np.random.default_rng(seed)
    step = max(1, min(CHUNK, INDEX_BYTES // share // (8 * max(n, 1))))
    done = 0
    while done < n_boot:
        k = min(step, n_boot - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Percentile bootstrap of a vectorised statistic.

    ``statistic(idx)`` receives a (k, n) array of row indices (the first call gets the
    identity, shape (1, n)) and returns k values. NaN replicates (statistic undefined on that
    resample) are left out of the percentiles.
    """
    return bootstrap_many(lambda idx: statistic(idx)[:, None], n, n_boot=n_boot, seed=seed, level=level)[0]


def bootstrap_many(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    streams: int = 1,
) -> list[Estimate]:
    """Like ``bootstrap`` for a statistic returning m values per replicate, shape (k, m). With ``streams`` > 1 the
    statistic must be safe to call from several threads at once."""
    if n == 0:
        return []
    point = np.asarray(statistic(np.arange(n)[None, :]), dtype=float)[0]
    seeds = [seed] if streams == 1 else np.random.SeedSequence(seed).spawn(streams)
    sizes = [n_boot // streams + (i < n_boot % streams) for i in range(streams)]

    def stream(i: int) -> np.ndarray:
        # each stream's steps take a share of INDEX_BYTES: side by side they hold no more than one stream did
        reps = [np.asarray(statistic(idx), dtype=float)
                for idx in resample_indices(n, sizes[i], seeds[i], share=streams)]
        return np.concatenate(reps) if reps else np.zeros((0, point.shape[0]))

    later = [in_background(stream, i) for i in range(1, streams)] if n * n_boot >= STREAMS_APART else []
    reps = np.concatenate([stream(0), *(f.result() for f in later)] if later else [stream(i) for i in range(streams)])
    return [_estimate(point[j], reps[:, j], level) for j in range(point.shape[0])]


def _estimate(point: float, reps: np.ndarray, level: float) -> Estimate:
    reps = reps[np.isfinite(reps)]
    if not math.isfinite(point) or reps.size < 2:
        return Estimate(float(point), math.nan, math.nan, level)
    alpha = (1 - level) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return Estimate(float(point), float(low), float(high), level)


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrices (k, C, C) of the k resamples in ``idx`` (rows: true, columns: predicted)."""
    k = idx.shape[0]
    codes = y_true[idx] * n_classes + y_pred[idx] + (np.arange(k) * n_classes * n_classes)[:, None]
    return np.bincount(codes.ravel(), minlength=k * n_classes * n_classes).reshape(k, n_classes, n_classes)


def unique_codes(key: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` for keys in ``[0, space)``: by counting when the space is at most
    4 x the keys (no sort of N keys: 40 bytes a row fewer at the peak), else by ``np.unique``. Inverse as int32.

    >>> [a.tolist() for a in unique_codes(np.array([5, 2, 5, 0]), 8)]
    [[0, 2, 5], [2, 1, 2, 0]]
    """
    if space <= 4 * len(key):
        present = np.flatnonzero(np.bincount(key, minlength=space))
        index = np.zeros(space, np.int32)
        index[present] = np.arange(len(present), dtype=np.int32)
        return present, index[key]
    present, inverse = np.unique(key, return_inverse=True)
    return present, inverse.ravel().astype(np.int32)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same order as the input."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def proportion_ci(k: int, n: int, *, level: float = 0.95, method: str = "wilson") -> Estimate:
    """``k / n`` with a Wilson score (default) or Clopper–Pearson ("exact") interval.

    Closed forms, so no resampling; ``nan`` everywhere when ``n == 0``. (scipy's
    ``binomtest(k, n).proportion_ci`` gives the same bounds but computes an exact p-value first,
    about 4 ms a call, which adds up over slices.)
    """
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, level)
    p = k / n
    if method == "exact":
        from scipy.stats import beta

        low = float(beta.ppf((1 - level) / 2, k, n - k + 1)) if k > 0 else 0.0
        high = float(beta.ppf((1 + level) / 2, k + 1, n - k)) if k < n else 1.0
        return Estimate(p, low, high, level)
    if method != "wilson":
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    z = NormalDist().inv_cdf((1 + level) / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At k = 0 and k = n the bounds are exactly 0 and 1; rounding must not put them past the estimate.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Estimate(p, low, high, level)


def paired_difference_ci(table: np.ndarray, *, level: float = 0.95) -> Estimate:
    """Difference of two paired proportions, Newcombe's square-and-add interval (1998, method 10).

    ``table`` is the 2x2 table of paired outcomes ``[[both, only_1], [only_2, neither]]``; the
    estimate is ``p1 - p2 = (only_1 - only_2) / n``. Newcombe combines the Wilson intervals of the
    two margins with a correction for their correlation. It stays inside [-1, 1], is defined with
    empty cells, and is among the intervals Fagerland, Lydersen & Laake (2014) recommend for
    paired proportions; the plain Wald interval is too narrow when discordant pairs are few.
    """
    (a, b), (c, d) = np.asarray(table, dtype=np.int64).tolist()
    n = a + b + c + d
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, level)
    p1, p2 = (a + b) / n, (a + c) / n
    w1, w2 = proportion_ci(a + b, n, level=level), proportion_ci(a + c, n, level=level)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    cross = cross - n / 2 if cross > n / 2 else 0 if cross >= 0 else cross  # Newcombe's continuity adjustment
    phi = cross / math.sqrt(margins) if margins > 0 else 0.0
    dl1, du1, dl2, du2 = p1 - w1.low, w1.high - p1, p2 - w2.low, w2.high - p2
    low = (p1 - p2) - math.sqrt(max(dl1**2 - 2 * phi * dl1 * du2 + du2**2, 0.0))
    high = (p1 - p2) + math.sqrt(max(dl2**2 - 2 * phi * dl2 * du1 + du1**2, 0.0))
    return Estimate(p1 - p2, max(low, -1.0), min(high, 1.0), level)


def mcnemar_exact(only_1: int, only_2: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2."""
    m = int(only_1) + int(only_2)
    if m == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(only_1), m, 0.5).pvalue)


TIE = 1e-7  # tables this close in probability to the observed one count as as extreme (R's fisher.test too)


def fisher_exact(table, alternative: str = "two-sided") -> float:
    """Fisher's exact test p-value of a 2 x 2 table of counts, ``alternative`` "two-sided" or "less" (the top-left
    count is small): scipy.stats.fisher_exact's p-value, summed over the whole hypergeometric support in numpy.
    scipy.stats costs 0.45 s to import, more than the rest of the slice discovery that needs this
    (docs/ARCHITECTURE.md §12); tests/test_discovered_slices.py checks the two against each other."""
    (a, b), (c, d) = np.asarray(table, dtype=np.int64).tolist()
    if min(a, b, c, d) < 0:
        raise ValueError("a table of counts must be non-negative")
    if alternative not in ("two-sided", "less"):
        raise ValueError(f"alternative must be 'two-sided' or 'less', got {alternative!r}")
    if 0 in (a + b, c + d, a + c, b + d):
        return 1.0
    lo, log_pmf = hypergeometric_log_pmf(a + b + c + d, a + b, a + c)
    top = log_pmf.max()
    pmf = np.exp(log_pmf - top)  # relative to the mode's probability, so no term underflows before it matters
    if alternative == "less":
        tail = pmf[: a - lo + 1]
    else:
        tail = pmf[pmf <= pmf[a - lo] * (1 + TIE)]
    return float(min(1.0, tail.sum() / pmf.sum()))


def hypergeometric_log_pmf(total: int, marked: int, drawn: int) -> tuple[int, np.ndarray]:
    """The smallest possible count ``lo`` and log P(X = x) for x = lo, lo + 1, ... over the whole support, where X
    counts the marked items among ``drawn`` taken without replacement from ``total`` (``marked`` of them marked):
    one log-gamma term, then the ratio P(x) / P(x - 1) summed in logs."""
    lo, hi = max(0, drawn - (total - marked)), min(marked, drawn)
    x = np.arange(lo + 1, hi + 1, dtype=np.float64)
    steps = np.log((marked - x + 1) * (drawn - x + 1)) - np.log(x * (total - marked - drawn + x))
    first = _log_choose(marked, lo) + _log_choose(total - marked, drawn - lo) - _log_choose(total, drawn)
    out = np.empty(hi - lo + 1)
    out[0] = first
    np.cumsum(steps, out=out[1:])
    out[1:] += first
    return lo, out


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
