"""``POST /predict`` latency vs the floor, and the serving choices side by side (docs/ARCHITECTURE.md §12).

* Floor: what any server must do per request: decode the image bytes, preprocess (resize +
  normalise) and a bare ``session.run``, in this process, with the same ONNX Runtime threads.
* Servers: ``python -m audit serve`` on 127.0.0.1 (started by ``audit.loadgen.running_server``),
  timed by one keep-alive ``http.client`` client from sending the request to having the parsed
  answer. Arms: the default server, and one changed choice each (h11 + asyncio instead of
  httptools + uvloop; every request in a thread; every request inline).
* All arms are up at once and alternate in blocks, ``--runs`` rounds, the order rotating each
  round, so machine load hits all alike; each round's p50 is kept to show the noise.
* What the ratio is made of: the same server answering a request with an empty image (422 after
  HTTP, JSON and validation, no image work), the in-process cost of parsing the body (JSON,
  pydantic, base64), and CPU time per request of the server process and of the client thread
  (robust to the machine's load, unlike wall time).

Models: see ``serve_models.py`` (quick-start scratch CNN, colour model and ResNet-18 at 224 px).

    .venv/bin/python benchmarks/serve_latency.py
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from serve_models import Case, colour224, quickstart, resnet18_224  # noqa: E402

FLOOR = "floor (in process)"
EMPTY = "ours, empty image (422: HTTP + JSON, no image work)"
# arm -> (server flags, client); "raw" is the cheapest client (below), "http.client" the stdlib's
ARMS = {
    "ours (default)": ([], "raw"),
    "ours, http.client client": ([], "http.client"),
    "h11 + asyncio": (["--http", "h11", "--loop", "asyncio"], "raw"),
    "always in a thread": (["--inline-below-ms", "0"], "raw"),
    "always inline": (["--inline-below-ms", "1000"], "raw"),
    EMPTY: ([], "raw"),
}


class RawClient:
    """A keep-alive HTTP/1.1 client with nothing in it: one ``sendall``, reads framed by Content-Length.

    It costs the benchmark's CPU a fraction of ``http.client``'s, which matters when client and
    server share 2 cores: what remains is the server's time.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def post(self, body: bytes) -> tuple[int, bytes]:
        if select.select([self.sock], [], [], 0)[0]:  # the server closed an idle connection (keep-alive timeout)
            self.sock.close()
            self.sock = self._connect()
        self.sock.sendall(b"POST /predict HTTP/1.1\r\nhost: b\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (len(body), body))
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, _, data = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(data) < length:
            data += self.sock.recv(65536)
        return int(head[9:12]), data

    def close(self) -> None:
        self.sock.close()


def pct(ms, q: float) -> float:
    return round(float(np.percentile(ms, q)), 3)


def cpu_ms(pid: int) -> float:
    """CPU time of every thread of process ``pid`` so far (ns-precise ``schedstat``), in ms."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread may exit between listing and reading
            total += int(stat.read_text().split()[0])
    return total / 1e6


def floor_once(clf, data: bytes) -> None:
    from audit import imaging

    pre = clf.card.preprocess
    img, _ = imaging.decode(data, pre.color)
    x = imaging.to_tensor(imaging.resize(img, pre), pre)[None]
    clf.session.run([clf.output_name], {clf.graph.input_name: x})


def poster(client, expect: int):
    from audit.loadgen import request

    def post(body: bytes) -> None:
        if isinstance(client, RawClient):
            status, data = client.post(body)
        else:
            try:
                status, data = request(client, "POST", "/predict", body)
            except (ConnectionError, http.client.HTTPException):  # an idle keep-alive connection was closed
                client.close()
                status, data = request(client, "POST", "/predict", body)
        json.loads(data)
        if status != expect:
            sys.exit(f"/predict answered {status}: {data[:200]!r}")

    return post


def parse_cost_ms(bodies: list[bytes], limits, repeats: int = 200) -> dict[str, float]:
    """CPU ms (p50, in process) of what the server does to a body before decoding: JSON + pydantic, base64, header."""
    from audit.serve.endpoint import parse_request
    from audit.serve.images import check_header, decode_base64

    parts: dict[str, list[float]] = {"json": [], "base64": [], "header": []}
    for i in range(repeats):
        c0 = time.process_time()
        req = parse_request(bodies[i % len(bodies)], "application/json")
        c1 = time.process_time()
        data = decode_base64(req.image_b64, limits.max_image_bytes)
        c2 = time.process_time()
        check_header(data, limits)
        c3 = time.process_time()
        for k, a, b in zip(parts, (c0, c1, c2), (c1, c2, c3)):
            parts[k].append((b - a) * 1000.0)
    return {k: round(float(np.median(v)), 3) for k, v in parts.items()}


def interleave(calls: dict, pids: dict, runs: int, block: int) -> tuple[dict, dict, dict]:
    """Every arm sends one request per turn, the order rotating, so load spikes hit all arms alike.

    Returns per arm: wall ms per request (list per round), server CPU ms per request (per round; for
    the floor, this process's CPU over all threads, ORT's included), client CPU ms per request.
    """
    arms = list(calls)
    wall = {a: [] for a in arms}
    server = {a: [] for a in arms}
    client: dict[str, list[float]] = {a: [] for a in arms}
    for _ in range(runs):
        floor_cpu: list[float] = []
        rnd = {a: [] for a in arms}
        cpu0 = {a: cpu_ms(pids[a]) for a in arms if a != FLOOR}
        for i in range(block):
            k = i % len(arms)
            for a in arms[k:] + arms[:k]:
                c0, p0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
                calls[a](i)
                rnd[a].append((time.perf_counter() - t0) * 1000.0)
                if a == FLOOR:
                    floor_cpu.append((time.process_time() - p0) * 1000.0)
                else:
                    client[a].append((time.thread_time() - c0) * 1000.0)
        for a in arms:
            wall[a].append(rnd[a])
            server[a].append(float(np.median(floor_cpu)) if a == FLOOR else (cpu_ms(pids[a]) - cpu0[a]) / block)
    return wall, server, client


def measure(case: Case, args) -> dict:
    from audit.loadgen import connect, request, request_body, running_server
    from audit.model import OnnxClassifier
    from audit.serve import ServeLimits

    bodies = [request_body(b) for b in case.images]
    clf = OnnxClassifier.load(case.model, threads=args.threads)
    with contextlib.ExitStack() as stack:
        servers = {arm: stack.enter_context(running_server(case.model, threads=args.threads, extra_args=flags))
                   for arm, (flags, _) in ARMS.items()}
        clients = {arm: RawClient(s.url) if ARMS[arm][1] == "raw" else connect(s.url) for arm, s in servers.items()}
        for c in clients.values():
            stack.callback(c.close)
        calls = {FLOOR: lambda i: floor_once(clf, case.images[i % len(case.images)])}
        for arm, c in clients.items():
            post = poster(c, 422 if arm == EMPTY else 200)
            calls[arm] = (lambda i, post=post: post(b'{"image_b64": ""}')) if arm == EMPTY else (
                lambda i, post=post: post(bodies[i % len(bodies)]))
        t0 = time.perf_counter()
        for i in range(20):  # warm-up (allocations, page cache), taking turns so no connection idles
            for call in calls.values():
                call(i)
        turn_s = (time.perf_counter() - t0) / 20
        block = max(20, min(args.block, int(args.seconds / (args.runs * turn_s))))  # slow models: fewer requests
        wall, server, client = interleave(calls, {a: s.pid for a, s in servers.items()}, args.runs, block)
        with contextlib.closing(connect(servers["ours (default)"].url)) as conn:
            scheduling = json.loads(request(conn, "GET", "/model")[1])["scheduling"]
    floor = np.concatenate(wall[FLOOR])
    out = {"model": case.name, "images": len(case.images), "mean_body_bytes": int(np.mean([len(b) for b in bodies])),
           "runs": args.runs, "block": block,
           "scheduling": scheduling, "before_decode_cpu_ms": parse_cost_ms(bodies, ServeLimits()), "arms": {}}
    for arm, rounds in wall.items():
        ms = np.concatenate(rounds)
        out["arms"][arm] = {
            "p50": pct(ms, 50), "p99": pct(ms, 99), "round_p50s": [pct(r, 50) for r in rounds],
            "ratio_p50": round(float(np.median(ms) / np.median(floor)), 2),
            "ratio_p99": round(float(np.percentile(ms, 99) / np.percentile(floor, 99)), 2),
            "server_cpu_ms": round(float(np.median(server[arm])), 3),
            "client_cpu_ms": round(float(np.median(client[arm])), 3) if client[arm] else None}
    return out


def markdown(result: dict) -> str:
    md = [f"# /predict latency vs the floor ({result['cores']} cores, shared; ORT threads "
          f"{result['ort_threads'] or 'default'})", "",
          "The floor is decode + preprocess + bare `session.run` in this process, same ORT threads. Each server arm "
          "is its own `python -m audit serve` process with one keep-alive client (a raw-socket client unless the "
          "arm says http.client). Arms take turns request by request, the order rotating, so machine load hits "
          "all arms alike. Wall milliseconds on the client; CPU milliseconds per request of the server process "
          "(all threads; it includes uvicorn's 10 Hz housekeeping, visible only when requests are slow) and of "
          f"the client thread. 1-min load average {result['load_before']} before and {result['load_after']} "
          "after: other jobs share the 2 cores, so wall times are noisy (see the per-round p50s); CPU times are "
          "not inflated by waiting.", ""]
    for c in result["cases"]:
        md += [f"## {c['model']}, mean body {c['mean_body_bytes']:,} B", "",
               f"{c['runs']} rounds of {c['block']} requests per arm.", "",
               "| arm | p50 | p99 | ratio p50 | ratio p99 | p50 per round | server CPU / req | client CPU / req |",
               "|---|---|---|---|---|---|---|---|"]
        for arm, a in c["arms"].items():
            cli = "—" if a["client_cpu_ms"] is None else f"{a['client_cpu_ms']:.3f}"
            md.append(f"| {arm} | {a['p50']:.3f} | {a['p99']:.3f} | {a['ratio_p50']:.2f}× | {a['ratio_p99']:.2f}× | "
                      f"{', '.join(f'{x:.2f}' for x in a['round_p50s'])} | {a['server_cpu_ms']:.3f} | {cli} |")
        m = c["scheduling"]["measured"]
        b = c["before_decode_cpu_ms"]
        md += ["", f"Before decoding, per request (CPU, in process): JSON + pydantic {b['json']:.3f} ms, base64 "
                   f"{b['base64']:.3f} ms, header check {b['header']:.3f} ms. The server's start-up measurement: "
                   f"model {m['model_ms']:.3f} ms, decode "
                   f"{m['prepare_us_per_kpixel']:.1f} µs per 1,000 pixels (requests predicted under "
                   f"{c['scheduling']['inline_below_ms']:g} ms run inline).", ""]
    md += [f"Command: `{result['command']}`", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=32, help="distinct images the requests cycle through")
    ap.add_argument("--runs", type=int, default=5, help="rounds (a p50 per round shows the noise)")
    ap.add_argument("--block", type=int, default=200, help="requests per arm per round (at most)")
    ap.add_argument("--seconds", type=float, default=300, help="time budget per model: fewer requests for slow ones")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads, servers and floor")
    ap.add_argument("--only", choices=["quickstart", "colour224", "resnet18"], action="append",
                    help="measure only these models (repeatable)")
    ap.add_argument("--out", default="serve_latency", help="results/<out>.json and .md")
    args = ap.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    cases = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        builders = {"quickstart": lambda: quickstart(args.n_images),
                    "colour224": lambda: colour224(Path(tmp), args.n_images),
                    "resnet18": lambda: resnet18_224(Path(tmp), args.n_images)}
        for name, build in builders.items():
            if args.only and name not in args.only:
                continue
            case = build()
            if case is not None:
                cases.append(measure(case, args))
                print(json.dumps(cases[-1]), flush=True)
    result = {"cores": len(os.sched_getaffinity(0)), "ort_threads": args.threads, "load_before": load_before,
              "load_after": round(os.getloadavg()[0], 2),
              "command": " ".join(["python", "benchmarks/serve_latency.py", *sys.argv[1:]]), "cases": cases}
    common.write(args.out, result, markdown(result).splitlines())


if __name__ == "__main__":
    main()
