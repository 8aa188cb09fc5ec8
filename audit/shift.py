"""Two-sample statistics for shift between a test set and a reference set (docs/ARCHITECTURE.md §14).

* ``mmd_test``: kernel MMD between two samples of reduced features, with a sum of Gaussian kernels
  (0.25 to 2 times the median distance) approximated by random Fourier features, and a permutation null. Of the tests we
  measured (``benchmarks/shift_tests.py``: a logistic domain classifier, a k-nearest-neighbour
  classifier, exact and approximate MMD) it had the best power on mean shifts, scale changes and a
  small new cluster, at a cost linear in the sample size.
* Its readable effect size, ``domain_auc``: the AUC with which the MMD *witness* (the direction in
  kernel space along which the two samples differ), fitted on one half of each sample, tells the
  other halves apart. 0.5 means indistinguishable, 1.0 fully separated.
* ``novelty``: each query's distance to its nearest reference point, turned into the share of
  reference points that are nearer to their own nearest neighbour (0.95 = further out than 95% of
  reference images are from each other). Nearest neighbours come from FAISS (exact, ``IndexFlatL2``).
* ``property_shift`` (Kolmogorov–Smirnov per image property) and ``label_shift`` (chi-square).

Example::

    res = mmd_test(z_ref, z_test, seed=0)          # ShiftTest(p_value=0.001, auc=Estimate(0.71, ...))
    scores = novelty(z_ref, z_test, seed=0).score  # (n_test,) in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.stats import Estimate

RFF_FEATURES = 128  # per bandwidth
BANDWIDTHS = (0.25, 0.5, 1.0, 2.0)  # times the median distance: a mixture of kernels, so neither a shift within
# one cluster of the data nor one between clusters falls outside every kernel's scale
PERM_CHUNK = 64  # permutations evaluated at once
NOVELTY_NULL = 5_000  # reference points whose own nearest-neighbour distance calibrates novelty


@dataclass(frozen=True)
class ShiftTest:
    p_value: float  # permutation p-value of the MMD statistic (1 + #null >= observed) / (1 + permutations)
    mmd: float  # squared MMD, approximated with random Fourier features
    auc: Estimate  # the witness' held-out AUC, Hanley-McNeil 95% interval
    permutations: int
    n_reference: int
    n_test: int
    bandwidth: float


def _rff(x: np.ndarray, bandwidth: float, rng: np.random.Generator) -> np.ndarray:
    """Random Fourier features of a sum of Gaussian kernels at ``BANDWIDTHS`` x ``bandwidth``."""
    parts = []
    for scale in BANDWIDTHS:
        w = rng.normal(size=(x.shape[1], RFF_FEATURES)) / (bandwidth * scale)
        b = rng.uniform(0, 2 * np.pi, RFF_FEATURES)
        parts.append(np.sqrt(2.0 / (RFF_FEATURES * len(BANDWIDTHS))) * np.cos(x @ w + b))
    return np.hstack(parts)


def median_bandwidth(x: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """sigma of k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), from the median pairwise distance of a sample."""
    s = x[rng.choice(len(x), min(len(x), sample), replace=False)]
    d2 = (s * s).sum(1)[:, None] + (s * s).sum(1)[None] - 2 * s @ s.T
    pos = d2[np.triu_indices(len(s), 1)]
    pos = pos[pos > 1e-12]
    return float(np.sqrt(np.median(pos) / 2)) if len(pos) else 1.0


def mmd_test(ref: np.ndarray, test: np.ndarray, *, permutations: int = 500, seed: int = 0) -> ShiftTest:
    """Is ``test`` drawn from the distribution of ``ref``? Kernel MMD with a permutation null, and the
    witness' held-out AUC as the effect size."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # thin products: one thread beats a pool on a busy machine
        return _mmd_test(ref, test, permutations, seed)


def _mmd_test(ref: np.ndarray, test: np.ndarray, permutations: int, seed: int) -> ShiftTest:
    rng = np.random.default_rng(seed)
    x = np.vstack([ref, test]).astype(np.float64)
    y = np.r_[np.zeros(len(ref)), np.ones(len(test))]
    bw = median_bandwidth(x, rng)
    phi = _rff(x, bw, rng)
    observed = _mmd(phi, y[None])[0]
    exceed, done = 0, 0
    while done < permutations:
        k = min(PERM_CHUNK, permutations - done)
        exceed += int((_mmd(phi, rng.permuted(np.tile(y, (k, 1)), axis=1)) >= observed).sum())
        done += k
    return ShiftTest((1 + exceed) / (1 + permutations), float(observed), witness_auc(phi, y, rng), permutations,
                     len(ref), len(test), bw)


def _mmd(phi: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance between the two groups' mean embeddings, for each row of 0/1 ``labels``."""
    n1 = labels.sum(1, keepdims=True)
    m1 = labels @ phi / n1
    m0 = (1 - labels) @ phi / (labels.shape[1] - n1)
    return ((m1 - m0) ** 2).sum(1)


def witness_auc(phi: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Estimate:
    """AUC of the MMD witness fitted on one half of each group and scored on the other half (both ways)."""
    scores, labels = [], []
    halves = np.zeros(len(y), bool)
    for g in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == g))
        halves[idx[: len(idx) // 2]] = True
    for fit, held in ((halves, ~halves), (~halves, halves)):
        w = phi[fit & (y == 1)].mean(0) - phi[fit & (y == 0)].mean(0)
        scores.append(phi[held] @ w)
        labels.append(y[held])
    aucs = [auc_estimate(s, lab) for s, lab in zip(scores, labels)]
    value = (aucs[0].value + aucs[1].value) / 2
    # the two halves' AUCs move together (each witness is fitted on the half the other one scores), so the mean
    # is as uncertain as one half: its interval is the halves' mean width, not the narrower independent one
    half = ((aucs[0].value - aucs[0].low) + (aucs[1].value - aucs[1].low)) / 2
    return Estimate(value, max(0.0, value - half), min(1.0, value + half))


def auc_estimate(scores: np.ndarray, labels: np.ndarray) -> Estimate:
    """AUC (Mann–Whitney, ties counted half) with the Hanley–McNeil (1982) 95% interval."""
    from scipy.stats import rankdata

    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
    if not pos or not neg:
        return Estimate(math.nan, math.nan, math.nan)
    r = rankdata(scores)
    a = float((r[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(max(a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a), 0.0) / (pos * neg))
    return Estimate(a, max(0.0, a - 1.959964 * se), min(1.0, a + 1.959964 * se))


@dataclass(frozen=True)
class Novelty:
    distance: np.ndarray  # (n_test,) distance to the nearest reference point
    score: np.ndarray  # (n_test,) share of the reference's own nearest-neighbour distances below it
    reference_null: np.ndarray  # sorted nearest-neighbour distances of a reference sample, to the rest
    nearest: np.ndarray  # (n_test,) row of the nearest reference point


def nearest(index_points: np.ndarray, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(distances, rows) of the ``k`` nearest ``index_points`` of each query: exact L2 search with FAISS."""
    try:
        import faiss
    except ImportError:  # a core dependency; only a broken install lacks it
        from audit.errors import UsageError

        raise UsageError("the shift check needs faiss", hint="pip install faiss-cpu") from None
    index = faiss.IndexFlatL2(index_points.shape[1])
    index.add(np.ascontiguousarray(index_points, np.float32))
    d2, rows = index.search(np.ascontiguousarray(queries, np.float32), k)
    return np.sqrt(np.maximum(d2, 0.0)), rows


def novelty(ref: np.ndarray, test: np.ndarray, *, seed: int = 0, null_size: int = NOVELTY_NULL) -> Novelty:
    """Distance of each test point to the reference, calibrated by the reference's own spacing."""
    dist, rows = nearest(ref, test)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ref), min(len(ref), null_size), replace=False)
    own, own_rows = nearest(ref, ref[pick], k=2)
    # the nearest point of a reference point is itself, unless an exact copy sits at distance 0 too
    null = np.where(own_rows[:, 0] == pick, own[:, 1], own[:, 0])
    null.sort()
    score = np.searchsorted(null, dist[:, 0], side="left") / max(len(null), 1)
    return Novelty(dist[:, 0], score, null, rows[:, 0])


@dataclass(frozen=True)
class NoveltyExcess:
    """Are there more test images out beyond the reference's own spacing than chance allows?"""

    quantile: float  # of the reference's nearest-neighbour distances: the line a test image is "new" beyond
    test_share: Estimate  # share of test images beyond it (Wilson)
    reference_share: float  # share of the reference sample beyond it (about 1 - quantile)
    p_value: float  # one-sided Fisher exact test: the test share is larger


def novelty_excess(nov: Novelty, quantile: float = 0.99) -> NoveltyExcess:
    """A test for new regions: a small new subgroup barely moves the MMD, but puts its images past the
    reference's extreme nearest-neighbour distances (measured: ``benchmarks/shift_tests.py``)."""
    from scipy.stats import fisher_exact

    from audit.stats import proportion_ci

    line = float(np.quantile(nov.reference_null, quantile)) if len(nov.reference_null) else math.inf
    k_t, n_t = int((nov.distance > line).sum()), len(nov.distance)
    k_r, n_r = int((nov.reference_null > line).sum()), len(nov.reference_null)
    p = fisher_exact([[k_t, n_t - k_t], [k_r, n_r - k_r]], alternative="greater")[1] if n_t and n_r else 1.0
    return NoveltyExcess(quantile, proportion_ci(k_t, n_t), k_r / max(n_r, 1), float(p))


@dataclass(frozen=True)
class PropertyShift:
    name: str
    statistic: float  # Kolmogorov–Smirnov D: the largest gap between the two cumulative distributions
    p_value: float
    q_value: float  # Benjamini–Hochberg over the properties
    reference_median: float
    test_median: float


def property_shift(ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> tuple[PropertyShift, ...]:
    """A two-sample Kolmogorov–Smirnov test per image property, BH-corrected; largest D first."""
    from scipy.stats import ks_2samp

    from audit.stats import benjamini_hochberg

    names = [k for k in test if k in ref and np.isfinite(ref[k]).any() and np.isfinite(test[k]).any()]
    tests = [ks_2samp(ref[k][np.isfinite(ref[k])], test[k][np.isfinite(test[k])]) for k in names]
    q = benjamini_hochberg(np.array([t.pvalue for t in tests])) if tests else []
    out = [PropertyShift(k, float(t.statistic), float(t.pvalue), float(qq), float(np.nanmedian(ref[k])),
                         float(np.nanmedian(test[k]))) for k, t, qq in zip(names, tests, q)]
    return tuple(sorted(out, key=lambda s: -s.statistic))


@dataclass(frozen=True)
class LabelShift:
    p_value: float  # chi-square test of the two label distributions
    distance: float  # total variation distance between them (0 = the same shares, 1 = disjoint)
    reference_share: tuple[tuple[str, float], ...]
    test_share: tuple[tuple[str, float], ...]
    missing_in_reference: tuple[str, ...]  # labels in the test set that the reference lacks


def label_shift(labels: tuple[str, ...], ref_y: np.ndarray, test_y: np.ndarray) -> LabelShift:
    """Label distribution shift between two labelled samples (labels as indices into ``labels``)."""
    from scipy.stats import chi2_contingency

    k = len(labels)
    a, b = np.bincount(ref_y, minlength=k), np.bincount(test_y, minlength=k)
    used = (a + b) > 0
    p = float(chi2_contingency(np.stack([a[used], b[used]]))[1]) if used.sum() > 1 else 1.0
    pa, pb = a / max(a.sum(), 1), b / max(b.sum(), 1)
    return LabelShift(p, float(np.abs(pa - pb).sum() / 2), tuple(zip(labels, pa.round(4).tolist())),
                      tuple(zip(labels, pb.round(4).tolist())),
                      tuple(lab for lab, x, y in zip(labels, a, b) if y and not x))
