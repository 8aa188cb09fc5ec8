"""The server's settings, each declared once with its bounds: what a request may be, and how it is run.

``ServeLimits`` bounds what a request may cost (body bytes, decoded pixels, time on the wire);
``Scheduling`` says how accepted requests are run (inline or in a thread, one by one or in
micro-batches). Both validate at construction and name the field and its flag in the error.

The image limits are the audit's (``audit.imaging``): the server refuses exactly the images the
audit would skip. What bounds the server's memory is the pixel budget: the decoded pixels of all
requests in flight together.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, fields
from typing import Any

from PIL import Image

from audit import imaging
from audit.errors import UsageError

# The formats the audit reads (docs/ARCHITECTURE.md §6); Pillow also opens EPS, PSD, FITS and more, which a
# public endpoint has no reason to parse.
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # the JSON body; base64 makes an image 4/3 larger
OPEN_FILES_RESERVE = 64  # descriptors kept free for the model, logs, threads and the listening socket


def _check(name: str, flag: str, value: Any, *, low: float, high: float = math.inf, integer: bool = False,
           hint: str | None = None) -> None:
    kind = "an integer" if integer else "a number"
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok or not low <= value <= high:
        span = f"from {low:g} to {high:g}" if high != math.inf else f">= {low:g}"
        raise UsageError(f"serve option {name} ({flag}) must be {kind} {span}, got {value!r}", hint=hint)


@dataclass(frozen=True)
class ServeLimits:
    """What ``/predict`` accepts and what all requests in flight may hold at once.

    * ``max_request_bytes``: the largest JSON body (413 above it; the body is never read).
    * ``max_pixels``: the largest image, width x height (413; checked on the header before decoding).
    * ``formats``: the image formats accepted (415 for others).
    * ``pixel_budget``: decoded pixels of all requests in flight together; a request waits for its
      share, or gets 503 after ``queue_timeout_s``. This is what bounds the server's memory.
    * ``read_timeout_s``: a request must arrive whole (headers and body) within this many seconds of
      its first byte (or of the connection opening); 408 and the connection is closed otherwise.
    * ``max_connections``: open connections; past it the oldest connection that is waiting for its
      client is closed to make room. ``None``: the open-file limit minus a reserve.

    Example::

        ServeLimits(max_request_bytes=4_000_000, pixel_budget=100_000_000)
    """

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = DEFAULT_FORMATS
    pixel_budget: int | None = None
    queue_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    max_connections: int | None = None

    def __post_init__(self) -> None:
        _check("max_request_bytes", "--max-request-bytes", self.max_request_bytes, low=1, integer=True)
        _check("max_pixels", "--max-pixels", self.max_pixels, low=1, integer=True)
        if self.pixel_budget is None:
            object.__setattr__(self, "pixel_budget", self.max_pixels)
        _check("pixel_budget", "--pixel-budget", self.pixel_budget, low=self.max_pixels, integer=True,
               hint="the budget must hold at least one image of --max-pixels")
        _check("queue_timeout_s", "--queue-timeout", self.queue_timeout_s, low=0, high=3600)
        _check("read_timeout_s", "--read-timeout", self.read_timeout_s, low=0.1, high=3600)
        if self.max_connections is not None:
            _check("max_connections", "--max-connections", self.max_connections, low=1, integer=True)
        Image.init()
        formats = tuple(f.strip().upper() for f in self.formats if f.strip())
        unknown = [f for f in formats if f not in Image.OPEN]
        if not formats or unknown:
            raise UsageError(f"serve formats (--formats) must name image formats Pillow can open, got "
                             f"{list(self.formats)}", hint=f"e.g. {','.join(DEFAULT_FORMATS)}")
        object.__setattr__(self, "formats", formats)

    @property
    def max_image_bytes(self) -> int:
        """The largest image file a body of ``max_request_bytes`` can carry (and the audit would read)."""
        return min(self.max_request_bytes * 3 // 4, imaging.DEFAULT_MAX_BYTES)

    @property
    def decode_limits(self) -> imaging.Limits:
        return imaging.Limits(max_bytes=self.max_image_bytes, max_pixels=self.max_pixels)

    def connection_limit(self) -> int:
        """``max_connections``, or what the process's open-file limit allows (``UsageError`` past it)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        allowed = 4096 if soft == resource.RLIM_INFINITY else max(8, soft - OPEN_FILES_RESERVE)
        if self.max_connections is None:
            return min(4096, allowed)
        if self.max_connections > allowed:
            raise UsageError(f"serve option max_connections (--max-connections) is {self.max_connections}, but the "
                             f"open-file limit ({soft}) leaves room for {allowed}",
                             hint=f"raise it (ulimit -n {self.max_connections + OPEN_FILES_RESERVE}) or pass a "
                                  "smaller --max-connections")
        return self.max_connections

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["formats"] = list(self.formats)
        d["max_connections"] = self.connection_limit()
        return d


@dataclass(frozen=True)
class Scheduling:
    """How an accepted request is run.

    * ``max_batch``: up to this many concurrent requests share one ONNX Runtime call (1: off).
    * ``max_wait_ms``: how long a batch may wait for requests that are still being decoded; a
      request never waits when no other is in flight.
    * ``inline_below_ms``: decode and run on the event loop, without a thread hand-off, when the
      start-up measurement predicts the request costs less than this (0: always in a thread).

    Example::

        Scheduling(max_batch=8, max_wait_ms=2)
    """

    max_batch: int = 1
    max_wait_ms: float = 2.0
    # 2 ms: a cheap model stays inline even when the start-up measurement runs on a busy machine (the
    # quick-start model measured 0.4-0.9 ms on the shared 2-core machine), while a 224 px decode (3+ ms)
    # goes to a thread and never stalls other connections for long.
    inline_below_ms: float = 2.0

    def __post_init__(self) -> None:
        _check("max_batch", "--max-batch", self.max_batch, low=1, high=1024, integer=True)
        _check("max_wait_ms", "--max-wait-ms", self.max_wait_ms, low=0, high=1000)
        _check("inline_below_ms", "--inline-below-ms", self.inline_below_ms, low=0, high=1000)


def check_listen(host: str, port: int, threads: int) -> None:
    """Bounds of the flags that do not belong to a dataclass; ``UsageError`` names the flag."""
    _check("port", "--port", port, low=0, high=65535, integer=True, hint="0 picks any free port")
    _check("threads", "--threads", threads, low=0, high=1024, integer=True, hint="0 lets ONNX Runtime choose")
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"serve option host (--host) must be an interface name or address, got {host!r}",
                         hint="e.g. 127.0.0.1 or 0.0.0.0")
