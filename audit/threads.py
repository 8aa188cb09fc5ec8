"""Daemon worker threads that never hold a run up: the decode threads and the checks' threads use them."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future


class DaemonThreads:
    """``n`` daemon threads, never joined. A ``ThreadPoolExecutor`` joins its threads on the way out (and again at
    exit), so one task stuck in the kernel (a read from a hung network file system) would absorb Ctrl-C; here the
    calling thread only ever waits on a future, which a signal interrupts."""

    def __init__(self, n: int, name: str = "worker") -> None:
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.n = n
        for i in range(n):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn, arg) -> Future:
        fut: Future = Future()
        self.tasks.put((fut, fn, arg))
        return fut

    def _work(self) -> None:
        while (item := self.tasks.get()) is not None:
            fut, fn, arg = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(arg))
            except BaseException as e:  # handed to the caller, like ThreadPoolExecutor
                fut.set_exception(e)

    def close(self, *, cancel: bool = True) -> None:
        """Drop the tasks not started (unless not ``cancel``: then they run first) and let every thread end after
        its current task, without waiting for it."""
        while cancel:
            try:
                item = self.tasks.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(self.n):
            self.tasks.put(None)


def in_background(fn, *args) -> Future:
    """``fn(*args)`` on a daemon thread of its own, started now; the future holds its result or its exception."""
    pool = DaemonThreads(1, getattr(fn, "__name__", "background"))
    future = pool.submit(lambda a: fn(*a), args)
    pool.close(cancel=False)  # the thread ends after this one task
    return future
