"""Phase 1 (frozen backbone, head only) with and without cached features (issue 3, docs/ARCHITECTURE.md §12).

Same model (EfficientNet-Lite0, packaged ImageNet weights, grey 64x64), same real Fashion-MNIST
images, same epochs, same threads, in one process:

* uncached: every epoch runs the frozen backbone forward over every (augmented) image;
* cached: the backbone runs once (the cache), then every epoch trains the head on the features.

Reports wall seconds for the phase and the speed-up. Writes
``benchmarks/results/train_phase1_cache.json`` and ``.md``.

    .venv/bin/python benchmarks/train_phase1_cache.py [--images 2000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from training.config import load_config  # noqa: E402
from training.data import load_split, prepare_fashion_mnist, read_classes  # noqa: E402
from training.fit import prepare_runtime  # noqa: E402
from training.module import build_model  # noqa: E402
from training.phases import PhaseData, run_phase  # noqa: E402


def _measure(args) -> dict[str, dict]:
    """Phase 1 on the same prepared images, uncached then cached: timings and best val accuracy of each."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fm"
        prepare_fashion_mnist(root, limit=args.images, splits=("train",))
        prepare_fashion_mnist(root, limit=args.images // 4, splits=("val",))
        raw = {
            "name": "bench_phase1",
            "data": {"root": str(root), "size": [args.size, args.size], "color": "L"},
            "model": {"arch": "tf_efficientnet_lite0", "weights": "auto"},
            "augment": {},
            "phases": {"phase1": {"epochs": args.epochs, "lr": 1e-3}},
            "train": {"batch_size": 128, "threads": args.threads, "progress_bar": False, "logger": "none",
                      "early_stopping_patience": 0},
        }
        cfg = load_config(raw=raw)
        classes = read_classes(root)
        rows = {}
        for cached in (False, True):
            prepare_runtime(cfg)
            built = build_model(cfg, len(classes))
            data = PhaseData(load_split(root / "train", built.preprocess, classes=classes),
                             load_split(root / "val", built.preprocess, classes=classes), built.preprocess)
            res = run_phase(cfg, built.net, "phase1", data, Path(tmp) / f"out{cached}", cache=cached)
            rows["cached" if cached else "uncached"] = {
                "wall_seconds": round(res.wall_seconds, 2),
                "cache_seconds": round(res.cache_seconds, 2),
                "train_seconds": round(res.train_seconds, 2),
                "train_images_per_second": round(res.samples_per_second, 1),
                "best_val_acc": round(res.best_val_acc, 4),
            }
    return rows


def _markdown(args, rows: dict[str, dict], speedup: float) -> list[str]:
    lines = [
        "# Phase 1 with and without cached features",
        "",
        f"`tf_efficientnet_lite0`, grey {args.size}x{args.size}, {args.images} Fashion-MNIST training images + "
        f"{args.images // 4} val, {args.epochs} epochs, {args.threads} torch threads, {os.cpu_count()} CPUs.",
        "",
        "| variant | phase wall s | cache s | train s | train img/s | best val acc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['wall_seconds']} | {r['cache_seconds']} | {r['train_seconds']} | "
                     f"{r['train_images_per_second']} | {r['best_val_acc']} |")
    lines += ["", f"**Speed-up of the phase: {speedup:.1f}x** (grows with the number of epochs: the cached "
              "variant pays the backbone once).", ""]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000, help="training images (val = a quarter of it)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = _measure(args)
    speedup = rows["uncached"]["wall_seconds"] / rows["cached"]["wall_seconds"]
    result = {
        "benchmark": "train_phase1_cache",
        "model": "tf_efficientnet_lite0 (packaged ImageNet weights), 1 channel",
        "images": args.images, "val_images": args.images // 4, "epochs": args.epochs, "size": args.size,
        "threads": args.threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "rows": rows, "speedup_wall": round(speedup, 2),
        "note": "uncached runs the frozen backbone every epoch; cached runs it once, then only the head trains",
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "train_phase1_cache.json").write_text(json.dumps(result, indent=2))
    lines = _markdown(args, rows, speedup)
    (out / "train_phase1_cache.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
