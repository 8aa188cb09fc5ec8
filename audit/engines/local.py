"""The local engine: a thread pool decodes the next batch while ONNX Runtime runs the current one.

Pillow and ONNX Runtime release the GIL, so decoding overlaps inference, and at most two batches
of pixels are alive at any time: memory is flat in the number of images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from audit import imaging
from audit.engines.batch import Collector, Decoded, Transform, load_sample
from audit.predictions import Predictions
from audit.progress import progress_bar
from audit.sources import DataSource, Sample, Skipped


def default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus))


@dataclass(frozen=True)
class LocalEngine:
    """Threaded decode + batched inference in this process (the default engine)."""

    batch_size: int = 64
    workers: int = 0  # decode threads; 0 = one per core (max 8)
    limits: imaging.Limits = imaging.Limits()
    progress: bool | None = None  # None: a bar when stderr is a terminal
    name: str = "local"

    def predict(self, classifier, source: DataSource, samples: Sequence[Sample] | None = None, *,
                transform: Transform | None = None, capture: bool = True,
                desc: str = "inference", progress: bool | None = None) -> tuple[Predictions, list[Skipped]]:
        """Run ``classifier`` over ``samples`` (default: all of the source's); failures come back as skipped."""
        samples = source.samples if samples is None else samples
        out = Collector(classifier.labels, samples, capture)
        show = self.progress if progress is None else progress
        with progress_bar(len(samples), desc, show) as bar:
            for batch, items in self._decoded_batches(classifier, source, samples, transform, capture):
                ok = []
                for s, item in zip(batch, items):
                    if isinstance(item, imaging.ImageRejected):
                        out.reject(s, item.reason)
                    else:
                        ok.append((s, item))
                if ok:
                    proba = classifier.predict_proba(np.stack([d.tensor for _, d in ok]))
                    out.add([s for s, _ in ok], [d for _, d in ok], proba)
                bar.update(len(batch))
        return out.result()

    def _decoded_batches(self, classifier, source: DataSource, samples: Sequence[Sample],
                         transform: Transform | None, capture: bool) -> Iterator[tuple[Sequence[Sample], list]]:
        """Yield (samples, decoded items) per batch, decoding the next batch while this one runs."""
        pre, limits = classifier.card.preprocess, self.limits

        def load(s: Sample) -> Decoded | imaging.ImageRejected:
            return load_sample(source, s.path, pre, limits, transform, capture)

        size = self.batch_size
        batches = [samples[i : i + size] for i in range(0, len(samples), size)]
        with ThreadPoolExecutor(max_workers=self.workers or default_workers()) as pool:
            pending: list[tuple[Sequence[Sample], list[Future]]] = []
            for b in batches:
                pending.append((b, [pool.submit(load, s) for s in b]))
                if len(pending) == 2:  # one batch ahead
                    done, futures = pending.pop(0)
                    yield done, [f.result() for f in futures]
            for done, futures in pending:
                yield done, [f.result() for f in futures]
