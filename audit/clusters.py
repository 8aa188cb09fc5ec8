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


FAST_RATIO = 8  # multinomial draws per group when the units outnumber the groups this many times over


@dataclass(frozen=True)
class Exchangeable:
    """The bootstrap's units (clusters, or rows without clusters) grouped by stratum and by the multiset of their
    rows' ``keys``. A statistic that reads rows only through their keys (the true and predicted class of each,
    say) cannot tell two units of a group apart, so it needs the rows of one unit per group (``rows``) and how
    many times each group's units were drawn. Those counts are multinomial, which is what makes the bootstrap
    cheap: a stratum of K units in G groups costs G binomial draws a replicate instead of K index draws, gathers
    and counts (docs/ARCHITECTURE.md §4.3).

    Without keys every unit is a group of its own, and ``rows`` is every row in order."""

    rows: np.ndarray  # (R,) the rows of one unit of each group
    group_of_row: np.ndarray  # (R,) the group of each of them
    units: np.ndarray  # (G,) units in each group
    group_stratum: np.ndarray  # (G,) the stratum of each group, 0..S-1
    unit_group: np.ndarray  # (K,) the group of each unit
    unit_stratum: np.ndarray  # (K,) the stratum of each unit

    @classmethod
    def of(cls, keys: np.ndarray | None, strata: np.ndarray, ids: np.ndarray | None) -> Exchangeable:
        """``keys``: a non-negative integer per row, or None; a unit's stratum is its first row's."""
        n = len(strata)
        if ids is None:
            unit = first = np.arange(n)
        else:
            unit = np.unique(ids, return_inverse=True)[1]
            first = np.unique(unit, return_index=True)[1]
        k_units = len(first)
        unit_stratum = np.unique(np.asarray(strata)[first], return_inverse=True)[1]
        if keys is None:
            profile = np.arange(k_units)
        else:
            profile = _profiles(np.asarray(keys, np.int64), unit, first)
        span = int(profile.max()) + 1
        codes, first_of_group, unit_group = np.unique(unit_stratum * span + profile, return_index=True,
                                                      return_inverse=True)
        rep = np.zeros(k_units, bool)
        rep[first_of_group] = True  # the first unit of each group stands for it
        rows = np.flatnonzero(rep[unit])
        return cls(rows, unit_group[unit[rows]], np.bincount(unit_group, minlength=len(codes)), codes // span,
                   unit_group, unit_stratum)

    @classmethod
    def of_groups(cls, group: np.ndarray, groups: int) -> Exchangeable:
        """Rows already numbered by group (``group``: 0..groups-1 per row, every number present), one stratum, no
        clusters: the draws of ``of(group, zeros, None)`` without its sorts (0.3 s a call at a million rows).
        Here ``rows`` are the group numbers, so a resample's weights come in group order (the slices' cells)."""
        numbers = np.arange(groups)
        return cls(numbers, numbers, np.bincount(group, minlength=groups), np.zeros(groups, np.intp), group,
                   np.zeros(len(group), np.int8))

    def point(self) -> np.ndarray:
        """(1, R) weights that stand for the data as it is: each group's rows once per unit."""
        return self.units[self.group_of_row][None, :].astype(float)

    def resamples(self, n_boot: int, seed: int) -> Iterator[np.ndarray]:
        """(k, R) weights of the ``rows`` in ``n_boot`` bootstrap resamples: each stratum draws as many units as it
        has, with replacement, and a row weighs as often as its group was drawn.

        Drawn as multinomial counts per group when the units outnumber the groups ``FAST_RATIO`` times, else as
        unit indices (both are the same distribution). As with ``stats.resample_indices``, a step holds at most
        ``stats.INDEX_BYTES`` of draws, and the step size does not change them."""
        g, k_units = len(self.units), len(self.unit_group)
        fast = g * FAST_RATIO <= k_units
        width = max(g if fast else k_units, len(self.rows), 1)
        step = max(1, min(stats.CHUNK, stats.INDEX_BYTES // (8 * width)))
        draw = self._multinomial(seed) if fast else self._indices(seed)
        done = 0
        while done < n_boot:
            k = min(step, n_boot - done)
            yield draw(k)[:, self.group_of_row].astype(float)
            done += k

    def _multinomial(self, seed: int):
        strata = [np.flatnonzero(self.group_stratum == s) for s in range(int(self.group_stratum.max()) + 1)]
        sizes = [int(self.units[gs].sum()) for gs in strata]
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(strata))]  # one per stratum

        def draw(k: int) -> np.ndarray:
            counts = np.empty((k, len(self.units)), np.int64)
            for gs, size, rng in zip(strata, sizes, rngs):
                counts[:, gs] = rng.multinomial(size, self.units[gs] / size, size=k)
            return counts
        return draw

    def _indices(self, seed: int):
        order = np.argsort(self.unit_stratum, kind="stable")  # units, grouped by stratum
        _, start, size = np.unique(self.unit_stratum[order], return_index=True, return_counts=True)
        starts, sizes = np.repeat(start, size), np.repeat(size, size)  # per position of ``order``
        drawn_group = self.unit_group[order]
        rng, g = np.random.default_rng(seed), len(self.units)

        def draw(k: int) -> np.ndarray:
            drawn = drawn_group[starts + rng.integers(0, sizes, size=(k, len(order)))]
            return np.bincount((drawn + (np.arange(k) * g)[:, None]).ravel(), minlength=k * g).reshape(k, g)
        return draw


def column_sums(w: np.ndarray, column: np.ndarray, width: int) -> np.ndarray:
    """(k, G) weights of groups (``Exchangeable.resamples``' in group order) -> (k, width): per column, the sum of
    the weights of the groups in it; ``column`` holds each group's column, or -1 for none."""
    keep, k = column >= 0, len(w)
    code = (column[keep][None, :] + (np.arange(k) * width)[:, None]).ravel()
    return np.bincount(code, weights=w[:, keep].ravel(), minlength=k * width).reshape(k, width)


def _profiles(keys: np.ndarray, unit: np.ndarray, first: np.ndarray) -> np.ndarray:
    """An integer per unit, equal for two units exactly when their rows hold the same multiset of keys."""
    size = np.bincount(unit)
    profile = keys[first].copy()  # a unit of one row: its key
    many = np.flatnonzero(size > 1)
    if len(many):
        base = int(keys.max()) + 1
        order = np.lexsort((keys, unit))
        bounds = np.r_[0, np.cumsum(size)]
        sorted_keys = keys[order]
        seen: dict[bytes, int] = {}
        for u in many:  # units of several rows: their sorted keys, numbered after every single key
            profile[u] = base + seen.setdefault(sorted_keys[bounds[u]:bounds[u + 1]].tobytes(), len(seen))
    return profile


def bootstrap_weighted(statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], strata: np.ndarray,
                       ids: np.ndarray | None, *, keys: np.ndarray | None = None, n_boot: int, seed: int,
                       level: float = 0.95) -> list[Estimate]:
    """Percentile intervals of ``statistic(rows, w)``: row numbers (R,) and their weights (k, R) -> (k, m), with the
    units resampled within strata by ``Exchangeable.resamples``. With ``keys``, the statistic must read rows only
    through their keys."""
    if len(strata) == 0:
        return []
    ex = Exchangeable.of(keys, strata, ids)
    point = np.asarray(statistic(ex.rows, ex.point()), dtype=float)[0]
    reps = np.concatenate([np.asarray(statistic(ex.rows, w), dtype=float) for w in ex.resamples(n_boot, seed)])
    return [_estimate(point[j], reps[:, j], level) for j in range(point.shape[0])]
