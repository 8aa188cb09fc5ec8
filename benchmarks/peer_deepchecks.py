"""Deepchecks' vision full suite next to our full audit, on the same images, in the same run (issue 22, peers).

Deepchecks is not a dependency of this project: the first run installs it into a virtual environment of its own
(``--venv``, by default ``deepchecks-venv`` in the temporary folder; ``pip install "deepchecks[vision]"`` with
ONNX Runtime and Pillow; its vision extra brings PyTorch through pytorch-ignite, a few GB), only when this script
runs, never in the tests. Each round runs, alternating:

* ours: ``python -m audit run`` with every default (latency, invariance and the PDF included);
* Deepchecks: a child in that venv that reads the same images, runs the same ONNX model over them (the card's
  size, colour, mean and std; ONNX Runtime, batches of 64) and runs ``full_suite()`` on the test set alone
  (like our audit, without a training set), saving its HTML report.

Both are timed from start to exit, with their peak RSS (each process's own plus those of the processes it
starts: ours has a side process, a PDF worker and a latency server); the load average is recorded per round.

    .venv/bin/python benchmarks/peer_deepchecks.py [--data data/fashion-mnist/test] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

# deepchecks 0.19 imports pkg_resources (setuptools < 81) and scikit-learn < 1.6 APIs (category-encoders < 2.7 with it);
# torch pinned to this project's version, which pip takes from the local disk where the project's install put it
PACKAGES = ("deepchecks[vision]", "onnxruntime", "pillow", "setuptools<81", "scikit-learn<1.6", "category-encoders<2.7",
            "torch==2.14.1", "torchvision==0.29.1")

DRIVER = r'''
import json, sys
from pathlib import Path
import numpy as np, onnxruntime as ort
from PIL import Image
from deepchecks.vision import VisionData
from deepchecks.vision.suites import full_suite

spec = json.loads(sys.argv[1])
pre, labels = spec["preprocess"], spec["labels"]
files = sorted(p for p in Path(spec["data"]).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
index = {name: i for i, name in enumerate(labels)}
sess = ort.InferenceSession(spec["model"], providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
mean, std = np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)

class Batches:  # re-iterable, as deepchecks reads the data more than once
    def __iter__(self):
        for lo in range(0, len(files), 64):
            imgs = [Image.open(f).convert(pre["color"]) for f in files[lo:lo + 64]]
            x = np.stack([np.asarray(i.resize(tuple(pre["size"])), np.float32) / 255.0 for i in imgs])
            x = ((x if x.ndim == 4 else x[..., None]) - mean) / std
            if pre["layout"] == "NCHW":
                x = x.transpose(0, 3, 1, 2)
            logits = sess.run(None, {name: x.astype(np.float32)})[0]
            p = np.exp(logits - logits.max(1, keepdims=True)) if spec["output"] == "logits" else logits
            p = p / p.sum(1, keepdims=True)
            rgb = [np.asarray(i.convert("RGB")) for i in imgs]
            yield {"images": rgb, "labels": [index[f.parent.name] for f in files[lo:lo + 64]], "predictions": list(p)}

    def __len__(self):
        return (len(files) + 63) // 64

data = VisionData(Batches(), task_type="classification", label_map=dict(enumerate(labels)), reshuffle_data=False)
result = full_suite().run(test_dataset=data)
result.save_as_html(spec["out"])
'''


def venv_python(venv: Path) -> Path:
    """The venv's interpreter, the venv made and Deepchecks installed into it on first use."""
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"installing Deepchecks into {venv} (first run only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
        (venv / ".installed").write_text(" ".join(PACKAGES) + "\n")
    return python


def timed_child(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process plus those of the processes it starts (the audit's
    side process, PDF worker and latency server; ``common.wait_with_peaks``)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(cmd, env=env, cwd=common.ROOT, stdout=log, stderr=subprocess.STDOUT)
        peaks = common.wait_with_peaks(p)
        if p.returncode not in (0, 1, 4):
            log.seek(0)
            raise SystemExit(f"{cmd[:3]} failed ({p.returncode}):\n{log.read().decode(errors='replace')[-3000:]}")
    return time.perf_counter() - t0, peaks["sum"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="an ImageFolder (default: the Fashion-MNIST test split)")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "deepchecks-venv")
    ap.add_argument("--name", default="peer_deepchecks", help="results/<name>.json and .md")
    a = ap.parse_args()
    from audit.model import OnnxClassifier

    model, data = common.fashion_mnist_model(a.model), a.data or common.fashion_mnist_test()
    clf = OnnxClassifier.load(model)
    python = venv_python(a.venv)
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        spec = {"model": str(model), "data": str(data), "labels": list(clf.labels), "out": f"{tmp}/deepchecks.html",
                "output": clf.card.output, "preprocess": dataclasses.asdict(clf.card.preprocess)}
        (Path(tmp) / "driver.py").write_text(DRIVER)
        ours_env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
        runs = {"ours (full audit)": lambda: timed_child(
                    [sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(data), "--out",
                     f"{tmp}/ours", "--no-progress"], ours_env),
                "deepchecks (full_suite)": lambda: timed_child(
                    [str(python), f"{tmp}/driver.py", json.dumps(spec)], {**os.environ, "PYTHONPATH": ""})}
        loads: list[float] = []
        got = common.alternate(runs, a.repeats, loads)
    rows = {k: {"seconds": common.stats([s for s, _ in v]), "peak_rss_mib": round(max(m for _, m in v), 1),
                "spread": common.spread([s for s, _ in v])} for k, v in got.items()}
    ours, theirs = (got[k] for k in runs)
    time_ratio = statistics.median(t / o for (t, _), (o, _) in zip(theirs, ours))
    rss_ratio = max(m for _, m in theirs) / max(m for _, m in ours)
    m = common.machine()
    md = ["# Deepchecks' vision full suite next to our full audit", "",
          "| run | seconds, median (min–max) | spread | peak RSS (MiB) |", "|---|---|---:|---:|"]
    md += [f"| {k} | {r['seconds']['median_s']:.1f} ({r['seconds']['min_s']:.1f}–{r['seconds']['max_s']:.1f}) | "
           f"{r['spread']:.0%} | {r['peak_rss_mib']:.0f} |" for k, r in rows.items()]
    md += ["", f"Deepchecks ÷ ours: **{time_ratio:.2f}×** the wall time (median of per-round ratios), "
           f"**{rss_ratio:.2f}×** the peak RSS. {a.repeats} alternating rounds on {data.name} "
           f"({m['cores']} cores; load average after each round: {', '.join(f'{x:.1f}' for x in loads)}).", "",
           f"Command: `.venv/bin/python benchmarks/peer_deepchecks.py {' '.join(sys.argv[1:])}` ({m['date']})"]
    common.write(a.name, {"runs": rows, "time_ratio": round(time_ratio, 3), "rss_ratio": round(rss_ratio, 3),
                          "loads": loads, "packages": list(PACKAGES), "machine": m}, md)


if __name__ == "__main__":
    main()
