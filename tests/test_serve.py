"""The real server (``python -m audit serve`` on 127.0.0.1): every endpoint and every bad input.

One server per module, started through the CLI exactly as a user would, with small limits so
the oversized cases stay small. Each bad input is followed by a good request: the server keeps
serving.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from builders import COLOURS, colour_image, colour_model, context, image_folder
from PIL import Image

from audit.loadgen import running_server
from audit.cli import main
from audit.errors import UsageError
from audit.model import OnnxClassifier
from audit.serve import ServeLimits, bind

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

MAX_BODY = 200_000
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    colour_model(root / "model.onnx")
    image_folder(root / "data", 3)
    return root


@pytest.fixture(scope="module")
def server(workdir: Path):
    args = ["--max-request-bytes", str(MAX_BODY), "--max-pixels", str(MAX_PIXELS)]
    with running_server(workdir / "model.onnx", extra_args=args) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with loopback_client(server.url) as c:
        yield c


def loopback_client(url: str) -> httpx.Client:
    """httpx (not the latency check's stdlib client), plain HTTP: no TLS context, no proxy."""
    return httpx.Client(base_url=url, timeout=30, verify=False, trust_env=False)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def post_json(client: httpx.Client, body, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kw.pop("headers", {"content-type": "application/json"})
    return client.post("/predict", content=content, headers=headers, **kw)


def assert_still_serving(client: httpx.Client) -> None:
    r = post_json(client, {"image_b64": b64(png(colour_image("green", seed=5)))})
    assert r.status_code == 200 and r.json()["class"] == "green"


# ---------------------------------------------------------------------------- endpoints


def test_health_names_the_model(client, workdir):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": "model.onnx",
                        "sha256": hashlib.sha256((workdir / "model.onnx").read_bytes()).hexdigest()}


def test_model_returns_the_card_and_limits(client):
    d = client.get("/model").json()
    assert d["labels"] == list(COLOURS)
    assert d["preprocess"]["size"] == [16, 16] and d["preprocess"]["mean"] == [0.5] * 3
    assert d["output"] == "logits" and d["provenance"] == {"dataset": "synthetic colours"}
    assert d["input_shape"] == ["N", 3, 16, 16]
    assert d["input_type"] == "tensor(float)"
    assert d["limits"] == {"max_request_bytes": MAX_BODY, "max_pixels": MAX_PIXELS,
                           "formats": list(ServeLimits().formats),
                           "pixel_budget": MAX_PIXELS, "queue_timeout_s": 10.0, "read_timeout_s": 30.0,
                           "max_connections": ServeLimits().connection_limit()}
    assert d["scheduling"]["max_batch"] == 1 and d["scheduling"]["measured"]["model_ms"] > 0


def test_predict_equals_the_audits_prediction(client, workdir):
    """Same loading and preprocessing: same class, probability within 1e-6, for every test image."""
    ctx = context(workdir / "model.onnx", workdir / "data")
    preds = ctx.predictions
    assert len(preds) == 9
    for i, path in enumerate(preds.paths):
        r = post_json(client, {"image_b64": b64(ctx.source.open(path))})
        assert r.status_code == 200, r.text
        d = r.json()
        assert set(d) == {"class", "prob"}
        assert d["class"] == preds.labels[preds.y_pred[i]]
        assert abs(d["prob"] - float(preds.proba[i].max())) <= 1e-6


def test_top_k_on_request(client):
    img = b64(png(colour_image("blue", seed=1)))
    d = post_json(client, {"image_b64": img, "top_k": 3}).json()
    assert [x["class"] for x in d["top_k"]][0] == d["class"] == "blue"
    probs = [x["prob"] for x in d["top_k"]]
    assert probs == sorted(probs, reverse=True) and probs[0] == d["prob"]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert set(post_json(client, {"image_b64": img, "top_k": 1}).json()["top_k"][0]) == {"class", "prob"}


@pytest.mark.parametrize("encode", [
    pytest.param(lambda raw: "data:image/png;base64," + b64(raw), id="data-url"),
    pytest.param(lambda raw: base64.encodebytes(raw).decode("ascii"), id="wrapped-76-columns"),
])
def test_predict_accepts_data_urls_and_wrapped_base64(client, encode):
    r = post_json(client, {"image_b64": encode(png(colour_image("red", seed=2)))})
    assert r.status_code == 200 and r.json()["class"] == "red"


def test_other_allowed_formats(client):
    img = colour_image("red", seed=3)
    for fmt in ("JPEG", "BMP", "WEBP", "GIF", "TIFF", "PPM"):
        r = post_json(client, {"image_b64": b64(png(img, fmt))})
        assert r.status_code == 200 and r.json()["class"] == "red", (fmt, r.text)


def test_concurrent_requests_and_health(client, server):
    bodies = [{"image_b64": b64(png(colour_image(c, seed=i)))} for i, c in enumerate(list(COLOURS) * 4)]

    def call(body):
        with loopback_client(server.url) as c:
            return post_json(c, body).json()["class"], c.get("/health").status_code

    with ThreadPoolExecutor(6) as pool:
        out = list(pool.map(call, bodies))
    assert [c for c, _ in out] == list(COLOURS) * 4
    assert {h for _, h in out} == {200}


def test_openapi_describes_the_real_schema(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["PredictRequest"]["required"] == ["image_b64"]
    assert set(schemas["PredictRequest"]["properties"]) == {"image_b64", "top_k"}
    assert schemas["PredictRequest"]["additionalProperties"] is False
    assert set(schemas["Prediction"]["properties"]) == {"class", "prob", "top_k"}
    assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"}
    op = spec["paths"]["/predict"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Prediction")
    for status in ("400", "413", "415", "422"):
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 shape is not what we send
    assert {"/health", "/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------------- bad input


def _bomb_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: signature, IHDR, an empty IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _cases():
    good = png(colour_image("red"))
    flat = png(Image.new("L", (1500, 1500), 0))  # 2.25 MP in a few kB: over the 1 MP limit
    assert len(flat) < MAX_BODY // 2
    ico = png(colour_image("red", size=32), "ICO")
    big = b"A" * (MAX_BODY + 1000)
    # (id, body, headers, status, error, words in detail)
    json_ct = {"content-type": "application/json"}
    return [
        ("malformed-json", b'{"image_b64": "abc', json_ct, 400, "invalid_json", ["not valid JSON"]),
        ("json-not-an-object", b'["abc"]', json_ct, 422, "invalid_request", ["image_b64"]),
        ("wrong-field-name", {"image": b64(good)}, json_ct, 422, "invalid_request",
         ["missing field 'image_b64'", "unknown field 'image'"]),
        ("wrong-type", {"image_b64": 42}, json_ct, 422, "invalid_request", ["image_b64", "string"]),
        ("top-k-too-large", {"image_b64": b64(good), "top_k": 4}, json_ct, 422, "invalid_request", ["at most 3"]),
        ("top-k-zero", {"image_b64": b64(good), "top_k": 0}, json_ct, 422, "invalid_request", ["top_k"]),
        ("empty-body", b"", json_ct, 422, "invalid_request", ["empty"]),
        ("not-json-content-type", json.dumps({"image_b64": b64(good)}).encode(), {"content-type": "text/plain"},
         415, "unsupported_media_type", ["application/json", "text/plain"]),
        ("no-content-type", json.dumps({"image_b64": b64(good)}).encode(), {}, 415, "unsupported_media_type",
         ["no Content-Type"]),
        ("bad-base64", {"image_b64": "this is not base64!"}, json_ct, 422, "invalid_base64", ["not valid base64"]),
        ("bad-padding", {"image_b64": b64(good)[:-2]}, json_ct, 422, "invalid_base64", ["base64"]),
        ("non-base64-data-url", {"image_b64": "data:image/png,abc"}, json_ct, 422, "invalid_base64", ["data URL"]),
        ("empty-image", {"image_b64": ""}, json_ct, 422, "empty_image", ["empty"]),
        ("non-image-bytes", {"image_b64": b64(b"%PDF-1.4 hello, not an image at all")}, json_ct, 422, "not_an_image",
         ["not an image"]),
        ("truncated-image", {"image_b64": b64(png(colour_image("red", size=64))[:300])}, json_ct, 422,
         "undecodable_image", ["truncated"]),
        ("format-not-allowed", {"image_b64": b64(ico)}, json_ct, 415, "unsupported_format", ["ICO", "PNG"]),
        ("too-many-pixels", {"image_b64": b64(flat)}, json_ct, 413, "image_too_large", ["1500x1500", "1,000,000"]),
        ("decompression-bomb-header", {"image_b64": b64(_bomb_header(100_000, 100_000))}, json_ct, 413,
         "image_too_large", ["decompression bomb"]),
        ("oversized-payload", big, json_ct, 413, "payload_too_large", [f"{MAX_BODY:,}"]),
    ]


@pytest.mark.parametrize(("body", "headers", "status", "error", "words"),
                         [pytest.param(*c[1:], id=c[0]) for c in _cases()])
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(client, body, headers, status, error, words):
    r = post_json(client, body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    d = r.json()
    assert set(d) == {"error", "detail"} and d["error"] == error
    for w in words:
        assert w in d["detail"]
    assert_still_serving(client)


def test_oversized_chunked_body_is_refused_while_streaming(client):
    def chunks():
        for _ in range(MAX_BODY // 10_000 + 5):
            yield b"x" * 10_000

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert_still_serving(client)


@pytest.mark.parametrize(("method", "path", "status", "error"), [
    ("GET", "/predict", 405, "method_not_allowed"),
    ("GET", "/nope", 404, "not_found"),
])
def test_unknown_routes_answer_json(client, method, path, status, error):
    r = client.request(method, path)
    assert r.status_code == status and r.json()["error"] == error


# ---------------------------------------------------------------------------- CLI and setup


def test_serve_missing_model_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model file not found") and err.count("\n") == 1


def test_serve_port_in_use_is_a_one_line_usage_error(workdir, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(workdir / "model.onnx"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_bind_makes_a_tcp_socket():
    # proto=IPPROTO_TCP is what makes asyncio set TCP_NODELAY on accepted connections;
    # without it every answer waited ~40 ms for a delayed ACK.
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[1] > 0


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"formats": ("PNG", "NOPE")}, "serve formats"),
    ({"formats": ()}, "serve formats"),
    ({"max_pixels": 0}, "max_pixels"),
    ({"max_request_bytes": -1}, "max_request_bytes"),
])
def test_serve_limits_are_validated(kwargs, words):
    with pytest.raises(UsageError, match=words):
        ServeLimits(**kwargs)


def test_serve_limits_normalise_format_names():
    assert ServeLimits(formats=(" png", "jpeg")).formats == ("PNG", "JPEG")

