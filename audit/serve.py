"""Serve an audited model over HTTP (DESIGN §11): ``POST /predict``, ``GET /health``, ``GET /model``.

The server loads the model with ``OnnxClassifier.load`` and turns bytes into a tensor with
``audit.imaging`` (decode, resize, to_tensor): the same code, card and limits as the audit, so
``/predict`` answers what the audit measured. The ONNX Runtime session is created once, in
``create_app``; decoding and inference run in a worker thread, never on the event loop.

Bad input never takes the server down: a body over the size limit, malformed JSON, wrong field
names, bad base64, bytes that are not an image, a format outside the allow-list and images with
too many pixels (decompression bombs) each get a 4xx answer ``{"error": code, "detail": message}``.

Example::

    python -m audit serve --model model.onnx --port 8000
    curl -s localhost:8000/predict -H 'Content-Type: application/json' \\
         -d "{\\"image_b64\\": \\"$(base64 -w0 cat.png)\\"}"
    {"class":"cat","prob":0.94}

or from Python::

    app = create_app("model.onnx")
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit import __version__, imaging
from audit.errors import UsageError
from audit.model import OnnxClassifier

# The formats the audit reads (DESIGN §4); Pillow also opens EPS, PSD, FITS and more, which a
# public endpoint has no reason to parse.
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # the JSON body; base64 makes an image 4/3 larger
DEFAULT_MAX_PIXELS = 40_000_000  # a 48 MP phone photo is refused; resize on the client first
REQUEST_EXAMPLE = '{"image_b64": "<base64-encoded image>"} (optional "top_k": <int>)'


@dataclass(frozen=True)
class ServeLimits:
    """What ``/predict`` accepts: request size, decoded pixels and image formats."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise UsageError(f"serve limit {name} must be a positive integer, got {getattr(self, name)}")
        Image.init()
        formats = tuple(f.strip().upper() for f in self.formats if f.strip())
        unknown = [f for f in formats if f not in Image.OPEN]
        if not formats or unknown:
            raise UsageError(f"serve formats must name image formats Pillow can open, got {list(self.formats)}",
                             hint=f"e.g. {','.join(DEFAULT_FORMATS)}")
        object.__setattr__(self, "formats", formats)

    @property
    def max_image_bytes(self) -> int:
        """The largest decoded image a body of ``max_request_bytes`` can carry."""
        return self.max_request_bytes * 3 // 4


# ---------------------------------------------------------------------------- schema (OpenAPI)


class PredictRequest(BaseModel):
    """One image, base64-encoded (standard alphabet; a ``data:image/...;base64,`` URL also works)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"image_b64": "iVBORw0KGgo..."}]})

    image_b64: str = Field(description="the image file's bytes (PNG, JPEG, ...) in base64")
    top_k: int | None = Field(None, ge=1, description="also return the k most probable classes, best first")


class ClassProb(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    label: str = Field(alias="class", description="class name from the model card")
    prob: float = Field(ge=0, le=1, description="its probability")


class Prediction(BaseModel):
    """The most probable class; ``top_k`` only when the request asked for it."""

    model_config = ConfigDict(populate_by_name=True,
                              json_schema_extra={"examples": [{"class": "sneaker", "prob": 0.94}]})

    label: str = Field(alias="class", description="the predicted class (argmax, as in the audit)")
    prob: float = Field(ge=0, le=1, description="its probability")
    top_k: list[ClassProb] | None = Field(None, description="the k most probable classes, best first")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a stable machine code and a sentence that says what is wrong."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "invalid_base64", "detail": "image_b64 is not valid base64 (Incorrect padding)"}]})

    error: str = Field(description="machine-readable code, e.g. invalid_json, payload_too_large")
    detail: str = Field(description="what is wrong and how to fix it")


class Health(BaseModel):
    status: str = Field(description='"ok" once the model is loaded')
    model: str = Field(description="model file name")
    sha256: str = Field(description="sha256 of the model file")


class PreprocessInfo(BaseModel):
    size: list[int]
    resize: str
    crop_pct: float
    interpolation: str
    mean: list[float]
    std: list[float]
    color: str
    layout: str


class ModelInfo(BaseModel):
    """The model card (DESIGN §3) the server applies to every request."""

    name: str
    sha256: str
    labels: list[str]
    preprocess: PreprocessInfo
    output: str
    arch: str | None = None
    invariances: list[str]
    provenance: dict[str, Any]
    input_shape: list[int | str | None]
    limits: dict[str, Any] = Field(description="max_request_bytes, max_pixels, formats")


_ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in {
    400: "malformed JSON",
    413: "body over max_request_bytes, or an image over max_pixels (decompression bomb)",
    415: "image format not allowed, or a body that is not application/json",
    422: "wrong or missing fields, bad base64, bytes that are not a decodable image, top_k too large",
    500: "internal error",
}.items()}


# ---------------------------------------------------------------------------- errors


class ApiError(HTTPException):
    """A 4xx answer with a machine code (``error``) and a sentence (``detail``)."""

    def __init__(self, status_code: int, error: str, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.error = error


_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error"}


def _error(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=dict(headers or {}))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "error", None) or _STATUS_CODES.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            why = str((e.get("ctx") or {}).get("error", "JSON decode error")).removesuffix(" at")
            hint = " (a raw line break inside a string? encode with base64 -w0)" if "control character" in why else ""
            return _error(400, "invalid_json", f"the request body is not valid JSON: {why} at character "
                                               f"{e['loc'][-1]}{hint}; expected {REQUEST_EXAMPLE}")
    ctype = request.headers.get("content-type")
    if "json" not in (ctype or "").lower():
        return _error(415, "unsupported_media_type",
                      f"send the body as JSON with Content-Type: application/json (got "
                      f"{repr(ctype) if ctype else 'no Content-Type'}); expected {REQUEST_EXAMPLE}")
    parts = []
    for e in errors:
        field = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        if e.get("type") == "missing":
            parts.append(f"missing field {field!r}" if field else "the request body is empty")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"unknown field {field!r}")
        else:
            parts.append(f"{field or 'body'}: {e.get('msg', 'invalid')}")
    return _error(422, "invalid_request", "; ".join(parts) + f"; expected {REQUEST_EXAMPLE}")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:200]}")


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` before reading them.

    A ``Content-Length`` over the limit is answered at once (the body is never read); a chunked
    body is counted as it streams in and refused as soon as it passes the limit.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = _error(413, "payload_too_large", self._message(int(length)), {"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing to our JSON handler.
                    raise ApiError(413, "payload_too_large", self._message(received, at_least=True))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, n: int, at_least: bool = False) -> str:
        return (f"request body is {'over ' if at_least else ''}{n:,} bytes; the limit is {self.max_bytes:,} "
                f"(about {self.max_bytes * 3 // 4:,} bytes of image after base64); resize or re-encode the image")


# ---------------------------------------------------------------------------- the model behind the API


class Predictor:
    """Bytes in, ranked classes out, with the audit's model, card and preprocessing.

    Example::

        p = Predictor(OnnxClassifier.load("model.onnx"))
        p.predict(Path("cat.png").read_bytes(), top_k=2)  # [("cat", 0.94), ("dog", 0.05)]
    """

    def __init__(self, clf: OnnxClassifier, limits: ServeLimits = ServeLimits()) -> None:
        self.clf = clf
        self.limits = limits
        self.decode_limits = imaging.Limits(max_bytes=limits.max_image_bytes, max_pixels=limits.max_pixels)
        self.sha256 = _sha256(clf.path)

    def predict_b64(self, text: str, top_k: int = 1) -> list[tuple[str, float]]:
        return self.predict(decode_base64(text, self.limits.max_image_bytes), top_k)

    def predict(self, data: bytes, top_k: int = 1) -> list[tuple[str, float]]:
        """The ``top_k`` most probable (class, probability) pairs, best first; raises ``ApiError``."""
        labels = self.clf.labels
        if top_k > len(labels):
            raise ApiError(422, "invalid_request",
                           f"top_k must be at most {len(labels)} (the model has {len(labels)} classes), got {top_k}")
        self._check_image(data)
        pre = self.clf.card.preprocess
        try:
            img, _ = imaging.decode(data, pre.color, self.decode_limits)
        except imaging.ImageRejected as e:
            raise ApiError(422, "undecodable_image", f"image_b64 decodes to an image that cannot be used: {e.reason}")
        proba = self.clf.predict_proba(imaging.to_tensor(imaging.resize(img, pre), pre)[None])[0]
        # A stable sort puts the first of tied classes first, like the audit's argmax.
        order = np.argsort(-proba, kind="stable")[:top_k]
        return [(labels[i], float(proba[i])) for i in order]

    def _check_image(self, data: bytes) -> None:
        """Format allow-list and pixel count from the header alone, before any pixel is decoded."""
        lim = self.limits
        if not data:
            raise ApiError(422, "empty_image", "image_b64 is empty; send the base64 of an image file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data), formats=lim.formats) as im:
                    w, h = im.size
        except Image.DecompressionBombError:
            raise ApiError(413, "image_too_large", f"the image has too many pixels (limit {lim.max_pixels:,}); "
                                                   "possible decompression bomb") from None
        except Image.UnidentifiedImageError:
            other = _sniff_any_format(data)
            if other is not None:
                raise ApiError(415, "unsupported_format", f"image format {other} is not accepted; "
                                                          f"allowed: {', '.join(lim.formats)}") from None
            raise ApiError(422, "not_an_image", f"image_b64 decodes to {len(data):,} bytes that are not an image "
                                                f"(allowed formats: {', '.join(lim.formats)})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ApiError(422, "undecodable_image",
                           f"image_b64 decodes to an unreadable image ({str(e).splitlines()[0][:80]})") from None
        if w * h > lim.max_pixels:
            raise ApiError(413, "image_too_large", f"the image is {w}x{h} = {w * h:,} pixels; the limit is "
                                                   f"{lim.max_pixels:,} (possible decompression bomb); resize it")


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Strict base64 (whitespace and a ``data:...;base64,`` prefix allowed); raises ``ApiError``."""
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ApiError(422, "invalid_base64", "image_b64 is a data URL but not a base64 one; "
                                                  "expected data:image/<type>;base64,<data>")
    if any(c in text for c in " \n\r\t"):
        text = "".join(text.split())
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ApiError(413, "payload_too_large", f"image_b64 holds about {len(text) // 4 * 3:,} bytes; the limit is "
                                                 f"{max_bytes:,}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, "invalid_base64", f"image_b64 is not valid base64 ({e}); encode the file's bytes "
                                              "with the standard alphabet (e.g. base64 -w0 image.png)") from None


def _sniff_any_format(data: bytes) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.format
    except Exception:  # anything Pillow cannot even identify is simply "not an image"
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- the app


def create_app(
    model_path: str | Path,
    *,
    limits: ServeLimits = ServeLimits(),
    threads: int = 0,
    card_overrides: Mapping[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving the model at ``model_path``; the ONNX session is created here, once.

    ``card_overrides`` are the same as ``python -m audit run``'s (for models without a card).
    Raises ``ModelError`` when the model cannot be loaded, before anything listens.

    Example::

        app = create_app("model.onnx", limits=ServeLimits(max_request_bytes=4_000_000))
    """
    clf = OnnxClassifier.load(Path(model_path), overrides=card_overrides, threads=threads)
    predictor = Predictor(clf, limits)
    card = clf.card
    info = ModelInfo(
        name=clf.path.name, sha256=predictor.sha256, **{"arch": None, **card.to_dict()},
        input_shape=list(clf.graph.input_shape),
        limits={"max_request_bytes": limits.max_request_bytes, "max_pixels": limits.max_pixels,
                "formats": list(limits.formats)},
    )
    app = FastAPI(
        title=f"{clf.path.name} classifier",
        version=__version__,
        description=f"Image classifier over {len(card.labels)} classes ({', '.join(card.labels[:10])}"
                    f"{', ...' if len(card.labels) > 10 else ''}), served with the audit's preprocessing.",
        exception_handlers={
            StarletteHTTPException: _http_error,
            RequestValidationError: _validation_error,
            Exception: _internal_error,
        },
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    app.state.predictor = predictor

    @app.post("/predict", response_model=Prediction, response_model_exclude_none=True, responses=_ERRORS,
              summary="Classify one base64-encoded image")
    async def predict(body: PredictRequest) -> Prediction:
        ranked = await run_in_threadpool(predictor.predict_b64, body.image_b64, body.top_k or 1)
        best_label, best_prob = ranked[0]
        top = [ClassProb(label=c, prob=p) for c, p in ranked] if body.top_k else None
        return Prediction(label=best_label, prob=best_prob, top_k=top)

    @app.get("/health", response_model=Health, summary="Liveness: the model is loaded")
    async def health() -> Health:
        return Health(status="ok", model=clf.path.name, sha256=predictor.sha256)

    @app.get("/model", response_model=ModelInfo, summary="The model card applied to every request")
    async def model() -> ModelInfo:
        return info

    return app


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


def serve(
    model_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 0,
    limits: ServeLimits = ServeLimits(),
    card_overrides: Mapping[str, Any] | None = None,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Load the model, listen on ``host:port`` and serve until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    app = create_app(model_path, limits=limits, threads=threads, card_overrides=card_overrides)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log, lifespan="off")
    # uvicorn does not announce sockets it is handed; say where we listen (port 0 picks one).
    logging.getLogger("uvicorn.error").info(
        "Serving %s on http://%s:%d (POST /predict, GET /health, GET /model, docs at /docs; Ctrl+C to quit)",
        Path(model_path).name, host, port)
    uvicorn.Server(config).run(sockets=[sock])
