"""``POST /predict`` latency vs the floor, and a bounded load test (DESIGN §10, §6.8).

* Floor: what any server must do per request: decode the image bytes, preprocess (resize +
  normalise) and a bare ``session.run`` on it, in this process, with the same ONNX Runtime
  threads and session options as the server.
* Ours: ``POST /predict`` on the real server (``python -m audit serve`` on 127.0.0.1, started by
  the audit's own ``running_server``), timed by the client from sending the request to having
  the parsed answer: HTTP, JSON, base64, decode, preprocess, inference, response.
  Floor and ours alternate in blocks over the same images, so machine load hits both alike.
* Load: ``--load-requests`` requests from ``--concurrency`` keep-alive clients; errors must be 0.

Models: ``--model`` (with ``--images``), else ``models/fashion_mnist_baseline/model.onnx`` on
``data/fashion-mnist/test`` when both exist, and always the tests' colour classifier built at
224 px with 224 px noisy photos (a realistic ~170 kB body; the model itself is cheap, so the
ratio shows the serving overhead at its most visible).

    .venv/bin/python benchmarks/serve_latency.py
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

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = ROOT / "models/fashion_mnist_baseline/model.onnx"
BASELINE_DATA = ROOT / "data/fashion-mnist/test"


def percentiles(ms: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "mean": round(float(ms.mean()), 3)}


def synthetic(tmp: Path, size: int, n_images: int) -> tuple[Path, list[Path]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import COLOURS, colour_image, colour_model

    model = colour_model(tmp / "colour224.onnx", size=size)
    files = []
    for i in range(n_images):
        f = tmp / f"{i:03d}.png"
        colour_image(list(COLOURS)[i % len(COLOURS)], size=size, seed=i).save(f)
        files.append(f)
    return model, files


def floor_once(clf, data: bytes) -> tuple[float, float, float]:
    """Seconds for decode, preprocess and a bare session.run of one image."""
    from audit import imaging

    pre = clf.card.preprocess
    t0 = time.perf_counter()
    img, _ = imaging.decode(data, pre.color)
    t1 = time.perf_counter()
    x = imaging.to_tensor(imaging.resize(img, pre), pre)[None]
    t2 = time.perf_counter()
    clf.session.run([clf.output_name], {clf.graph.input_name: x})
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def predict_once(conn, body: bytes) -> float:
    from audit.loadgen import request

    t0 = time.perf_counter()
    status, data = request(conn, "POST", "/predict", body)
    json.loads(data)
    if status != 200:
        sys.exit(f"/predict answered {status}: {data[:200]!r}")
    return time.perf_counter() - t0


def measure(model: Path, files: list[Path], name: str, args) -> dict:
    """One model: floor and /predict alternating in blocks, /health, then the load test."""
    from audit.loadgen import connect, request, request_body, running_server, send_requests
    from audit.model import OnnxClassifier

    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(args.n_images, len(files))).round()]
    images = [f.read_bytes() for f in picks]
    bodies = [request_body(b) for b in images]
    clf = OnnxClassifier.load(model, threads=args.threads)
    floor, ours, health = [], [], []
    with running_server(model, threads=args.threads) as server:
        client = connect(server.url)
        for i in range(20):  # warm-up both paths: allocations, page cache, connection
            floor_once(clf, images[i % len(images)])
            predict_once(client, bodies[i % len(bodies)])
        for _ in range(100):
            t0 = time.perf_counter()
            request(client, "GET", "/health")
            health.append(time.perf_counter() - t0)
        for start in range(0, args.requests, args.block):
            idx = range(start, min(start + args.block, args.requests))
            floor += [floor_once(clf, images[i % len(images)]) for i in idx]
            ours += [predict_once(client, bodies[i % len(bodies)]) for i in idx]
        client.close()
        load = send_requests(server.url, bodies, args.load_requests, args.concurrency)

    parts = np.array(floor) * 1000.0
    floor_ms, ours_ms = parts.sum(axis=1), np.array(ours) * 1000.0
    load_ms = load.latencies_ms[load.ok]
    pre = clf.card.preprocess
    return {
        "model": name,
        "input": f"{pre.color} {pre.size[0]}x{pre.size[1]}",
        "images": len(images),
        "mean_image_bytes": int(np.mean([len(b) for b in images])),
        "mean_body_bytes": int(np.mean([len(b) for b in bodies])),
        "requests": args.requests,
        "floor_ms": percentiles(floor_ms),
        "floor_parts_p50_ms": {k: round(float(np.median(parts[:, j])), 3)
                               for j, k in enumerate(("decode", "preprocess", "session_run"))},
        "predict_ms": percentiles(ours_ms),
        "health_ms": percentiles(np.array(health) * 1000.0),
        "ratio_p50": round(float(np.median(ours_ms) / np.median(floor_ms)), 2),
        "ratio_p95": round(float(np.percentile(ours_ms, 95) / np.percentile(floor_ms, 95)), 2),
        "overhead_p50_ms": round(float(np.median(ours_ms) - np.median(floor_ms)), 3),
        "load": {
            "requests": args.load_requests,
            "concurrency": args.concurrency,
            "errors": int((~load.ok).sum()),
            "first_error": load.first_error,
            **percentiles(load_ms),
            "throughput_rps": round(len(load_ms) / load.wall_s, 1),
            "wall_s": round(load.wall_s, 2),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an .onnx model (default: the baseline and a 224 px colour model)")
    ap.add_argument("--images", type=Path, help="a folder of test images for --model")
    ap.add_argument("--n-images", type=int, default=32, help="distinct images the requests cycle through")
    ap.add_argument("--requests", type=int, default=400, help="sequential /predict requests (and floor runs)")
    ap.add_argument("--block", type=int, default=25, help="floor and /predict alternate in blocks of this many")
    ap.add_argument("--load-requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads, server and floor")
    ap.add_argument("--size", type=int, default=224, help="input size of the synthetic colour model")
    args = ap.parse_args()

    cases = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        if args.model is not None:
            files = sorted(p for p in (args.images or args.model.parent).rglob("*")
                           if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
            if not files:
                sys.exit(f"no test images for {args.model}: pass --images DIR")
            cases.append(measure(args.model, files, args.model.name, args))
        else:
            if BASELINE.exists() and BASELINE_DATA.exists():
                cases.append(measure(BASELINE, sorted(BASELINE_DATA.rglob("*.png")), "fashion_mnist_baseline", args))
            model, files = synthetic(Path(tmp), args.size, args.n_images)
            cases.append(measure(model, files, f"colour model {args.size} px (tests/builders)", args))

    result = {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "ort_threads": args.threads,
        "cases": cases,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "serve_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# /predict latency vs the floor ({result['cores']} cores, ORT threads {args.threads or 'default'})",
        "",
        f"{args.requests} sequential requests per model from one keep-alive client; the floor (decode + preprocess + "
        f"bare `session.run`, same threads) and `POST /predict` alternate in blocks of {args.block} over the same "
        f"{args.n_images} test images. Milliseconds, client side. 1-min load average at the end: "
        f"{result['load_average_1min']} (the machine is shared).",
        "",
        "| model (input, mean body) | floor p50 | floor p95 | /predict p50 | /predict p95 | /predict p99 | "
        "ratio p50 | ratio p95 | GET /health p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        f, o = c["floor_ms"], c["predict_ms"]
        md.append(f"| {c['model']} ({c['input']}, {c['mean_body_bytes']:,} B) | {f['p50']:.2f} | {f['p95']:.2f} | "
                  f"{o['p50']:.2f} | {o['p95']:.2f} | {o['p99']:.2f} | {c['ratio_p50']:.2f}× | "
                  f"{c['ratio_p95']:.2f}× | {c['health_ms']['p50']:.2f} |")
    md += ["", "Floor parts (p50, ms): " + "; ".join(
        f"{c['model']}: decode {c['floor_parts_p50_ms']['decode']:.2f}, preprocess "
        f"{c['floor_parts_p50_ms']['preprocess']:.2f}, session.run {c['floor_parts_p50_ms']['session_run']:.2f}"
        for c in cases) + ".", "",
        f"Load test: {args.load_requests:,} requests at concurrency {args.concurrency} on loopback.", "",
        "| model | errors | p50 ms | p95 ms | p99 ms | requests/s | wall s |", "|---|---|---|---|---|---|---|"]
    for c in cases:
        ld = c["load"]
        md.append(f"| {c['model']} | **{ld['errors']}** | {ld['p50']:.1f} | {ld['p95']:.1f} | {ld['p99']:.1f} | "
                  f"{ld['throughput_rps']:.0f} | {ld['wall_s']:.1f} |")
    md += ["", "Command: `.venv/bin/python benchmarks/serve_latency.py`", ""]
    (out / "serve_latency.md").write_text("\n".join(md))
    print("\n".join(md))
    failed = [c["model"] for c in cases if c["load"]["errors"]]
    if failed:
        sys.exit(f"load test errors for {', '.join(failed)}")


if __name__ == "__main__":
    main()
