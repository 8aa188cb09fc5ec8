"""Every error the server sends is ``{"error": code, "detail": sentence}`` JSON, whatever raised it.

``ApiError`` carries the status, the code and the sentence. The FastAPI handlers below turn
framework errors (404, 405, validation) into the same shape; ``json_body`` is the one encoder
``/predict`` uses for answers and errors alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from audit.serve.schema import REQUEST_EXAMPLE

log = logging.getLogger("audit.serve")

STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
                500: "internal_error", 503: "overloaded"}


class ApiError(StarletteHTTPException):
    """An error answer with a machine code (``error``) and a sentence (``detail``)."""

    def __init__(self, status_code: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=dict(headers) if headers else None)
        self.error = error


def json_body(payload: Any) -> bytes:
    """JSON as Starlette's ``JSONResponse`` writes it (compact, UTF-8, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def error_response(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=dict(headers or {}))


def raw_error(status: int, error: str, detail: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for the transport layer."""
    body = json_body({"error": error, "detail": detail})
    reason = {408: "Request Timeout", 503: "Service Unavailable"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


def describe_validation(errors: Iterable[Mapping[str, Any]]) -> str:
    """pydantic's error list as one sentence naming each field, then the expected request."""
    parts = []
    for e in errors:
        field = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        if e.get("type") == "missing":
            parts.append(f"missing field {field!r}" if field else "the request body is empty")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"unknown field {field!r}")
        elif e.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            parts.append("the body must be a JSON object")
        else:
            parts.append(f"{field or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) + f"; expected {REQUEST_EXAMPLE}"


def invalid_json(why: str) -> ApiError:
    """400 for a body that does not parse; ``why`` says where ("EOF while parsing a string at line 1 column 18")."""
    hint = " (a raw line break inside a string? encode with base64 -w0)" if "control character" in why else ""
    return ApiError(400, "invalid_json", f"the request body is not valid JSON: {why}{hint}; expected {REQUEST_EXAMPLE}")


def unsupported_media_type(content_type: str | None) -> ApiError:
    got = repr(content_type) if content_type else "no Content-Type"
    return ApiError(415, "unsupported_media_type",
                    f"send the body as JSON with Content-Type: application/json (got {got}); "
                    f"expected {REQUEST_EXAMPLE}")


# ---------------------------------------------------------------------------- FastAPI's own routes


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "error", None) or STATUS_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            why = str((e.get("ctx") or {}).get("error", "JSON decode error")).removesuffix(" at")
            err = invalid_json(f"{why} at character {e['loc'][-1]}")
            return error_response(err.status_code, err.error, err.detail)
    ctype = request.headers.get("content-type")
    if "json" not in (ctype or "").lower():
        err = unsupported_media_type(ctype)
        return error_response(err.status_code, err.error, err.detail)
    return error_response(422, "invalid_request", describe_validation(errors))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this answer, so uvicorn still logs the traceback: ours to fix.
    return error_response(500, "internal_error", f"{type(exc).__name__}: {first_line(exc)}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:limit]


HANDLERS = {StarletteHTTPException: http_error, RequestValidationError: validation_error, Exception: internal_error}
