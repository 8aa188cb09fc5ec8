"""What answering ``/predict`` through FastAPI costs, vs the plain ASGI handler the server uses.

The same tiny request (a 1 kB JSON body validated by the same pydantic model, a fixed answer, no
image work) is served four ways, each by its own uvicorn process (httptools + uvloop):

* ``FastAPI route``: ``@app.post`` with a pydantic body and ``response_model`` (the server before);
* ``Starlette route``: a plain ``Request -> Response`` route inside the FastAPI app;
* ``ASGI middleware``: a middleware that answers ``/predict`` before routing (what ``audit.serve`` does);
* ``bare ASGI``: the handler alone, no FastAPI at all (the floor of this comparison).

Arms take turns request by request (raw-socket keep-alive client); wall time on the client and
CPU per request of each server process.

    .venv/bin/python benchmarks/serve_app_overhead.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_latency import RawClient, cpu_ms, pct  # noqa: E402

BODY = json.dumps({"image_b64": "A" * 1000}).encode()
ANSWER = json.dumps({"class": "sneaker", "prob": 0.94}).encode()


async def _read(receive) -> bytes:
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(chunks)


async def _reply(send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]})
    await send({"type": "http.response.body", "body": ANSWER})


def _bare_app():
    from audit.serve.schema import PredictRequest

    async def app(scope, receive, send):
        PredictRequest.model_validate_json(await _read(receive))
        await _reply(send)

    return app


def build(kind: str):
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from audit.serve.schema import Prediction, PredictRequest

    if kind == "bare ASGI":
        return _bare_app()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    if kind == "FastAPI route":
        @app.post("/predict", response_model=Prediction, response_model_exclude_none=True)
        async def predict(body: PredictRequest) -> Prediction:
            return Prediction(label="sneaker", prob=0.94)
    elif kind == "Starlette route":
        async def plain(request: Request) -> Response:
            PredictRequest.model_validate_json(await request.body())
            return Response(ANSWER, media_type="application/json")

        app.router.add_route("/predict", plain, methods=["POST"])
    else:
        class Answer:
            def __init__(self, inner) -> None:
                self.inner = inner

            async def __call__(self, scope, receive, send) -> None:
                if scope["type"] == "http" and scope["path"] == "/predict":
                    PredictRequest.model_validate_json(await _read(receive))
                    return await _reply(send)
                await self.inner(scope, receive, send)

        app.add_middleware(Answer)
    return app


def _serve(kind: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build(kind), host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
                http="httptools", loop="uvloop")


def _connect(ports: dict[str, int]) -> dict:
    """A raw-socket client per arm, once its server accepts connections (at most a minute each)."""
    clients = {}
    for k, port in ports.items():
        for _ in range(600):
            try:
                clients[k] = RawClient(f"http://127.0.0.1:{port}")
                break
            except OSError:
                time.sleep(0.1)
    return clients


def _measure(kinds: list[str], procs: dict, clients: dict, runs: int, block: int) -> tuple[dict, dict]:
    """Client wall ms per request (a list per round) and server CPU ms per request (one per round), per arm."""
    wall = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}
    for _ in range(runs):
        rnd = {k: [] for k in kinds}
        c0 = {k: cpu_ms(procs[k].pid) for k in kinds}
        for i in range(block):
            for k in kinds[i % 4:] + kinds[: i % 4]:
                t0 = time.perf_counter()
                clients[k].post(BODY)
                rnd[k].append((time.perf_counter() - t0) * 1000.0)
        for k in kinds:
            wall[k].append(rnd[k])
            cpu[k].append((cpu_ms(procs[k].pid) - c0[k]) / block)
    return wall, cpu


def _markdown(result: dict) -> list[str]:
    rows, runs, block = result["arms"], result["runs"], result["block"]
    md = [f"# POST /predict framework overhead ({result['cores']} cores, shared)", "",
          "A 1 kB JSON body validated by `PredictRequest`, a fixed answer, no image work; each arm its own uvicorn "
          f"process (httptools + uvloop); arms take turns request by request, {runs} rounds of {block}. "
          f"1-min load average {result['load_before']} before, {result['load_after']} after.", "",
          "| arm | p50 ms | p99 ms | p50 per round | server CPU ms / req |", "|---|---|---|---|---|"]
    for k, r in rows.items():
        md.append(f"| {k} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {', '.join(f'{x:.3f}' for x in r['round_p50s'])} "
                  f"| {r['server_cpu_ms']:.3f} |")
    md += ["", f"Command: `{result['command']}`", ""]
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--block", type=int, default=1000)
    args = ap.parse_args()
    from audit.loadgen import free_port

    kinds = ["FastAPI route", "Starlette route", "ASGI middleware", "bare ASGI"]
    ports = {k: free_port() for k in kinds}
    procs = {k: multiprocessing.get_context("spawn").Process(target=_serve, args=(k, p), daemon=True)
             for k, p in ports.items()}
    load_before = round(os.getloadavg()[0], 2)
    for p in procs.values():
        p.start()
    try:
        clients = _connect(ports)
        for _ in range(50):
            for c in clients.values():
                c.post(BODY)
        wall, cpu = _measure(kinds, procs, clients, args.runs, args.block)
    finally:
        for p in procs.values():
            p.terminate()
    rows = {k: {"p50_ms": pct(np.concatenate(wall[k]), 50), "p99_ms": pct(np.concatenate(wall[k]), 99),
                "round_p50s": [pct(r, 50) for r in wall[k]], "server_cpu_ms": round(float(np.median(cpu[k])), 3)}
            for k in kinds}
    result = {"cores": len(os.sched_getaffinity(0)), "runs": args.runs, "block": args.block,
              "load_before": load_before, "load_after": round(os.getloadavg()[0], 2), "arms": rows,
              "command": " ".join(["python", "benchmarks/serve_app_overhead.py", *sys.argv[1:]])}
    md = _markdown(result)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "serve_app_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "serve_app_overhead.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
