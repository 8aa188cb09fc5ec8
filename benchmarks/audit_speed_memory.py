"""Audit wall time vs the floor, and peak memory as N grows (DESIGN §10).

* Floor: decode + preprocess + ONNX Runtime over the same images with the same threads, batch
  size and session options, with nothing else (no accounting, no properties, no metrics).
* Ours: ``run_audit`` with the default checks (scan, threaded streaming inference, image
  properties, metrics and calibration with 1,000-resample bootstrap CIs, slices, label
  invariance on 1,000 images, duplicate hashing), without rendering and without the latency
  check (it measures a server in another process; see serve_latency.py).
* Memory: peak RSS of a child process auditing 1k, 5k and 10k images (manifests over one folder).

Needs the quick start's data and model (``bash scripts/quickstart.sh``), or pass --data/--model.

    .venv/bin/python benchmarks/audit_speed_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def floor(model: Path, files: list[Path], batch_size: int, workers: int) -> float:
    from audit import imaging
    from audit.model import OnnxClassifier

    clf = OnnxClassifier.load(model)
    pre = clf.card.preprocess

    def load(f: Path) -> np.ndarray:
        img, _ = imaging.decode(f.read_bytes(), pre.color)
        return imaging.to_tensor(imaging.resize(img, pre), pre)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for i in range(0, len(files), batch_size):
            batch = np.stack(list(pool.map(load, files[i : i + batch_size])))
            clf.predict_proba(batch)
    return time.perf_counter() - t0


def ours(model: Path, data: Path, batch_size: int, workers: int) -> tuple[float, dict]:
    from audit.config import load_config
    from audit.pipeline import run_audit

    cfg = load_config(None, {"batch_size": batch_size, "workers": workers, "pdf": False, "latency.enabled": False})
    t0 = time.perf_counter()
    r = run_audit(model, data, cfg, progress=False)
    return time.perf_counter() - t0, dict(r.timings)


def manifest(data: Path, n: int, out: Path) -> Path:
    files = sorted(p for p in data.rglob("*.png"))
    rng = np.random.default_rng(0)
    pick = [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]
    out.write_text("path,label\n" + "".join(f"{p.relative_to(data).as_posix()},{p.parent.name}\n" for p in pick))
    return out


def peak_rss_child(model: Path, source: Path) -> float:
    code = (
        "import resource, sys; from pathlib import Path; from audit.config import load_config;"
        "from audit.pipeline import run_audit;"
        f"run_audit(Path({str(model)!r}), Path({str(source)!r}), load_config(None, {{'latency.enabled': False}}),"
        " progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/fashion_mnist_baseline/model.onnx")
    ap.add_argument("--data", type=Path, default=ROOT / "data/fashion-mnist/test")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sizes", default="1000,5000,10000")
    args = ap.parse_args()
    if not args.model.exists() or not args.data.exists():
        sys.exit(f"need {args.model} and {args.data}: run bash scripts/quickstart.sh first")

    files = sorted(args.data.rglob("*.png"))
    ours(args.model, args.data, args.batch_size, args.workers)  # warm-up: page cache, imports
    t_floor = min(floor(args.model, files, args.batch_size, args.workers) for _ in range(2))
    runs = [ours(args.model, args.data, args.batch_size, args.workers) for _ in range(2)]
    t_ours, stages = min(runs, key=lambda r: r[0])

    memory = {}
    for n in map(int, args.sizes.split(",")):
        memory[n] = peak_rss_child(args.model, manifest(args.data, n, args.data / f".bench-{n}.csv"))
        (args.data / f".bench-{n}.csv").unlink()

    result = {
        "images": len(files),
        "model": args.model.name,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "floor_s": round(t_floor, 3),
        "audit_s": round(t_ours, 3),
        "ratio": round(t_ours / t_floor, 3),
        "audit_stages_s": {k: round(v, 3) for k, v in stages.items()},
        "floor_img_per_s": round(len(files) / t_floor, 1),
        "audit_img_per_s": round(len(files) / t_ours, 1),
        "peak_rss_mib": {str(k): round(v, 1) for k, v in memory.items()},
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "audit_speed_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    sizes = list(memory)
    md = [
        f"# Audit speed and memory ({result['images']} images, {result['model']}, {result['cores']} cores)",
        "",
        "| path | seconds | images/s |",
        "|---|---|---|",
        f"| floor: decode + preprocess + ORT | {t_floor:.2f} | {result['floor_img_per_s']} |",
        f"| `run_audit`, default checks (no latency, no rendering) | {t_ours:.2f} | {result['audit_img_per_s']} |",
        f"| ratio ours / floor | {result['ratio']:.2f}× | |",
        "",
        "Stages of the audit: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
        + f". Inference stage / floor: {stages['inference'] / t_floor:.2f}×.",
        "",
        "| images audited | " + " | ".join(str(n) for n in sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
        "| peak RSS (MiB) | " + " | ".join(f"{memory[n]:.0f}" for n in sizes) + " |",
        "",
        "Command: `.venv/bin/python benchmarks/audit_speed_memory.py`",
        "",
    ]
    (out / "audit_speed_memory.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
