"""Progress that suits where it goes: a live bar on a terminal, a few plain lines in a CI log.

On a terminal, a tqdm bar with images per second and the time left. Elsewhere (a CI log, a
file), one line each time another 10% is done or 30 s have passed, whichever comes first,
instead of thousands of carriage-return updates.

Example::

    with progress_bar(10_000, "inference") as bar:
        for batch in batches:
            bar.update(len(batch))
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

LINE_EVERY_S = 30.0
LINE_EVERY_SHARE = 0.10


class LineProgress:
    """Plain progress lines: ``inference: 2,000/10,000 (20%) 1,234 img/s, about 6 s left``."""

    def __init__(self, total: int, desc: str, stream: TextIO, unit: str = "img") -> None:
        self.total, self.desc, self.stream, self.unit = total, desc, stream, unit
        self.done = 0
        self.t0 = self.last_t = time.monotonic()
        self.last_share = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        share = self.done / self.total if self.total else 1.0
        if share - self.last_share >= LINE_EVERY_SHARE - 1e-9 or now - self.last_t >= LINE_EVERY_S:
            self._line(now)

    def close(self) -> None:
        if self.done and self.last_share < 1.0:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        share = self.done / self.total if self.total else 1.0
        rate = self.done / max(now - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = f", about {left:.0f} s left" if self.done < self.total else f" in {now - self.t0:.1f} s"
        print(f"{self.desc}: {self.done:,}/{self.total:,} ({share:.0%}) {rate:,.0f} {self.unit}/s{eta}",
              file=self.stream, flush=True)
        self.last_share, self.last_t = share, now


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool | None = None, stream: TextIO | None = None,
                 unit: str = "img") -> Iterator:
    """A progress reporter for ``total`` items. ``enabled``: None = automatic, False = silent."""
    stream = stream or sys.stderr
    if enabled is False or total == 0:
        bar = _Silent()
    elif stream.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False)
    else:
        bar = LineProgress(total, desc, stream, unit)
    try:
        yield bar
    finally:
        bar.close()
