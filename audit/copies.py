"""Copies or look-alikes? A near-duplicate rule calibrated on the data itself (docs/ARCHITECTURE.md §4.3).

A perceptual-hash candidate confirmed by its colour thumbnails (``audit.colour_match``) is *near*;
in low-entropy data (grey parts, EL cells, Fashion-MNIST shoes) independent images of the same
content are near too. How near independent images get is a property of the data set, so it is
measured on it: each image's nearest candidate inside its own set (training images with training
images, test images with test images) gives a distance that two *different* images reached. The
lower tail of those distances is fitted with a log-normal law from its 5th and 25th percentiles (robust
to the few copies a set may hold of itself; distances are positive and skewed, and on Fashion-MNIST a
normal law put the line at 0.05 where the log-normal puts it at 4), and a pair between the sets is a *copy* only when its
distance is below what that law allows for any of the images tested, at family-wise level
``alpha`` (Bonferroni). Each pair gets its p-value under the look-alike law; the rest of the near
pairs are *look-alikes*: reported, not counted as leaked.

With fewer than ``MIN_NULL`` nearest-neighbour distances the law cannot be fitted and the fixed
thumbnail threshold decides, as before.

Example::

    rule = copy_rule([nn_train, nn_test], tested=120, max_distance=8.0)
    rule.p_value(np.array([0.4, 3.1]))   # [~0, 0.3]: the first is a copy, the second a look-alike
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MIN_NULL = 30  # nearest-neighbour distances needed to fit the look-alike law
_Z05, _Z25 = NormalDist().inv_cdf(0.05), NormalDist().inv_cdf(0.25)


@dataclass(frozen=True)
class CopyRule:
    threshold: float  # a near pair closer than this is a copy
    location: float  # of the log of look-alike distances, fitted to their lower tail (nan when not fitted)
    scale: float
    alpha: float  # family-wise error over the images tested
    tested: int  # images with a near candidate in the other set
    null_size: int  # nearest-neighbour distances measured inside the sets
    fixed: bool  # too few of them: the fixed thumbnail threshold decides

    @property
    def median(self) -> float:
        """The fitted look-alike distance at the law's centre."""
        return math.exp(self.location) if math.isfinite(self.location) else math.nan

    def p_value(self, distance: np.ndarray) -> np.ndarray:
        """P(a look-alike is this close) under the fitted law, per pair (1.0 when the rule is fixed)."""
        d = np.asarray(distance, float)
        if self.fixed:
            return np.where(d <= self.threshold, 0.0, 1.0)
        z = (np.log(np.maximum(d, 1e-12)) - self.location) / self.scale
        return np.array([NormalDist().cdf(v) for v in z.tolist()])

    def to_dict(self) -> dict:
        return {"threshold": round(self.threshold, 4), "location": _num(self.location), "scale": _num(self.scale),
                "alpha": self.alpha, "tested": self.tested, "null_size": self.null_size, "fixed": self.fixed}


def _num(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def nearest_within(i: np.ndarray, j: np.ndarray, distance: np.ndarray, n: int) -> np.ndarray:
    """Each image's distance to its nearest candidate inside its own set (pairs ``i``-``j``), for images with one."""
    best = np.full(n, np.inf)
    np.minimum.at(best, i, distance)
    np.minimum.at(best, j, distance)
    return best[np.isfinite(best)]


def copy_rule(nulls: list[np.ndarray], *, tested: int, max_distance: float, alpha: float = 0.05) -> CopyRule:
    """The copy threshold for ``tested`` images from the sets' own nearest-neighbour distances ``nulls``.

    Never looser than ``max_distance`` (the fixed rule): calibration only removes look-alikes.
    """
    null = np.concatenate([np.asarray(x, float) for x in nulls]) if nulls else np.zeros(0)
    null = null[null > 0]  # exact copies inside a set (distance 0) say nothing about independent images
    if len(null) < MIN_NULL:
        return CopyRule(max_distance, math.nan, math.nan, alpha, tested, len(null), True)
    q05, q25 = np.log(np.quantile(null, [0.05, 0.25]))
    scale = max((q25 - q05) / (_Z25 - _Z05), 1e-6)
    location = q25 - _Z25 * scale
    cut = NormalDist().inv_cdf(alpha / max(tested, 1))
    return CopyRule(float(min(max_distance, np.exp(location + cut * scale))), float(location), float(scale), alpha,
                    tested, len(null), False)
