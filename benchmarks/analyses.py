"""How much time the analyses add (issue 4): slices, fairness, invariance, integrity.

* Slices and fairness over 10,000 predictions (10 classes, 4 metadata columns, 6 image
  properties, 1,000 bootstrap resamples), next to the metrics bootstrap the audit already runs.
* Invariance on 1,000 images: one plain pass of the batched inference path (the floor any
  re-run must pay) next to the default transform set, reported per re-run.
* Integrity: hashing 1,000 image files, and the near-duplicate pair search of 10,000 test
  hashes against 60,000 training hashes (the Fashion-MNIST sizes).

Self-contained: builds its data with ``tests/builders.py`` in a temporary folder. Writes
``benchmarks/results/analyses.json`` and ``.md``.

    .venv/bin/python benchmarks/analyses.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import builders  # noqa: E402

from audit.checks import fairness, integrity, invariance, metrics, slices  # noqa: E402
from audit.checks.fairness import FairnessConfig  # noqa: E402
from audit.checks.integrity import IntegrityConfig  # noqa: E402
from audit.checks.slices import SlicesConfig  # noqa: E402
from audit.duplicates import near_pairs  # noqa: E402


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def table_predictions(n: int = 10_000, c: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    attrs = {"site": rng.choice(list("abcdefgh"), n).astype(object), "camera": rng.choice(list("xyz"), n).astype(object),
             "sex": rng.choice(["f", "m"], n).astype(object), "age": rng.choice(["<30", "30-60", ">60"], n).astype(object)}
    props = {k: rng.random(n) for k in ("brightness", "contrast", "sharpness", "ink_coverage")}
    props["aspect_ratio"] = np.ones(n)
    props["resolution"] = np.full(n, 784.0)
    return builders.predictions(n, c=c, seed=seed, error=0.1, attributes=attrs, properties=props)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="analyses", help="results file name (a second run keeps the first)")
    name = ap.parse_args().name
    res: dict = {"machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0)),
                             "platform": platform.platform()}}
    p = table_predictions()
    t_metrics, _ = timed(lambda: metrics.classification_metrics(p, n_boot=1000), 2)
    t_slices, sl = timed(lambda: slices.find_slices(p, SlicesConfig(), n_boot=1000), 2)
    t_fair, _ = timed(lambda: fairness.fairness(p, FairnessConfig(sensitive=("sex", "age")), n_boot=1000), 2)
    res["table_10k"] = {"n": len(p), "classes": 10, "n_boot": 1000, "metrics_s": t_metrics, "slices_s": t_slices,
                        "slices_tested": sl.n_tests, "fairness_2_attributes_10_classes_s": t_fair}
    # fairness grows with the cells and with fairlearn's per-(class, group) calls, not with the images
    fair = FairnessConfig(sensitive=("sex", "age"))
    res["fairness_100k_10_classes_s"], _ = timed(lambda: fairness.fairness(table_predictions(100_000), fair), 1)
    res["fairness_10k_1000_classes_s"], _ = timed(lambda: fairness.fairness(table_predictions(c=1000), fair), 1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = builders.sliced_folder(tmp / "data", 334, weak=None)
        # every arm runs all its images (no early stop): the row is the cost of a whole re-run
        ctx = builders.context(builders.colour_model(tmp / "m.onnx", size=28), root, {"invariance.early_stop": False})
        samples = ctx.source.samples[:1000]
        t_plain, _ = timed(lambda: ctx.rerun(samples), 2)
        t_inv, inv = timed(lambda: invariance.invariance(ctx))
        runs = len(inv.runs)
        res["invariance_1k"] = {"images": inv.n_images, "plain_inference_s": t_plain, "transforms": list(inv.transforms),
                                "severities": list(ctx.config.invariance.severities), "reruns": runs,
                                "invariance_s": t_inv, "per_rerun_s": t_inv / runs,
                                "per_rerun_vs_plain": t_inv / runs / t_plain}
        t_hash, _ = timed(lambda: integrity.hash_source(ctx.source))
        res["integrity"] = {"hash_1k_files_s": t_hash}

    rng = np.random.default_rng(0)
    test_h = rng.integers(0, 2**63, 10_000, dtype=np.uint64)
    train_h = rng.integers(0, 2**63, 60_000, dtype=np.uint64)
    t_pairs, _ = timed(lambda: near_pairs(test_h, train_h, IntegrityConfig().hash_distance))
    res["integrity"]["pair_search_10k_x_60k_s"] = t_pairs

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res, name)
    (out / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def markdown(res: dict, name: str) -> list[str]:
    t, inv, ig = res["table_10k"], res["invariance_1k"], res["integrity"]
    return [
        "# Analyses: added time",
        "",
        f"{res['machine']['cpus']} CPU(s), Python {res['machine']['python']}. Best of 2 where repeated. "
        f"Command: `.venv/bin/python benchmarks/analyses.py{'' if name == 'analyses' else ' --name ' + name}` "
        f"({dt.date.today().isoformat()}, load average {os.getloadavg()[0]:.1f}).",
        "",
        "| analysis | size | seconds |",
        "|---|---|---|",
        f"| metrics + bootstrap (reference, already in every audit) | 10,000 predictions, 10 classes, 1,000 resamples | {t['metrics_s']:.2f} |",
        f"| slices ({t['slices_tested']} slices, BH) | same | {t['slices_s']:.2f} |",
        f"| fairness (2 attributes x 10 classes, MetricFrame on counts + bootstrap) | same | {t['fairness_2_attributes_10_classes_s']:.2f} |",
        f"| fairness, the same 2 attributes x 10 classes (one run) | 100,000 predictions | "
        f"{res['fairness_100k_10_classes_s']:.2f} |",
        f"| fairness, 2 attributes x 1,000 classes (one run) | 10,000 predictions | "
        f"{res['fairness_10k_1000_classes_s']:.2f} |",
        f"| plain batched inference (floor of any re-run) | {inv['images']} images | {inv['plain_inference_s']:.2f} |",
        f"| invariance: {inv['reruns']} re-runs ({', '.join(inv['transforms'])}; severities {inv['severities']}) | same | "
        f"{inv['invariance_s']:.2f} ({inv['per_rerun_s']:.2f} per re-run = {inv['per_rerun_vs_plain']:.2f}x plain) |",
        f"| integrity: SHA-256 + pHash of training files | 1,000 files | {ig['hash_1k_files_s']:.2f} |",
        f"| integrity: near-duplicate pair search | 10,000 x 60,000 hashes | {ig['pair_search_10k_x_60k_s']:.2f} |",
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
