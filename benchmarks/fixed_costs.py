"""What every audit run pays whatever the number of images: start-up, imports, plots, the HTML and the PDF.

* Per run: ``python -m audit run --no-latency --no-invariance`` on 50 images (5 per class), with
  and without ``--no-pdf``, in child processes; the images cost a few milliseconds, so this is the
  fixed cost. Wall and CPU (user + system) seconds; CPU is far less inflated by other load.
* The same without the label-errors check, whose cleanlab import (scikit-learn, scipy, pandas) is
  most of what a run pays beyond the tool's own imports.
* Imports: a child that imports what ``audit run`` imports, minus a bare interpreter, and the
  self time per top-level package from ``python -X importtime``.
* In one process: each report figure drawn and encoded, the HTML rendered, the PDF laid out.

    .venv/bin/python benchmarks/fixed_costs.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ONNXRUNTIME = "python -c 'import onnxruntime' (the goal's reference)"
NO_PDF = "audit run, 50 images, --no-pdf"
IMPORTS = "import audit.cli, audit.config, audit.pipeline, audit.render.outputs, audit.text"
CHECK_FLAGS = ("--no-latency", "--no-invariance")


def child(args: list[str]) -> tuple[float, float, str]:
    env = {**os.environ, "PYTHONPATH": str(common.ROOT), "MPLBACKEND": "Agg"}
    c0, t0 = common.child_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, cwd=common.ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{args} failed: {done.stderr[-500:]}")
    return time.perf_counter() - t0, common.child_cpu() - c0, done.stderr


def small_folder(data: Path, per_class: int, dst: Path) -> Path:
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        (dst / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.png"))[:per_class]:
            os.link(f, dst / d.name / f.name)
    return dst


def import_self_times(stderr: str) -> dict[str, float]:
    """Seconds of import self time per top-level package, from ``-X importtime`` output."""
    out: collections.Counter = collections.Counter()
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].split(":")[1].strip().isdigit():
            out[parts[2].strip().split(".")[0]] += int(parts[0].split(":")[1]) / 1e6
    return {k: round(v, 3) for k, v in out.most_common(12)}


def in_process(model: Path, data: Path, out: Path) -> dict[str, float]:
    """Seconds of each rendering step of one small audit, in this process."""
    from audit.config import load_config
    from audit.pipeline import run_audit
    from audit.render import html
    from audit.render.pdf import write_pdf

    t = {}
    t0 = time.perf_counter()
    r = run_audit(model, data, load_config(None, {"latency.enabled": False}), progress=False)
    t["run_audit (50 images)"] = time.perf_counter() - t0
    for spec in r.ran:  # each check's charts, drawn as the report draws them
        t0 = time.perf_counter()
        charts = [c.uri() for c in spec.charts(r.results[spec.name], r.config).values()]
        if charts:
            t[f"charts of {spec.name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = html.render_html(r)
    t["report.html (figures included)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_pdf(page, out / "report.pdf")
    t["report.pdf from the HTML"] = time.perf_counter() - t0
    t["report.html kB"] = len(page.encode()) / 1024
    t["report.pdf kB"] = (out / "report.pdf").stat().st_size / 1024
    return {k: round(v, 3) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="fixed_costs", help="results file name (a second run keeps the first)")
    a = ap.parse_args()
    model, data = common.fashion_mnist_model(a.model), a.data or common.fashion_mnist_test()
    with tempfile.TemporaryDirectory(prefix="audit-fixed-") as tmp:
        tmp = Path(tmp)
        small = small_folder(data, 5, tmp / "data")
        audit = ["-m", "audit", "run", "--model", str(model), "--data", str(small), "--no-progress", *CHECK_FLAGS]
        runs = {
            "interpreter (python -c pass)": lambda: child(["-c", "pass"])[:2],
            ONNXRUNTIME: lambda: child(["-c", "import onnxruntime"])[:2],
            "imports of audit run": lambda: child(["-c", IMPORTS])[:2],
            NO_PDF: lambda: child([*audit, "--out", str(tmp / "a"), "--no-pdf"])[:2],
            "the same, --no-label-errors (no cleanlab, scikit-learn, scipy, pandas imports)":
                lambda: child([*audit, "--out", str(tmp / "c"), "--no-pdf", "--no-label-errors"])[:2],
            "audit run, 50 images, with the PDF": lambda: child([*audit, "--out", str(tmp / "b")])[:2],
        }
        pairs = common.alternate(runs, a.repeats)
        importtime = import_self_times(child(["-X", "importtime", "-c", IMPORTS])[2])
        steps = in_process(model, small, tmp)
    wall = {k: common.stats([w for w, _ in v]) for k, v in pairs.items()}
    cpu = {k: common.stats([c for _, c in v]) for k, v in pairs.items()}
    m = common.machine()
    md = ["# Fixed costs of one audit run", "",
          "| what | wall median (min–max) s | CPU median s |", "|---|---|---|"]
    md += [f"| {k} | {wall[k]['median_s']:.2f} ({wall[k]['min_s']:.2f}–{wall[k]['max_s']:.2f}) | "
           f"{cpu[k]['median_s']:.2f} |" for k in runs]
    over = wall[NO_PDF]["median_s"] - wall[ONNXRUNTIME]["median_s"]
    md += ["", f"Every default but the PDF costs {over:.2f} s over `import onnxruntime` (medians; issue 22's goal: "
           "at most 1.0 s)."]
    md += ["", "Import self time by package (one `-X importtime` run, s): "
           + ", ".join(f"{k} {v:.2f}" for k, v in importtime.items()) + ".", "",
           "In one process (one run, s or kB): " + ", ".join(f"{k} {v}" for k, v in steps.items()) + ".", "",
           f"{a.repeats} alternating rounds. Load average (1 min) at the end: {m['load_average_1min_at_end']:.1f} on "
           f"{m['cores']} cores.", "", f"Command: `.venv/bin/python benchmarks/fixed_costs.py --repeats {a.repeats}"
           f"{'' if a.name == 'fixed_costs' else ' --name ' + a.name}` ({common.today()})"]
    common.write(a.name, {"model": model.name, "repeats": a.repeats, "machine": m, "wall": wall, "cpu": cpu,
                          "over_import_onnxruntime_s": over, "import_self_s": importtime, "in_process": steps}, md)


if __name__ == "__main__":
    main()
