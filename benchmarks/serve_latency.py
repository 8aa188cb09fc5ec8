"""``POST /predict`` latency vs the floor, and a bounded load test (DESIGN §10, §6.8).

* Floor: what any server must do per request: decode the image bytes, preprocess (resize +
  normalise) and a bare ``session.run`` on it, in this process, with the same ONNX Runtime
  threads and session options as the server.
* Ours: ``POST /predict`` on the real server (``python -m audit serve`` on 127.0.0.1, started by
  the audit's own ``running_server``), timed by the client from sending the request to having
  the parsed answer: HTTP, JSON, base64, decode, preprocess, inference, response.
  Floor and ours alternate in blocks over the same images, so machine load hits both alike.
* Load: ``--load-requests`` requests from ``--concurrency`` keep-alive clients; errors must be 0.

Model: ``--model``, else ``models/fashion_mnist_baseline/model.onnx`` with test images from
``data/fashion-mnist/test`` when they exist, else the tests' colour classifier built at 224 px
with 224 px noisy photos (a realistic body size; the model itself is cheap, so the ratio is
the serving overhead at its most visible).

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


def predict_once(client, body: bytes) -> float:
    t0 = time.perf_counter()
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    r.raise_for_status()
    r.json()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an .onnx model (default: the baseline, else a 224 px colour model)")
    ap.add_argument("--images", type=Path, help="a folder of test images for --model")
    ap.add_argument("--n-images", type=int, default=32, help="distinct images the requests cycle through")
    ap.add_argument("--requests", type=int, default=400, help="sequential /predict requests (and floor runs)")
    ap.add_argument("--block", type=int, default=25, help="floor and /predict alternate in blocks of this many")
    ap.add_argument("--load-requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads, server and floor")
    ap.add_argument("--size", type=int, default=224, help="input size of the synthetic colour model")
    args = ap.parse_args()

    from audit.checks.latency import loopback_client, request_body, running_server, send_requests
    from audit.model import OnnxClassifier

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        if args.model is not None:
            model = args.model
            files = sorted(p for p in (args.images or model.parent).rglob("*") if p.suffix.lower() in
                           (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
            source = model.name
        elif BASELINE.exists() and BASELINE_DATA.exists():
            model, files, source = BASELINE, sorted(BASELINE_DATA.rglob("*.png")), "models/fashion_mnist_baseline"
        else:
            model, files = synthetic(Path(tmp), args.size, args.n_images)
            source = f"tests/builders.colour_model at {args.size} px (baseline model not found)"
        if not files:
            sys.exit(f"no test images for {model}: pass --images DIR")
        picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(args.n_images, len(files))).round()]
        images = [f.read_bytes() for f in picks]
        bodies = [request_body(b) for b in images]

        clf = OnnxClassifier.load(model, threads=args.threads)
        floor, ours = [], []
        with running_server(model, threads=args.threads) as server, loopback_client(server.url) as client:
            for i in range(20):  # warm-up both paths: allocations, page cache, connection
                floor_once(clf, images[i % len(images)])
                predict_once(client, bodies[i % len(bodies)])
            health = []
            for _ in range(100):
                t0 = time.perf_counter()
                client.get("/health").raise_for_status()
                health.append(time.perf_counter() - t0)
            for start in range(0, args.requests, args.block):
                idx = range(start, min(start + args.block, args.requests))
                floor += [floor_once(clf, images[i % len(images)]) for i in idx]
                ours += [predict_once(client, bodies[i % len(bodies)]) for i in idx]
            load = send_requests(server.url, bodies, args.load_requests, args.concurrency)

    parts = np.array(floor) * 1000.0
    floor_ms, ours_ms = parts.sum(axis=1), np.array(ours) * 1000.0
    load_ms = load.latencies_ms[load.ok]
    pre = clf.card.preprocess
    result = {
        "model": source,
        "input": f"{pre.color} {pre.size[0]}x{pre.size[1]}",
        "mean_image_bytes": int(np.mean([len(b) for b in images])),
        "mean_body_bytes": int(np.mean([len(b) for b in bodies])),
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "ort_threads": args.threads,
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
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "serve_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    f, o, ld = result["floor_ms"], result["predict_ms"], result["load"]
    fp = result["floor_parts_p50_ms"]
    md = [
        f"# /predict latency vs the floor ({result['model']}, input {result['input']}, "
        f"{result['cores']} cores, ORT threads {args.threads or 'default'})",
        "",
        f"{args.requests} sequential requests, one keep-alive client, floor and /predict alternating in blocks of "
        f"{args.block} over {len(images)} test images (mean image {result['mean_image_bytes']:,} bytes, "
        f"body {result['mean_body_bytes']:,} bytes). 1-min load average at the end: {result['load_average_1min']}.",
        "",
        "| path | p50 ms | p95 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|",
        f"| floor: decode + preprocess + bare `session.run` | {f['p50']:.2f} | {f['p95']:.2f} | {f['p99']:.2f} | "
        f"{f['mean']:.2f} |",
        f"| `POST /predict` (HTTP + JSON + base64 + the same work) | {o['p50']:.2f} | {o['p95']:.2f} | "
        f"{o['p99']:.2f} | {o['mean']:.2f} |",
        f"| ratio /predict / floor | {result['ratio_p50']:.2f}× | {result['ratio_p95']:.2f}× | | |",
        f"| `GET /health` (HTTP round trip alone) | {result['health_ms']['p50']:.2f} | "
        f"{result['health_ms']['p95']:.2f} | {result['health_ms']['p99']:.2f} | {result['health_ms']['mean']:.2f} |",
        "",
        f"Floor parts (p50): decode {fp['decode']:.2f} ms, preprocess {fp['preprocess']:.2f} ms, session.run "
        f"{fp['session_run']:.2f} ms.",
        "",
        f"Load test: {ld['requests']:,} requests at concurrency {ld['concurrency']}: **{ld['errors']} errors**, "
        f"p50 {ld['p50']:.1f} ms, p95 {ld['p95']:.1f} ms, p99 {ld['p99']:.1f} ms, "
        f"{ld['throughput_rps']:.0f} requests/s ({ld['wall_s']:.1f} s).",
        "",
        "Command: `.venv/bin/python benchmarks/serve_latency.py`",
        "",
    ]
    (out / "serve_latency.md").write_text("\n".join(md))
    print("\n".join(md))
    if ld["errors"]:
        sys.exit(f"load test: {ld['errors']} errors (first: {ld['first_error']})")


if __name__ == "__main__":
    main()
