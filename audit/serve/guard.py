"""Connections that hold the server without sending a request: a read deadline and a connection cap.

uvicorn times out idle keep-alive connections, but not a client that opens a connection and sends
nothing, part of the headers, or headers and part of the body: each holds a file descriptor
forever, and a few hundred of them exhaust the open-file limit so that ``accept`` fails for real
clients. ``ConnectionGuard`` adds two rules to uvicorn's HTTP protocol (a subclass; no other
behaviour changes):

* **read deadline**: a connection that is waiting for its client (no request yet, or a request
  whose body has not arrived whole) for more than ``read_timeout_s`` gets ``408`` JSON and is
  closed. A periodic sweep checks this, so requests pay nothing for it.
* **connection cap**: past ``max_connections`` open connections (by default the open-file limit
  minus a reserve), the connection that has waited longest for its client is closed to make
  room; when every connection is busy with a request the new one gets ``503`` JSON instead.
  Descriptors never run out, so the event loop never logs ``Too many open files``.
"""

from __future__ import annotations

import asyncio
import logging

from audit.serve.errors import raw_error

log = logging.getLogger("audit.serve")
LOG_EVERY_S = 10.0


def _waiting_for_client(conn) -> bool:
    """No request in hand yet, or a request whose body has not arrived whole (uvicorn's cycle state)."""
    c = conn.cycle
    return c is None or c.response_complete or (c.more_body and not c.response_started)


def _close(conn, status: int, error: str, detail: str) -> None:
    transport = conn.transport
    if transport is None or transport.is_closing():
        return
    c = conn.cycle
    if c is None or c.response_complete or not c.response_started:
        transport.write(raw_error(status, error, detail))
    transport.close()


class ConnectionGuard:
    """The read deadline and connection cap for one server; ``protocol(base)`` is the class uvicorn runs.

    Example::

        guard = ConnectionGuard(read_timeout_s=30, max_connections=960)
        config = uvicorn.Config(app, http=guard.protocol(HttpToolsProtocol))
    """

    def __init__(self, read_timeout_s: float, max_connections: int) -> None:
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.sweep_s = min(1.0, read_timeout_s / 4)
        self._connections: set | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = {"timed out": 0, "evicted": 0, "refused": 0}
        self._last_log = 0.0

    def protocol(self, base: type) -> type:
        guard = self

        class Guarded(base):
            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                self.guard_cycle = None
                self.guard_since = self.loop.time()
                guard.admit(self)

            def shutdown(self) -> None:
                # uvicorn waits for every request in progress; one that is still arriving may never finish.
                if _waiting_for_client(self):
                    _close(self, 503, "shutting_down", "the server is shutting down; retry on another instance")
                else:
                    super().shutdown()

        Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
        return Guarded

    def admit(self, conn) -> None:
        """Called for every new connection: make room past the cap, and keep the sweep running."""
        self._connections = conn.connections
        if self._timer is None:
            self._timer = conn.loop.call_later(self.sweep_s, self._sweep, conn.loop)
        if len(self._connections) <= self.max_connections:
            return
        waiting = [c for c in self._connections if c is not conn and _waiting_for_client(c)]
        if waiting:
            oldest = min(waiting, key=lambda c: getattr(c, "guard_since", 0.0))
            _close(oldest, 503, "overloaded", f"the server is at its limit of {self.max_connections} connections "
                                              "and this one had not sent a whole request; reconnect and send it")
            self._count("evicted", conn.loop)
        else:
            _close(conn, 503, "overloaded", f"the server is at its limit of {self.max_connections} connections, "
                                            "all busy; retry later")
            self._count("refused", conn.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in list(self._connections or ()):
            if not hasattr(conn, "guard_since"):
                continue
            if conn.cycle is not conn.guard_cycle or not _waiting_for_client(conn):
                conn.guard_cycle, conn.guard_since = conn.cycle, now  # progress: the clock restarts
            elif now - conn.guard_since > self.read_timeout_s:
                _close(conn, 408, "request_timeout",
                       f"no whole request arrived within {self.read_timeout_s:g} s; send the headers and the body "
                       "without pausing")
                self._count("timed out", loop)
        self._timer = loop.call_later(self.sweep_s, self._sweep, loop) if self._connections else None

    def _count(self, what: str, loop: asyncio.AbstractEventLoop) -> None:
        """One warning per ``LOG_EVERY_S`` at most: a flood of stalled clients must not flood the log."""
        self._closed[what] += 1
        now = loop.time()
        if now - self._last_log >= LOG_EVERY_S:
            counts = ", ".join(f"{n} {k}" for k, n in self._closed.items() if n)
            log.warning("connections closed: %s (read timeout %g s, limit %d connections; --read-timeout, "
                        "--max-connections)", counts, self.read_timeout_s, self.max_connections)
            self._closed = dict.fromkeys(self._closed, 0)
            self._last_log = now
