"""The pixel budget: decoded pixels of all requests in flight together stay under one bound.

A request asks for its image's width x height before decoding and gives it back once its
tensor is built. Requests are served first come, first served; one that cannot get its pixels
within the queue timeout is answered 503 (``overloaded``) instead of waiting without end. An
event-loop object: acquire and release on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from audit.serve.errors import ApiError


class PixelBudget:
    """A weighted, first-come-first-served semaphore counted in pixels.

    Example::

        budget = PixelBudget(64_000_000, timeout_s=10)
        async with budget.hold(width * height):
            tensor = decode(...)
    """

    def __init__(self, capacity: int, timeout_s: float) -> None:
        self.capacity = capacity
        self.timeout_s = timeout_s
        self.in_use = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        await self.acquire(pixels)
        try:
            yield
        finally:
            self.release(pixels)

    async def acquire(self, pixels: int) -> None:
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels can never fit a budget of {self.capacity}")
        if not self._waiters and self.in_use + pixels <= self.capacity:
            self._take(pixels)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pixels, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            if fut.done() and not fut.cancelled():  # granted just as we gave up: give it back
                self.release(pixels)
            else:
                fut.cancel()
                self._waiters.remove(entry)
                self._wake()  # a large request leaving the head of the queue may unblock smaller ones
            if isinstance(e, asyncio.CancelledError):
                raise
            raise ApiError(503, "overloaded", f"the server is busy: {self.in_use:,} of its {self.capacity:,}-pixel "
                                              f"decode budget stayed in use for {self.timeout_s:g} s; retry later",
                           headers={"Retry-After": "1"}) from None

    def release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._wake()

    def _take(self, pixels: int) -> None:
        self.in_use += pixels
        self.peak = max(self.peak, self.in_use)

    def _wake(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.capacity:
            pixels, fut = self._waiters.popleft()
            self._take(pixels)
            fut.set_result(None)
