"""Weak subgroups found in the model's own features, confirmed on images that did not produce them.

The protocol (every step seeded):

1. Split the scored images 50/50, stratified by class: a *discover* half and a *confirm* half.
2. On the discover half, fit an error-aware mixture over [reduced features, true label,
   error]: each component has a diagonal Gaussian over the features, a categorical over the
   true label and a Bernoulli over "the model got it wrong", weighted as in Domino (Eyuboglu
   et al. 2022). The error term pulls components towards regions where the model fails.
3. Every image is then assigned to a component *without* its error term (features and label
   only), so membership never looks at whether the model was right. On the discover half, weak
   components (accuracy below the rest) that neighbour each other and whose error rates cannot
   be told apart are merged (the mixture has more components than a data set has natural groups,
   so one subgroup may come in pieces); the groups are ranked by their one-sided Fisher test of
   "accuracy inside < outside", and the best ``max_candidates`` with enough support become
   candidates.
4. On the confirm half each candidate is tested again (one-sided Fisher exact), the p-values
   are corrected together (Benjamini–Hochberg), and a candidate is *confirmed* when its q-value
   is at most ``alpha`` and the 95% interval of its gap excludes zero. Its accuracy (Wilson) and
   gap (Newcombe) are reported on the confirm half only.

No library fits a mixture with categorical terms beside the Gaussian ones (scikit-learn's
``GaussianMixture`` cannot), so the EM is written here: about forty lines of numpy.

Example::

    found = discover(z, y_true, y_pred, DiscoveryParams(), seed=0)
    [(c.components, c.confirm.accuracy.value, c.q_value) for c in found.confirmed]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.stats import Estimate, benjamini_hochberg, fisher_exact, proportion_ci

_VAR_FLOOR = 1e-3  # of a feature axis' variance within a component (axes are scaled to unit variance)
_SMOOTH = 1.0  # Laplace pseudo-count for the categorical and Bernoulli terms


@dataclass(frozen=True)
class DiscoveryParams:
    # mixture components: more than a data set's natural groups, so a weak subgroup gets its own; pieces of one
    # subgroup are merged back (``merge_weak``). 20 recovered planted subgroups best of 12, 16, 20, 30 and a
    # BIC choice (benchmarks/discovered_slices.py)
    components: int = 20
    label_weight: float = 1.0  # weight of the true-label log-likelihood
    error_weight: float = 1.0  # weight of the error log-likelihood (fit only; never used to assign)
    min_support: int = 10  # images a slice needs in each half
    max_candidates: int = 10
    alpha: float = 0.01  # false discovery rate over the candidates (Benjamini–Hochberg)
    max_iter: int = 100
    fit_rows: int = 10_000  # the mixture is fitted on at most this many discover-half images


@dataclass(frozen=True)
class HalfStats:
    """A slice on one half: its size, accuracy and the gap to the rest of that half."""

    n: int
    correct: int
    accuracy: Estimate  # Wilson
    rest_accuracy: Estimate
    gap: Estimate  # rest minus inside (positive = the slice is worse), Newcombe hybrid score interval
    p_value: float  # one-sided Fisher exact: accuracy inside < outside


@dataclass(frozen=True)
class Candidate:
    components: tuple[int, ...]  # mixture components merged into this slice
    discover: HalfStats
    confirm: HalfStats | None  # None when it lacks support on the confirm half
    q_value: float  # Benjamini–Hochberg over every tested candidate; nan when not tested
    confirmed: bool


@dataclass(frozen=True)
class Discovery:
    components: int
    assignment: np.ndarray  # (N,) component of every image (features and label only)
    in_confirm: np.ndarray  # (N,) bool: the image is in the confirm half
    centres: np.ndarray  # (K, k) each component's mean in the reduced features
    candidates: tuple[Candidate, ...]  # ranked on the discover half

    @property
    def confirmed(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.confirmed)

    def inside(self, c: Candidate) -> np.ndarray:
        """(N,) bool: the images of candidate ``c``, in both halves."""
        return np.isin(self.assignment, c.components)

    def centre(self, c: Candidate) -> np.ndarray:
        """The mean of its components' centres, weighted by their images."""
        counts = np.bincount(self.assignment, minlength=len(self.centres))[list(c.components)]
        return (self.centres[list(c.components)] * counts[:, None]).sum(0) / max(counts.sum(), 1)


def split_halves(y: np.ndarray, seed: int) -> np.ndarray:
    """(N,) bool, True for the confirm half: each class split 50/50 (odd counts alternate by class), seeded."""
    rng = np.random.default_rng(seed)
    confirm = np.zeros(len(y), bool)
    extra = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        half = len(idx) // 2 + (len(idx) % 2) * extra
        extra ^= len(idx) % 2
        confirm[idx[:half]] = True
    return confirm


def n_components(n_fit: int, params: DiscoveryParams) -> int:
    """``params.components``, fewer when the fitted images cannot give each 4 x ``min_support`` on average."""
    return int(max(2, min(params.components, n_fit // (4 * params.min_support))))


def discover(z: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, params: DiscoveryParams, *,
             n_classes: int | None = None, seed: int = 0, in_confirm: np.ndarray | None = None) -> Discovery:
    """Run the whole protocol on reduced features ``z`` (N, k) and labels; see the module docstring.

    ``in_confirm`` is the split (``split_halves(y_true, seed)`` when not given).
    """
    from threadpoolctl import threadpool_limits

    # the EM multiplies thin matrices (N x k by k x K): one BLAS thread is 20x faster than a pool that
    # wakes for every product on a busy machine (measured: 0.9 vs 17 ms for 5,000 x 26 by 26 x 20)
    with threadpool_limits(1, user_api="blas"):
        return _discover(z, y_true, y_pred, params, n_classes, seed, in_confirm)


def _discover(z, y_true, y_pred, params, n_classes, seed, in_confirm) -> Discovery:
    n_classes = n_classes or int(max(y_true.max(), y_pred.max()) + 1)
    wrong = y_true != y_pred
    in_confirm = split_halves(y_true, seed) if in_confirm is None else in_confirm
    disc = np.flatnonzero(~in_confirm)
    fit = disc if len(disc) <= params.fit_rows else np.sort(
        np.random.default_rng(seed).choice(disc, params.fit_rows, replace=False))
    k = n_components(len(fit), params)
    mix = fit_mixture(z[fit], y_true[fit], wrong[fit], k, n_classes, params, seed)
    assignment, second = mix.assign(z, y_true, second=True)
    disc_mask = ~in_confirm
    groups = merge_weak(assignment[disc_mask], second[disc_mask], wrong[disc_mask], k, params)
    return Discovery(k, assignment, in_confirm, mix.means.astype(np.float32),
                     _confirm(groups, assignment, wrong, in_confirm, params))


HOMOGENEITY = 0.05  # parts merge only when a two-sided Fisher test cannot tell their error rates apart
MIN_ADJACENCY = 0.5  # components are neighbours when this share of the smaller's images has the other second


def merge_weak(first: np.ndarray, second: np.ndarray, wrong: np.ndarray, k: int,
               params: DiscoveryParams) -> list[tuple[tuple[int, ...], HalfStats]]:
    """The candidates of the discover half: weak components, neighbours merged while the union is more
    significant than either part (a subgroup the mixture cut in two becomes one slice again), ranked by
    their one-sided Fisher p-value; the best ``max_candidates`` with ``min_support`` images."""
    n = np.bincount(first, minlength=k)
    bad = np.bincount(first, weights=wrong, minlength=k).astype(int)
    near = np.zeros((k, k))
    np.add.at(near, (first, second), 1)
    near += near.T
    total, total_bad = len(first), int(wrong.sum())

    def alike(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        na, nb, ba, bb = n[list(a)].sum(), n[list(b)].sum(), bad[list(a)].sum(), bad[list(b)].sum()
        return fisher_exact([[ba, na - ba], [bb, nb - bb]]) >= HOMOGENEITY

    def stats(g: tuple[int, ...]) -> HalfStats:
        idx = list(g)
        return counts_stats(int(n[idx].sum()), int(n[idx].sum() - bad[idx].sum()), total, total - total_bad)

    groups = {(j,): stats((j,)) for j in range(k) if n[j]}
    groups = {g: s for g, s in groups.items() if s.gap.value > 0}
    while True:
        best = None
        keys = list(groups)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if near[np.ix_(a, b)].sum() < MIN_ADJACENCY * min(n[list(a)].sum(), n[list(b)].sum()):
                    continue
                if not alike(a, b):  # two different weak subgroups side by side stay two slices
                    continue
                u = tuple(sorted(a + b))
                s = stats(u)
                if s.p_value < min(groups[a].p_value, groups[b].p_value) and (best is None or s.p_value < best[3].p_value):
                    best = (a, b, u, s)
        if best is None:
            break
        a, b, u, s = best
        del groups[a], groups[b]
        groups[u] = s
    ranked = sorted(((g, s) for g, s in groups.items() if s.n >= params.min_support),
                    key=lambda gs: (gs[1].p_value, -gs[1].gap.value))
    return ranked[: params.max_candidates]


def _confirm(ranked, assignment, wrong, in_confirm, params) -> tuple[Candidate, ...]:
    confirm = {g: half_stats(np.isin(assignment, g), wrong, in_confirm) for g, _ in ranked}
    tested = [g for g, _ in ranked if confirm[g].n >= params.min_support]
    q = dict(zip(tested, benjamini_hochberg(np.array([confirm[g].p_value for g in tested])))) if tested else {}
    return tuple(Candidate(g, s, confirm[g] if g in q else None, q.get(g, math.nan),
                           bool(g in q and q[g] <= params.alpha and confirm[g].gap.low > 0))
                 for g, s in ranked)


def half_stats(inside: np.ndarray, wrong: np.ndarray, half: np.ndarray) -> HalfStats:
    """Accuracy inside vs outside a slice, within one half."""
    n_in, n_all = int((inside & half).sum()), int(half.sum())
    ok_in = n_in - int((wrong & inside & half).sum())
    return counts_stats(n_in, ok_in, n_all, n_all - int((wrong & half).sum()))


def counts_stats(n_in: int, ok_in: int, n_all: int, ok_all: int) -> HalfStats:
    """Accuracy inside vs outside from counts: Wilson intervals, Newcombe gap, one-sided Fisher p-value."""
    n_out, ok_out = n_all - n_in, ok_all - ok_in
    acc, rest = proportion_ci(ok_in, n_in), proportion_ci(ok_out, n_out)
    p = fisher_exact([[ok_in, n_in - ok_in], [ok_out, n_out - ok_out]], alternative="less") \
        if n_in and n_out else 1.0
    return HalfStats(n_in, ok_in, acc, rest, newcombe_difference(rest, acc), float(p))


def newcombe_difference(a: Estimate, b: Estimate) -> Estimate:
    """The interval of a - b for two independent proportions from their Wilson intervals
    (Newcombe 1998, method 10, the hybrid score interval)."""
    d = a.value - b.value
    if not all(math.isfinite(x) for x in (a.value, b.value, a.low, b.low)):
        return Estimate(d, math.nan, math.nan)
    return Estimate(d, d - math.hypot(a.value - a.low, b.high - b.value),
                    d + math.hypot(a.high - a.value, b.value - b.low))


@dataclass(frozen=True)
class Mixture:
    """A fitted mixture: weights, diagonal Gaussians over the features, label and error probabilities."""

    log_weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    variances: np.ndarray  # (K, d)
    log_p_label: np.ndarray  # (K, C)
    log_p_error: np.ndarray  # (K, 2): log P(right), log P(wrong)
    label_weight: float
    error_weight: float

    def log_likelihood(self, z: np.ndarray, y: np.ndarray, wrong: np.ndarray | None = None) -> np.ndarray:
        """(N, K) joint log-likelihood; the error term only when ``wrong`` is given."""
        prec = 1.0 / self.variances
        # sum_d (z - mu)^2 / var, expanded so it is three matrix products instead of an (N, K, d) array
        quad = (z * z) @ prec.T - 2.0 * z @ (self.means * prec).T + (self.means * self.means * prec).sum(1)
        ll = self.log_weights - 0.5 * (quad + np.log(2 * np.pi * self.variances).sum(1))
        ll = ll + self.label_weight * self.log_p_label[:, y].T
        if wrong is not None:
            ll = ll + self.error_weight * self.log_p_error[:, wrong.astype(int)].T
        return ll

    def assign(self, z: np.ndarray, y: np.ndarray, *, second: bool = False, chunk: int = 8192):
        """The most likely component of each image from its features and label (never its error); with
        ``second``, also the next most likely one (which components neighbour each other)."""
        # filled in place, int32 (component numbers): no list of chunks to join, 8 bytes a row, not 32
        firsts, seconds = np.zeros(len(z), np.int32), np.zeros(len(z), np.int32)
        for i in range(0, len(z), chunk):
            ll = self.log_likelihood(z[i : i + chunk], y[i : i + chunk])
            if ll.shape[1] > 1:
                top = np.argsort(-ll, axis=1)[:, :2]
                firsts[i : i + len(ll)], seconds[i : i + len(ll)] = top[:, 0], top[:, 1]
        return (firsts, seconds) if second else firsts


def fit_mixture(z: np.ndarray, y: np.ndarray, wrong: np.ndarray, k: int, n_classes: int,
                params: DiscoveryParams, seed: int) -> Mixture:
    """EM for the error-aware mixture, started from k-means++ on the features."""
    z = z.astype(np.float64)
    centres = kmeans_plusplus(z, k, seed)
    # the direct (N, k, d) differences only while they stay under 8 MB (10,000 x 20 x 32 took 51 MB at once)
    resp = np.eye(k)[(((z[:, None, :] - centres[None]) ** 2).sum(-1)).argmin(1)] if len(z) * k * z.shape[1] < 1e6 \
        else np.eye(k)[_nearest(z, centres)]
    mix, prev = None, -np.inf
    for _ in range(params.max_iter):
        mix = _m_step(z, y, wrong, resp, n_classes, params)
        ll = mix.log_likelihood(z, y, wrong)
        top = ll.max(1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(ll - top).sum(1))
        resp = np.exp(ll - norm[:, None])
        total = float(norm.mean())
        if total - prev < 1e-4 * abs(total):
            break
        prev = total
    return mix


def kmeans_plusplus(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` starting centres by greedy k-means++: scikit-learn's ``kmeans_plusplus(z, k, random_state=seed)``,
    step for step with the same random draws (tests/test_discovered_slices.py checks they pick the same rows), without
    importing scikit-learn and scipy (0.8 s, docs/ARCHITECTURE.md §12)."""
    rng = np.random.RandomState(seed)
    n = len(z)
    trials = 2 + int(np.log(k))
    norms = np.einsum("ij,ij->i", z, z)
    weights = np.ones(n, z.dtype)

    def squared_distances(rows: np.ndarray) -> np.ndarray:
        d = -2 * (z[rows] @ z.T)
        d += norms[rows][:, None]
        d += norms[None, :]
        return np.maximum(d, 0, out=d)

    chosen = [rng.choice(n, p=weights / weights.sum())]
    closest = squared_distances(np.array(chosen))
    potential = closest @ weights
    for _ in range(1, k):
        draws = rng.uniform(size=trials) * potential
        candidates = np.minimum(np.searchsorted(np.cumsum(weights * closest), draws), n - 1)
        d = np.minimum(closest, squared_distances(candidates))
        pots = d @ weights.reshape(-1, 1)
        best = int(np.argmin(pots))
        potential, closest = pots[best], d[best]
        chosen.append(candidates[best])
    return z[np.array(chosen)]


def _nearest(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(1)).argmin(1)


def _m_step(z, y, wrong, resp, n_classes, params) -> Mixture:
    nk = resp.sum(0) + 1e-10
    means = resp.T @ z / nk[:, None]
    variances = resp.T @ (z * z) / nk[:, None] - means**2 + _VAR_FLOOR
    labels = np.zeros((resp.shape[1], n_classes))
    np.add.at(labels.T, y, resp)  # per component, the responsibility mass of each true label
    errors = np.stack([resp[~wrong].sum(0), resp[wrong].sum(0)], axis=1)
    return Mixture(np.log(nk / nk.sum()), means, np.maximum(variances, _VAR_FLOOR),
                   np.log((labels + _SMOOTH) / (nk[:, None] + _SMOOTH * n_classes)),
                   np.log((errors + _SMOOTH) / (nk[:, None] + 2 * _SMOOTH)), params.label_weight, params.error_weight)
