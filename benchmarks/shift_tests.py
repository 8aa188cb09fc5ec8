"""Which two-sample test for the shift check: power on planted shifts, the null rate, and the cost.

Synthetic features (32 dimensions, standard normal reference) against a test sample with one kind of shift:
none (the null), a mean shift along one axis, a wider spread, or a new cluster holding 5% or 10% of the test
images. Candidates: a logistic-regression domain classifier and a k-nearest-neighbour one (cross-fitted AUC,
permutation p-value), kernel MMD with one Gaussian kernel (exact, and with random Fourier features), the
shift check's own tests (MMD over a sum of kernels at 0.25-2x the median distance; the novelty excess test)
and their Bonferroni combination, which the check reports.

    .venv/bin/python benchmarks/shift_tests.py [--n 500] [--seeds 40]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import common

from audit import shift  # noqa: E402

DIM = 32
KINDS = ("null", "mean", "scale", "cluster 10%", "cluster 5%")


def sample(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = rng.normal(size=(n, DIM)), rng.normal(size=(n, DIM))
    if kind == "mean":
        b[:, 0] += 0.28
    elif kind == "scale":
        b *= 1.15
    elif kind.startswith("cluster"):
        k = int(float(kind.split()[1].rstrip("%")) / 100 * n)
        b[:k] = rng.normal(size=(k, DIM)) * 0.5 + rng.normal(size=DIM) * 6 / np.sqrt(DIM)
    return a, b


def _auc_p(scores: np.ndarray, y: np.ndarray, folds: np.ndarray, rng, perms: int = 200) -> float:
    """Permutation p-value of the mean held-out AUC, labels permuted within each fold."""
    from scipy.stats import rankdata

    def auc(lab):
        out = []
        for f in (0, 1):
            m = folds == f
            r, lf = rankdata(scores[m]), lab[m]
            n1, n0 = lf.sum(), len(lf) - lf.sum()
            out.append((r[lf == 1].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))
        return np.mean(out)

    def permuted():
        lab = y.copy()
        for f in (0, 1):
            lab[folds == f] = rng.permutation(y[folds == f])
        return lab

    observed = auc(y)
    return (1 + sum(auc(permuted()) >= observed for _ in range(perms))) / (1 + perms)


def classifier_test(a, b, seed, make) -> float:
    rng = np.random.default_rng(seed)
    x, y = np.vstack([a, b]), np.r_[np.zeros(len(a)), np.ones(len(b))].astype(int)
    folds = rng.permutation(np.arange(len(x)) % 2)
    scores = np.empty(len(x))
    for f in (0, 1):
        model = make().fit(x[folds != f], y[folds != f])
        scores[folds == f] = model.predict_proba(x[folds == f])[:, 1] + 1e-9 * rng.random((folds == f).sum())
    return _auc_p(scores, y, folds, rng)


def mmd_single(a, b, seed, exact: bool) -> float:
    rng = np.random.default_rng(seed)
    x = np.vstack([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    bw = shift.median_bandwidth(x, rng)
    if exact:
        d2 = (x * x).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * x @ x.T
        k = np.exp(-d2 / (2 * bw * bw))

        def stat(lab):
            p, q = lab == 1, lab == 0
            return k[np.ix_(p, p)].mean() + k[np.ix_(q, q)].mean() - 2 * k[np.ix_(p, q)].mean()
    else:
        w, c = rng.normal(size=(DIM, 512)) / bw, rng.uniform(0, 2 * np.pi, 512)
        phi = np.cos(x @ w + c)

        def stat(lab):
            return float(((phi[lab == 1].mean(0) - phi[lab == 0].mean(0)) ** 2).sum())
    observed = stat(y)
    return (1 + sum(stat(rng.permutation(y)) >= observed for _ in range(200))) / 201


def ours(a, b, seed) -> tuple[float, float, float]:
    t = shift.mmd_test(a, b, permutations=200, seed=seed)
    e = shift.novelty_excess(shift.novelty(a, b, seed=seed))
    return t.p_value, e.p_value, min(1.0, 2 * min(t.p_value, e.p_value))


def main() -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=40)
    args = ap.parse_args()
    tests = {
        "logistic domain classifier": lambda a, b, s: classifier_test(a, b, s, lambda: LogisticRegression(max_iter=300)),
        "10-NN domain classifier": lambda a, b, s: classifier_test(a, b, s, lambda: KNeighborsClassifier(10)),
        "MMD, one kernel, exact": lambda a, b, s: mmd_single(a, b, s, True),
        "MMD, one kernel, Fourier features": lambda a, b, s: mmd_single(a, b, s, False),
        "MMD, kernel sum (ours)": lambda a, b, s: ours(a, b, s)[0],
        "novelty excess (ours)": lambda a, b, s: ours(a, b, s)[1],
        "combined (the check)": lambda a, b, s: ours(a, b, s)[2],
    }
    rows, t0 = {}, time.perf_counter()
    for name, test in tests.items():
        rows[name] = {}
        for kind in KINDS:
            start = time.perf_counter()
            hits = [test(*sample(kind, args.n, np.random.default_rng(s)), s) < 0.05 for s in range(args.seeds)]
            rows[name][kind] = {"rejected": round(float(np.mean(hits)), 3),
                                "seconds_per_test": round((time.perf_counter() - start) / args.seeds, 3)}
        print(name, {k: v["rejected"] for k, v in rows[name].items()}, flush=True)
    result = {"n_per_side": args.n, "seeds": args.seeds, "dim": DIM, "tests": rows, "machine": common.machine(),
              "seconds": round(time.perf_counter() - t0, 1)}
    md = ["# Shift: which two-sample test", "",
          f"`.venv/bin/python benchmarks/shift_tests.py --n {args.n} --seeds {args.seeds}` "
          f"({result['seconds']} s, load {result['machine']['load_average_1min_at_end']}). Share of "
          f"{args.seeds} seeds rejecting at 0.05, {args.n} images per side, {DIM} dimensions (null: should be about "
          "0.05; the others: power). Seconds per test in the last column (mean over kinds).", "",
          "| test | " + " | ".join(KINDS) + " | s per test |", "|---|" + "---:|" * (len(KINDS) + 1)]
    for name, r in rows.items():
        cost = np.mean([v["seconds_per_test"] for v in r.values()])
        md.append(f"| {name} | " + " | ".join(f"{r[k]['rejected']:.2f}" for k in KINDS) + f" | {cost:.2f} |")
    common.write("shift_tests", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
