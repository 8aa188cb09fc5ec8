"""Latency (docs/ARCHITECTURE.md §4.3): start the real server, send real base64 requests, report percentiles.

The server is ``python -m audit serve`` in a subprocess on 127.0.0.1 (a free port), the same
command a user deploys, so the numbers include HTTP, JSON, base64, decoding, preprocessing and
inference, and the client does not share the server's interpreter. Requests are built from
the audit's own test images; each phase (sequential, then ``concurrency`` clients) times
``requests`` of them, and p50/p95/p99 carry percentile-bootstrap CIs over those requests.
The first answer for each image is compared with the audit's prediction for it, which checks
that serving and auditing preprocess identically.

With ``early_stop`` (the default) ``requests`` is a budget: each phase sends its requests in looks
(``first_look``, then doubling) and stops once the anytime-valid confidence sequence of its p95
(``audit.sequential.quantile_sequence``: the share of requests at or over ``max_p95_ms`` against
5%) excludes the limit, and the p95 is reported with that sequence, which holds at whatever
count the phase stopped. No fixed count below 59 requests can show a p95 under a limit at 95%
confidence without assumptions (0.95^58 > 0.05); the sequence needs 66 when none is slow.

Example::

    res = measure_latency(Path("model.onnx"), preds, source, LatencyConfig(requests=50))
    res.sequential.p95          # Estimate, milliseconds
    latency_criteria(res, LatencyConfig())
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from audit.context import AuditContext
from audit.contract import CheckSpec
from audit.loadgen import RequestRun, ServerError, ServerStart, join_runs, request_body, send_requests
from audit.predictions import Predictions
from audit.sequential import looks, quantile_sequence
from audit.settings import Section, setting
from audit.sources.base import DataSource
from audit.stats import Estimate, _num, bootstrap_many
from audit.svg import ACCENT, AMBER, BAD, Canvas, Panel
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

MAX_BODY_BYTES = 16 * 1024 * 1024  # the server's default request limit (audit.serve)


@dataclass(frozen=True)
class LatencyConfig(Section):
    """Latency (docs/ARCHITECTURE.md §4.3): the real ``/predict`` server on 127.0.0.1, real base64 requests."""

    section: ClassVar[str] = "latency"
    enabled: bool = True
    requests: int = setting(200, ge=1)  # timed requests per phase (sequential, then concurrent): at most, with early_stop
    early_stop: bool = True  # stop a phase once the p95's confidence sequence excludes max_p95_ms
    first_look: int = setting(70, ge=1)  # requests before a phase's first look; each later look doubles them
    concurrency: int = setting(4, ge=1, le=256)  # clients in the concurrent phase; 1 = sequential only
    warmup: int = setting(3, ge=0)  # untimed requests first (the first session.run allocates)
    max_images: int = setting(16, ge=1)  # distinct test images the requests cycle through
    max_p95_ms: float = setting(500.0, gt=0.0)  # criterion: p95 latency below this, in each phase
    max_prob_diff: float = setting(1e-4, gt=0.0)  # criterion: served probabilities equal the audit's within this
    startup_timeout_s: float = setting(60.0, gt=0.0)  # the server must answer /health within this
    request_timeout_s: float = setting(30.0, gt=0.0)  # a request slower than this counts as an error


@dataclass(frozen=True)
class PhaseLatency:
    """One phase of timed requests; percentiles in milliseconds over the successful ones."""

    name: str  # "sequential" or "concurrent"
    concurrency: int
    n: int  # timed requests sent
    errors: int
    p50: Estimate
    p95: Estimate
    p99: Estimate
    mean_ms: float
    throughput: float  # successful requests per second of the phase's wall time
    wall_s: float
    latencies_ms: np.ndarray  # (n - errors,) in send order
    budget: int = 0  # requests the phase would send without stopping early
    sequential: bool = False  # looked as it ran: p95's interval is the anytime-valid sequence

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "n": self.n, "budget": self.budget, "sequential": self.sequential,
                "errors": self.errors,
                "p50_ms": self.p50.to_dict(), "p95_ms": self.p95.to_dict(), "p99_ms": self.p99.to_dict(),
                "mean_ms": _num(self.mean_ms), "throughput_rps": _num(self.throughput), "wall_s": self.wall_s}


@dataclass(frozen=True)
class ServedAnswer:
    """What ``/predict`` answered for one test image, next to the audit's prediction for it."""

    path: str
    served_class: str | None  # None: the request failed
    served_prob: float
    audit_class: str
    audit_prob: float  # the audit's probability of its predicted class
    prob_diff: float  # |served prob - the audit's prob of the served class|; nan when it failed

    @property
    def agrees(self) -> bool:
        return self.served_class == self.audit_class


@dataclass(frozen=True)
class LatencyResult:
    model: str  # file name
    threads: int  # ONNX Runtime intra-op threads in the server (0 = ORT's default)
    images: int  # distinct test images the requests cycle through
    mean_body_bytes: int
    startup_s: float  # process start until /health answered
    phases: tuple[PhaseLatency, ...]
    answers: tuple[ServedAnswer, ...]
    first_error: str | None = None
    max_p95_ms: float = math.inf  # the criterion's limit, to mark phases that exceed it

    def slow(self, phase: PhaseLatency) -> bool:
        """The phase failed a request or missed the p95 limit (for highlighting; the criteria decide)."""
        return bool(phase.errors) or not phase.p95.value < self.max_p95_ms

    @property
    def sequential(self) -> PhaseLatency:
        return self.phases[0]

    @property
    def concurrent(self) -> PhaseLatency | None:
        return self.phases[1] if len(self.phases) > 1 else None

    @property
    def requests(self) -> int:
        return sum(p.n for p in self.phases)

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.phases)

    @property
    def max_prob_diff(self) -> float:
        diffs = [a.prob_diff for a in self.answers if math.isfinite(a.prob_diff)]
        return float(max(diffs)) if diffs else math.nan

    @property
    def disagreements(self) -> tuple[ServedAnswer, ...]:
        return tuple(a for a in self.answers if not a.agrees)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "threads": self.threads, "images": self.images,
            "mean_body_bytes": self.mean_body_bytes, "startup_s": round(self.startup_s, 3),
            "requests": self.requests, "errors": self.errors, "first_error": self.first_error,
            **{p.name: p.to_dict() for p in self.phases},
            "served_vs_audit": {"compared": len(self.answers), "class_disagreements": len(self.disagreements),
                                "max_prob_diff": _num(self.max_prob_diff)},
        }


# ---------------------------------------------------------------------------- the check


def measure_latency(
    model_path: Path,
    preds: Predictions,
    source: DataSource,
    config: LatencyConfig = LatencyConfig(),
    *,
    threads: int = 0,
    card_overrides: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    started: ServerStart | None = None,
) -> LatencyResult:
    """Serve ``model_path`` locally and time ``/predict`` on test images from ``preds``, read from ``source``.

    ``card_overrides`` must be the ones the audit used, so the server resolves the same card. ``started``: a
    server started earlier with them (``start_server``; the check starts it before inference, so it loads
    while the model runs), closed here. Raises ``ServerError`` when the server does not come up within
    ``config.startup_timeout_s``.
    """
    start = started or start_server(model_path, config, threads, card_overrides)
    with start:
        chosen = _choose_images(preds, source, config.max_images)
        if not chosen:
            raise ServerError("latency: no test image small enough to send to /predict",
                              hint=f"the server accepts bodies up to {MAX_BODY_BYTES:,} bytes; or pass --no-latency")
        rows, bodies = zip(*chosen)
        server = start.ready()
        send_requests(server.url, bodies, config.warmup, 1, config.request_timeout_s)
        runs = [("sequential", 1, _send_phase(server.url, bodies, 1, config))]
        if config.concurrency > 1:
            runs.append(("concurrent", config.concurrency, _send_phase(server.url, bodies, config.concurrency, config)))
    seq = runs[0][2]
    phases = tuple(_phase(name, c, run, n_boot, seed, config) for name, c, run in runs)
    first_error = next((run.first_error for _, _, run in runs if run.first_error), None)
    return LatencyResult(
        model=Path(model_path).name,
        threads=threads,
        images=len(bodies),
        mean_body_bytes=int(np.mean([len(b) for b in bodies])),
        startup_s=server.startup_s,
        phases=phases,
        answers=tuple(_compare(preds, row, seq.answers[i]) for i, row in enumerate(rows)),
        first_error=first_error,
        max_p95_ms=config.max_p95_ms,
    )


def criteria(result: LatencyResult, config: AuditConfig) -> list[Criterion]:
    """p95 below ``latency.max_p95_ms`` per phase, no failed request, served answers = the audit's."""
    seq, conc, config = result.sequential, result.concurrent, config.latency
    out = [judge(Measure("latency.p95", "p95 latency of /predict, one client (ms)", seq.p95, False,
                         f"p50 {seq.p50.value:.1f} ms over {seq.n} requests{_stopped(seq)}"),
                 config.max_p95_ms, strict=True)]
    if conc is not None:
        out.append(judge(Measure("latency.p95_concurrent", f"p95 latency of /predict, {conc.concurrency} clients (ms)",
                                 conc.p95, False, f"p50 {conc.p50.value:.1f} ms, {conc.throughput:.1f} requests/s"
                                 f"{_stopped(conc)}"),
                         config.max_p95_ms, strict=True))
    first = f"; first: {result.first_error}" if result.first_error else ""
    out.append(judge(Measure.count("latency.errors", "Failed /predict requests", result.errors,
                                   detail=f"{result.errors} of {result.requests}{first}"), 0))
    tol = config.max_prob_diff
    differ = [a for a in result.answers if not (a.agrees and a.prob_diff <= tol)]  # nan diff: failed, differs
    listed = f"; differ: {', '.join(a.path for a in differ[:5])}" if differ else ""
    detail = (f"{len(result.answers)} images compared, max |prob diff| {result.max_prob_diff:.1e} (tolerance "
              f"{tol:g}){listed}")
    title = "Served answers that differ from the audit's"
    matches = (Measure.count("latency.matches_audit", title, len(differ), detail=detail) if result.answers else
               Measure("latency.matches_audit", title, Estimate(math.nan, math.nan, math.nan), False, detail))
    out.append(judge(matches, 0))
    return out


def _stopped(phase: PhaseLatency) -> str:
    if not phase.sequential:
        return ""
    if phase.n < phase.budget:
        return f"; stopped after {phase.n} of {phase.budget} requests: the p95's confidence sequence excludes the limit"
    return f"; all {phase.budget} requests sent, CI of the p95 is its confidence sequence"


def _choose_images(preds: Predictions, source: DataSource, k: int) -> list[tuple[int, bytes]]:
    """Up to ``k`` test images spread evenly over the table, as ready-to-send JSON bodies."""
    n = len(preds)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()}) if n else []
    out = []
    for i in picks:
        body = request_body(source.open(preds.paths[i]))
        if len(body) <= MAX_BODY_BYTES:
            out.append((i, body))
    return out


def _compare(preds: Predictions, row: int, answer: tuple[str, float] | None) -> ServedAnswer:
    audit_idx = int(preds.proba[row].argmax())
    audit_class, audit_prob = preds.labels[audit_idx], float(preds.proba[row, audit_idx])
    if answer is None or answer[0] not in preds.labels:
        return ServedAnswer(preds.paths[row], answer[0] if answer else None, math.nan, audit_class, audit_prob,
                            math.nan)
    served_class, served_prob = answer
    diff = abs(served_prob - float(preds.proba[row, preds.labels.index(served_class)]))
    return ServedAnswer(preds.paths[row], served_class, served_prob, audit_class, audit_prob, diff)


def _send_phase(url: str, bodies, concurrency: int, config: LatencyConfig) -> RequestRun:
    """``config.requests`` requests, or look by look until the p95's confidence sequence excludes the limit."""
    stops = looks(config.requests, config.first_look) if config.early_stop else [config.requests]
    runs, done = [], 0
    for upto in stops:
        runs.append(send_requests(url, bodies, upto - done, concurrency, config.request_timeout_s, start=done))
        done = upto
        lat = np.concatenate([r.latencies_ms[r.ok] for r in runs])
        if config.early_stop and _decided(lat, config.max_p95_ms):
            break
    return join_runs(runs)


def _decided(latencies_ms: np.ndarray, limit_ms: float) -> bool:
    low, high = quantile_sequence(latencies_ms, 0.95)
    return high < limit_ms or low >= limit_ms


def _phase(name: str, concurrency: int, run: RequestRun, n_boot: int, seed: int,
           config: LatencyConfig = LatencyConfig(early_stop=False)) -> PhaseLatency:
    lat = run.latencies_ms[run.ok]
    if len(lat) >= 2:
        p50, p95, p99 = bootstrap_many(lambda idx: np.quantile(lat[idx], [0.5, 0.95, 0.99], axis=1).T, len(lat),
                                       n_boot=n_boot, seed=seed)
    else:
        p50 = p95 = p99 = Estimate(float(lat[0]) if len(lat) else math.nan, math.nan, math.nan)
    if config.early_stop and len(lat):
        p95 = Estimate(float(np.quantile(lat, 0.95)), *quantile_sequence(lat, 0.95))
    return PhaseLatency(
        name=name, concurrency=concurrency, n=len(run.ok), errors=int((~run.ok).sum()),
        p50=p50, p95=p95, p99=p99,
        mean_ms=float(lat.mean()) if len(lat) else math.nan,
        throughput=len(lat) / run.wall_s if run.wall_s > 0 else math.nan,
        wall_s=run.wall_s, latencies_ms=lat, budget=config.requests, sequential=config.early_stop,
    )


def charts(result: LatencyResult, config: AuditConfig) -> dict[str, Canvas]:
    return {"histogram": latency_histogram(result, config.latency.max_p95_ms)}


def latency_histogram(latency: LatencyResult, threshold_ms: float | None = None) -> Canvas:
    """Request latencies of ``/predict`` per phase, p95 marked; the threshold only when it is within reach
    of the data, so it does not squash the bars."""
    phases = [p for p in latency.phases if len(p.latencies_ms)]
    c = Canvas(640, 290)
    if not phases:
        c.text(320, 140, "no successful request", anchor="middle")
        return c
    top = max(float(p.latencies_ms.max()) for p in phases) * 1.02
    edges = np.linspace(0, top, 41)
    counts = [np.histogram(p.latencies_ms, bins=edges)[0] for p in phases]
    show = threshold_ms is not None and threshold_ms <= 1.5 * top
    x_hi = max(top, 1.02 * threshold_ms) if show else top
    panel = Panel(c, 62, 12, 560, 220, (0, x_hi), (0, max(int(x.max()) for x in counts) * 1.1 or 1))
    panel.axes("latency of POST /predict (ms, client side)", "requests")
    items = []
    for p, n, color in zip(phases, counts, (ACCENT, AMBER)):
        panel.bars(edges[:-1], edges[1:], n, color, 0.45)
        c.line(panel.x(p.p95.value), panel.top, panel.x(p.p95.value), panel.top + panel.height, color, width=1.2)
        label = "one client" if p.concurrency == 1 else f"{p.concurrency} clients"
        items.append((f"{label} (p95 {p.p95.value:.1f} ms)", color, "box"))
    if show:
        c.line(panel.x(threshold_ms), panel.top, panel.x(threshold_ms), panel.top + panel.height, BAD, dash=True)
        items.append((f"threshold {threshold_ms:g} ms", BAD, "dash"))
    panel.legend(items)
    return c


def start_server(model_path: Path, config: LatencyConfig, threads: int = 0,
                 card_overrides: Mapping[str, Any] | None = None) -> ServerStart:
    return ServerStart(model_path, threads=threads, card_overrides=card_overrides,
                       startup_timeout_s=config.startup_timeout_s)


def _prepare(ctx: AuditContext) -> ServerStart:
    """Start the server before inference: it loads while the model runs (the pipeline closes it, whatever happens)."""
    return start_server(ctx.model_path, ctx.config.latency, ctx.config.threads, ctx.card_overrides)


def _run(ctx: AuditContext) -> LatencyResult:
    c = ctx.config
    return measure_latency(ctx.model_path, ctx.predictions, ctx.source, c.latency, threads=c.threads,
                           card_overrides=ctx.card_overrides, n_boot=c.n_boot, seed=c.seed,
                           started=ctx.state("latency"))


SPEC = CheckSpec("latency", "latency (server)", _run, config=LatencyConfig, enabled=lambda c: c.latency.enabled,
                 prepare=_prepare, criteria=criteria, charts=charts, toggle=True,
                 alone=True)  # a latency measured beside the other checks would time them too
