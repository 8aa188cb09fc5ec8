"""What a reference set costs: its pass through the engine, and the shift check, at two sizes.

Each size is ``TEST:REFERENCE`` images, drawn (seeded) from the quick start's Fashion-MNIST images (70,000
distinct images; hard-linked copies beyond). One child process per run alternates: A audits the test set
alone, B the same with ``--reference``. Each reports the timings of its stages and its peak RSS; the
latency, invariance, label-error and discovered-slices checks are off in both, so the difference is the
reference pass and the shift check.

    .venv/bin/python benchmarks/shift_cost.py [--sizes 10000:50000,100000:500000] [--rounds 2]
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
import json, resource, sys
from pathlib import Path
from audit.config import load_config
from audit.pipeline import run_audit
over = {"latency.enabled": False, "invariance.enabled": False, "label_errors.enabled": False,
        "discovered_slices.enabled": False, "n_boot": 200}
if sys.argv[3]:
    over["shift.reference"] = sys.argv[3]
r = run_audit(Path(sys.argv[1]), Path(sys.argv[2]), load_config(None, over), progress=False)
out = dict(r.timings)
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if r.shift is not None:
    out["p_value"] = r.shift.p_value
print(json.dumps(out))
"""


def child(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True,
                          cwd=common.ROOT, env={"PYTHONPATH": str(common.ROOT), "HF_HUB_OFFLINE": "1",
                                                "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000:50000,100000:500000")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model = common.fashion_mnist_model()
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",") if s]
    t0 = time.perf_counter()
    result: dict = {"sizes": {}, "machine": common.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = memory_vs_n.distinct_images(Path(tmp) / "all", max(1, -(-max(sum(s) for s in sizes) // 70_000)))
        for n_test, n_ref in sizes:
            test, ref = memory_vs_n.manifest(folder, n_test), memory_vs_n.manifest(folder, n_ref)
            runs = {"alone": [], "with_reference": []}
            for _ in range(args.rounds):
                runs["alone"].append(child(str(model), str(test), ""))
                runs["with_reference"].append(child(str(model), str(test), str(ref)))
            b = runs["with_reference"]
            row = {"runs": runs, "inference_s": statistics.median(r["inference"] for r in runs["alone"]),
                   "reference_pass_s": statistics.median(r["reference"] for r in b),
                   "shift_check_s": statistics.median(r["shift"] for r in b),
                   "peak_rss_alone_mib": statistics.median(r["peak_rss_mib"] for r in runs["alone"]),
                   "peak_rss_with_mib": statistics.median(r["peak_rss_mib"] for r in b)}
            result["sizes"][f"{n_test}:{n_ref}"] = row
            print(n_test, n_ref, {k: round(v, 2) for k, v in row.items() if k != "runs"}, flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    md = ["# Shift: what a reference set costs", "",
          f"`.venv/bin/python benchmarks/shift_cost.py --sizes {args.sizes} --rounds {args.rounds}`; "
          f"{result['seconds']} s, load at the end {result['machine']['load_average_1min_at_end']}. Medians of "
          f"{args.rounds} alternating rounds; the Fashion-MNIST baseline model, images drawn from its 70,000.", "",
          "| test images | reference images | test inference | reference pass | shift check | "
          "peak RSS alone / with reference |", "|---:|---:|---:|---:|---:|---:|"]
    for key, r in result["sizes"].items():
        n_test, n_ref = (int(x) for x in key.split(":"))
        md.append(f"| {n_test:,} | {n_ref:,} | {r['inference_s']:.1f} s | {r['reference_pass_s']:.1f} s | "
                  f"{r['shift_check_s']:.1f} s | {r['peak_rss_alone_mib']:.0f} / {r['peak_rss_with_mib']:.0f} MiB |")
    common.write("shift_cost", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
