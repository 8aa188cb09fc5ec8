"""Micro-batching gives the answers of batch 1, and the pixel budget serves first come, first served.

The model is a small random convolutional network (real ONNX Runtime kernels whose batched and
single runs take different code paths), so equal answers are not a coincidence of a trivial graph.
"""

from __future__ import annotations

import asyncio
import base64
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnx
import pytest
from builders import COLOURS, colour_image, colour_model
from onnx import TensorProto, helper, numpy_helper

from audit import imaging
from audit.loadgen import running_server
from audit.model import ModelCard, OnnxClassifier, Preprocess, write_card
from audit.serve.batching import MicroBatcher
from audit.serve.budget import PixelBudget
from audit.serve.errors import ApiError
from audit.serve.runner import ModelRunner, prepare

SIZE = 32


def conv_model(path, *, batch: int | str = "N", seed: int = 0) -> str:
    """Conv(3->8, 3x3) -> Relu -> GlobalAveragePool -> Gemm(8->3), random weights, 32 px RGB."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (8, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "W1", "B1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["output"])]
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(np.zeros(8, np.float32), "B1"),
             numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(np.zeros(3, np.float32), "B2")]
    graph = helper.make_graph(nodes, "conv",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    pre = Preprocess(size=(SIZE, SIZE), mean=(0.5,), std=(0.25,))
    write_card(path, ModelCard(labels=tuple(COLOURS), preprocess=pre))
    return str(path)


def images(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        colour_image(list(COLOURS)[i % 3], size=SIZE + 8 * (i % 4), seed=i, noise=60).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def answers(url: str, files: list[bytes], clients: int) -> list[dict]:
    def one(data: bytes) -> dict:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            r = c.post("/predict", json={"image_b64": base64.b64encode(data).decode("ascii"), "top_k": 3})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, files))


def assert_same_answers(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x["class"] == y["class"]
        px = {d["class"]: d["prob"] for d in x["top_k"]}
        py = {d["class"]: d["prob"] for d in y["top_k"]}
        assert px.keys() == py.keys()
        assert max(abs(px[k] - py[k]) for k in px) <= 1e-6


def test_micro_batched_answers_equal_batch_1_answers(tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    files = images(48)
    batching = ["--max-batch", "8", "--max-wait-ms", "20", "--inline-below-ms", "0"]  # decodes overlap: batches form
    with running_server(model) as single, running_server(model, extra_args=batching) as batched:
        one_by_one = answers(single.url, files, clients=1)
        together = answers(batched.url, files, clients=8)
    assert len({a["class"] for a in one_by_one}) > 1  # the model does not answer one class for everything
    assert_same_answers(one_by_one, together)


def test_a_model_with_a_fixed_batch_of_1_still_works_micro_batched(tmp_path):
    model = conv_model(tmp_path / "fixed.onnx", batch=1)
    files = images(16)
    with running_server(model) as single, running_server(model, extra_args=["--max-batch", "8"]) as batched:
        assert_same_answers(answers(single.url, files, clients=1), answers(batched.url, files, clients=8))


def test_the_batcher_forms_batches_whose_rows_equal_batch_1(tmp_path):
    clf = OnnxClassifier.load(conv_model(tmp_path / "conv.onnx"))
    runner = ModelRunner(clf)
    xs = [prepare(data, clf.card.preprocess, imaging.Limits()) for data in images(16)]

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(runner.run, max_batch=8, max_wait_s=5.0, executor=ThreadPoolExecutor(1))

        async def request(x: np.ndarray) -> np.ndarray:
            with batcher.expecting():
                await asyncio.sleep(0)  # "decoding": every request is admitted before any submits
            return await batcher.submit(x)

        rows = await asyncio.gather(*(request(x) for x in xs))
        assert sum(size * n for size, n in batcher.sizes.items()) == len(xs)
        assert max(batcher.sizes) > 1, batcher.sizes
        return rows

    rows = asyncio.run(main())
    for x, row in zip(xs, rows):
        np.testing.assert_allclose(row, runner.run(x[None])[0], rtol=0, atol=1e-6)


def test_a_lone_request_is_not_delayed_by_max_wait(tmp_path):
    clf = OnnxClassifier.load(colour_model(tmp_path / "m.onnx"))
    x = np.zeros((3, 16, 16), np.float32)

    async def main() -> None:
        batcher = MicroBatcher(ModelRunner(clf).run, max_batch=8, max_wait_s=3600.0, executor=ThreadPoolExecutor(1))
        await asyncio.wait_for(batcher.submit(x), 600)  # nothing else in flight: it runs at once, not in an hour
        assert batcher.sizes == {1: 1}

    asyncio.run(main())


# ---------------------------------------------------------------------------- the pixel budget


def test_pixel_budget_is_first_come_first_served_and_answers_503_on_timeout():
    async def main() -> None:
        budget = PixelBudget(100, timeout_s=3600)
        order: list[str] = []
        await budget.acquire(60)

        async def want(name: str, pixels: int) -> None:
            async with budget.hold(pixels):
                order.append(name)

        big = asyncio.create_task(want("big", 80))
        await asyncio.sleep(0)
        small = asyncio.create_task(want("small", 10))  # fits now, but waits behind "big"
        await asyncio.sleep(0)
        assert order == [] and budget.in_use == 60
        budget.release(60)
        await asyncio.gather(big, small)
        assert order == ["big", "small"] and budget.in_use == 0 and budget.peak == 90

        budget.timeout_s = 0.01
        await budget.acquire(100)
        with pytest.raises(ApiError) as info:
            await budget.acquire(1)
        assert info.value.status_code == 503 and info.value.error == "overloaded"
        assert not budget._waiters and budget.in_use == 100

    asyncio.run(main())


def test_pixel_budget_refuses_a_request_larger_than_itself():
    with pytest.raises(ValueError, match="never fit"):
        asyncio.run(PixelBudget(10, timeout_s=1).acquire(11))


def test_inline_and_thread_paths_give_the_same_answers(tmp_path):
    """``--inline-below-ms 1000`` runs every request on the event loop, ``0`` every one in a thread."""
    model = conv_model(tmp_path / "conv.onnx")
    files = images(12)
    with running_server(model, extra_args=["--inline-below-ms", "1000"]) as inline, \
         running_server(model, extra_args=["--inline-below-ms", "0"]) as threaded:
        assert_same_answers(answers(inline.url, files, clients=4), answers(threaded.url, files, clients=4))
