"""Minimum detectable effects and images needed, against statsmodels and exact simulation.

The one-sample formulas must equal what ``statsmodels.stats.power.NormalIndPower`` solves on
``proportion_effectsize``; the paired ones (no statsmodels counterpart) are checked by simulating
test sets of the size they ask for and counting how often the audit's own decision is reached.
"""

import math

import numpy as np
import pytest
from scipy.stats import binom
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from audit.power import Sampling, paired_images, paired_mde, power_of, proportion_images, proportion_mde
from audit.stats import paired_difference_ci, proportion_ci

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


@pytest.mark.parametrize("p1,p0,alpha", [(0.78, 0.77, 0.05), (0.9, 0.8, 0.05), (0.05, 0.1, 0.05), (0.6, 0.5, 0.1),
                                         (0.999, 0.99, 0.01)])
def test_images_for_a_proportion_equal_statsmodels(p1, p0, alpha):
    want = NormalIndPower().solve_power(effect_size=proportion_effectsize(p1, p0), nobs1=None, alpha=alpha,
                                        power=0.8, ratio=0)
    assert proportion_images(p1, p0, alpha=alpha) == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("n,p0", [(60, 0.77), (656, 0.9), (10_000, 0.75), (30, 0.1), (200, 0.5)])
def test_mde_of_a_proportion_equals_statsmodels(n, p0):
    h = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=0)
    sides = [abs(math.sin(math.asin(math.sqrt(p0)) + s * h / 2) ** 2 - p0) for s in (1, -1)
             if 0 <= 2 * math.asin(math.sqrt(p0)) + s * h <= math.pi]
    assert proportion_mde(n, p0) == pytest.approx(max(sides), rel=1e-3)


def test_mde_falls_with_the_square_root_of_the_images():
    assert proportion_mde(6000, 0.77) == pytest.approx(proportion_mde(60, 0.77) / 10, rel=0.1)
    assert proportion_mde(0, 0.5) is None


@pytest.mark.parametrize("p1,p0", [(0.85, 0.77), (0.65, 0.77), (0.07, 0.1)])
def test_the_images_needed_decide_the_wilson_criterion_with_power_080(p1, p0):
    """Simulate test sets of that size: the Wilson interval excludes the threshold in about 80% of them.

    (A normal approximation: with very few images near 0 or 1 it is optimistic, e.g. 0.04 against 0.1
    asks for 135 images, which decide 70% of the time.)"""
    n = math.ceil(proportion_images(p1, p0))
    k = np.random.default_rng(0).binomial(n, p1, 4000)
    decided = [not proportion_ci(int(x), n).contains(p0) for x in k]
    assert 0.76 < np.mean(decided) < 0.85


@pytest.mark.parametrize("psi,d0,d1,alpha", [(0.14, -0.01, 0.03, 0.05), (0.2, -0.02, -0.08, 0.05),
                                             (0.08, -0.01, 0.02, 0.1)])
def test_paired_images_decide_the_newcombe_criterion_with_power_080(psi, d0, d1, alpha):
    """At the paired size asked for, the (1 - 2 alpha) Newcombe interval leaves d0 in about 80% of test sets."""
    n = math.ceil(paired_images(psi, d0, d1, alpha=2 * alpha))
    p10, p01 = (psi + d1) / 2, (psi - d1) / 2  # only the candidate right, only the baseline right
    rng = np.random.default_rng(1)
    tables = rng.multinomial(n, [0.7, p10, p01, 0.3 - psi], 1500)
    decided = 0
    for both, only_c, only_b, neither in tables:
        ci = paired_difference_ci(np.array([[both, only_c], [only_b, neither]]), level=1 - 2 * alpha)
        decided += (ci.low > d0) if d1 > d0 else (ci.high < d0)
    assert 0.75 < decided / len(tables) < 0.86


def test_mcnemar_sample_size_by_exact_simulation():
    """d0 = 0 is McNemar's question: the exact test rejects in about 80% of tables of that size."""
    psi, d1 = 0.12, 0.04
    n = math.ceil(paired_images(psi, 0.0, d1))
    p10, p01 = (psi + d1) / 2, (psi - d1) / 2
    counts = np.random.default_rng(2).multinomial(n, [p10, p01, 1 - psi], 4000)
    b, m = counts[:, 0], counts[:, 0] + counts[:, 1]
    p = np.minimum(1.0, 2 * np.minimum(binom.cdf(b, m, 0.5), binom.sf(b - 1, m, 0.5)))  # exact, two-sided
    assert 0.74 < np.mean(p < 0.05) < 0.86


@pytest.mark.parametrize("n,psi,d0", [(656, 93 / 656, -0.01), (200, 0.3, 0.0), (60, 0.05, -0.05)])
def test_paired_mde_is_the_difference_its_images_can_detect(n, psi, d0):
    mde = paired_mde(n, psi, d0)
    assert mde is not None and 0 < mde <= psi + abs(d0)
    sides = [paired_images(psi, d0, d0 + s * mde) for s in (1, -1) if abs(d0 + s * mde) <= psi]
    assert max(sides) == pytest.approx(n, rel=1e-3)  # the harder side needs exactly n; the other fewer
    assert paired_mde(4 * n, psi, d0) < mde and paired_mde(n, 0.0, d0) is None


def test_power_of_scales_an_undecided_criterion_by_its_design_effect():
    plain = power_of(Sampling(60), 0.78, 0.77, level=0.95, undecided=True)
    halved = power_of(Sampling(60, 30), 0.78, 0.77, level=0.95, undecided=True)
    assert plain.images_needed == math.ceil(proportion_images(0.78, 0.77))
    assert halved.images_needed == math.ceil(2 * proportion_images(0.78, 0.77))
    assert halved.mde == pytest.approx(proportion_mde(30, 0.77), abs=1e-4)
    assert power_of(Sampling(60), 0.77, 0.77, level=0.95, undecided=True).images_needed is None
    assert power_of(Sampling(60), 0.9, 0.77, level=0.95, undecided=False).images_needed is None
    paired = power_of(Sampling(656, discordant=0.14), -0.005, 0.01, level=0.9, undecided=True)
    assert paired.images_needed == math.ceil(paired_images(0.14, 0.01, -0.005, alpha=0.1)) > 656
    # the formula asks for fewer than the 656 images that left it undecided: the interval is scaled instead
    wide = power_of(Sampling(656, discordant=0.14), -0.03, 0.01, level=0.9, undecided=True, half=0.05)
    assert paired_images(0.14, 0.01, -0.03, alpha=0.1) < 656
    assert wide.images_needed == pytest.approx(656 * ((1.6449 + 0.8416) / 1.6449 * 0.05 / 0.04) ** 2, abs=2)
