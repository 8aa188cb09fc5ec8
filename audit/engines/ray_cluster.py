"""Connecting to Ray for the Ray engine (docs/ARCHITECTURE.md §5): a local Ray, or a cluster at ``--ray-address``.

* An address where no Ray cluster answers fails within seconds (exit 2), where Ray itself waits minutes:
  nobody listening, or something that does not speak gRPC (a typo, the dashboard's port).
* Ray Client addresses (``ray://``) are refused: they need ``ray[client]``, and the engine streams every
  batch back to this process, which Ray Client is not made for; run the audit on a node of the cluster.
* ``ray.init`` replaces the SIGTERM handler; ours is put back, so SIGTERM still exits 143 after a clean-up.
* A local Ray gets a watchdog (``audit/engines/reaper.py``) that ends its processes if the audit is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

from audit.engines import reaper
from audit.errors import UsageError

INSTALL_HINT = 'install the extra: pip install "model-audit[ray]"'


def connect(address: str = "", cpus: int = 0):
    """The ``ray`` module, connected: to ``address``, to the Ray this process already runs, or a new local one.

    ``ray.init`` installs its own SIGTERM handler (it exits 15 with a stack dump); the handlers this process
    had are put back, so SIGTERM still ends the run cleanly with 143.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed", hint=INSTALL_HINT) from None
    if not ray.is_initialized():
        _check_reachable(address)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: never report usage
        # "local": a Ray of our own; without it ray.init joins whatever cluster `ray start` left on this machine
        where = {"address": address} if address else {"address": "local", "num_cpus": cpus or None,
                                                       "include_dashboard": False}
        if not address:
            _start_reaper()  # before ray.init: a kill may come while it starts the local Ray's processes
        with _own_signal_handlers():
            try:
                ray.init(log_to_driver=False, logging_level=logging.WARNING, **where)
            except Exception as e:  # Ray raises bare Exception, RuntimeError, ConnectionError, ValueError
                why = str(e).splitlines()[0][:160]
                if address:
                    raise _unreachable(address, why) from None
                ray.shutdown()  # whatever part of the local Ray did start
                raise UsageError(f"could not start a local Ray ({why})",
                                 hint="Ray gives its processes 30 s to start; on a busy machine retry, "
                                      "or use --engine local") from None
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows images/s and time left
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset "execution finished" lines
    return ray


_REAPERS: list[subprocess.Popen] = []  # held for the life of the process: their stdin closes when it ends


def _start_reaper() -> None:
    """A watchdog that ends this process's local Ray if the process is killed (``audit/engines/reaper.py``)."""
    if not os.path.exists("/proc/self/stat"):
        return
    _REAPERS.append(subprocess.Popen([sys.executable, "-S", reaper.__file__, str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True))


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM handled as before the block, whatever the block installs (in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds on a HOST:PORT where no Ray cluster answers: nobody listens, or something else does
    (a typo, the dashboard port), where Ray itself would wait for minutes. Ray's GCS speaks gRPC, so it answers
    the HTTP/2 connection preface with a SETTINGS frame; anything else is not a Ray cluster."""
    if address.startswith("ray://"):
        raise UsageError(f"--ray-address {address!r}: Ray Client (ray://) addresses are not supported",
                         hint="run the audit on a node of the cluster with --ray-address auto, or pass the "
                              "cluster's GCS address HOST:6379 that `ray start --head` prints")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local", "": Ray answers those quickly
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(HTTP2_PREFACE)
            reply = _read(conn, 9)
    except OSError as e:
        if isinstance(e, TimeoutError) or not e.strerror:
            raise _unreachable(address, f"nothing answered within {timeout_s:g} s") from None
        raise _unreachable(address, e.strerror) from None
    if len(reply) < 9 or reply[3] != 0x04:  # the frame type of SETTINGS
        raise _unreachable(address, "something listens there but does not speak gRPC as Ray's GCS does: a typo, "
                                    "or the dashboard's port?")


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # and an empty SETTINGS


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _unreachable(address: str, why: str) -> UsageError:
    return UsageError(f"--ray-address {address!r}: cannot connect to a Ray cluster ({why})",
                      hint="start one with `ray start --head` and pass the address it prints (HOST:6379), "
                           "or leave --ray-address out to start a local Ray")
