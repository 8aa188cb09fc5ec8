"""The local engine: batches are decoded ahead of ONNX Runtime, which runs on the calling thread.

Each decode task is a whole batch (``batch.decode_batch``): reading, decoding, resizing, the
vectorised normalisation, image properties and hashes. With ``workers`` decode threads, that many
batches are decoded while ONNX Runtime (which releases the GIL) runs the current one, so at most
``workers + 1`` batches of pixels are alive: memory is flat in the number of images. With
``workers = 0`` every batch is decoded on the calling thread, then run.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from audit import imaging
from audit.engines.batch import Collector, DecodedBatch, Transform, assemble, fitted_batch_size, read_batch, run_model
from audit.predictions import Predictions
from audit.progress import progress_bar
from audit.sources import DataSource, Sample, Skipped
from audit.threads import DaemonThreads

@dataclass(frozen=True)
class LocalEngine:
    """Batched decode ahead of batched inference, in this process (the default engine)."""

    batch_size: int = 0  # 0: 64 images, up to 256 for a small input (batch.fitted_batch_size)
    workers: int | None = None  # decode threads; None = imaging.default_workers(); 0 = decode on the calling thread
    limits: imaging.Limits = imaging.Limits()
    # stack, measure and hash each batch on the calling thread, not in its decode thread (the default: faster for
    # a small model, the same for a large one; benchmarks/inference_vs_floor.py, docs/ARCHITECTURE.md §12)
    vectorise_on_caller: bool = False
    progress: bool | None = None  # None: a bar when stderr is a terminal
    name: str = "local"

    def predict(self, classifier, source: DataSource, samples: Sequence[Sample] | None = None, *,
                transform: Transform | None = None, capture: bool = True, features: bool = False,
                desc: str = "inference", progress: bool | None = None) -> tuple[Predictions, list[Skipped]]:
        """Run ``classifier`` over ``samples`` (default: all of the source's); failures come back as skipped."""
        samples = source.samples if samples is None else samples
        features = features and transform is None
        capture = capture and transform is None  # hashes describe the original files
        out = Collector(classifier.labels, samples, capture)
        show = self.progress if progress is None else progress
        pre = classifier.card.preprocess
        read = partial(read_batch, source, pre=pre, limits=self.limits, transform=transform, capture=capture)
        size = fitted_batch_size(self.batch_size, pre)  # a huge card gets fewer images a batch
        decoders = self.decode_threads()
        tuner = OrtThreads(classifier, decoders) if decoders and getattr(classifier, "threads", None) == 0 else None
        with progress_bar(len(samples), desc, show) as bar:
            t0 = time.perf_counter()
            for batch in self._decoded(read, partial(assemble, pre=pre), samples, size):
                t1 = time.perf_counter()
                probabilities = run_model(classifier, batch.tensor, features) if batch.samples else (None, None)
                if tuner is not None:  # the wait for this batch, and its run
                    tuner = tuner.observe(t1 - t0, time.perf_counter() - t1)
                out.add(batch, *probabilities)
                del probabilities
                bar.update(len(batch.samples) + len(batch.rejected))
                del batch  # before the next one is assembled: one batch's input in memory at a time, not two
                t0 = time.perf_counter()
        return out.result()

    def decode_threads(self) -> int:
        return imaging.default_workers() if self.workers is None else self.workers

    def _decoded(self, read, vectorise, samples: Sequence[Sample], size: int) -> Iterator[DecodedBatch]:
        """Decoded batches of ``size`` in order, ``workers`` of them decoding ahead of the one being run."""
        batches = (samples[i : i + size] for i in range(0, len(samples), size))  # sliced when due, not all at once
        threads = self.decode_threads()
        if threads == 0:
            yield from (vectorise(read(b)) for b in batches)
            return
        on_caller = self.vectorise_on_caller
        task = read if on_caller else (lambda b: vectorise(read(b)))
        pool = DaemonThreads(threads, "decode")
        try:
            pending = deque(pool.submit(task, b) for b in itertools.islice(batches, threads))
            for b in batches:
                done = pending.popleft().result()
                pending.append(pool.submit(task, b))
                yield vectorise(done) if on_caller else done
                done = None  # the decoded pixels are in the batch now: not kept while the next one is awaited
            while pending:
                done = pending.popleft().result()
                yield vectorise(done) if on_caller else done
                done = None
        finally:
            pool.close()


class OrtThreads:
    """Fewer ONNX Runtime threads when decoding holds the pass up, tried and kept only if faster
    (docs/ARCHITECTURE.md §12).

    ORT's default takes every core for each batch, the cores the decode threads need too. After ``WARM_UP``
    batches (the decode threads start, ORT makes its first allocations), windows of ``WINDOW`` batches alternate
    between the session as loaded and one with a thread per core the decode threads leave (at least one),
    ``ROUNDS`` times each, and the one whose windows took less time is kept: alternating, so that a change in the
    machine's load (the side process's imports at the start of a run) weighs on both. Not tried when, over the
    first window, the calling thread waited for decoded batches less than half as long as it ran the model (a
    model that holds the pass up keeps every thread). The rows with ORT's threads pinned in
    ``benchmarks/inference_vs_floor.py`` show what each choice costs. ORT's outputs do not depend on its thread
    count (tested)."""

    WARM_UP, WINDOW, ROUNDS = 2, 8, 3

    def __init__(self, classifier, decode_threads: int, clock=time.perf_counter) -> None:
        self.classifier, self.clock = classifier, clock
        self.choices = (classifier.threads, max(1, imaging.cpu_count() - decode_threads))
        self.took = [0.0, 0.0]  # seconds of each choice's windows
        self.seen, self.waited, self.ran, self.started = 0, 0.0, 0.0, 0.0

    def observe(self, wait: float, run: float) -> OrtThreads | None:
        """Count one batch's wait and model run; None once decided (nothing more to watch)."""
        self.seen += 1
        if self.seen <= self.WARM_UP:
            self.started = self.clock()
            return self
        batch = self.seen - self.WARM_UP - 1
        window, last = divmod(batch, self.WINDOW)
        if window == 0:
            self.waited, self.ran = self.waited + wait, self.ran + run
        if last != self.WINDOW - 1:
            return self
        self.took[window % 2] += self.clock() - self.started
        if window == 0 and 2 * self.waited < self.ran:  # the model holds the pass up
            return None
        if window == 2 * self.ROUNDS - 1:
            best = self.choices[int(self.took[1] < self.took[0])]
            self.classifier.use_threads(best)  # the other session is let go
            return None
        if not self.classifier.use_threads(self.choices[(window + 1) % 2], keep_others=True):
            return None
        self.started = self.clock()
        return self
