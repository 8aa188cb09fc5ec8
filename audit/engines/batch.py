"""What every engine does per batch, so all engines produce the same numbers.

``decode_batch`` reads a batch of samples through the data source, decodes and resizes each
image and normalises the batch into the model input in one vectorised step. On the original pass
it also takes the measurements of the same decode: image properties (for slices), SHA-256, the
perceptual hash and a small colour thumbnail (for duplicates; kept on disk,
``audit.duplicates.ThumbnailStore``). ``Collector`` gathers decoded batches and their
probabilities into a ``Predictions`` table. An engine only decides *where* batches are decoded
(the calling thread, a thread pool, Ray actors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from audit import colour_match, imaging
from audit.duplicates import ThumbnailStore
from audit.features import FeatureStore
from audit.packed import StringsBuilder
from audit.preprocess import Preprocess
from audit.predictions import HexDigests, Predictions, row_columns
from audit.predictions_file import PredictionStream
from audit.rowstore import RowStore, StoredColumn
from audit.sources import NON_FINITE, DataSource, Sample, SampleTable, Skipped

Transform = Callable[[Image.Image], Image.Image]
# The model input of one batch (float32) stays under this: a 4096 x 4096 card gets 4 images a batch, not 64 (4 GiB).
BATCH_BYTES = 256 * 1024 * 1024
# batch size 0 (the default) is 64 images, or more, up to 256, while the batch's model input stays under 1 MiB: a
# small input's per-batch costs (the hand-over between threads, ORT's call) then weigh on more images. 100,000
# Fashion-MNIST images (28 x 28): 256 a batch took 0.87x the floor's loop against 1.16x for 64; a 224 px card keeps
# 64, where 128 and 256 took 1.44x and 2.91x the floor against 0.94x (benchmarks/inference_vs_floor.py).
AUTO_BATCH, AUTO_BATCH_MAX, AUTO_BATCH_BYTES = 64, 256, 1024 * 1024


def fitted_batch_size(requested: int, pre: Preprocess, budget: int = BATCH_BYTES) -> int:
    """``requested`` images a batch (0: ``AUTO_BATCH`` or more for a small input), or fewer, so that one batch's
    model input fits ``budget`` bytes (at least 1).

    >>> fitted_batch_size(64, Preprocess(size=(4096, 4096), color="L", mean=(0.5,), std=(0.5,)))
    4
    >>> fitted_batch_size(0, Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,)))
    256
    """
    h, w = pre.size
    image = h * w * pre.channels * 4
    if requested == 0:
        requested = max(AUTO_BATCH, min(AUTO_BATCH_MAX, AUTO_BATCH_BYTES // image))
    return max(1, min(requested, budget // image))


@dataclass(frozen=True)
class Decoded:
    """One decoded image. Pixels travel as raw bytes: ``tobytes`` per image and one ``frombuffer`` per
    batch cost a third of ``np.asarray`` per image (measured), and every image of a batch has one shape."""

    pixels: bytes  # the resized image as uint8, in the card's colour mode
    grey: bytes | None  # the resized image as uint8 grey (for properties); None when ``pixels`` is grey
    size: tuple[int, int]  # original (width, height)
    sha256: str  # of the file's bytes; "" on a transformed pass
    phash_source: np.ndarray | None  # grey pixels the pHash input is made from (imaging.phash_source); None on a
    # transformed pass
    chroma: np.ndarray | None = None  # colour part of the thumbnail for duplicate confirmation; None likewise


def decode_sample(data: bytes, pre: Preprocess, limits: imaging.Limits, transform: Transform | None = None,
                  capture: bool = True) -> Decoded:
    """Decode, optionally transform, and resize one image; raises ``imaging.ImageRejected``."""
    capture = capture and transform is None  # hashes describe the original file, not a transformed copy
    # The capture pass decodes in the file's own colours (the thumbnail must see them), then converts.
    img, size = imaging.decode(data, None if capture else pre.color, limits)
    sha, ph, chroma = "", None, None
    if capture:  # the pHash input of a small image is resized with its batch (assemble)
        sha, ph, chroma = hashlib.sha256(data).hexdigest(), imaging.phash_source(img), colour_match.chroma(img)
        original, img = img, img.convert(pre.color) if img.mode != pre.color else img
    if transform is not None:
        img = transform(img)
        img = img.convert(pre.color) if img.mode != pre.color else img
    resized = imaging.resize(img, pre)
    if capture and resized is original and ph.shape == (resized.height, resized.width):
        grey_levels = ph.tobytes()  # read for the pHash, unchanged since: half of what Pillow's tobytes costs
        if resized.mode == "L":  # they are the model's pixels
            return Decoded(grey_levels, None, size, sha, ph, chroma)
        return Decoded(resized.tobytes(), grey_levels, size, sha, ph, chroma)  # the properties' grey levels
    return Decoded(resized.tobytes(), None if resized.mode == "L" else resized.convert("L").tobytes(), size, sha, ph,
                   chroma)


def _stack(raw: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), *shape)


@dataclass(frozen=True)
class DecodedBatch:
    """One batch after decoding: the model input of the samples that decoded, and the ones that did not."""

    samples: tuple[Sample, ...]  # decoded, in input order
    tensor: np.ndarray  # (n, ...) model input in the card's layout
    properties: dict[str, np.ndarray]  # image properties, (n,) each
    sha256: tuple[str, ...]  # empty unless captured
    phash: np.ndarray  # (n,) uint64 when captured, else empty
    rejected: tuple[Skipped, ...]
    thumbnails: np.ndarray | None = None  # (n, 1536) uint8 when captured

    def take(self, keep: np.ndarray, rejected: Sequence[Skipped]) -> DecodedBatch:
        """The batch restricted to the rows ``keep``, with ``rejected`` added to its rejects."""
        return DecodedBatch(tuple(self.samples[i] for i in keep), self.tensor[keep],
                            {k: v[keep] for k, v in self.properties.items()},
                            tuple(self.sha256[i] for i in keep) if self.sha256 else (),
                            self.phash[keep] if len(self.phash) else self.phash, (*self.rejected, *rejected),
                            None if self.thumbnails is None else self.thumbnails[keep])


def decode_batch(source: DataSource, samples: Sequence[Sample], pre: Preprocess, limits: imaging.Limits,
                 transform: Transform | None = None, capture: bool = True) -> DecodedBatch:
    """Read, decode and preprocess ``samples``; images that fail are returned as ``rejected``, never raised."""
    return assemble(read_batch(source, samples, pre, limits, transform, capture), pre)


@dataclass(frozen=True)
class ReadBatch:
    """The per-image half of ``decode_batch``: each image decoded and resized, not yet stacked."""

    samples: tuple[Sample, ...]
    decoded: tuple[Decoded, ...]
    rejected: tuple[Skipped, ...]
    captured: bool


def read_batch(source: DataSource, samples: Sequence[Sample], pre: Preprocess, limits: imaging.Limits,
               transform: Transform | None = None, capture: bool = True) -> ReadBatch:
    ok: list[Sample] = []
    decoded: list[Decoded] = []
    rejected: list[Skipped] = []
    for s in samples:
        try:
            decoded.append(decode_sample(source.open(s.path, limits), pre, limits, transform, capture))
            ok.append(s)
        except imaging.ImageRejected as e:
            rejected.append(Skipped(s.path, e.reason))
        except OSError as e:  # unreadable file (permissions, vanished)
            rejected.append(Skipped(s.path, f"unreadable file ({e.strerror or e})"))
    return ReadBatch(tuple(ok), tuple(decoded), tuple(rejected), capture and transform is None)


def assemble(raw: ReadBatch, pre: Preprocess) -> DecodedBatch:
    """The vectorised half of ``decode_batch``: stack, normalise, measure and hash the batch at once."""
    decoded = raw.decoded
    if not decoded:
        return DecodedBatch((), np.zeros(0, np.float32), {}, (), np.zeros(0, np.uint64), raw.rejected)
    h, w = pre.size
    pixels = _stack([d.pixels for d in decoded], (h, w) if pre.color == "L" else (h, w, 3))
    grey = pixels if pre.color == "L" else _stack([d.grey for d in decoded], (h, w))
    ph = imaging.phash_inputs([d.phash_source for d in decoded]) if raw.captured else None
    return DecodedBatch(
        samples=raw.samples,
        tensor=imaging.batch_tensor(pixels, pre),
        properties=imaging.batch_properties(grey, np.array([d.size for d in decoded])),
        sha256=tuple(d.sha256 for d in decoded) if raw.captured else (),
        phash=imaging.batch_phash(ph) if raw.captured else np.zeros(0, np.uint64),
        rejected=raw.rejected,
        thumbnails=np.concatenate([ph.reshape(len(ph), -1), np.stack([d.chroma for d in decoded])], axis=1)
        if raw.captured else None,
    )


def run_model(classifier, tensor: np.ndarray, features: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, features or None): features when asked for and the classifier has them."""
    if features and getattr(getattr(classifier, "features", None), "name", None):
        return classifier.predict(tensor, with_features=True)
    return classifier.predict_proba(tensor), None


class Collector:
    """Accumulates decoded batches and their probabilities into one ``Predictions`` table plus the rejected samples.

    Feature rows (when the engine passes them) go to a ``FeatureStore`` on disk as they arrive. On the original
    pass (``capture``) every batch's rows are also streamed to a temporary Parquet file as they arrive
    (``PredictionStream``), which ``predictions.parquet`` is written from.
    """

    def __init__(self, labels: Sequence[str], samples: Sequence[Sample], capture: bool) -> None:
        self.labels = tuple(labels)
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        # a SampleTable holds its attributes (None when no sample has any): no Sample made per image to learn that
        rows = (samples.attributes or ()) if isinstance(samples, SampleTable) else (s.attributes for s in samples)
        self.attr_names = sorted({k for attrs in rows for k, _ in attrs})
        self.capture = capture
        self.table = samples if isinstance(samples, SampleTable) else None
        self.n = 0  # rows kept so far
        # every column is allocated once for all the samples and filled as batches arrive: no list of per-batch
        # arrays to concatenate at the end, which held each column twice and fragmented the heap
        size, c = len(samples), len(self.labels)
        self.paths = StringsBuilder()
        self.y_true = np.empty(size, np.int64)
        self.proba = np.empty((size, c), np.float32)
        self.attrs: dict[str, list[str]] = {a: [] for a in self.attr_names}
        # the same dtypes whatever the engine
        self.props = {k: np.empty(size, imaging.PROPERTY_DTYPES[k]) for k in imaging.PROPERTY_NAMES}
        # the duplicate hashes go to disk, read back where the duplicate search needs them: 40 bytes a row
        self.sha = RowStore((32,), what="SHA-256 digests") if capture else None
        self.phash = RowStore((8,), what="perceptual hashes") if capture else None
        self.thumbnails = ThumbnailStore() if capture else None
        self.features: FeatureStore | None = None
        self.rejected: list[Skipped] = []
        self.stream = PredictionStream() if capture else None

    def add(self, batch: DecodedBatch, proba: np.ndarray | None, features: np.ndarray | None = None) -> None:
        """One decoded batch, the (n, C) probabilities of its decoded samples and their (n, D) features.

        Rows whose probabilities are not finite (the model output NaN or Inf) are set aside as
        skipped, never scored: an argmax over NaN would silently say class 0.
        """
        if proba is not None and len(proba):
            finite = np.isfinite(proba).all(axis=1)
            if not finite.all():
                batch = batch.take(np.flatnonzero(finite),
                                   [Skipped(s.path, NON_FINITE) for s, ok in zip(batch.samples, finite) if not ok])
                proba = proba[finite]
                features = None if features is None else features[finite]
        self.rejected += batch.rejected
        if not batch.samples:
            return
        lo, hi = self.n, self.n + len(batch.samples)
        self.n = hi
        self.proba[lo:hi] = proba
        if features is not None:
            if self.features is None:
                self.features = FeatureStore(features.shape[1])
            self.features.append(features)
        for k, v in batch.properties.items():
            self.props[k][lo:hi] = v
        if self.capture:
            self.phash.append(np.ascontiguousarray(batch.phash, np.uint64).view(np.uint8).reshape(-1, 8))
            self.sha.append(HexDigests.of(batch.sha256).raw)
            self.thumbnails.append(batch.thumbnails)
        index = self.index
        paths = [s.path for s in batch.samples]
        self.y_true[lo:hi] = [index.get(s.label, -1) for s in batch.samples]  # -1: an unlabelled (reference) image
        self.paths.extend(paths)
        attrs: dict[str, list[str]] = {}
        if self.attr_names:
            rows = [dict(s.attributes) for s in batch.samples]
            attrs = {name: [a.get(name, "") for a in rows] for name in self.attr_names}
            for name, values in attrs.items():
                self.attrs[name] += values
        if self.stream is not None:
            self.stream.append(row_columns(self.labels, paths, self.y_true[lo:hi], proba, attrs,
                                           {k: v.astype(float) for k, v in batch.properties.items()}, batch.sha256,
                                           batch.phash))

    def result(self) -> tuple[Predictions, list[Skipped]]:
        n = self.n  # the rows kept: views of the columns, whose tails (the rejected samples' room) go unused
        paths = self.paths.build()
        if self.table is not None and paths == self.table.paths:  # every sample kept, in order (the usual case):
            paths = self.table.paths  # one buffer for the source and the predictions (36 bytes a row fewer)
        preds = Predictions(
            labels=self.labels,
            paths=paths,
            y_true=self.y_true[:n],
            proba=self.proba[:n],
            attributes={a: np.asarray(v, dtype=object) for a, v in self.attrs.items()},
            properties={k: v[:n] for k, v in self.props.items()},
            sha256=HexDigests(self.sha) if self.capture else (),
            phash=StoredColumn(self.phash, np.uint64) if self.capture else np.zeros(0, np.uint64),
            thumbnails=self.thumbnails,
            features=self.features if self.features is not None and len(self.features) == n else None,
            stream=self.stream,
        )
        if self.stream is not None:
            self.stream.close()
        return preds, self.rejected
