"""Dynamic micro-batching: concurrent requests share one ONNX Runtime call.

Each request decodes its own image, then ``submit``s the tensor and awaits its row of the
batch's output. One worker task takes up to ``max_batch`` queued tensors, stacks them and runs the
model in a dedicated thread (ORT releases the GIL, so the event loop keeps reading and decoding
meanwhile). While the model runs, new tensors queue up and form the next batch.

A batch waits (at most ``max_wait_s``) only for requests that are already admitted and still
decoding (``expecting``): a lone request is never delayed. Batched answers equal batch-1 answers
(the rows of a batched run are independent); models with a fixed batch of 1 run row by row
(``OnnxClassifier.predict_proba``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import numpy as np


class MicroBatcher:
    """Group concurrent ``submit(tensor)`` calls into batches of at most ``max_batch``.

    Example::

        batcher = MicroBatcher(runner.run, max_batch=8, max_wait_s=0.002, executor=ThreadPoolExecutor(1))
        with batcher.expecting():
            x = decode(...)
        proba_row = await batcher.submit(x)
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_s: float,
                 executor: Executor) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.sizes: Counter[int] = Counter()  # batch size -> batches run
        self._queue: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._upstream = 0
        self._changed: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark a request that will ``submit`` soon (it is decoding), so a forming batch may wait for it."""
        self._upstream += 1
        try:
            yield
        finally:
            self._upstream -= 1
            self._notify()

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The model's output row for one preprocessed image ``x`` (no batch axis)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((x, fut))
        self._notify()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await fut

    @property
    def idle(self) -> bool:
        """Nothing queued, running or on its way: a request now would form a batch of one."""
        return not self._queue and self._upstream == 0 and (self._worker is None or self._worker.done())

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            await self._gather(loop)
            take, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self.sizes[len(take)] += 1
            try:
                out = await loop.run_in_executor(self.executor, self.run, np.stack([x for x, _ in take]))
            except Exception as e:  # the whole call failed: every request in it gets the error
                for _, fut in take:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for row, (_, fut) in zip(out, take):
                if not fut.done():
                    fut.set_result(row)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the batch is full, nothing more is on its way, or ``max_wait_s`` has passed."""
        deadline = loop.time() + self.max_wait_s
        while len(self._queue) < self.max_batch and self._upstream > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
