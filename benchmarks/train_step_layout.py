"""One full fine-tuning step (phase 3) of EfficientNet-Lite0 in NCHW vs channels_last (issue 3).

Same model (grey input, frozen BatchNorm statistics as in `training`), same random batch, same
threads, in one process; forward + backward + AdamW step, the first step discarded as warm-up.
`train.channels_last = true` (the default) is chosen from these numbers. Writes
``benchmarks/results/train_step_layout.json`` and ``.md``.

    .venv/bin/python benchmarks/train_step_layout.py [--sizes 32 48 64] [--batch 128] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def step_rate(size: int, batch: int, steps: int, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=10, in_chans=1)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()  # freeze_bn_stats, as in training.module.Classifier
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        nchw = step_rate(size, args.batch, args.steps, False)
        nhwc = step_rate(size, args.batch, args.steps, True)
        rows.append({"size": size, "nchw_img_s": round(nchw, 1), "channels_last_img_s": round(nhwc, 1),
                     "speedup": round(nhwc / nchw, 2)})
        print(rows[-1], flush=True)
    env = {"torch": torch.__version__, "threads": args.threads, "cpus": os.cpu_count(),
           "machine": platform.machine(), "batch": args.batch, "steps": args.steps}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "train_step_layout.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    lines = ["# Fine-tuning step: NCHW vs channels_last", "",
             f"`tf_efficientnet_lite0`, grey input, batch {args.batch}, forward + backward + AdamW, "
             f"mean of {args.steps} steps after one warm-up, {args.threads} torch threads, {os.cpu_count()} CPUs.", "",
             "| input px | NCHW img/s | channels_last img/s | speed-up |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['size']} | {r['nchw_img_s']} | {r['channels_last_img_s']} | {r['speedup']}x |" for r in rows]
    (out / "train_step_layout.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
