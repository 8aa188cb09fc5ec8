"""HTTP load generation against ``python -m audit serve``: start the real server, send real requests.

Shared by the latency check (``audit.checks.latency``) and ``benchmarks/serve_latency.py``. The
server runs in a subprocess on 127.0.0.1 at a free port, the same command a user deploys; the
client is the standard library's ``http.client`` with keep-alive connections, one thread per
concurrent client, so the numbers describe the server rather than the load generator.

Example::

    with running_server(Path("model.onnx")) as server:
        run = send_requests(server.url, [request_body(png)], n=100, concurrency=4)
        run.latencies_ms[run.ok]
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import EXIT_INTERNAL, AuditError

HOST = "127.0.0.1"
SKIP_HINT = "in an audit, pass --no-latency to skip the latency check"


class ServerError(AuditError):
    """The server could not be started or reached, so nothing was measured."""

    exit_code = EXIT_INTERNAL


def request_body(image: bytes, top_k: int | None = None) -> bytes:
    """The JSON body of one ``/predict`` request for an image file's bytes."""
    d: dict[str, Any] = {"image_b64": base64.b64encode(image).decode("ascii")}
    if top_k is not None:
        d["top_k"] = top_k
    return json.dumps(d).encode()


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int
    startup_s: float
    log: Path  # the server's stdout and stderr


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerStart:
    """``python -m audit serve`` on 127.0.0.1 at a free port, started now and used later.

    The process starts in the constructor, so it loads while the caller works (the latency check starts it
    before inference). ``ready()`` waits (at most ``startup_timeout_s`` from then) until ``GET /health``
    answers 200, on another port when the first was taken; it raises ``ServerError`` with the server's last
    stderr line when it exits or never answers. ``close()`` stops it and removes its folder (also done when
    the object is collected or the interpreter exits). ``open_files`` lowers the server's open-file limit
    (RLIMIT_NOFILE), as a small container has.
    """

    ATTEMPTS = 3  # another process may take the free port between probe and bind

    def __init__(self, model_path: Path, *, threads: int = 0, card_overrides: Mapping[str, Any] | None = None,
                 extra_args: Sequence[str] = (), startup_timeout_s: float = 60.0,
                 open_files: int | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="audit-serve-")
        args = ["--threads", str(threads), "--log-level", "warning", "--no-access-log", *extra_args]
        card = {k: v for k, v in (card_overrides or {}).items() if v not in (None, {}, [])}
        if card:
            card_file = Path(self._tmp) / "card.json"
            card_file.write_text(json.dumps(card), encoding="utf-8")
            args += ["--card", str(card_file)]
        self._spawn_args = (Path(model_path), args, open_files)
        self.timeout_s = startup_timeout_s
        self._held: list = []  # [proc, log] of the server now running, for the finaliser
        self._finalizer = weakref.finalize(self, _shutdown, self._held, self._tmp)
        self.attempt = 0
        self._start()

    def _start(self) -> None:
        self.url = f"http://{HOST}:{free_port()}"
        self.t0 = time.perf_counter()
        model, args, open_files = self._spawn_args
        proc, log = _spawn(model, int(self.url.rsplit(":", 1)[1]), args,
                           Path(self._tmp) / f"server{self.attempt}.log", open_files)
        self._held[:] = [proc, log]

    def ready(self) -> RunningServer:
        """The server, once it answers (seconds from its start to its first answer in ``startup_s``)."""
        while True:
            proc, log = self._held
            started = _wait_healthy(proc, log, self.url, self.timeout_s, since=self.t0)
            if started is not None:
                return RunningServer(self.url, proc.pid, started, Path(log.name))
            _stop(proc)
            log.close()
            self.attempt += 1
            if self.attempt >= self.ATTEMPTS:
                raise ServerError(f"the server could not listen on {HOST} after {self.ATTEMPTS} attempts",
                                  hint=SKIP_HINT)
            self._start()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> ServerStart:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(held: list, folder: str) -> None:
    if held:
        _stop(held[0])
        held[1].close()
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_server(
    model_path: Path,
    *,
    threads: int = 0,
    card_overrides: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout_s: float = 60.0,
    open_files: int | None = None,
) -> Iterator[RunningServer]:
    """``ServerStart`` in a block: the server once it answers, stopped on exit from the block.

    Example::

        with running_server(Path("model.onnx")) as server, closing(connect(server.url)) as conn:
            status, body = request(conn, "GET", "/health")
    """
    with ServerStart(model_path, threads=threads, card_overrides=card_overrides, extra_args=extra_args,
                     startup_timeout_s=startup_timeout_s, open_files=open_files) as start:
        yield start.ready()


def _spawn(model_path: Path, port: int, args: Sequence[str], log_path: Path, open_files: int | None = None):
    from audit.side_process import python_env

    env = python_env()  # the child imports the same audit package as this process, installed or not
    log = open(log_path, "w+b")  # a file, not a pipe: a chatty server can never block on a full pipe
    python = [sys.executable, "-m", "audit"]
    if open_files is not None:
        python = [sys.executable, "-c", "import resource, sys; from audit.cli import main; "
                  f"resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, {open_files})); "
                  "sys.exit(main(sys.argv[1:]))"]
    cmd = [*python, "serve", "--model", str(model_path), "--host", HOST, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, log


def _wait_healthy(proc: subprocess.Popen, log, url: str, timeout_s: float, since: float) -> float | None:
    """Seconds from ``since`` (the start) until /health answered 200, waiting at most ``timeout_s`` from now;
    None when the port was taken (retry)."""
    t0 = time.perf_counter()
    while True:
        code = proc.poll()
        if code is not None:
            tail = _tail(log)
            if "cannot listen" in tail:
                return None
            raise ServerError(f"the server exited with code {code} before answering: {tail}", hint=SKIP_HINT)
        conn = connect(url, 2.0)
        try:
            if request(conn, "GET", "/health")[0] == 200:
                return time.perf_counter() - since
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.perf_counter() - t0 > timeout_s:
            raise ServerError(f"the server did not answer /health within {timeout_s:g} s "
                               f"({_tail(log) or 'no output'})",
                               hint="raise latency.startup_timeout_s; " + SKIP_HINT)
        time.sleep(0.05)


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connect(url: str, timeout_s: float = 30.0) -> http.client.HTTPConnection:
    """A keep-alive HTTP/1.1 connection to ``url`` (``http://host:port``); it reconnects when closed.

    The standard library's client, not httpx: on a small machine the client shares the CPUs
    with the server, and this one costs about a third of the CPU per request, so the numbers
    describe the server rather than the load generator.
    """
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """Send one request on ``conn`` and read the whole answer: (status, body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


@dataclass(frozen=True)
class RequestRun:
    """Raw outcome of ``send_requests``: one entry per request, in send order."""

    latencies_ms: np.ndarray  # (n,) float; nan for requests that raised
    ok: np.ndarray  # (n,) bool: 200 with a parseable answer
    answers: tuple[tuple[str, float] | None, ...]  # (class, prob) per request
    wall_s: float
    first_error: str | None


def send_requests(url: str, bodies: Sequence[bytes], n: int, concurrency: int = 1,
                  timeout_s: float = 30.0, start: int = 0) -> RequestRun:
    """POST ``n`` bodies (cycling through ``bodies`` from index ``start``) to ``url/predict`` from
    ``concurrency`` clients.

    Each client is a thread with its own keep-alive connection; latency is client-side, from
    sending the request to having the whole answer.

    Example::

        run = send_requests("http://127.0.0.1:8000", [request_body(png)], n=100, concurrency=4)
        run.latencies_ms[run.ok]
    """
    lat = np.full(n, np.nan)
    ok = np.zeros(n, bool)
    answers: list[tuple[str, float] | None] = [None] * n
    errors: list[str] = []
    counter = itertools.count()
    lock = threading.Lock()
    stop = threading.Event()  # set when the caller is interrupted: clients stop sending

    def worker(conn: http.client.HTTPConnection) -> None:
        while not stop.is_set():
            with lock:
                i = next(counter)
            if i >= n:
                return
            t0 = time.perf_counter()
            try:
                status, data = request(conn, "POST", "/predict", bodies[(start + i) % len(bodies)])
                lat[i] = (time.perf_counter() - t0) * 1000.0
                if status == 200:
                    d = json.loads(data)
                    answers[i] = (str(d["class"]), float(d["prob"]))
                    ok[i] = True
                else:
                    errors.append(f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}")
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                conn.close()  # the next request opens a fresh connection
                errors.append(f"{type(e).__name__}: {e}")

    conns = [connect(url, timeout_s) for _ in range(max(1, concurrency))]
    try:
        wall = _run_clients(worker, conns, stop)
    finally:
        for c in conns:
            c.close()
    return RequestRun(lat, ok, tuple(answers), wall, errors[0] if errors else None)


def join_runs(runs: Sequence[RequestRun]) -> RequestRun:
    """Consecutive runs (the looks of one phase) as one, in send order."""
    return RequestRun(np.concatenate([r.latencies_ms for r in runs]), np.concatenate([r.ok for r in runs]),
                      tuple(a for r in runs for a in r.answers), sum(r.wall_s for r in runs),
                      next((r.first_error for r in runs if r.first_error), None))


def _run_clients(worker: Callable[[http.client.HTTPConnection], None], conns: list[http.client.HTTPConnection],
                 stop: threading.Event) -> float:
    """Run ``worker`` on each connection, a thread each when there are several; returns the wall seconds.

    When interrupted, ``stop`` is set so that the other clients stop sending.
    """
    for c in conns:  # connect before the clock starts; a failure shows up as request errors
        with contextlib.suppress(OSError):
            c.connect()
    t0 = time.perf_counter()
    if len(conns) == 1:
        worker(conns[0])
    else:
        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            try:
                for f in [pool.submit(worker, c) for c in conns]:
                    f.result()
            except BaseException:  # Ctrl-C or SIGTERM: do not wait for the remaining requests
                stop.set()
                raise
    return time.perf_counter() - t0
