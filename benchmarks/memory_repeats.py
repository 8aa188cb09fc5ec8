"""Peak memory of a whole audit when the data repeats itself (issue 22 §2), against a 1,000-image run.

Each case is ``python -m audit run --no-latency --no-pdf`` (every other default check, every output but the PDF)
in a child process. Its peak RSS is the audit process's own peak plus its side process's (cleanlab runs there,
``audit.side_process``), for the whole run: an upper bound on what the two held at once, which is also recorded
(``common.wait_with_peaks``). The goal: at most 1.3 x the 1,000-image run's peak plus 100 bytes per image.

* ``1k``: 1,000 Fashion-MNIST test images (100 per class);
* ``repeated``: 500,000 images, the 10,000 test images each hard-linked 50 times (12.25 M exact pairs);
* ``one image``: 100,000 images, one of them 10,000 times (50 M exact pairs), the rest the test images
  repeated 9 times;
* ``distinct``: 500,000 synthetic images of distinct content (``datasets.synthetic``).

    .venv/bin/python benchmarks/memory_repeats.py [--work /tmp/audit-memory] [--cases 1k,repeated,one,distinct]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import datasets

CASES = ("1k", "repeated", "one", "distinct")


def folders(work: Path, cases: list[str], size: int) -> dict[str, Path]:
    test = common.fashion_mnist_test()
    make = {"1k": lambda: datasets.subset(test, 1000, work / "1k"),
            "repeated": lambda: datasets.repeated(test, size // 10_000, work / f"repeated-{size}"),
            "one": lambda: datasets.one_repeated(test, size // 5, 10_000, work / f"one-{size // 5}"),
            "distinct": lambda: datasets.synthetic(size, work / f"synthetic-{size}")}
    return {c: make[c]() for c in cases}


FLAGS = ("--no-latency", "--no-pdf")


def run_child(model: Path, data: Path, out: Path, flags: tuple[str, ...] = FLAGS) -> dict:
    """Wall seconds, peak RSS (MiB) and images of one audit in a child process."""
    env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
    cmd = [sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(data), "--out", str(out),
           "--no-progress", *flags]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(cmd, env=env, cwd=common.ROOT, stdout=log, stderr=subprocess.STDOUT)
        peaks = common.wait_with_peaks(p)
        log.seek(0)
        text = log.read().decode(errors="replace")
    if p.returncode not in (0, 1, 4):
        raise SystemExit(f"audit failed ({p.returncode}) on {data}:\n{text[-3000:]}")
    verdict = json.loads((out / "verdict.json").read_text())
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": peaks["sum"], "peaks_mib": peaks,
            "images": verdict["data"]["processed"], "load_avg": round(os.getloadavg()[0], 1),
            "stages": verdict["run"]["stages"]}  # each stage's seconds and the peak so far (outputs not included)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audit-memory")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--size", type=int, default=500_000, help="images of the repeated and distinct cases")
    ap.add_argument("--name", default="memory_repeats")
    a = ap.parse_args()
    cases = a.cases.split(",")
    model = common.fashion_mnist_model()
    data = folders(a.work, sorted(set(cases) | {"1k"}, key=CASES.index), a.size)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="memory-out-") as tmp:
        for case in data:
            rows[case] = run_child(model, data[case], Path(tmp) / case)
            print(case, rows[case], flush=True)
    base = rows["1k"]["peak_rss_mib"]
    md = ["# Peak memory of a whole audit on repeated and distinct images", "",
          "| case | images | peak RSS (MiB): audit + side process | at once (sampled) | goal: 1.3 × 1k + 100 B/image "
          "(MiB) | met | seconds | load avg |",
          "|---|---:|---:|---:|---:|---|---:|---:|"]
    for case, r in rows.items():
        goal = 1.3 * base + 100 * r["images"] / 2 ** 20
        r["goal_mib"], r["met"] = round(goal, 1), r["peak_rss_mib"] <= goal
        pk = r["peaks_mib"]
        md.append(f"| {case} | {r['images']:,} | {pk['sum']:.0f} = {pk['audit']:.0f} + {pk['side']:.0f} "
                  f"| {pk['at_once']:.0f} | {goal:.0f} | {'yes' if r['met'] else 'NO'} "
                  f"| {r['seconds']:.0f} | {r['load_avg']:.1f} |")
    m = common.machine()
    md += ["", "Each case one child process: `python -m audit run --no-latency --no-pdf` (every other default check "
           "and output). Peak RSS: each process's own high-water mark (VmHWM, and `wait4`), the audit's and its "
           "side process's added; \"at once\" is the largest sum of their current RSS in samples 50 ms apart. "
           f"Load average (1 min) as each case ended; other jobs shared the {m['cores']} cores.", "",
           "Command: `.venv/bin/python benchmarks/memory_repeats.py "
           + " ".join(_without_work(sys.argv[1:])) + f"` ({common.today()})"]
    common.write(a.name, {"cases": rows, "machine": m}, md)


def _without_work(args: list[str]) -> list[str]:
    """The command line less ``--work DIR`` (where the images are cached: a path of this machine)."""
    out, skip = [], False
    for x in args:
        if skip or x.startswith("--work="):
            skip = False
            continue
        if x == "--work":
            skip = True
            continue
        out.append(x)
    return out


if __name__ == "__main__":
    main()
