"""A million-image local audit end to end (issue 22 §4): time, images/s and peak RSS of the whole run.

``python -m audit run`` with every default (the latency check's server and the PDF included) in a child
process, timed from start to exit; peak RSS is the audit process's own plus those of the processes it starts
(``common.wait_with_peaks``), checks and rendering included.
The data: ``--distinct`` synthetic 28 x 28 PNGs of distinct content (``datasets.synthetic``), each hard-linked
``--copies`` times under new names (1,000,000 = 500,000 x 2 by default: every row then has one exact copy, so
the duplicate clusters and the intervals that count them are exercised at full size). Above ``csv_rows`` the
run writes ``predictions.parquet`` only.

    .venv/bin/python benchmarks/million.py [--distinct 500000 --copies 2] [--work /tmp/audit-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import common
import datasets
from memory_repeats import run_child


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audit-memory")
    ap.add_argument("--distinct", type=int, default=500_000)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--flags", default="", help="extra flags for the audit, e.g. --no-pdf")
    ap.add_argument("--name", default="million")
    a = ap.parse_args()
    model = common.fashion_mnist_model()
    synthetic = datasets.synthetic(a.distinct, a.work / f"synthetic-{a.distinct}")
    data = synthetic if a.copies == 1 else datasets.repeated(synthetic, a.copies,
                                                             a.work / f"synthetic-{a.distinct}x{a.copies}")
    with tempfile.TemporaryDirectory(prefix="million-out-") as tmp:
        r = run_child(model, data, Path(tmp) / "out", tuple(a.flags.split()))
        out = Path(tmp) / "out"
        r["outputs"] = sorted(p.name for p in out.iterdir())
        r["predictions_parquet_mib"] = round((out / "predictions.parquet").stat().st_size / 2**20, 1)
    r["images_per_s"] = round(r["images"] / r["seconds"], 1)
    print(json.dumps({k: v for k, v in r.items() if k != "stages"}), flush=True)
    m = common.machine()
    md = ["# A million-image audit, end to end", "",
          "| images | distinct | seconds | images/s | peak RSS (MiB): audit + the processes it starts | at once (sampled) "
          "| load avg at the end |", "|---:|---:|---:|---:|---:|---:|---:|",
          f"| {r['images']:,} | {a.distinct:,} | {r['seconds']:.0f} | {r['images_per_s']:,.0f} "
          f"| {r['peak_rss_mib']:.0f} = {r['peaks_mib']['audit']:.0f} + {r['peaks_mib']['side']:.0f} "
          f"| {r['peaks_mib']['at_once']:.0f} | {r['load_avg']:.1f} |", "", "| stage | seconds | peak RSS so far (MiB) |", "|---|---:|---:|"]
    md += [f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_rss_mib']:.0f} |" for s in r["stages"]]
    md += ["", f"One child process, `python -m audit run {a.flags}` with every other default (outputs: "
           f"{', '.join(r['outputs'])}; predictions.parquet {r['predictions_parquet_mib']} MiB); the stages are the "
           "run's own (verdict.json `run.stages`), the outputs come after them. Peak RSS: the audit's own peak "
           "plus those of the processes it starts (the PDF worker, the latency check's server; cleanlab runs in the "
           "audit's process above 250,000 images), each its own high-water mark; \"at once\" is the largest sum "
           "of their current RSS in samples 50 ms apart. "
           f"{m['cores']} cores, shared with other jobs: load average {r['load_avg']:.1f} at the end.", "",
           f"Command: `.venv/bin/python benchmarks/million.py {' '.join(sys.argv[1:])}` ({m['date']})"]
    common.write(a.name, {"run": r, "distinct": a.distinct, "copies": a.copies, "machine": m}, md)


if __name__ == "__main__":
    main()
