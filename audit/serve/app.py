"""The FastAPI app and the uvicorn server around ``PredictService``."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from audit import __version__
from audit.errors import UsageError
from audit.model import OnnxClassifier
from audit.serve.endpoint import BodyLimit, PredictEndpoint
from audit.serve.errors import HANDLERS
from audit.serve.guard import ConnectionGuard
from audit.serve.options import Listen, Scheduling, ServeLimits
from audit.serve.schema import ERROR_RESPONSES, Health, ModelInfo, Prediction, PredictRequest
from audit.serve.service import PredictService

def create_app(
    model_path: str | Path,
    *,
    limits: ServeLimits = ServeLimits(),
    scheduling: Scheduling = Scheduling(),
    threads: int = 0,
    card_overrides: Mapping[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving the model at ``model_path``; the ONNX session is created here, once.

    ``card_overrides`` are the same as ``python -m audit run``'s (for models without a card).
    Raises ``ModelError`` when the model cannot be loaded or fails its self-check, before anything
    listens.

    Example::

        app = create_app("model.onnx", limits=ServeLimits(max_request_bytes=4_000_000))
    """
    clf = OnnxClassifier.load(Path(model_path), overrides=card_overrides, threads=threads)
    service = PredictService(clf, limits, scheduling)
    sha256 = clf.sha256  # hashed once, when the classifier read the file
    card = clf.card
    info = ModelInfo(
        name=clf.path.name, sha256=sha256, **{"arch": None, **card.to_dict()},
        input_shape=list(clf.graph.input_shape), input_type=service.runner.input_type,
        limits=limits.to_dict(), scheduling=service.describe(),
    )
    app = FastAPI(
        title=f"{clf.path.name} classifier",
        version=__version__,
        description=f"Image classifier over {len(card.labels)} classes ({', '.join(card.labels[:10])}"
                    f"{', ...' if len(card.labels) > 10 else ''}), served with the audit's preprocessing.",
        exception_handlers=HANDLERS,
        lifespan=_closing(service),
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    app.add_middleware(PredictEndpoint, service=service, max_request_bytes=limits.max_request_bytes)
    app.state.service = service

    @app.get("/health", response_model=Health, summary="Liveness: the model is loaded and passed its self-check")
    async def health() -> Health:
        return Health(status="ok", model=clf.path.name, sha256=sha256)

    @app.get("/model", response_model=ModelInfo, summary="The model card applied to every request")
    async def model() -> ModelInfo:
        return info

    _document_predict(app)
    return app


def _closing(service: PredictService):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    return lifespan


async def _predict_schema(body: PredictRequest) -> Prediction:
    """Classify one base64-encoded image."""
    raise NotImplementedError  # never called: the route only describes what PredictEndpoint serves


def _document_predict(app: FastAPI) -> None:
    """Add ``POST /predict`` to the OpenAPI schema; the request itself is answered by ``PredictEndpoint``."""
    route = APIRoute("/predict", _predict_schema, methods=["POST"], response_model=Prediction,
                     response_model_exclude_none=True, responses=ERROR_RESPONSES,
                     summary="Classify one base64-encoded image")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                             routes=[route, *app.routes])
            app.openapi_schema["components"]["schemas"].pop("HTTPValidationError", None)
            app.openapi_schema["components"]["schemas"].pop("ValidationError", None)
        return app.openapi_schema

    app.openapi = openapi


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); ``UsageError`` when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    # IPPROTO_TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}", hint="pick another --port") from None
    sock.listen(2048)
    return sock


def protocol_base(http: str) -> type:
    """uvicorn's HTTP protocol class: httptools (C parser) when installed, else h11."""
    if http != "h11":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            return HttpToolsProtocol
        except ImportError:
            if http == "httptools":
                raise UsageError("--http httptools needs the httptools package",
                                 hint='pip install "uvicorn[standard]"') from None
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def serve(
    model_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 0,
    limits: ServeLimits = ServeLimits(),
    scheduling: Scheduling = Scheduling(),
    card_overrides: Mapping[str, Any] | None = None,
    log_level: str = "info",
    access_log: bool = True,
    http: str = "auto",
    loop: str = "auto",
) -> None:
    """Load and self-check the model, listen on ``host:port`` and serve until SIGINT/SIGTERM."""
    import uvicorn

    Listen(host=host, port=port, threads=threads, http=http, loop=loop)  # bounds, before the model loads
    logging.getLogger("audit.serve").setLevel(log_level.upper())
    guard = ConnectionGuard(limits.read_timeout_s, limits.connection_limit())
    protocol = guard.protocol(protocol_base(http))
    app = create_app(model_path, limits=limits, scheduling=scheduling, threads=threads, card_overrides=card_overrides)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log, lifespan="on",
                            http=protocol, loop=loop)
    # uvicorn does not announce sockets it is handed; say where we listen (port 0 picks one).
    logging.getLogger("uvicorn.error").info(
        "Serving %s on http://%s:%d (POST /predict, GET /health, GET /model, docs at /docs; Ctrl+C to quit)",
        Path(model_path).name, host, port)
    uvicorn.Server(config).run(sockets=[sock])
