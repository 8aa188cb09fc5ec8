"""What the label-error check costs at 100k images (issue 11), next to calling cleanlab bare.

For 100,000 rows x 10 and x 1,000 classes (and 1,000,000 x 10), synthetic out-of-sample
probabilities with 5% of the labels flipped:

* ``find_label_errors`` on each path (confident learning, cleanlab's batched path) against the
  bare cleanlab call it wraps (the floor), wall time side by side;
* peak memory the call allocates on top of its inputs (``tracemalloc``, which sees numpy's
  buffers), in a second, traced run;
* recall and precision of the flipped labels, to show what the batched path gives up.

Writes ``benchmarks/results/label_errors.json`` and ``.md``.

    .venv/bin/python benchmarks/label_errors.py
"""

from __future__ import annotations

import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from audit.checks.label_errors import find_label_errors

OUT = Path(__file__).resolve().parent / "results"
SIZES = ((100_000, 10), (100_000, 1_000), (1_000_000, 10))
FLIP = 0.05


def synthetic(n: int, c: int, seed: int = 0, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities of a ~90%-accurate model, built in chunks (no N x C float64 temporaries)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    proba = np.empty((n, c), np.float32)
    for s in range(0, n, chunk):
        logits = rng.normal(size=(min(chunk, n - s), c)).astype(np.float32)
        logits[np.arange(len(logits)), y[s:s + chunk]] += 4.0
        np.exp(logits - logits.max(axis=1, keepdims=True), out=logits)
        proba[s:s + chunk] = logits / logits.sum(axis=1, keepdims=True)
    flipped = np.flatnonzero(rng.random(n) < FLIP)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, c, len(flipped))) % c
    return noisy, proba, flipped


def bare(method: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    if method == "confident_learning":
        from cleanlab.filter import find_label_issues

        return find_label_issues(y, p, filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence",
                                 n_jobs=1)
    from cleanlab.experimental.label_issues_batched import find_label_issues_batched

    return find_label_issues_batched(y, p, batch_size=10_000, n_jobs=1, verbose=False)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def traced_peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def side_by_side(ours, floor, repeat: int = 3) -> dict:
    """Best of ``repeat`` alternating calls (so both see the same machine load), then traced peaks."""
    times = np.array([[timed(ours), timed(floor)] for _ in range(repeat)])
    t_ours, t_floor = times.min(axis=0)
    return {"ours_s": float(t_ours), "cleanlab_s": float(t_floor), "ratio": float(t_ours / t_floor),
            "ours_peak_mb": traced_peak_mb(ours), "cleanlab_peak_mb": traced_peak_mb(floor)}


def main() -> int:
    y, p, _ = synthetic(2_000, 10)
    for method in ("confident_learning", "batched"):  # imports and first-call set-up out of the timings
        find_label_errors(y, p, method=method)
        bare(method, y, p)
    rows = []
    for n, c in SIZES:
        y, p, flipped = synthetic(n, c)
        for method in ("confident_learning", "batched"):
            res = find_label_errors(y, p, method=method)
            found = np.array([i.index for i in res.issues])
            rows.append({
                "n": n, "classes": c, "method": method, "input_mb": p.nbytes / 2**20,
                **side_by_side(lambda: find_label_errors(y, p, method=method), lambda: bare(method, y, p)),
                "flagged": res.n_flagged, "recall": float(np.isin(flipped, found).mean()),
                "precision": float(np.isin(found, flipped).mean()),
            })
            print(rows[-1], flush=True)
    res = {"machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0)),
                       "platform": platform.platform(), "load_1min_at_end": os.getloadavg()[0]},
           "flip_rate": FLIP, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "label_errors.json").write_text(json.dumps(res, indent=2) + "\n")
    (OUT / "label_errors.md").write_text(markdown(res))
    return 0


def markdown(res: dict) -> str:
    lines = [
        "# Label errors: cost at scale", "",
        f"Synthetic out-of-sample probabilities (float32), {res['flip_rate']:.0%} of labels flipped; "
        f"{res['machine']['cpus']} CPUs (load {res['machine']['load_1min_at_end']:.1f} at the end: a shared machine, so "
        f"times are best of 3 alternating calls), Python {res['machine']['python']}. Peak = memory the call allocates on "
        "top of its inputs (tracemalloc). `ours` is `find_label_errors`, `cleanlab` the bare call it wraps.", "",
        "| N | classes | method | input MB | ours s | cleanlab s | ratio | ours peak MB | cleanlab peak MB "
        "| flagged | recall | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['n']:,} | {r['classes']:,} | {r['method']} | {r['input_mb']:.0f} | {r['ours_s']:.2f} | "
                     f"{r['cleanlab_s']:.2f} | {r['ratio']:.2f} | {r['ours_peak_mb']:.0f} | "
                     f"{r['cleanlab_peak_mb']:.0f} | {r['flagged']:,} | {r['recall']:.3f} | {r['precision']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
