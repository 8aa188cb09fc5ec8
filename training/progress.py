"""Progress for logs: one plain line per 10% of an epoch (or per ``interval_s``), never carriage returns.

A terminal gets Lightning's progress bar. A log file or a CI job (stderr is not a terminal) gets
``LineProgress`` instead: a bar redraws itself with carriage returns hundreds of times per epoch,
which a log keeps as one huge line per redraw.

Example line::

    phase3 epoch 2/10: 40% (56/140 batches), 12.3 img/s, loss 0.412, 1m05s elapsed, ~1m38s left
"""

from __future__ import annotations

import logging
import sys
import time

import lightning.pytorch as pl

log = logging.getLogger("training")


def wants_bar(stream=None) -> bool:
    """Lightning's bar only when the stream (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LineProgress(pl.Callback):
    """Logs a line each time an epoch crosses a 10% mark or ``interval_s`` passed since the last line,
    and one line per epoch with the val accuracy."""

    def __init__(self, phase: str, *, interval_s: float = 30.0, logger: logging.Logger = log) -> None:
        self.phase, self.interval_s, self._log = phase, interval_s, logger
        self._t0 = self._last = 0.0
        self._decile = 0
        self._n = 0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t0 = self._last = time.perf_counter()
        self._decile, self._n = 0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._n += len(batch[1])
        total = trainer.num_training_batches
        done = batch_idx + 1
        decile = int(10 * done / total) if total else 0
        now = time.perf_counter()
        if decile <= self._decile and now - self._last < self.interval_s:
            return
        self._decile, self._last = max(decile, self._decile), now
        elapsed = now - self._t0
        loss = trainer.callback_metrics.get("train_loss_step")
        loss_txt = f", loss {float(loss):.3f}" if loss is not None else ""
        left = elapsed / done * (total - done)
        self._log.info("%s epoch %d/%d: %d%% (%d/%d batches), %.1f img/s%s, %s elapsed, ~%s left", self.phase,
                      trainer.current_epoch + 1, trainer.max_epochs, 100 * done // total, done, total,
                      self._n / max(elapsed, 1e-9), loss_txt, _duration(elapsed), _duration(left))

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        acc = trainer.callback_metrics.get("val_acc")
        self._log.info("%s epoch %d/%d: val acc %s, %s since the epoch started", self.phase,
                      trainer.current_epoch + 1, trainer.max_epochs,
                      "n/a" if acc is None else f"{float(acc):.4f}", _duration(time.perf_counter() - self._t0))
