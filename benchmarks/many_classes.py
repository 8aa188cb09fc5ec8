"""Cost with many classes: a 1,000-class model over 10,000 images, time and peak memory (docs/ARCHITECTURE.md §12).

The model is a real ONNX graph (global average pool + a linear layer that picks the nearest of
1,000 colour centres); the data are 10,000 noisy 16x16 PNGs, 10 per class, written to a temporary
folder. One child process runs, side by side:

* floor: decode + preprocess + ONNX Runtime over the same images, same threads and batch size;
* ours: ``run_audit`` with the default checks (no latency: it measures a server), then the
  renderers (HTML, JSON, CSV, junit, markdown and the PDF), each stage timed;
* peak RSS of that process (the floor runs first and needs little memory).

And in this process, the metrics bootstrap alone on the same predictions, 1,000 resamples: per-class
counts (ours, O(classes) per resample) against one classes x classes confusion matrix per resample
(the previous way), seconds and peak traced memory.

    .venv/bin/python benchmarks/many_classes.py [--classes 1000 --images 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MEAN, STD = 0.5, 0.25


def centres(c: int) -> np.ndarray:
    """(c, 3) pixel colours on a grid, far enough apart that noise causes some, not many, errors."""
    side = int(np.ceil(c ** (1 / 3)))
    levels = np.linspace(20, 235, side)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    return grid[:c]


def write_model(path: Path, colours: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from audit.model import ModelCard, Preprocess, write_card

    mu = ((colours / 255.0 - MEAN) / STD).astype(np.float32)  # class centres in the model's input units
    w, b = (2 * mu).T.copy(), -(mu**2).sum(axis=1)  # argmax of 2 x.mu - |mu|^2 = nearest centre
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "W", "B"], ["output"])], "many",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", len(colours)])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    labels = tuple(f"class{i:04d}" for i in range(len(colours)))
    write_card(path, ModelCard(labels=labels, preprocess=Preprocess(size=(16, 16), mean=(MEAN,), std=(STD,))))
    return path


def write_data(root: Path, colours: np.ndarray, n: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    c = len(colours)
    for i in range(n):
        k = i % c
        d = root / f"class{k:04d}"
        d.mkdir(parents=True, exist_ok=True)
        shift = rng.normal(0, 9, 3)  # a per-image colour cast: neighbouring classes get confused sometimes
        arr = colours[k] + shift + rng.normal(0, 20, (16, 16, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(d / f"{i:05d}.png")
    return root


CHILD = r"""
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from audit import imaging
from audit.config import load_config
from audit.engines.batch import fitted_batch_size
from audit.model import OnnxClassifier
from audit.pipeline import run_audit
from audit.render.outputs import write_outputs
from audit.side_process import running

model, data, out = map(Path, sys.argv[1:4])
cfg = load_config(None, {"latency.enabled": False})
clf = OnnxClassifier.load(model)
pre = clf.card.preprocess
files = sorted(data.rglob("*.png"))
workers = cfg.workers or min(8, len(__import__("os").sched_getaffinity(0)))

def load(f):
    img, _ = imaging.decode(f.read_bytes(), pre.color)
    return imaging.to_tensor(imaging.resize(img, pre), pre)

t0 = time.perf_counter()
with ThreadPoolExecutor(workers) as pool:
    size = fitted_batch_size(cfg.batch_size, clf.card.preprocess)  # the audit's own batch size
    for i in range(0, len(files), size):
        clf.predict_proba(np.stack(list(pool.map(load, files[i:i + size]))))
floor = time.perf_counter() - t0
t0 = time.perf_counter()
r = run_audit(model, data, cfg, progress=False)
audit_s = time.perf_counter() - t0
t0 = time.perf_counter()
write_outputs(r, out, pdf=False)
render_s = time.perf_counter() - t0
t0 = time.perf_counter()
write_outputs(r, out, pdf=True)
render_pdf_s = time.perf_counter() - t0
print(json.dumps({"floor_s": floor, "audit_s": audit_s, "stages_s": {t.name: t.seconds for t in r.timings},
                  "render_no_pdf_s": render_s,
                  "render_with_pdf_s": render_pdf_s, "accuracy": r.metrics.accuracy.value,
                  "verdict_passed": r.verdict.passed,
                  "outputs_bytes": {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()},
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                                  + ((running() and running().peak_rss_mib) or 0)}))  # + the side process
"""


def child_run(model: Path, data: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(data), str(out)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bootstrap_side_by_side(y: np.ndarray, yp: np.ndarray, c: int, n_boot: int) -> dict:
    """Per-class counts (ours) vs a C x C matrix per resample (the previous way), same resamples."""
    from audit.checks.metrics import class_counts, summarize_counts
    from audit.stats import bootstrap_many

    def previous(idx: np.ndarray) -> np.ndarray:  # the confusion-matrix path this project used before
        k = idx.shape[0]
        codes = y[idx] * c + yp[idx] + (np.arange(k) * c * c)[:, None]
        cm = np.bincount(codes.ravel(), minlength=k * c * c).reshape(k, c, c).astype(float)
        tp, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1)
        return summarize_counts(np.stack([tp, support, predicted]))

    out = {}
    for name, stat in (("per_class_counts", lambda idx: summarize_counts(class_counts(y, yp, idx, c))),
                       ("confusion_matrix_per_resample", previous)):
        tracemalloc.start()
        t0 = time.perf_counter()
        ests = bootstrap_many(stat, len(y), n_boot=n_boot, seed=0)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[name] = {"seconds": round(seconds, 3), "peak_traced_mib": round(peak / 2**20, 1),
                     "macro_f1": [ests[1].value, ests[1].low, ests[1].high]}
    assert out["per_class_counts"]["macro_f1"] == out["confusion_matrix_per_resample"]["macro_f1"]
    return out


def csv_side_by_side(frame, labels, tmp: Path) -> dict:
    """predictions.csv written by ``Predictions.write_csv`` (ours) and by pandas' to_csv (before), same rows."""
    from audit.predictions import Predictions

    preds = Predictions.from_frame(frame, labels)
    out = {}
    for name, write in (("ours", preds.write_csv),
                        ("pandas_to_csv", lambda p: preds.to_frame().to_csv(p, index=False, float_format="%.9g",
                                                                             lineterminator="\r\n"))):
        t0 = time.perf_counter()
        write(tmp / f"{name}.csv")
        out[name] = round(time.perf_counter() - t0, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="many-classes-"))
    try:
        colours = centres(args.classes)
        model = write_model(tmp / "model.onnx", colours)
        data = write_data(tmp / "data", colours, args.images)
        run = child_run(model, data, tmp / "out")
        pred = __import__("pandas").read_csv(tmp / "out" / "predictions.csv")
        index = {f"class{i:04d}": i for i in range(args.classes)}
        y, yp = pred["label"].map(index).to_numpy(), pred["predicted"].map(index).to_numpy()
        boot = bootstrap_side_by_side(y, yp, args.classes, args.n_boot)
        csv_times = csv_side_by_side(pred, list(index), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"classes": args.classes, "images": args.images, "n_boot": args.n_boot,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items()},
              "stages_s": {k: round(v, 2) for k, v in run["stages_s"].items()}, "metrics_bootstrap": boot,
              "predictions_csv_s": csv_times}
    write_results(result)


def write_results(r: dict) -> None:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "many_classes.json").write_text(json.dumps(r, indent=2) + "\n")
    b = r["metrics_bootstrap"]
    ours, prev = b["per_class_counts"], b["confusion_matrix_per_resample"]
    md = [
        f"# Many classes: {r['classes']} classes, {r['images']} images ({r['cores']} cores)",
        "",
        "| path | seconds |",
        "|---|---|",
        f"| floor: decode + preprocess + ORT | {r['floor_s']:.2f} |",
        f"| `run_audit`, default checks (no latency) | {r['audit_s']:.2f} ({r['audit_s'] / r['floor_s']:.1f}× the floor) |",
        f"| render HTML, JSON, CSV, junit, markdown | {r['render_no_pdf_s']:.2f} |",
        f"| render all of them and the PDF | {r['render_with_pdf_s']:.2f} |",
        "",
        "Stages of the audit: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["stages_s"].items()) + ".",
        f"Peak RSS of the whole run (floor, audit, both renderings): **{r['peak_rss_mib']:.0f} MiB**.",
        f"Accuracy of the synthetic model: {r['accuracy']:.3f}.",
        "",
        f"Metrics bootstrap alone ({r['n_boot']} resamples, same predictions, same intervals):",
        "",
        "| path | seconds | peak traced memory (MiB) |",
        "|---|---|---|",
        f"| per-class counts (ours) | {ours['seconds']:.2f} | {ours['peak_traced_mib']:.0f} |",
        f"| one {r['classes']}×{r['classes']} confusion matrix per resample (before) | {prev['seconds']:.2f} | "
        f"{prev['peak_traced_mib']:.0f} |",
        f"| ratio before / ours | {prev['seconds'] / max(ours['seconds'], 1e-9):.0f}× | "
        f"{prev['peak_traced_mib'] / max(ours['peak_traced_mib'], 1e-9):.0f}× |",
        "",
        f"predictions.csv ({r['classes']} probability columns) written by `Predictions.write_csv` (ours: a row "
        f"template a chunk of rows) {r['predictions_csv_s']['ours']:.1f} s, by pandas' `to_csv` (before) "
        f"{r['predictions_csv_s']['pandas_to_csv']:.1f} s.",
        "",
        "Output sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(r["outputs_bytes"].items())) + ".",
        "",
        "Command: `.venv/bin/python benchmarks/many_classes.py`",
        "",
    ]
    (out / "many_classes.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
