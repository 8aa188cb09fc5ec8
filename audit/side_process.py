"""A second Python process for work whose imports would hold the interpreter lock while the model runs
(docs/ARCHITECTURE.md §12).

cleanlab brings scikit-learn, scipy and pandas: about 1.3 s of CPU to import, nearly all of it under the
interpreter lock. Imported on a thread beside the inference pass, it slowed the pass by about as much (10k images
on 2 cores: 2.5-2.8 s instead of 1.2-1.3 s). Imported in a second process, it runs on a core the pass leaves idle.

    side = side_process("cleanlab.filter")  # started now; imports while the caller goes on
    ...
    side.call(function, *args)              # runs there once the imports are done; returns its result

One side process serves the whole interpreter (a test session runs hundreds of audits): it starts on first use,
is started again if it died, and is killed when the interpreter exits.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from audit.memory import peak_rss_mib

POLL_S = 0.5  # how often a caller waiting for an answer checks that the side process is still alive
# imported while the side process has nothing to do, after the modules it was started for: the model card is
# made there (audit.render.model_card.model_card_text: huggingface_hub's card data and jinja2, 0.1 s to import)
IDLE_IMPORTS = ("huggingface_hub.repocard_data", "jinja2")
SUPPORTED = os.name == "posix"  # the pipes are handed over by descriptor (subprocess's pass_fds)


class SideProcessError(RuntimeError):
    """The side process ended (killed, out of memory) before it answered."""


class SideProcess:
    """A fresh interpreter (``python -c``, as ``audit.render.pdf.PdfWorker``: no copy of the caller's threads or
    memory, and, unlike multiprocessing's spawn, no re-import of the caller's main script) that imports
    ``modules`` at once, then ``idle`` while it waits, and runs the calls it is sent. Calls and answers are
    pickled over two pipes of its own; what it prints goes to the caller's stderr. POSIX only (``SUPPORTED``)."""

    def __init__(self, modules: Sequence[str] = (), idle: Sequence[str] = ()) -> None:
        calls_r, calls_w = os.pipe()
        answers_r, answers_w = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from audit.side_process import _main; _main()",
                 json.dumps([list(modules), list(idle), calls_r, answers_w])],
                stdin=subprocess.DEVNULL, pass_fds=(calls_r, answers_w), env=python_env())
        except BaseException:
            for fd in (calls_w, answers_r):
                os.close(fd)
            raise
        finally:
            os.close(calls_r)
            os.close(answers_w)
        self._send = Connection(calls_w, readable=False)
        self._recv = Connection(answers_r, writable=False)
        self._finalizer = weakref.finalize(self, _stop, self._process, self._send, self._recv)  # at exit too
        self._lock = threading.Lock()
        self.peak_rss_mib: float | None = None  # the side process's peak resident memory at its last answer

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def call(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` in the side process (both pickled: a module-level function, plain data); its exception
        is raised here, with the side process's traceback as a note."""
        with self._lock:
            try:
                self._send.send((fn, args))
                while not self._recv.poll(POLL_S):
                    if not self.alive:
                        raise EOFError
                ok, value, self.peak_rss_mib = self._recv.recv()
            except (EOFError, OSError) as e:  # OSError: the pipe broke under a send or a read
                try:
                    self._process.wait(POLL_S)
                except subprocess.TimeoutExpired:
                    pass
                raise SideProcessError(f"the side process ended (exit code {self._process.returncode}) before it "
                                       f"answered {getattr(fn, '__qualname__', fn)}: out of memory?") from e
        if ok:
            return value
        raise value

    def stop(self) -> None:  # not ``close``: a run's prepared state is closed after it, this serves the next run
        self._finalizer()


def _stop(process: subprocess.Popen, *conns: Connection) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    for c in conns:
        c.close()


def python_env() -> dict[str, str]:
    """This process's environment for a child Python that imports the same audit package, installed or not (the
    side process, the PDF worker, the latency check's server)."""
    import audit

    root = str(Path(audit.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}


_SIDE: SideProcess | None = None
_START = threading.Lock()
_UNCLAIMED = False  # started by ``start_early`` and not yet asked for by a check


def side_process(*modules: str) -> SideProcess:
    """The interpreter's side process, started (importing ``modules``, then ``IDLE_IMPORTS`` while idle) if there
    is none or it died."""
    global _SIDE, _UNCLAIMED
    with _START:
        if _SIDE is None or not _SIDE.alive:
            _SIDE = SideProcess(modules, IDLE_IMPORTS)
        _UNCLAIMED = False
        return _SIDE


def start_early(argv: Sequence[str]) -> None:
    """``python -m audit run`` starts the side process importing cleanlab before the CLI's own imports, unless
    ``--no-label-errors`` is given: the import (1.2 s of CPU) then overlaps them (0.3 s) as well as the model's
    pass, and a 50-image run, which waits for it, ends about 0.3 s sooner (docs/ARCHITECTURE.md §12). The checks
    claim it when they are prepared (``side_process``); ``stop_unclaimed`` stops it if none did (the check
    disabled in a config file, or more images than the side process takes)."""
    global _UNCLAIMED
    if SUPPORTED and argv[:1] == ["run"] and "--no-label-errors" not in argv:
        side_process("cleanlab.filter")
        _UNCLAIMED = True


def stop_unclaimed() -> None:
    """Stop the side process ``start_early`` started if no check asked for it."""
    global _UNCLAIMED
    with _START:
        if _UNCLAIMED and _SIDE is not None:
            _SIDE.stop()
        _UNCLAIMED = False


def running() -> SideProcess | None:
    """The side process if one was started and is alive, else None (starts nothing)."""
    return _SIDE if _SIDE is not None and _SIDE.alive else None


def loaded(module: str) -> bool:
    """Whether this process has imported ``module`` (``side.call(loaded, name)`` asks the side process)."""
    return module in sys.modules


def _main() -> None:
    """The side process: calls on one pipe, answers on the other; its stdout points at stderr, so that nothing a
    library prints lands among the caller's output. Ctrl-C is the caller's to handle (it stops this process),
    not a second traceback from here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    modules, idle, calls, answers = json.loads(sys.argv[1])
    os.dup2(2, 1)
    _serve(Connection(calls, writable=False), Connection(answers, readable=False), modules, idle)


def _serve(recv: Connection, send: Connection, modules: Sequence[str], idle: Sequence[str]) -> None:
    for name in modules:
        _import_quietly(name)
    idle = list(idle)
    while True:
        while idle and not recv.poll(0):  # one module at a time, between calls
            _import_quietly(idle.pop(0))
        try:
            fn, args = recv.recv()
        except EOFError:  # the caller is gone
            return
        try:
            reply = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            e.add_note("in the side process:\n" + traceback.format_exc())
            reply = (False, e)
        try:
            send.send((*reply, peak_rss_mib()))
        except Exception:  # noqa: BLE001 - a result or exception that does not pickle
            send.send((False, RuntimeError(traceback.format_exc()), peak_rss_mib()))


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - the call that needs the module raises it again, to the caller
        pass
