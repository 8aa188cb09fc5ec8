"""The local engine: batches are decoded ahead of ONNX Runtime, which runs on the calling thread.

Each decode task is a whole batch (``batch.decode_batch``): reading, decoding, resizing, the
vectorised normalisation, image properties and hashes. With ``workers`` decode threads, that many
batches are decoded while ONNX Runtime (which releases the GIL) runs the current one, so at most
``workers + 1`` batches of pixels are alive: memory is flat in the number of images. With
``workers = 0`` every batch is decoded on the calling thread, then run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from audit import imaging
from audit.engines.batch import Collector, DecodedBatch, Transform, assemble, read_batch
from audit.predictions import Predictions
from audit.progress import progress_bar
from audit.sources import DataSource, Sample, Skipped

@dataclass(frozen=True)
class LocalEngine:
    """Batched decode ahead of batched inference, in this process (the default engine)."""

    batch_size: int = 64
    workers: int | None = None  # decode threads; None = imaging.default_workers(); 0 = decode on the calling thread
    limits: imaging.Limits = imaging.Limits()
    # stack, measure and hash each batch on the calling thread, not the decoder's; None = when one decode thread
    vectorise_on_caller: bool | None = None
    progress: bool | None = None  # None: a bar when stderr is a terminal
    name: str = "local"

    def predict(self, classifier, source: DataSource, samples: Sequence[Sample] | None = None, *,
                transform: Transform | None = None, capture: bool = True,
                desc: str = "inference", progress: bool | None = None) -> tuple[Predictions, list[Skipped]]:
        """Run ``classifier`` over ``samples`` (default: all of the source's); failures come back as skipped."""
        samples = source.samples if samples is None else samples
        capture = capture and transform is None  # hashes describe the original files
        out = Collector(classifier.labels, samples, capture)
        show = self.progress if progress is None else progress
        pre = classifier.card.preprocess
        read = partial(read_batch, source, pre=pre, limits=self.limits, transform=transform, capture=capture)
        with progress_bar(len(samples), desc, show) as bar:
            for batch in self._decoded(read, partial(assemble, pre=pre), samples):
                out.add(batch, classifier.predict_proba(batch.tensor) if batch.samples else None)
                bar.update(len(batch.samples) + len(batch.rejected))
        return out.result()

    def _decoded(self, read, vectorise, samples: Sequence[Sample]) -> Iterator[DecodedBatch]:
        """Decoded batches in order, ``workers`` of them decoding ahead of the one being run."""
        size = self.batch_size
        batches = [samples[i : i + size] for i in range(0, len(samples), size)]
        threads = imaging.default_workers() if self.workers is None else self.workers
        if threads == 0:
            yield from (vectorise(read(b)) for b in batches)
            return
        on_caller = threads == 1 if self.vectorise_on_caller is None else self.vectorise_on_caller
        task = read if on_caller else (lambda b: vectorise(read(b)))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            pending = deque(pool.submit(task, b) for b in batches[:threads])
            for b in batches[threads:]:
                done = pending.popleft().result()
                pending.append(pool.submit(task, b))
                yield vectorise(done) if on_caller else done
            while pending:
                done = pending.popleft().result()
                yield vectorise(done) if on_caller else done
