"""The quick-start audit at this checkout vs an earlier revision of the tool, same model, same data.

Both run ``python -m audit run`` exactly as ``scripts/quickstart.sh`` does (every default check,
the latency server and the PDF included) in child processes, alternating round by round, with the
same virtualenv; only ``PYTHONPATH`` differs. The earlier revision is checked out into a temporary
git worktree. The default is the first release (before the check registry, the engine seam and the
Ray engine), so the ratio says whether this release made the quick start slower. ``--flags`` and
``--per-class`` measure one change instead: the same audit, with fewer checks or on fewer images, at this
checkout and at the commit before it.

    .venv/bin/python benchmarks/quickstart_vs_revision.py [--before d529828] [--repeats 3]
    .venv/bin/python benchmarks/quickstart_vs_revision.py --before REV --flags="--no-latency --no-invariance" \
        --per-class 5 --name NAME
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import fixed_costs

FIRST_RELEASE = "d529828"


def audit(tree: Path, model: Path, data: Path, out: Path, flags: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all threads) of the quick-start audit run from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(data), "--out", str(out),
           "--no-progress", *flags]
    c0, t0 = common.child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, common.child_cpu() - c0
    if done.returncode not in (0, 1):
        raise SystemExit(f"audit at {tree} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=FIRST_RELEASE, help="git revision to compare with (default: first release)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="quickstart_vs_revision", help="results/<name>.json and .md")
    ap.add_argument("--flags", default="", help="more audit flags for both, e.g. '--no-latency --no-pdf'")
    ap.add_argument("--per-class", type=int, default=0, help="only this many images a class (0: the whole split)")
    args = ap.parse_args()
    model, data, flags = common.fashion_mnist_model(), common.fashion_mnist_test(), args.flags.split()
    with tempfile.TemporaryDirectory(prefix="quickstart-rev-") as tmp:
        if args.per_class:
            data = fixed_costs.small_folder(data, args.per_class, Path(tmp) / "data")
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.before], cwd=common.ROOT,
                       check=True)
        try:
            runs = common.alternate({"before": lambda: audit(old, model, data, Path(tmp) / "out-before", flags),
                                     "now": lambda: audit(common.ROOT, model, data, Path(tmp) / "out-now", flags)},
                                    args.repeats)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=common.ROOT, check=False)
    report(args.before, runs, args.name, flags, args.per_class)


def report(before: str, runs: dict[str, list], name: str, flags: list[str], per_class: int) -> None:
    wall = {k: [w for w, _ in v] for k, v in runs.items()}
    cpu = {k: [c for _, c in v] for k, v in runs.items()}
    result = {"before": before, "rounds": len(wall["now"]), "flags": flags, "per_class": per_class,
              **common.machine(),
              "wall": {k: common.stats(v) for k, v in wall.items()}, "cpu": {k: common.stats(v) for k, v in cpu.items()},
              "now_over_before_wall": common.ratios(wall["now"], wall["before"]),
              "now_over_before_cpu": common.ratios(cpu["now"], cpu["before"])}
    rw, rc = result["now_over_before_wall"], result["now_over_before_cpu"]
    what = ("every default check, the latency server and the PDF included" if not flags
            else "`" + " ".join(flags) + "`")
    images = f"{per_class} images a class" if per_class else "the whole test split"
    md = [f"# The audit at this checkout vs {before} ({result['rounds']} alternating rounds)", "",
          f"Fashion-MNIST, {images}; {what}.", "",
          "| tree | wall median (min–max) s | CPU median s |", "|---|---|---|"]
    for k in ("before", "now"):
        w, c = result["wall"][k], result["cpu"][k]
        md.append(f"| {k} | {w['median_s']:.2f} ({w['min_s']:.2f}–{w['max_s']:.2f}) | {c['median_s']:.2f} |")
    md += ["", f"now ÷ before: wall {rw['per_round_median']:.2f}× (rounds {rw['per_round_min']:.2f}–"
           f"{rw['per_round_max']:.2f}), CPU {rc['per_round_median']:.2f}×."
           + (" This release's run also does more (evidence, label errors, findings, model card)."
              if before == FIRST_RELEASE else "")
           + f" Load average (1 min) at the end: {result['load_average_1min_at_end']:.1f}.", "",
           "Command: `.venv/bin/python benchmarks/quickstart_vs_revision.py"
           + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:]) + "`"]
    common.write(name, result, md)


if __name__ == "__main__":
    main()
