"""How much evidence a criterion has: its minimum detectable effect and the images an undecided one needs
(docs/ARCHITECTURE.md §4.1).

A criterion judged on its interval decides when the interval leaves the threshold. Before the
data, that is a test of "the true value equals the threshold" at level ``alpha = 1 - level``; its
power says how large a true distance from the threshold the current test set can detect:

* **proportions** (accuracy, flip rates, flagged shares): the normal approximation on Cohen's
  arcsine scale, ``h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p0))`` and ``n = ((z(1 - alpha/2) +
  z(power)) / h) ** 2``, which is what ``statsmodels.stats.power.NormalIndPower`` solves for one
  sample (``ratio=0``) with ``proportion_effectsize``. Duplicated images count by the effective
  sample size (``audit.clusters``), and the images needed are scaled back by the design effect.
* **paired differences** (candidate minus baseline accuracy): Connor's (1987) McNemar formula with
  the observed share ``psi`` of images exactly one model gets right, ``n = (z_a sqrt(psi - d0^2) +
  z_b sqrt(psi - d1^2)) ** 2 / (d1 - d0) ** 2``, where ``d0`` is the threshold (minus the margin).

The minimum detectable effect (MDE) is the smallest true distance from the threshold found with
power ``POWER`` at the current number of images; ``images_needed`` is about how many test images
would decide an inconclusive criterion if the observed estimate were the truth.

Example::

    proportion_mde(60, 0.77, alpha=0.05)          # 0.166: 60 images tell 0.77 only from 0.60 or 0.90, not nearer
    proportion_images(0.78, 0.77, alpha=0.05)     # 13,685 images to tell 0.78 from 0.77
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

POWER = 0.8
_Z = NormalDist()


@dataclass(frozen=True)
class Sampling:
    """What stands behind a measure: ``n`` images (``n_eff`` effective ones), or a paired difference.

    ``discordant`` is set for paired comparisons: the share of images exactly one model gets right.
    """

    n: int
    n_eff: float | None = None  # None: every image is independent evidence (n)
    discordant: float | None = None

    @property
    def effective(self) -> float:
        return float(self.n if self.n_eff is None else self.n_eff)


@dataclass(frozen=True)
class Power:
    """The evidence of one criterion: images, effective images, MDE and (if undecided) images needed."""

    n: int
    n_eff: float
    mde: float | None  # None: no true value within the measure's range can be detected at this n
    images_needed: int | None = None  # inconclusive criteria only; None when the estimate sits on the threshold


def _z(alpha: float, power: float) -> tuple[float, float]:
    return _Z.inv_cdf(1 - alpha / 2), _Z.inv_cdf(power)


def _arcsine(p: float) -> float:
    return 2 * math.asin(math.sqrt(min(max(p, 0.0), 1.0)))


def proportion_images(p1: float, p0: float, *, alpha: float = 0.05, power: float = POWER) -> float:
    """Independent images for a two-sided level-``alpha`` test to tell ``p1`` from ``p0`` with ``power``."""
    h = abs(_arcsine(p1) - _arcsine(p0))
    za, zb = _z(alpha, power)
    return math.inf if h == 0 else ((za + zb) / h) ** 2


def proportion_mde(n_eff: float, p0: float, *, alpha: float = 0.05, power: float = POWER) -> float | None:
    """The smallest distance from ``p0`` detectable with ``n_eff`` independent images (the larger side)."""
    if n_eff <= 0:
        return None
    za, zb = _z(alpha, power)
    h = (za + zb) / math.sqrt(n_eff)
    base = _arcsine(p0)
    sides = [abs(math.sin(x / 2) ** 2 - min(max(p0, 0.0), 1.0)) for x in (base + h, base - h) if 0 <= x <= math.pi]
    return max(sides) if sides else None


def paired_images(psi: float, d0: float, d1: float, *, alpha: float = 0.05, power: float = POWER) -> float:
    """Images for a test at level ``alpha`` (two-sided) to tell a paired difference ``d1`` from ``d0``."""
    if d1 == d0:
        return math.inf
    za, zb = _z(alpha, power)
    spread = za * math.sqrt(max(psi - d0 * d0, 0.0)) + zb * math.sqrt(max(psi - d1 * d1, 0.0))
    return (spread / (d1 - d0)) ** 2


def paired_mde(n: int, psi: float, d0: float, *, alpha: float = 0.05, power: float = POWER) -> float | None:
    """The smallest distance from ``d0`` a paired test on ``n`` images with discordant share ``psi`` detects.

    A difference cannot exceed the discordant share, so sides where none is detectable are left out.
    """
    if n <= 0 or psi <= 0:
        return None
    sides = []
    for sign in (1, -1):
        reach = psi - sign * d0  # how far d1 = d0 + sign * delta can go before |d1| > psi
        if reach <= 0 or paired_images(psi, d0, d0 + sign * reach, alpha=alpha, power=power) > n:
            continue
        lo, hi = 0.0, reach
        for _ in range(60):  # bisection: the images needed fall as delta grows
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if paired_images(psi, d0, d0 + sign * mid, alpha=alpha, power=power) > n else (lo, mid)
        sides.append(hi)
    return max(sides) if sides else None


def power_of(sampling: Sampling, estimate: float, threshold: float, *, level: float, undecided: bool,
             half: float | None = None) -> Power:
    """The ``Power`` of a criterion judged on a ``level`` interval (``undecided``: it is inconclusive).

    ``half`` is the interval's reach from the estimate towards the threshold. Where the formula asks
    for no more images than the criterion already has (its interval is wider than the formula's
    variance assumes), the images needed scale that interval instead: n ((z_a + z_b) / z_a * half /
    distance)^2.
    """
    alpha = 1 - level
    n, n_eff = sampling.n, sampling.effective
    if sampling.discordant is not None:
        psi = max(sampling.discordant, 0.0)
        mde = paired_mde(n, psi, threshold, alpha=alpha)
        need = paired_images(psi, threshold, estimate, alpha=alpha) if undecided else math.nan
    else:
        mde = proportion_mde(n_eff, threshold, alpha=alpha)
        deff = n / n_eff if n_eff > 0 else 1.0
        need = proportion_images(estimate, threshold, alpha=alpha) * deff if undecided else math.nan
    distance = abs(estimate - threshold)
    if undecided and math.isfinite(need) and need <= n and half and distance > 0:
        za, zb = _z(alpha, POWER)
        need = n * ((za + zb) / za * half / distance) ** 2
    images = max(math.ceil(need), n + 1) if math.isfinite(need) else None
    return Power(n, round(n_eff, 1), None if mde is None else round(mde, 4), images)


def sizes_to_detect(threshold: float, deff: float = 1.0, distances: tuple[float, ...] = (0.1, 0.05, 0.02, 0.01), *,
                    alpha: float = 0.05) -> tuple[tuple[float, int], ...]:
    """(distance, images) a test set needs to tell a proportion that far above ``threshold`` from it."""
    out = []
    for d in distances:
        if 0 <= threshold + d <= 1:
            out.append((d, math.ceil(proportion_images(threshold + d, threshold, alpha=alpha) * deff)))
    return tuple(out)
