"""The HTTP contract as pydantic models: what ``/docs`` and ``/openapi.json`` describe."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REQUEST_EXAMPLE = '{"image_b64": "<base64-encoded image>"} (optional "top_k": <int>)'


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
    """The model card (docs/ARCHITECTURE.md §7) the server applies to every request, and how requests are run."""

    name: str
    sha256: str
    labels: list[str]
    preprocess: PreprocessInfo
    output: str
    arch: str | None = None
    invariances: list[str]
    provenance: dict[str, Any]
    input_shape: list[int | str | None]
    input_type: str = Field(description="the graph's input element type; float32 pixels are cast to it")
    limits: dict[str, Any] = Field(description="max_request_bytes, max_pixels, formats, pixel_budget, timeouts")
    scheduling: dict[str, Any] = Field(description="max_batch, max_wait_ms, inline_below_ms and the start-up "
                                                   "measurement they act on")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody, "description": text} for code, text in {
    400: "malformed JSON",
    405: "a method other than POST",
    408: "the request did not arrive whole within the read timeout",
    413: "body over max_request_bytes, or an image over max_pixels (decompression bomb)",
    415: "image format not allowed, or a body that is not application/json",
    422: "wrong or missing fields, bad base64, bytes that are not a decodable image, top_k too large",
    500: "the model failed on this input (e.g. NaN output), or an internal error",
    503: "overloaded: the pixel budget stayed full for queue_timeout_s; retry later",
}.items()}
