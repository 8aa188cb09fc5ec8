"""One prediction, framework-free: base64 -> header check -> pixel budget -> decode -> model -> ranked classes.

Where the work runs is decided per request from the start-up measurement (``Calibration``):
when the decode and the model are predicted to cost less than ``inline_below_ms``, they run
on the event loop (a thread hand-off costs more than the work); otherwise in a thread pool,
in one hop. With ``max_batch > 1`` the decode still runs per request and the model runs in
micro-batches (``MicroBatcher``).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from audit.model import OnnxClassifier
from audit.serve.batching import MicroBatcher
from audit.serve.budget import PixelBudget
from audit.serve.errors import ApiError
from audit.serve.images import check_header, decode_base64
from audit.serve.options import Scheduling, ServeLimits
from audit.serve.runner import ModelRunner, checked_row, prepare, rank, self_check

log = logging.getLogger("audit.serve")


class PredictService:
    """The model, its card, the limits and the schedulers; ``await predict(b64, top_k)``.

    Construction runs the self-check (``ModelError`` when the model cannot answer).

    Example::

        service = PredictService(OnnxClassifier.load("model.onnx"))
        await service.predict(base64_text, top_k=2)  # [("cat", 0.94), ("dog", 0.05)]
    """

    def __init__(self, clf: OnnxClassifier, limits: ServeLimits = ServeLimits(),
                 scheduling: Scheduling = Scheduling()) -> None:
        self.clf = clf
        self.labels = clf.labels
        self.pre = clf.card.preprocess
        self.limits = limits
        self.scheduling = scheduling
        self.decode_limits = limits.decode_limits
        self.runner = ModelRunner(clf)
        self.calibration = self_check(self.runner, scheduling.max_batch, self.decode_limits)
        self.budget = PixelBudget(limits.pixel_budget, limits.queue_timeout_s)
        self.pool = ThreadPoolExecutor(thread_name_prefix="predict")
        self.batcher = None
        if scheduling.max_batch > 1:
            model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
            self.batcher = MicroBatcher(self.runner.run, scheduling.max_batch, scheduling.max_wait_ms / 1000.0,
                                        model_thread)

    async def predict(self, image_b64: str, top_k: int = 1) -> list[tuple[str, float]]:
        """The ``top_k`` most probable (class, probability) pairs, best first; raises ``ApiError``."""
        if top_k > len(self.labels):
            raise ApiError(422, "invalid_request", f"top_k must be at most {len(self.labels)} (the model has "
                                                   f"{len(self.labels)} classes), got {top_k}")
        data = decode_base64(image_b64, self.limits.max_image_bytes)
        pixels = check_header(data, self.limits)
        if self.batcher is None:
            proba = await self._direct(data, pixels)
        else:
            proba = await self._batched(data, pixels)
        return rank(checked_row(proba), self.labels, top_k)

    async def _direct(self, data: bytes, pixels: int) -> np.ndarray:
        inline = self.calibration.cost_ms(pixels) <= self.scheduling.inline_below_ms
        async with self.budget.hold(pixels):
            if inline:
                return self._decode_and_run(data)
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._decode_and_run, data)

    async def _batched(self, data: bytes, pixels: int) -> np.ndarray:
        limit = self.scheduling.inline_below_ms
        with self.batcher.expecting():
            async with self.budget.hold(pixels):
                if pixels * self.calibration.prepare_ms_per_pixel <= limit:
                    x = self._prepare(data)
                else:
                    x = await asyncio.get_running_loop().run_in_executor(self.pool, self._prepare, data)
        if self.batcher.idle and self.calibration.cost_ms(pixels) <= limit:
            # A batch of one for a cheap model: handing it to the model thread would cost more than running it
            # (measured on the quick-start model: 1.8 vs 0.9 ms of server CPU per request).
            return self.runner.run(x[None])[0]
        return await self.batcher.submit(x)

    def _prepare(self, data: bytes) -> np.ndarray:
        return prepare(data, self.pre, self.decode_limits)

    def _decode_and_run(self, data: bytes) -> np.ndarray:
        return self.runner.run(self._prepare(data)[None])[0]

    def describe(self) -> dict:
        """How requests are run, for ``GET /model``."""
        return {"max_batch": self.scheduling.max_batch, "max_wait_ms": self.scheduling.max_wait_ms,
                "inline_below_ms": self.scheduling.inline_below_ms, "measured": self.calibration.to_dict()}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.executor.shutdown(wait=False, cancel_futures=True)
            sizes = ", ".join(f"{n}x{size}" for size, n in sorted(self.batcher.sizes.items()))
            log.info("micro-batches run (count x size): %s", sizes or "none")
