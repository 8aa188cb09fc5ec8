"""Throughput at concurrency 8 vs one client, with and without micro-batching (``--max-batch``).

Three servers of the same model run side by side: the default (``--max-batch 1``), a
micro-batching one (``--max-batch 8 --max-wait-ms 2``) and one whose ONNX Runtime uses one
thread per call (``--threads 1``: concurrent requests then run side by side instead of sharing
the cores inside each call). Arms alternate round by round (order rotating): 1 client and 8
clients on each server. Clients are raw-socket keep-alive threads
(``serve_latency.RawClient``), so the benchmark process spends little of the shared CPU. The
in-process floor (decode + preprocess + ``session.run``, batch 1 and batch 8) gives the ceiling
the model and decoder allow on this machine.

    .venv/bin/python benchmarks/serve_throughput.py
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_latency import RawClient, cpu_ms, pct  # noqa: E402
import common  # noqa: E402
from serve_models import Case, colour224, quickstart, resnet18_224  # noqa: E402

SERVERS = {"batch 1": [], "max-batch 8": ["--max-batch", "8", "--max-wait-ms", "2"],
           "batch 1, ORT threads 1": ["--threads", "1"]}
ARMS = [(server, clients) for server in SERVERS for clients in (1, 8)]


def load(url: str, bodies: list[bytes], n: int, clients: int) -> tuple[float, np.ndarray]:
    """``n`` requests from ``clients`` raw keep-alive connections; (requests per second, latencies ms)."""
    conns = [RawClient(url) for _ in range(clients)]
    counter = itertools.count()
    lat = np.full(n, np.nan)
    lock = threading.Lock()

    def worker(c: RawClient) -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= n:
                return
            t0 = time.perf_counter()
            status, data = c.post(bodies[i % len(bodies)])
            lat[i] = (time.perf_counter() - t0) * 1000.0
            if status != 200:
                raise RuntimeError(f"/predict answered {status}: {data[:200]!r}")

    try:
        threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    if np.isnan(lat).any():
        sys.exit("some requests failed; see the traceback above")
    return n / wall, lat


def floor_rps(clf, images: list[bytes], n: int, batch: int) -> tuple[float, float]:
    """In process: (images per second, CPU ms per image of session.run alone, all threads)."""
    from audit import imaging

    pre = clf.card.preprocess
    run_cpu = 0.0
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        xs = [imaging.to_tensor(imaging.resize(imaging.decode(images[i % len(images)], pre.color)[0], pre), pre)
              for i in range(start, min(n, start + batch))]
        c0 = time.process_time()
        clf.session.run([clf.output_name], {clf.graph.input_name: np.stack(xs)})
        run_cpu += time.process_time() - c0
    return n / (time.perf_counter() - t0), run_cpu * 1000.0 / n


def measure(case: Case, args) -> dict:
    from audit.loadgen import request_body, running_server
    from audit.model import OnnxClassifier

    bodies = [request_body(b) for b in case.images]
    clf = OnnxClassifier.load(case.model, threads=args.threads)
    n = args.requests
    rows: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(running_server(case.model, threads=args.threads, extra_args=flags))
                   for name, flags in SERVERS.items()}
        for server, clients in ARMS:  # warm-up
            load(servers[server].url, bodies, 16, clients)
        runs: dict[tuple, list] = {arm: [] for arm in ARMS}
        floors: dict[int, list] = {1: [], 8: []}
        for r in range(args.runs):
            for arm in ARMS[r % len(ARMS):] + ARMS[: r % len(ARMS)]:
                server = servers[arm[0]]
                c0 = cpu_ms(server.pid)
                rps, lat = load(server.url, bodies, n, arm[1])
                runs[arm].append((rps, lat, (cpu_ms(server.pid) - c0) / n))
            for batch in floors:
                floors[batch].append(floor_rps(clf, case.images, n, batch))
    seq = np.median([rps for rps, _, _ in runs[("batch 1", 1)]])
    for (server, clients), rr in runs.items():
        lat = np.concatenate([x for _, x, _ in rr])
        rows[f"{server}, {clients} client{'s' if clients > 1 else ''}"] = {
            "rps": round(float(np.median([x for x, _, _ in rr])), 1), "rps_runs": [round(x, 1) for x, _, _ in rr],
            "vs_sequential": round(float(np.median([x for x, _, _ in rr]) / seq), 2),
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "server_cpu_ms_per_request": round(float(np.median([c for _, _, c in rr])), 3)}
    return {"model": case.name, "requests_per_run": n, "runs": args.runs, "arms": rows,
            "floor_rps": {f"batch {b}": round(float(np.median([r for r, _ in v])), 1) for b, v in floors.items()},
            "floor_rps_runs": {f"batch {b}": [round(r, 1) for r, _ in v] for b, v in floors.items()},
            "model_cpu_ms_per_image": {f"batch {b}": round(float(np.median([c for _, c in v])), 2)
                                       for b, v in floors.items()}}


def markdown(result: dict) -> str:
    md = [f"# /predict throughput: concurrency 8 vs 1, micro-batching ({result['cores']} cores, shared)", "",
          "Three servers of each model side by side (`--max-batch 1`; `--max-batch 8 --max-wait-ms 2`; `--threads 1`); "
          "1 or 8 "
          f"raw-socket keep-alive clients; arms alternate round by round, {result['runs']} rounds of "
          f"{result['requests']} requests. Median requests/s over rounds (all rounds listed), latency percentiles "
          f"over all requests. 1-min load average {result['load_before']} before, {result['load_after']} after.", ""]
    for c in result["cases"]:
        md += [f"## {c['model']}", "", "| arm | requests/s | × 1 client, batch 1 | per round | p50 ms | p99 ms | "
               "server CPU ms / req |", "|---|---|---|---|---|---|---|"]
        for arm, a in c["arms"].items():
            md.append(f"| {arm} | {a['rps']:.1f} | {a['vs_sequential']:.2f}× | "
                      f"{', '.join(f'{x:.0f}' for x in a['rps_runs'])} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | "
                      f"{a['server_cpu_ms_per_request']:.2f} |")
        md += ["", "In-process floor (decode + preprocess + `session.run`, one Python thread): " + ", ".join(
            f"{k} {v:.1f} images/s" for k, v in c["floor_rps"].items()) + "; CPU of `session.run` per image (all "
            "threads): " + ", ".join(f"{k} {v:.2f} ms" for k, v in c["model_cpu_ms_per_image"].items()) + ".", ""]
    md += [f"Command: `{result['command']}`", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=32)
    ap.add_argument("--requests", type=int, default=200, help="requests per arm per round")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    ap.add_argument("--only", choices=["quickstart", "colour224", "resnet18"], action="append")
    ap.add_argument("--out", default="serve_throughput")
    args = ap.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    cases = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        builders = {"quickstart": lambda: quickstart(args.n_images),
                    "colour224": lambda: colour224(Path(tmp), args.n_images),
                    "resnet18": lambda: resnet18_224(Path(tmp), args.n_images)}
        for name in args.only or ["colour224", "resnet18"]:
            case = builders[name]()
            if case is not None:
                cases.append(measure(case, args))
                print(json.dumps(cases[-1]), flush=True)
    result = {"cores": len(os.sched_getaffinity(0)), "runs": args.runs, "requests": args.requests,
              "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
              "command": " ".join(["python", "benchmarks/serve_throughput.py", *sys.argv[1:]]), "cases": cases}
    common.write(args.out, result, markdown(result).splitlines())


if __name__ == "__main__":
    main()
