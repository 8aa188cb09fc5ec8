"""The audit's inference stage vs the floor, and the choices behind the local engine's defaults.

Floor: ``benchmarks/floor.py`` (Pillow decode, the card's preprocessing, ONNX Runtime at batch 64,
the tool's session options), decoding on the main thread. Ours: ``LocalEngine.predict``, which
also accounts for every file, measures the image properties and takes each file's SHA-256 and
perceptual hash. Variants: decode placement (the calling thread, 1 or 2 decode threads ahead of
ONNX Runtime), where each batch is stacked, measured and hashed (in its decode thread, or on the
calling thread between ONNX Runtime calls), batch size, and the pass without hashes (what the
hashing costs), and ONNX Runtime's threads pinned (the default lets the run choose). All runs
alternate in one process; each records wall time and process CPU time (all threads), since on a
shared machine a run with more threads can win wall time by taking a larger share of the cores.

    .venv/bin/python benchmarks/inference_vs_floor.py [--model M --data DIR --repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common
import floor

from audit.engines.batch import fitted_batch_size
from audit.engines.local import LocalEngine
from audit.imaging import default_workers
from audit.model import OnnxClassifier
from audit.sources import open_source


def _run(fn) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="inference_vs_floor", help="results file name")
    ap.add_argument("--copies", type=int, default=1, help="each image this many times, hard-linked under new names")
    ap.add_argument("--paths", default="", help="substrings separated by ';': only the paths whose name has one "
                                                "(the floors always run)")
    a = ap.parse_args()
    model, data = common.fashion_mnist_model(a.model), a.data or common.fashion_mnist_test()
    with tempfile.TemporaryDirectory(prefix="audit-inference-") as tmp:
        if a.copies > 1:
            data = common.linked_copies(data, a.copies, Path(tmp) / "data")
        measure(a, model, data)


def measure(a, model: Path, data: Path) -> None:
    source = open_source(data, OnnxClassifier.load(model).labels)
    files, pre, sess = floor.image_files(data), floor.preprocess_of(model), floor.session(model)

    def engine(ort_threads: int = 0, capture: bool = True, **kw):
        """A run of the engine with a classifier loaded for it (untimed): the engine may change ORT's threads
        (``OrtThreads``), and one run's choice must not carry into the next."""
        def prepare():
            fresh = OnnxClassifier.load(model, threads=ort_threads)
            return lambda: LocalEngine(progress=False, **kw).predict(fresh, source, capture=capture)
        return prepare

    def bare(fn):
        return lambda: fn

    runs = {
        "floor (main-thread decode)": bare(lambda: floor.run_floor(sess, pre, files)),
        "floor (2 decode threads)": bare(lambda: floor.run_floor(sess, pre, files, decode="pool", workers=2)),
        f"floor (main-thread decode), {fitted_batch_size(0, pre)} images a batch, our default":
            bare(lambda: floor.run_floor(sess, pre, files, batch_size=fitted_batch_size(0, pre))),
        "ours, decode on the calling thread": engine(workers=0),
        "ours, 1 decode thread": engine(workers=1, vectorise_on_caller=False),
        "ours, 1 decode thread, batch vectorised on the caller": engine(workers=1, vectorise_on_caller=True),
        "ours, 2 decode threads": engine(workers=2, vectorise_on_caller=False),
        "ours, default, ORT's threads pinned to 1": engine(ort_threads=1),
        "ours, default, ORT's threads pinned to the cores": engine(ort_threads=common.machine()["cores"]),
        "ours, default, batch 32": engine(batch_size=32),
        "ours, default, batch 64": engine(batch_size=64),
        "ours, default, batch 128": engine(batch_size=128),
        "ours, default, batch 256": engine(batch_size=256),
        "ours, default, no hashes": engine(capture=False),
    }
    wanted = [w.strip() for w in a.paths.split(";") if w.strip()]
    runs = {k: v for k, v in runs.items() if k.startswith("floor") or not wanted or any(w in k for w in wanted)}
    engine(workers=0)()()  # warm-up: page cache, lazy imports
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeats):
        for name, prepare in runs.items():
            w, c = _run(prepare())
            wall[name].append(w)
            cpu[name].append(c)
    base = "floor (main-thread decode)"
    write(a, model, len(files), {name: {"wall": wall[name], "cpu": cpu[name]} for name in runs}, base,
          fitted_batch_size(0, pre))


def write(a, model: Path, images: int, runs: dict, base: str, batch: int) -> None:
    wall, cpu = {k: v["wall"] for k, v in runs.items()}, {k: v["cpu"] for k, v in runs.items()}
    rows = {name: {"wall": common.stats(wall[name]), "cpu": common.stats(cpu[name]),
                   "wall_ratio": common.ratios(wall[name], wall[base]),
                   "cpu_ratio": common.ratios(cpu[name], cpu[base])} for name in runs}
    result = {"images": images, "model": str(model.name), "default_decode_threads": default_workers(),
              "repeats": a.repeats, "machine": common.machine(), "runs": rows}
    md = [f"# Inference stage vs the floor ({images:,} images, {a.repeats} alternating rounds)", "",
          "| path | wall median (min–max) s | wall ÷ floor | CPU median s | CPU ÷ floor |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        w = r["wall"]
        md.append(f"| {name} | {w['median_s']:.2f} ({w['min_s']:.2f}–{w['max_s']:.2f}) | "
                  f"{r['wall_ratio']['per_round_median']:.2f}× | {r['cpu']['median_s']:.2f} | "
                  f"{r['cpu_ratio']['per_round_median']:.2f}× |")
    md += ["", f"Default: {default_workers()} decode thread(s) (one per core but one) ahead of ONNX Runtime, "
           f"each batch's vectorised steps in its decode thread, {batch} images a batch (the default: 64, up to 256 "
           "for a small input), ORT's threads chosen by the run "
           "(`audit.engines.local.OrtThreads`: fewer tried when the calling thread waits for decoding); each run "
           "loads the model afresh (untimed). Ratios are medians of "
           "per-round ratios (each round runs every path once, in this order). Load average (1 min) at the end: "
           f"{result['machine']['load_average_1min_at_end']:.1f} on {result['machine']['cores']} cores.", "",
           f"Command: `.venv/bin/python benchmarks/inference_vs_floor.py {' '.join(sys.argv[1:])}` "
           f"({result['machine']['date']})"]
    common.write(a.name, result, md)


if __name__ == "__main__":
    main()
