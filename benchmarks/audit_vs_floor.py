"""The whole audit, as a user runs it, vs the floor: at 10,000 images and at 100,000.

* Floor: ``python benchmarks/floor.py --repeat 1`` in a child process (Pillow decode on the main thread, the
  card's preprocessing, ONNX Runtime at batch 64 with the tool's session options), timed from start to exit
  like the audits: both sides pay interpreter start-up, imports and the model load (issue 22 §1). Its own
  loop time (session made, nothing imported) is recorded beside it as ``floor loop``.
* Minimal audit: ``python -m audit run --no-latency --no-invariance --no-pdf`` in a child process,
  timed from start to exit: interpreter start, imports, model load, scan, inference with
  properties and hashes, metrics, calibration, slices, integrity, the HTML report, verdict,
  junit, summary and ``predictions.csv``.
* Full default audit (at ``--full-at`` images): ``python -m audit run`` with every default,
  label invariance, the latency check's server and the PDF included.

The 100,000-image set is the 10,000 test images hard-linked ten times under new names into a
temporary folder (no bytes copied; the page cache holds one copy). Every image then has nine exact
duplicates, so the integrity check lists 450,000 duplicate pairs; ``--minimal-extra --no-integrity``
measures the rest of the audit without that search. Runs alternate in rounds.

    .venv/bin/python benchmarks/audit_vs_floor.py [--sizes 10000,100000 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import floor

MINIMAL = ("--no-latency", "--no-invariance", "--no-pdf")


def audit_cli(model: Path, data: Path, out: Path, flags: tuple[str, ...]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all threads) of one audit in a child process."""
    env = {**os.environ, "PYTHONPATH": str(common.ROOT), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(data), "--out", str(out),
           "--no-progress", *flags]
    c0, t0 = common.child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=common.ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, common.child_cpu() - c0
    if done.returncode not in (0, 1):
        raise SystemExit(f"audit failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, cpu


def floor_cli(model: Path, data: Path, loops: list[float]) -> tuple[float, float]:
    """Wall and CPU seconds of the floor in a child process, start to exit; its loop seconds go to ``loops``."""
    env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
    cmd = [sys.executable, str(common.HERE / "floor.py"), "--model", str(model), "--data", str(data), "--repeat", "1"]
    c0, t0 = common.child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=common.ROOT, capture_output=True, text=True, check=True)
    wall, cpu = time.perf_counter() - t0, common.child_cpu() - c0
    loops.append(float(done.stdout.split(" images in ")[1].split(" s")[0]))
    return wall, cpu


def measure(model: Path, data: Path, repeats: int, full: bool, tmp: Path, extra: tuple[str, ...] = ()) -> dict:
    loops: list[float] = []
    loads: list[float] = []
    runs = {"floor": lambda: floor_cli(model, data, loops),
            "minimal audit": lambda: audit_cli(model, data, tmp / "minimal", MINIMAL + extra)}
    if full:
        runs["full default audit"] = lambda: audit_cli(model, data, tmp / "full", ())
    pairs = common.alternate(runs, repeats, loads)
    wall = {k: [w for w, _ in v] for k, v in pairs.items()}
    cpu = {k: [c for _, c in v] for k, v in pairs.items()}
    return {"images": len(floor.image_files(data)), **{k: common.stats(v) for k, v in wall.items()},
            "floor loop": common.stats(loops), "load_avg_per_round": loads,
            "spread": {k: common.spread(v) for k, v in wall.items()},
            "cpu": {k: common.stats(v) for k, v in cpu.items()},
            "ratios": {k: common.ratios(v, wall["floor"]) for k, v in wall.items() if k != "floor"},
            "cpu_ratios": {k: common.ratios(v, cpu["floor"]) for k, v in cpu.items() if k != "floor"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--data", type=Path, help="the 10,000-image folder (default: the Fashion-MNIST test split)")
    ap.add_argument("--sizes", default="10000,100000", help="10000 (the folder) and/or 100000 (ten hard links each)")
    ap.add_argument("--full-at", type=int, default=10000, help="also run the full default audit at this size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--minimal-extra", default="", help="more flags for the minimal audit, e.g. --no-integrity")
    ap.add_argument("--name", default="audit_vs_floor", help="results file name")
    a = ap.parse_args()
    extra = tuple(a.minimal_extra.split())
    model, data = common.fashion_mnist_model(a.model), a.data or common.fashion_mnist_test()
    results = {}
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        tmp = Path(tmp)
        for size in map(int, a.sizes.split(",")):
            folder = data if size <= 10000 else common.linked_copies(data, size // 10000, tmp / f"data-{size}")
            results[size] = measure(model, folder, a.repeats, size == a.full_at, tmp, extra)
    md = ["# The audit vs the floor, whole process against whole process"
          + (f" (minimal audit also {' '.join(extra)})" if extra else ""), "",
          "| images | floor s | minimal audit s | minimal ÷ floor (CPU ÷ CPU) | full default audit s | full ÷ floor "
          "(CPU ÷ CPU) |", "|---|---|---|---|---|---|"]
    for size, r in results.items():
        full = r.get("full default audit")
        md.append(f"| {r['images']:,} | {r['floor']['median_s']:.2f} ({r['floor']['min_s']:.2f}–{r['floor']['max_s']:.2f})"
                  f" | {r['minimal audit']['median_s']:.2f} ({r['minimal audit']['min_s']:.2f}–"
                  f"{r['minimal audit']['max_s']:.2f}) | {r['ratios']['minimal audit']['per_round_median']:.2f}× ("
                  f"{r['ratios']['minimal audit']['per_round_min']:.2f}–{r['ratios']['minimal audit']['per_round_max']:.2f};"
                  f" CPU {r['cpu_ratios']['minimal audit']['per_round_median']:.2f}×)"
                  + (f" | {full['median_s']:.2f} | {r['ratios']['full default audit']['per_round_median']:.2f}× (CPU "
                     f"{r['cpu_ratios']['full default audit']['per_round_median']:.2f}×) |" if full else " | | |"))
    m = common.machine()
    md += ["", "| images | spread (max − min) ÷ median: floor, minimal, full | floor loop alone s | load average per round |",
           "|---|---|---|---|"]
    for size, r in results.items():
        md.append(f"| {r['images']:,} | " + ", ".join(f"{v:.0%}" for v in r["spread"].values())
                  + f" | {r['floor loop']['median_s']:.2f} | " + ", ".join(f"{x:.1f}" for x in r["load_avg_per_round"])
                  + " |")
    md += ["", f"Medians of {a.repeats} alternating rounds (min–max); ratios are medians of per-round ratios; CPU is user + system "
           "time of all threads, which shared-machine load inflates much less than wall time. Both sides run as child "
           "processes timed from start to exit (start-up, imports, model load); the audits also write every output "
           f"file. {m['cores']} cores; load average (1 min) after each round above. A figure moves with the load: "
           "quote one only when another run on another day reproduces it within 15%.", "",
           f"Command: `.venv/bin/python benchmarks/audit_vs_floor.py {' '.join(sys.argv[1:])}` ({m['date']})"]
    common.write(a.name, {"model": model.name, "repeats": a.repeats, "machine": m, "minimal_extra": list(extra),
                                    "sizes": {str(k): v for k, v in results.items()}}, md)


if __name__ == "__main__":
    main()
