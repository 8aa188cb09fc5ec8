"""Peak memory of one audit as the test set grows: 1k to 100k images (issue 14: 50k ÷ 1k ≤ 1.2×).

Each size is its own child process running ``run_audit`` with the default checks (the latency
check off, no rendering); its peak RSS (``ru_maxrss``) plus its side process's (where cleanlab runs,
``audit.side_process``) is the number. The images are all 70,000
distinct Fashion-MNIST images (train, val and test splits) hard-linked into one ImageFolder in a
scratch folder (no pixel copied), and each size is a seeded pick of them listed in a CSV manifest.
Beyond 70,000 the folder holds a second link of each image, so those sets contain exact copies,
which the integrity check lists (every copied image adds a pair): that is part of what is measured.

    .venv/bin/python benchmarks/memory_vs_n.py [--sizes 1000,10000,50000,100000] [--name memory_vs_n]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import common


def distinct_images(dst: Path, copies: int) -> Path:
    """One ImageFolder of every Fashion-MNIST split, ``copies`` hard links per image, built once."""
    root = common.fashion_mnist_test().parent
    for split in ("train", "val", "test"):
        common.linked_copies(root / split, copies, dst / split)
    return dst


def manifest(folder: Path, n: int) -> Path:
    files = sorted(folder.rglob("*.png"))
    pick = np.sort(np.random.default_rng(0).choice(len(files), size=n, replace=False))
    out = folder / f"pick-{n}.csv"
    out.write_text("path,label\n" + "".join(f"{files[i].relative_to(folder).as_posix()},{files[i].parent.name}\n"
                                            for i in pick))  # the label is the class folder
    return out


def peak_rss_mib(model: Path, source: Path) -> tuple[float, float, float]:
    """(peak RSS in MiB of the audit's process, of its side process, seconds of run_audit) of one audit in a
    fresh process."""
    code = ("import resource, time; from pathlib import Path; from audit.config import load_config;"
            "from audit.pipeline import run_audit; from audit.side_process import running; t0 = time.perf_counter();"
            f"run_audit(Path({str(model)!r}), Path({str(source)!r}), load_config(None, {{'latency.enabled': False}}),"
            " progress=False);"
            "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " running().peak_rss_mib if running() else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=common.ROOT)
    seconds, kib, side = done.stdout.split()[-3:]
    return int(kib) / 1024, float(side), float(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    ap.add_argument("--name", default="memory_vs_n", help="results file name (a second run keeps the first)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = common.fashion_mnist_model()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="memory-vs-n-") as tmp:
        folder = distinct_images(Path(tmp) / "data", 1 if max(sizes) <= 70_000 else 2)
        for n in sizes:
            rss, side, seconds = peak_rss_mib(model, manifest(folder, n))
            rows[n] = {"peak_rss_mib": round(rss + side, 1), "audit_mib": round(rss, 1), "side_mib": round(side, 1),
                       "seconds": round(seconds, 1)}
            print(n, rows[n], flush=True)
    first = rows[sizes[0]]["peak_rss_mib"]
    result = {"sizes": rows, **common.machine()}
    md = [f"# Peak memory of one audit vs N ({result['cores']} cores)", "",
          "| images | peak RSS (MiB): audit + side process | ÷ smallest | run_audit s |", "|---:|---:|---:|---:|"]
    md += [f"| {n:,} | {r['peak_rss_mib']:.0f} = {r['audit_mib']:.0f} + {r['side_mib']:.0f} "
           f"| {r['peak_rss_mib'] / first:.2f}× | {r['seconds']:.1f} |" for n, r in rows.items()]
    md += ["", "Default checks without the latency server, no rendering; each size a fresh process. Load average "
           f"(1 min) at the end: {result['load_average_1min_at_end']:.1f}.", "",
           f"Command: `.venv/bin/python benchmarks/memory_vs_n.py{'' if args.name == 'memory_vs_n' else ' --name ' + args.name}`"]
    common.write(args.name, result, md)


if __name__ == "__main__":
    main()
