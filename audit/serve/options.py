"""The server's settings, each declared once with its bounds: what a request may be, and how it is run.

``ServeLimits`` bounds what a request may cost (body bytes, decoded pixels, time on the wire);
``Scheduling`` says how accepted requests are run (inline or in a thread, one by one or in
micro-batches); ``Listen`` where the server listens. Their bounds are declared like every setting of
the project (``audit.settings.setting``, docs/ARCHITECTURE.md §8) and checked at construction; an
error names the option and its flag.

The image limits are the audit's (``audit.imaging``): the server refuses exactly the images the
audit would skip. What bounds the server's memory is the pixel budget: the decoded pixels of all
requests in flight together.
"""

from __future__ import annotations

import dataclasses
import io
import resource
from dataclasses import dataclass, fields
from typing import Any

from PIL import Image

from audit import imaging
from audit.errors import AuditError, UsageError
from audit.settings import Section, setting

DEFAULT_FORMATS = imaging.FORMATS  # the audit's allow-list (audit.imaging): the server refuses what the audit skips
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # the JSON body; base64 makes an image 4/3 larger
OPEN_FILES_RESERVE = 64  # descriptors kept free for the model, logs, threads and the listening socket
HTTP_CHOICES = ("auto", "httptools", "h11")
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True)
class _Options(Section):
    """Server options: an error names the option and its flag."""

    @classmethod
    def refuse(cls, name: str, f: dataclasses.Field, what: str, value: Any) -> AuditError:
        return UsageError(f"serve option {name} ({f.metadata['flag']}) {what}, got {value!r}")


@dataclass(frozen=True)
class ServeLimits(_Options):
    """What ``/predict`` accepts and what all requests in flight may hold at once.

    * ``max_request_bytes``: the largest JSON body (413 above it; the body is never read).
    * ``max_pixels``: the largest image, width x height (413; checked on the header before decoding).
    * ``formats``: the image formats accepted (415 for others), a subset of the audit's ``imaging.FORMATS``.
    * ``pixel_budget``: decoded pixels of all requests in flight together; a request waits for its
      share, or gets 503 after ``queue_timeout_s``. This is what bounds the server's memory.
    * ``read_timeout_s``: a request must arrive whole (headers and body) within this many seconds of
      its first byte (or of the connection opening); 408 and the connection is closed otherwise.
    * ``max_connections``: open connections; past it the oldest connection that is waiting for its
      client is closed to make room. ``None``: the open-file limit minus a reserve.

    Example::

        ServeLimits(max_request_bytes=4_000_000, pixel_budget=100_000_000)
    """

    max_request_bytes: int = setting(DEFAULT_MAX_REQUEST_BYTES, ge=1, flag="--max-request-bytes")
    max_pixels: int = setting(imaging.DEFAULT_MAX_PIXELS, ge=1, flag="--max-pixels")
    formats: tuple[str, ...] = DEFAULT_FORMATS
    pixel_budget: int | None = setting(None, ge=1, flag="--pixel-budget")  # None: max_pixels
    queue_timeout_s: float = setting(10.0, ge=0, le=3600, flag="--queue-timeout")
    read_timeout_s: float = setting(30.0, ge=0.1, le=3600, flag="--read-timeout")
    max_connections: int | None = setting(None, ge=1, flag="--max-connections")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pixel_budget is None:
            object.__setattr__(self, "pixel_budget", self.max_pixels)
        if self.pixel_budget < self.max_pixels:
            raise UsageError(f"serve option pixel_budget (--pixel-budget) must be >= --max-pixels "
                             f"({self.max_pixels}), got {self.pixel_budget}",
                             hint="the budget must hold at least one image of --max-pixels")
        formats = tuple(f.strip().upper() for f in self.formats if f.strip())
        unknown = [f for f in formats if f not in imaging.FORMATS]  # one allow-list: the server may narrow it
        if not formats or unknown:
            raise UsageError(f"serve formats (--formats) must name formats of the audit's allow-list, got "
                             f"{list(self.formats)}", hint=f"choose from {','.join(DEFAULT_FORMATS)}")
        object.__setattr__(self, "formats", formats)
        smallest = smallest_request(formats)
        if smallest is not None and self.max_request_bytes < smallest[1]:
            raise UsageError(f"serve option max_request_bytes (--max-request-bytes) must be >= {smallest[1]}: no "
                             f"request could pass (a 1x1 {smallest[0]} image alone takes {smallest[1]} bytes as "
                             f"JSON), got {self.max_request_bytes}", hint="raise --max-request-bytes")

    @property
    def max_image_bytes(self) -> int:
        """The largest image file a body of ``max_request_bytes`` can carry (and the audit would read)."""
        return min(self.max_request_bytes * 3 // 4, imaging.DEFAULT_MAX_BYTES)

    @property
    def decode_limits(self) -> imaging.Limits:
        return imaging.Limits(max_bytes=self.max_image_bytes, max_pixels=self.max_pixels, formats=self.formats)

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


def smallest_request(formats: tuple[str, ...]) -> tuple[str, int] | None:
    """(format, bytes) of the smallest /predict body: a 1x1 image of the allowed format that saves smallest, as
    ``{"image_b64": "..."}``; None when Pillow can save none of them."""
    sizes = []
    for fmt in formats:
        buf = io.BytesIO()
        try:
            Image.new("L", (1, 1)).save(buf, format=fmt)
        except (KeyError, OSError, ValueError):
            continue
        sizes.append((len('{"image_b64":""}') + 4 * -(-len(buf.getvalue()) // 3), fmt))
    return (min(sizes)[1], min(sizes)[0]) if sizes else None


@dataclass(frozen=True)
class Scheduling(_Options):
    """How an accepted request is run.

    * ``max_batch``: up to this many concurrent requests share one ONNX Runtime call (1: off).
    * ``max_wait_ms``: how long a batch may wait for requests that are still being decoded; a
      request never waits when no other is in flight.
    * ``inline_below_ms``: decode and run on the event loop, without a thread hand-off, when the
      start-up measurement predicts the request costs less than this (0: always in a thread).

    Example::

        Scheduling(max_batch=8, max_wait_ms=2)
    """

    max_batch: int = setting(1, ge=1, le=1024, flag="--max-batch")
    max_wait_ms: float = setting(2.0, ge=0, le=1000, flag="--max-wait-ms")
    # 2 ms: a cheap model stays inline even when the start-up measurement runs on a busy machine (the
    # quick-start model measured 0.4-0.9 ms on the shared 2-core machine), while a 224 px decode (3+ ms)
    # goes to a thread and never stalls other connections for long.
    inline_below_ms: float = setting(2.0, ge=0, le=1000, flag="--inline-below-ms")


@dataclass(frozen=True)
class Listen(_Options):
    """Where the server listens and how uvicorn runs it (port 0 picks any free port)."""

    host: str = "127.0.0.1"
    port: int = setting(8000, ge=0, le=65535, flag="--port")
    threads: int = setting(0, ge=0, le=1024, flag="--threads")  # ONNX Runtime intra-op threads; 0: its choice
    http: str = setting("auto", choices=HTTP_CHOICES, flag="--http")
    loop: str = setting("auto", choices=LOOP_CHOICES, flag="--loop")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.host or any(c.isspace() for c in self.host):
            raise UsageError(f"serve option host (--host) must be an interface name or address, got {self.host!r}",
                             hint="e.g. 127.0.0.1 or 0.0.0.0")
