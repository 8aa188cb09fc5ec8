"""The server under hostile load and with broken models (reliability issue, "The server").

Every case runs the real server (``python -m audit serve`` on 127.0.0.1, real sockets). Before
the fix: 300 clients that stall after their headers held every descriptor of a 256-file process
so real requests were reset; 40 concurrent large images grew the server by 600 MB; a model with
the wrong output count, fp16 inputs or NaN outputs started and answered 500 (with pydantic's text);
``--port -1`` was an internal error.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from builders import COLOURS, colour_image, colour_model
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from audit.cli import main
from audit.loadgen import request_body, running_server, send_requests
from audit.model import ModelCard, Preprocess, write_card

MiB = 1024 * 1024


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def predict(url: str, image: bytes, timeout: float = 60) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as c:
        return c.post("/predict", json={"image_b64": base64.b64encode(image).decode("ascii")})


def assert_error_shape(r: httpx.Response, status: int, error: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    d = r.json()
    assert set(d) == {"error", "detail"} and d["error"] == error, d
    assert "pydantic" not in d["detail"] and "http" not in d["detail"]
    return d


def model_with(path, nodes, inputs, outputs, initializers=(), *, labels=tuple(COLOURS), output="logits",
               size=16) -> str:
    """An ONNX graph from nodes, with a card (3 colour labels, 16 px RGB unless told)."""
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_card(path, ModelCard(labels=labels, preprocess=Preprocess(size=(size, size), mean=(0.5,), std=(0.25,)),
                               output=output))
    return str(path)


def pooled_colour_nodes(out: str = "output") -> list:
    return [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], [out])]


def colour_initializers(dtype=np.float32, n_out: int = 3) -> list:
    w = np.full((3, n_out), -4.0, dtype)
    for i in range(3):
        w[i, i] = 4.0
    return [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(n_out, dtype), "B")]


def io_value(name: str, elem=TensorProto.FLOAT, shape=("N", 3, 16, 16)):
    return helper.make_tensor_value_info(name, elem, list(shape))


# ---------------------------------------------------------------------------- connections


def _stall(port: int, how: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
    if how == "headers":
        s.sendall(head + b"\r\n")
    elif how == "part-of-headers":
        s.sendall(head[:30])
    elif how == "part-of-body":
        s.sendall(head + b'\r\n{"image_b64": "iVBOR')
    return s  # how == "nothing": connected, silent


def test_stalled_clients_do_not_block_real_requests_under_a_256_file_limit(tmp_path):
    model = colour_model(tmp_path / "m.onnx")
    good = png(colour_image("green", seed=1))
    with running_server(model, open_files=256) as server:
        port = int(server.url.rsplit(":", 1)[1])
        stalled = [_stall(port, ("headers", "part-of-headers", "part-of-body", "nothing")[i % 4]) for i in range(300)]
        try:
            answers = [predict(server.url, good) for _ in range(5)]
            assert [r.status_code for r in answers] == [200] * 5
            assert {r.json()["class"] for r in answers} == {"green"}
        finally:
            for s in stalled:
                s.close()
        log = server.log.read_text(errors="replace")
    assert "Too many open files" not in log and "Traceback" not in log
    assert len(log) < 5000, log[-2000:]


def _read_until_closed(s: socket.socket) -> bytes:
    s.settimeout(60)  # a safety net for a broken server, not a speed limit
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(("how", "http"), [("nothing", "auto"), ("part-of-headers", "auto"), ("headers", "auto"),
                                           ("part-of-body", "auto"), ("part-of-body", "h11")])
def test_a_request_that_does_not_arrive_whole_gets_408_and_is_closed(tmp_path, how, http):
    model = colour_model(tmp_path / "m.onnx")
    with running_server(model, extra_args=["--read-timeout", "0.5", "--http", http]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with _stall(port, how) as s:
            data = _read_until_closed(s)
        assert predict(server.url, png(colour_image("red"))).status_code == 200
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    d = json.loads(body)
    assert d["error"] == "request_timeout" and "0.5 s" in d["detail"]


# ---------------------------------------------------------------------------- memory


def peak_rss_bytes(pid: int) -> int:
    """A process's peak resident memory so far (Linux ``VmHWM``)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_decoded_pixels_in_flight_stay_within_the_pixel_budget(tmp_path):
    """40 concurrent 4-megapixel images: before the budget the server grew by ~600 MB; now one decodes at a time."""
    model = colour_model(tmp_path / "m.onnx")
    pixels = 2000 * 2000
    big = png(Image.new("RGB", (2000, 2000), COLOURS["red"]))  # 16 kB of PNG, 12 MB decoded
    args = ["--max-pixels", str(pixels), "--queue-timeout", "600"]
    with running_server(model, extra_args=args) as server:
        warm = send_requests(server.url, [request_body(big)], 2, 1)
        before = peak_rss_bytes(server.pid)
        burst = send_requests(server.url, [request_body(big)], 40, 40, timeout_s=600)
        grown = peak_rss_bytes(server.pid) - before
    assert warm.ok.all() and burst.ok.all(), burst.first_error
    assert {a[0] for a in burst.answers} == {"red"}
    # the budget holds one such image at a time: ~12 MB decoded, a few copies while converting
    assert grown < pixels * 16 + 64 * MiB, f"peak RSS grew by {grown / MiB:.0f} MiB"


def test_a_full_pixel_budget_answers_503_json_and_keeps_serving(tmp_path):
    model = colour_model(tmp_path / "m.onnx")
    big = png(Image.new("RGB", (2000, 2000), COLOURS["blue"]))
    args = ["--max-pixels", str(2000 * 2000), "--queue-timeout", "0.01"]
    with running_server(model, extra_args=args) as server:
        with httpx.Client(base_url=server.url, timeout=600, trust_env=False) as c:
            body = {"image_b64": base64.b64encode(big).decode("ascii")}
            with ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(lambda _: c.post("/predict", json=body), range(24)))
        busy = [r for r in answers if r.status_code != 200]
        assert busy and len(busy) < len(answers)
        for r in busy:
            d = assert_error_shape(r, 503, "overloaded")
            assert "pixel" in d["detail"] and r.headers["retry-after"] == "1"
        assert predict(server.url, big).json()["class"] == "blue"


# ---------------------------------------------------------------------------- the model


def test_fp16_model_is_cast_at_the_boundary(tmp_path):
    f16 = model_with(tmp_path / "f16.onnx", pooled_colour_nodes(),
                     [io_value("input", TensorProto.FLOAT16)], [io_value("output", TensorProto.FLOAT16, ("N", 3))],
                     colour_initializers(np.float16))
    f32 = colour_model(tmp_path / "f32.onnx")
    images = [png(colour_image(c, seed=i)) for i, c in enumerate(COLOURS)]
    with running_server(f16) as a, running_server(f32) as b:
        assert httpx.get(a.url + "/model", trust_env=False).json()["input_type"] == "tensor(float16)"
        for image in images:
            ra, rb = predict(a.url, image).json(), predict(b.url, image).json()
            assert ra["class"] == rb["class"] and abs(ra["prob"] - rb["prob"]) < 1e-2


def test_a_model_fault_on_one_input_is_a_500_json_error_and_the_server_keeps_serving(tmp_path):
    """Red images make the logits NaN (sqrt of a negative number); other colours are fine."""
    nodes = [
        *pooled_colour_nodes("logits"),
        helper.make_node("Slice", ["flat", "zero", "one", "one"], ["red"]),  # mean red channel, normalised
        helper.make_node("Sub", ["threshold", "red"], ["margin"]),
        helper.make_node("Sqrt", ["margin"], ["root"]),  # NaN when red > threshold
        helper.make_node("Mul", ["root", "zero_f"], ["nan_or_zero"]),
        helper.make_node("Add", ["logits", "nan_or_zero"], ["output"]),
    ]
    consts = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("zero", 0), ("one", 1))]
    consts += [numpy_helper.from_array(np.array([1.0], np.float32), "threshold"),
               numpy_helper.from_array(np.array([0.0], np.float32), "zero_f")]
    model = model_with(tmp_path / "nan.onnx", nodes, [io_value("input")], [io_value("output", shape=("N", 3))],
                       colour_initializers() + consts)
    with running_server(model) as server:
        r = predict(server.url, png(colour_image("red", seed=3)))
        d = assert_error_shape(r, 500, "model_output_not_finite")
        assert "NaN" in d["detail"] and "model" in d["detail"]
        assert predict(server.url, png(colour_image("green", seed=3))).json()["class"] == "green"
        log = server.log.read_text(errors="replace")
    assert "Traceback" not in log and "model_output_not_finite" in log


def _refusal(capsys, model: str, *args: str) -> str:
    assert main(["serve", "--model", model, "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_refuses_an_output_count_that_does_not_match_the_labels(tmp_path, capsys):
    model = model_with(tmp_path / "five.onnx", pooled_colour_nodes(), [io_value("input")],
                       [io_value("output", shape=("N", 5))], colour_initializers(n_out=5))
    err = _refusal(capsys, model)
    assert "5]" in err and "3 labels" in err and "--labels" in err  # refused when the model loads


def test_self_check_refuses_a_model_that_outputs_nan(tmp_path, capsys):
    nodes = [*pooled_colour_nodes("logits"), helper.make_node("Div", ["logits", "zero"], ["inf"]),
             helper.make_node("Mul", ["inf", "zero"], ["output"])]  # x / 0 * 0 = NaN
    model = model_with(tmp_path / "nan.onnx", nodes, [io_value("input")], [io_value("output", shape=("N", 3))],
                       colour_initializers() + [numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    err = _refusal(capsys, model)
    assert "self-check" in err and "NaN/Inf" in err and "refusing" in err


def test_self_check_refuses_probabilities_that_do_not_sum_to_one(tmp_path, capsys):
    model = colour_model(tmp_path / "m.onnx")
    err = _refusal(capsys, str(model), "--output-kind", "probabilities")
    assert "sum to" in err and "--output-kind logits" in err


def test_self_check_refuses_micro_batching_for_a_model_that_only_runs_one_image(tmp_path, capsys):
    """The batch axis is declared dynamic, but a Reshape to [1, 3] only works for one image."""
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "one_row"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "B"], ["output"])]
    shape = numpy_helper.from_array(np.array([1, 3], np.int64), "one_row")
    model = model_with(tmp_path / "one.onnx", nodes, [io_value("input")], [io_value("output", shape=("N", 3))],
                       colour_initializers() + [shape])
    err = _refusal(capsys, model, "--max-batch", "8")
    assert "batch of 2" in err and "--max-batch 1" in err


def test_refuses_an_integer_input(tmp_path, capsys):
    nodes = [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT),
             *pooled_colour_nodes()]
    nodes[1].input[0] = "x"
    model = model_with(tmp_path / "u8.onnx", nodes, [io_value("input", TensorProto.UINT8)],
                       [io_value("output", shape=("N", 3))], colour_initializers())
    err = _refusal(capsys, model)
    assert "tensor(uint8)" in err and "float tensors" in err


# ---------------------------------------------------------------------------- flags


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "-1"], ["--port", ">= 0 and <= 65535", "-1"]),
    (["--port", "70000"], ["--port", "70000"]),
    (["--threads", "-1"], ["--threads"]),
    (["--host", ""], ["--host"]),
    (["--max-batch", "0"], ["--max-batch"]),
    (["--max-wait-ms", "-1"], ["--max-wait-ms"]),
    (["--inline-below-ms", "nan"], ["--inline-below-ms"]),
    (["--read-timeout", "0"], ["--read-timeout"]),
    (["--queue-timeout", "-1"], ["--queue-timeout"]),
    (["--max-connections", "0"], ["--max-connections"]),
    (["--max-connections", str(10**9)], ["--max-connections", "open-file limit", "ulimit -n"]),
    (["--max-pixels", "100", "--pixel-budget", "50"], ["--pixel-budget", "at least one image"]),
    (["--max-request-bytes", "0"], ["--max-request-bytes"]),
    (["--http", "spdy"], ["--http", "httptools"]),
    (["--loop", "trio"], ["--loop", "uvloop"]),
    (["--port", "eighty"], ["--port", "invalid int"]),
])
def test_bad_serve_flags_are_one_line_usage_errors(tmp_path, capsys, args, words):
    model = colour_model(tmp_path / "m.onnx")
    try:
        code = main(["serve", "--model", str(model), *args])
    except SystemExit as e:  # argparse's own type errors exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err


def test_shutdown_does_not_wait_for_a_stalled_client(tmp_path):
    """SIGTERM while a client is stalled mid-body: the server exits at once instead of after the read timeout."""
    model = colour_model(tmp_path / "m.onnx")
    with running_server(model, extra_args=["--read-timeout", "600"]) as server:
        stalled = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        body = request_body(png(colour_image("red")))
        head = ("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        stalled.sendall(head.encode() + body)  # one whole request first: the server has accepted the connection
        assert stalled.recv(65536).startswith(b"HTTP/1.1 200")
        stalled.sendall(head.encode() + body[:20])
        os.kill(server.pid, signal.SIGTERM)
        data = _read_until_closed(stalled)
        stalled.close()
    assert b" 503 " in data.split(b"\r\n", 1)[0] and b"shutting_down" in data
