"""Scale: images/s and peak memory of the local engine and the Ray engine as the test set grows (issue 12).

* Data: the Fashion-MNIST test split hard-linked K times under new names (10k, 100k, 500k images)
  in a scratch folder, so no pixel is copied and the page cache holds one set of files.
* Each measurement runs in a fresh child process; peak RSS is that process's ``ru_maxrss`` (for
  Ray: the driver's, which is where the rows gather; the actors' memory does not depend on N).
* local: ``LocalEngine.predict`` over the folder (decode, properties, hashes, ONNX Runtime), and at
  the smallest size the floor beside it in the same process: decode + preprocess + ORT, nothing else.
* ray: ``RayEngine`` on a local Ray with every core: its start-up (``ray.init``), a first 64-image
  pass (the first actor pool), then the pass over N images.
* audit: the quick-start audit (``run_audit``, default checks, no latency check, no rendering) on
  10k images with each engine: Ray pays a pool start for the main pass and for every probe re-run.
* split: decode + measure vs ONNX Runtime per image, single-threaded, to say how Ray scales with nodes.

    .venv/bin/python benchmarks/scale.py --model models/fashion_mnist_scratch/model.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def scale_folder(src: Path, work: Path, copies: int) -> Path:
    """``copies`` hard links of every image of ``src`` (an ImageFolder) under new names, built once."""
    dst = work / f"x{copies}"
    done = dst / ".complete"
    if done.exists():
        return dst
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir()):
            for k in range(copies):
                target = dst / cls.name / f"{k:02d}_{f.name}"
                if not target.exists():
                    os.link(f, target)
    done.write_text("")
    return dst


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_local(model: Path, data: Path, floor: bool) -> dict:
    from audit.engines import LocalEngine
    from audit.model import OnnxClassifier
    from audit.sources import open_source

    clf = OnnxClassifier.load(model)
    src = open_source(data, clf.labels)
    out = {}
    if floor:
        out["floor_s"] = run_floor(clf, src)
    t0 = time.perf_counter()
    preds, rejected = LocalEngine(progress=False).predict(clf, src)
    out.update(images=len(preds) + len(rejected), seconds=time.perf_counter() - t0)
    return out


def run_floor(clf, src) -> float:
    """Decode + preprocess + ORT over the same files, same threads and batch size, nothing else."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from audit import imaging
    from audit.imaging import default_workers

    pre = clf.card.preprocess

    def load(path: str):
        img, _ = imaging.decode(src.open(path), pre.color)
        return imaging.to_tensor(imaging.resize(img, pre), pre)

    paths = [s.path for s in src.samples]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(default_workers()) as pool:
        for i in range(0, len(paths), 64):
            clf.predict_proba(np.stack(list(pool.map(load, paths[i : i + 64]))))
    return time.perf_counter() - t0


def child_ray(model: Path, data: Path) -> dict:
    from audit.engines.ray import RayEngine
    from audit.model import OnnxClassifier
    from audit.sources import open_source

    clf = OnnxClassifier.load(model)
    src = open_source(data, clf.labels)
    ray, t_init, attempts = start_ray()
    engine = RayEngine(progress=False)
    t0 = time.perf_counter()
    engine.predict(clf, src, src.samples[:64])
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds, rejected = engine.predict(clf, src)
    run = engine.runs[-1]
    return {"images": len(preds) + len(rejected), "seconds": time.perf_counter() - t0, "init_s": t_init,
            "init_attempts": attempts,
            "first_64_s": t_first, "actors": run.actors, "cpus_per_actor": run.cpus_per_actor,
            "cluster_cpus": ray.cluster_resources().get("CPU", 0.0)}


def start_ray(tries: int = 3):
    """(ray, seconds of the successful ``ray.init``, attempts): a loaded machine can miss Ray's 30 s start window."""
    from audit.engines.ray import connect
    from audit.errors import UsageError

    for attempt in range(1, tries + 1):
        t0 = time.perf_counter()
        try:
            return connect(), time.perf_counter() - t0, attempt
        except UsageError:
            if attempt == tries:
                raise


def child_audit(model: Path, data: Path, engine: str) -> dict:
    from audit.config import load_config
    from audit.pipeline import run_audit

    cfg = load_config(None, {"latency.enabled": False, "pdf": False, "engine.name": engine})
    t0 = time.perf_counter()
    r = run_audit(model, data, cfg, progress=False)
    return {"images": r.data.processed, "seconds": time.perf_counter() - t0,
            "stages_s": {k: round(v, 2) for k, v in r.timings}}


def child_split(model: Path, data: Path, n: int = 2000) -> dict:
    """CPU-seconds per image of read + decode + measure vs ONNX Runtime, one thread each."""
    from audit import imaging
    from audit.engines.batch import decode_batch
    from audit.model import OnnxClassifier
    from audit.sources import open_source

    clf = OnnxClassifier.load(model, threads=1)
    src = open_source(data, clf.labels)
    pre, limits = clf.card.preprocess, imaging.Limits()
    n = min(n, len(src.samples))
    decode_s = infer_s = 0.0
    for i in range(0, n, 64):
        t0 = time.process_time()
        batch = decode_batch(src, src.samples[i : min(i + 64, n)], pre, limits)
        t1 = time.process_time()
        clf.predict_proba(batch.tensor)
        decode_s, infer_s = decode_s + t1 - t0, infer_s + time.process_time() - t1
    return {"images": n, "decode_ms": 1000 * decode_s / n, "infer_ms": 1000 * infer_s / n}


def child(argv: list[str]) -> None:
    kind, model, data = argv[0], Path(argv[1]), Path(argv[2])
    if kind == "local":
        out = child_local(model, data, floor=len(argv) > 3)
    elif kind == "ray":
        out = child_ray(model, data)
    elif kind == "split":
        out = child_split(model, data)
    else:
        out = child_audit(model, data, kind.removeprefix("audit-"))
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


def measure_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"child {args[0]} failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["load_avg"] = os.getloadavg()[0]
    print(args[0], Path(args[2]).name, json.dumps(res), flush=True)
    return res


def fit(runs: dict[int, dict], fixed: float = 0.0) -> tuple[float, float]:
    """(images/s, fixed seconds) of a line through the smallest and the largest run."""
    lo, hi = min(runs), max(runs)
    rate = (hi - lo) / max(runs[hi]["seconds"] - runs[lo]["seconds"], 1e-9)
    return rate, fixed + runs[lo]["seconds"] - lo / rate


def analyse(res: dict) -> dict:
    local, ray = res["local"], res["ray"]
    r_local, c_local = fit(local)
    init = sum(r["init_s"] for r in ray.values()) / len(ray)
    r_ray, c_ray = fit(ray, fixed=init)
    crossover = c_ray / (1 / r_local - 1 / r_ray) if r_ray > r_local else None
    big = ray[max(ray)]
    split = res["split"]
    return {"local_img_per_s": r_local, "local_fixed_s": c_local, "ray_img_per_s": r_ray, "ray_fixed_s": c_ray,
            "ray_init_s": init, "crossover_images": crossover,
            "per_actor_img_per_s": max(ray) / big["seconds"] / big["actors"],
            "decode_share": split["decode_ms"] / (split["decode_ms"] + split["infer_ms"])}


def markdown(res: dict, a: dict, model: str) -> str:
    rows = ["| engine | images | seconds | images/s | peak RSS (MiB) | load avg |", "|---|---|---|---|---|---|"]
    for name in ("local", "ray"):
        for n, r in sorted(res[name].items()):
            extra = f" (+ `ray.init` {r['init_s']:.1f} s)" if name == "ray" else ""
            rows.append(f"| {name} | {n:,} | {r['seconds']:.1f}{extra} | {n / r['seconds']:,.0f} | "
                        f"{r['peak_rss_mib']:.0f} | {r['load_avg']:.1f} |")
    small = min(res["local"])
    floor, ours = res["local"][small]["floor_s"], res["local"][small]["seconds"]
    au = res["audit"]
    cross = (f"about {a['crossover_images']:,.0f} images" if a["crossover_images"]
             else "none: on this machine the local engine is faster at every size")
    ray = res["ray"][max(res["ray"])]
    return "\n".join([
        f"# Scale: local vs Ray on one machine ({model}, {int(ray['cluster_cpus'])} CPUs)", "", *rows, "",
        f"* Ray's fixed cost: `ray.init` {a['ray_init_s']:.1f} s; a first 64-image pass (the first actor pool) "
        f"{sum(r['first_64_s'] for r in res['ray'].values()) / len(res['ray']):.1f} s; fitted fixed part of a "
        f"Ray run {a['ray_fixed_s']:.1f} s.",
        f"* Fitted rates: local {a['local_img_per_s']:,.0f} images/s, Ray {a['ray_img_per_s']:,.0f} images/s "
        f"({ray['actors']} actors × {ray['cpus_per_actor']:.2f} CPU). Smallest set where Ray matches local: {cross}.",
        f"* Local engine vs the floor (decode + preprocess + ORT only) on {small:,} images: {ours:.1f} s vs "
        f"{floor:.1f} s, ratio {ours / floor:.2f}×.",
        f"* Quick-start audit on {au['local']['images']:,} images (default checks, no latency, no rendering): "
        f"local {au['local']['seconds']:.1f} s, Ray {au['ray']['seconds']:.1f} s "
        f"(ratio {au['ray']['seconds'] / au['local']['seconds']:.2f}×; Ray starts a pool for the main pass and "
        "for each probe re-run).",
        f"* Per image, single-threaded: read + decode + measure {res['split']['decode_ms']:.3f} ms, ONNX Runtime "
        f"{res['split']['infer_ms']:.3f} ms ({a['decode_share']:.0%} decode). Per actor: "
        f"{a['per_actor_img_per_s']:,.0f} images/s.",
        "", "Command: `.venv/bin/python benchmarks/scale.py` (the load average is the machine's while each child "
        "ran; other jobs shared these cores)", ""])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/fashion_mnist_scratch/model.onnx")
    ap.add_argument("--data", type=Path, default=ROOT / "data/fashion-mnist/test")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audit-scale")
    ap.add_argument("--local-sizes", default="10000,100000,500000")
    ap.add_argument("--ray-sizes", default="10000,100000")
    args = ap.parse_args()
    if not args.model.exists() or not args.data.exists():
        sys.exit(f"need {args.model} and {args.data}: run bash scripts/quickstart.sh first")
    base = sum(1 for p in args.data.rglob("*") if p.is_file() and p.name != "metadata.csv")
    local_sizes, ray_sizes = (sorted(map(int, s.split(","))) for s in (args.local_sizes, args.ray_sizes))
    folder = {n: scale_folder(args.data, args.work, max(1, n // base)) for n in {*local_sizes, *ray_sizes}}
    m, res = str(args.model), {"split": measure_child("split", str(args.model), str(args.data)),
                               "local": {}, "ray": {}}
    for n in sorted({*local_sizes, *ray_sizes}):
        if n in local_sizes:
            res["local"][n] = measure_child("local", m, str(folder[n]), *(["floor"] if n == local_sizes[0] else []))
        if n in ray_sizes:
            res["ray"][n] = measure_child("ray", m, str(folder[n]))
    res["audit"] = {e: measure_child(f"audit-{e}", m, str(folder[local_sizes[0]])) for e in ("local", "ray")}
    a = analyse(res)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"model": args.model.name, "cores": os.cpu_count(), **res,
                                                "analysis": a}, indent=2) + "\n")
    md = markdown(res, a, args.model.parent.name or args.model.name)
    (out / "scale.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
