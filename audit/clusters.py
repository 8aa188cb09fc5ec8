"""Duplicated test images are not independent evidence: clusters, design effects, stratified resampling
(docs/ARCHITECTURE.md §4.3).

Exact copies (same SHA-256) and confirmed near duplicates (``audit.checks.integrity``) inside the
test set form clusters: the connected groups of the duplicate pairs. A model that gets one copy
right gets the others right too, so 100 images in 50 pairs carry about the evidence of 50.

* Proportions keep their Wilson interval, computed on the **effective sample size** ``n / deff``,
  where the design effect ``deff`` is the variance of the proportion with whole clusters resampled
  (the ratio estimator's) over its variance with images resampled, at least 1. When every image
  agrees (``p = 0`` or ``1``) there is no variance to estimate it from, and each cluster counts once.
* The bootstrap resamples whole clusters within strata (the true class: the test set's class
  make-up is fixed by design), so macro averages over classes keep every class's size.

Without duplicates, every image is its own cluster, ``deff = 1`` and the intervals are the plain ones.

Example::

    ids = cluster_ids(6, np.array([0, 3]), np.array([1, 4]))   # [0, 0, 1, 2, 2, 3]
    clustered_proportion(correct, ids)                          # Estimate, effective n
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from audit import stats
from audit.packed import index_dtype
from audit.stats import Estimate, _estimate


def cluster_ids(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cluster id per row (0..K-1, in order of first row) of the groups linked by the pairs ``(i, j)``.

    Row numbers in int32 below 2**31 rows (half the memory of the union-find at 500,000 copies)."""
    index = index_dtype(n)
    parent = np.arange(n, dtype=index)
    i, j = np.asarray(i, index), np.asarray(j, index)
    while len(i):  # union by pointing the larger root at the smaller, until every pair shares a root
        ri, rj = _roots(parent, i), _roots(parent, j)
        diff = ri != rj
        if not diff.any():
            break
        lo, hi = np.minimum(ri[diff], rj[diff]), np.maximum(ri[diff], rj[diff])
        np.minimum.at(parent, hi, lo)
        i, j = i[diff], j[diff]
    del i, j
    rows = np.arange(n, dtype=index)
    roots = _roots(parent, rows)  # each cluster's root is its smallest row: ids follow the roots' order
    first = np.cumsum(roots == rows, dtype=index) - 1
    return first[roots]


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    while True:
        up = parent[x]
        if np.array_equal(up, x):
            return x
        parent[x] = parent[up]  # path halving
        x = up


@dataclass(frozen=True)
class Clusters:
    """The duplicate clusters of a test set: one id per row."""

    ids: np.ndarray  # (N,) int64

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def count(self) -> int:
        return int(self.ids.max()) + 1 if len(self.ids) else 0

    @property
    def duplicated(self) -> int:
        """Rows that share their cluster with another row."""
        sizes = np.bincount(self.ids)
        return int(sizes[sizes > 1].sum())

    def to_dict(self) -> dict:
        return {"images": self.n, "clusters": self.count, "images_in_shared_clusters": self.duplicated}


def design_effect(success: np.ndarray, ids: np.ndarray | None) -> float:
    """Variance of the mean of ``success`` with clusters resampled over its variance with rows resampled.

    At least 1; ``n / clusters`` when every row has the same value; 1 without shared clusters.
    """
    y = np.asarray(success, dtype=float)
    n = len(y)
    if ids is None or n < 2:
        return 1.0
    _, ids = np.unique(ids, return_inverse=True)
    k = int(ids.max()) + 1
    if k == n:
        return 1.0
    p = y.mean()
    unit = ((y - p) ** 2).sum() * n / (n - 1)
    if unit == 0 or k < 2:
        return n / k
    totals = np.bincount(ids, weights=y - p, minlength=k)
    return max(1.0, float((totals ** 2).sum() * k / (k - 1) / unit))


def wilson(p: float, n_eff: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score bounds of a proportion ``p`` observed on ``n_eff`` (possibly fractional) images."""
    z = NormalDist().inv_cdf((1 + level) / 2)
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * math.sqrt(max(p * (1 - p), 0.0) / n_eff + z * z / (4 * n_eff * n_eff))
    return (0.0 if p <= 0 else max(0.0, centre - half)), (1.0 if p >= 1 else min(1.0, centre + half))


def clustered_proportion(success: np.ndarray, ids: np.ndarray | None, level: float = 0.95) -> tuple[Estimate, float]:
    """The share of ``success`` with its Wilson interval on the effective sample size, and that size."""
    y = np.asarray(success, dtype=bool)
    n = len(y)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, level), 0.0
    n_eff = n / design_effect(y, ids)
    p = float(y.mean())
    low, high = wilson(p, n_eff, level)
    return Estimate(p, low, high, level), n_eff


def grouped_proportions(success: np.ndarray, groups: np.ndarray, n_groups: int, ids: np.ndarray | None,
                        level: float = 0.95) -> list[tuple[Estimate, float]]:
    """``clustered_proportion`` of the rows of each group (recall per true class, precision per predicted one)."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    out = []
    for g in range(n_groups):
        rows = order[bounds[g]:bounds[g + 1]]
        out.append(clustered_proportion(success[rows], None if ids is None else ids[rows], level))
    return out


def resample_weights(strata: np.ndarray, ids: np.ndarray | None, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (k, N) row multiplicities of ``n_boot`` bootstrap resamples: clusters drawn within strata.

    Each stratum draws as many clusters as it has, with replacement; a cluster belongs to the stratum
    of its first row. Without clusters, rows are drawn within strata. As with ``stats.resample_indices``,
    a step holds at most ``stats.INDEX_BYTES`` of draws and the step size does not change them.
    """
    n = len(strata)
    ids = np.arange(n) if ids is None else np.unique(ids, return_inverse=True)[1]
    first = np.unique(ids, return_index=True)[1]
    k_total = len(first)
    stratum = np.asarray(strata)[first]
    order = np.argsort(stratum, kind="stable")  # cluster ids, grouped by stratum
    _, start, size = np.unique(stratum[order], return_index=True, return_counts=True)
    starts, sizes = np.repeat(start, size), np.repeat(size, size)  # per position of ``order``
    rng = np.random.default_rng(seed)
    step = max(1, min(stats.CHUNK, stats.INDEX_BYTES // (8 * max(n, 1))))
    done = 0
    while done < n_boot:
        k = min(step, n_boot - done)
        drawn = order[starts + rng.integers(0, sizes, size=(k, k_total))]
        counts = np.bincount((drawn + (np.arange(k) * k_total)[:, None]).ravel(), minlength=k * k_total)
        yield counts.reshape(k, k_total)[:, ids].astype(float)
        done += k


def bootstrap_weighted(statistic: Callable[[np.ndarray], np.ndarray], strata: np.ndarray, ids: np.ndarray | None, *,
                       n_boot: int, seed: int, level: float = 0.95) -> list[Estimate]:
    """Percentile intervals of a statistic of row weights (k, N) -> (k, m), resampled by ``resample_weights``."""
    n = len(strata)
    if n == 0:
        return []
    point = np.asarray(statistic(np.ones((1, n))), dtype=float)[0]
    reps = np.concatenate([np.asarray(statistic(w), dtype=float) for w in resample_weights(strata, ids, n_boot, seed)])
    return [_estimate(point[j], reps[:, j], level) for j in range(point.shape[0])]
