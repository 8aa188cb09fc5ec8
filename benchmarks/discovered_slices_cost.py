"""What the discovered-slices check adds to an audit: the features in the inference pass, and the check itself.

For each size, child processes alternate (A, B, A, B, ...): A runs the inference pass without features,
B runs it with features (the extra graph output streamed to disk) and then the check (PCA on a bounded
sample, the mixture, the confirm half, the descriptions). Each child reports its seconds and its peak RSS.
The images are the quick start's Fashion-MNIST model and images (distinct images up to 70,000, hard-linked
copies beyond, listed in a CSV manifest). A last child runs the check alone on 1,000,000 synthetic feature
rows (128 values, ten classes) to show that its memory stays bounded.

    .venv/bin/python benchmarks/discovered_slices_cost.py [--sizes 10000,100000] [--rounds 3] [--synthetic 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import memory_vs_n

CHILD = """
import json, resource, sys, time
from pathlib import Path
from dataclasses import replace
from audit.config import load_config
from audit.pipeline import infer, open_context
features = sys.argv[3] == "1"
import scipy.stats, sklearn.decomposition  # loaded by a default audit anyway (label errors, fairness): not counted
config = load_config(None, {"latency.enabled": False, "discovered_slices.enabled": features})
ctx = open_context(Path(sys.argv[1]), Path(sys.argv[2]), config, progress=False)
t0 = time.perf_counter()
ctx, _ = infer(ctx, features=features)
out = {"inference_s": time.perf_counter() - t0}
if features:
    from audit.checks import discovered_slices
    t0 = time.perf_counter()
    res = discovered_slices.run(ctx)
    out.update(check_s=time.perf_counter() - t0, confirmed=len(res.confirmed), dims=ctx.predictions.features.dim)
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

SYNTHETIC = """
import json, resource, sys, time
from types import SimpleNamespace
import numpy as np
from audit.config import load_config
from audit.features import FeatureStore
from audit.predictions import Predictions
from audit.checks import discovered_slices
n, d, c = int(sys.argv[1]), 128, 10
rng = np.random.default_rng(0)
centres = rng.normal(0, 3, (c, d)).astype(np.float32)
store, ys = FeatureStore(d), []
for lo in range(0, n, 65536):
    y = rng.integers(0, c, min(65536, n - lo))
    store.append(centres[y] + rng.normal(0, 1, (len(y), d)).astype(np.float32))
    ys.append(y)
y = np.concatenate(ys)
wrong = rng.random(n) < 0.1
proba = np.full((n, c), 0.01, np.float32)
proba[np.arange(n), np.where(wrong, (y + 1) % c, y)] = 0.91
props = {k: rng.random(n) for k in ("brightness", "contrast", "sharpness")}
preds = Predictions(tuple(map(str, range(c))), tuple(f"{i}.png" for i in range(n)), y, proba, {}, props,
                    features=store)
ctx = SimpleNamespace(config=load_config(None, {}), predictions=preds, classifier=None)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
res = discovered_slices.run(ctx)
print(json.dumps({"check_s": time.perf_counter() - t0, "rss_before_mib": base, "confirmed": len(res.confirmed),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          cwd=common.ROOT, env={"PYTHONPATH": str(common.ROOT), "HF_HUB_OFFLINE": "1",
                                                "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    args = ap.parse_args()
    model = common.fashion_mnist_model()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    t0 = time.perf_counter()
    result: dict = {"sizes": {}, "machine": common.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = memory_vs_n.distinct_images(Path(tmp) / "all", max(1, -(-max(sizes) // 70_000)))
        for n in sizes:
            source = memory_vs_n.manifest(folder, n)
            runs = {"without": [], "with": []}
            for _ in range(args.rounds):
                runs["without"].append(child(CHILD, str(model), str(source), "0"))
                runs["with"].append(child(CHILD, str(model), str(source), "1"))
            a, b = runs["without"], runs["with"]
            added = [(y["inference_s"] - x["inference_s"] + y["check_s"]) / x["inference_s"] for x, y in zip(a, b)]
            result["sizes"][str(n)] = {
                "runs": runs, "inference_without_s": median(a, "inference_s"),
                "inference_with_s": median(b, "inference_s"), "check_s": median(b, "check_s"),
                "added_share_of_inference": {"median": round(statistics.median(added), 3),
                                             "min": round(min(added), 3), "max": round(max(added), 3)},
                "peak_rss_without_mib": median(a, "peak_rss_mib"), "peak_rss_with_mib": median(b, "peak_rss_mib")}
            print(n, result["sizes"][str(n)]["added_share_of_inference"], flush=True)
    if args.synthetic:
        result["synthetic"] = {"rows": args.synthetic, **child(SYNTHETIC, str(args.synthetic))}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    md = ["# Discovered slices: what they add to an audit", "",
          f"`.venv/bin/python benchmarks/discovered_slices_cost.py --sizes {args.sizes} --rounds {args.rounds} "
          f"--synthetic {args.synthetic}`; {result['seconds']} s, load at the end "
          f"{result['machine']['load_average_1min_at_end']}. Median of {args.rounds} alternating rounds (range "
          "of the per-round share in brackets).", "",
          "| images | inference without features | with features | the check | added, share of inference | "
          "peak RSS without / with |", "|---:|---:|---:|---:|---:|---:|"]
    for n, r in result["sizes"].items():
        s = r["added_share_of_inference"]
        md.append(f"| {int(n):,} | {r['inference_without_s']:.2f} s | {r['inference_with_s']:.2f} s | "
                  f"{r['check_s']:.2f} s | {s['median']:.1%} [{s['min']:.1%}, {s['max']:.1%}] | "
                  f"{r['peak_rss_without_mib']:.0f} / {r['peak_rss_with_mib']:.0f} MiB |")
    if args.synthetic:
        s = result["synthetic"]
        md += ["", f"Check alone on {s['rows']:,} synthetic feature rows (128 values, float16 on disk): "
                   f"{s['check_s']:.1f} s, peak RSS {s['peak_rss_mib']:.0f} MiB ({s['rss_before_mib']:.0f} MiB "
                   f"before the check, holding the predictions table)."]
    common.write("discovered_slices_cost", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
