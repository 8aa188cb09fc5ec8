"""What every engine does per image and per batch, so all engines produce the same numbers.

``load_sample`` reads a sample through its data source and ``decode_sample`` turns the bytes into
the model input and, on the original pass, the inputs of the measurements: image properties (for
slices), SHA-256, the pHash input and a small colour thumbnail (for duplicates). ``measure``
computes those for a batch of decoded images, and ``Collector`` gathers batches of samples,
probabilities and measurements into a ``Predictions`` table (thumbnails kept on disk,
``audit.duplicates.ThumbnailStore``). An engine only decides *where* these run (threads, Ray actors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from audit import imaging
from audit.duplicates import ThumbnailStore, colour_thumbnail
from audit.model import Preprocess
from audit.predictions import Predictions
from audit.sources import DataSource, Sample, Skipped

Transform = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Decoded:
    tensor: np.ndarray  # the model input, in the card's layout
    grey: np.ndarray  # the resized image as uint8 grey (for properties)
    size: tuple[int, int]  # original (width, height)
    sha256: str  # of the file's bytes; "" on a transformed pass
    phash_pixels: np.ndarray | None  # 32x32 grey pHash input; None on a transformed pass
    thumbnail: np.ndarray | None = None  # colour thumbnail for duplicate confirmation; None on a transformed pass


def decode_sample(data: bytes, pre: Preprocess, limits: imaging.Limits, transform: Transform | None = None,
                  capture: bool = True) -> Decoded:
    """Decode, optionally transform, resize and normalise one image; raises ``imaging.ImageRejected``."""
    capture = capture and transform is None  # hashes describe the original file, not a transformed copy
    # The capture pass decodes in the file's own colours (the thumbnail must see them), then converts.
    img, size = imaging.decode(data, None if capture else pre.color, limits)
    sha, ph, thumb = "", None, None
    if capture:
        sha, ph = hashlib.sha256(data).hexdigest(), imaging.phash_input(img)
        thumb = colour_thumbnail(img, ph)
        img = img.convert(pre.color) if img.mode != pre.color else img
    if transform is not None:
        img = transform(img)
    img = imaging.resize(img, pre)
    return Decoded(imaging.to_tensor(img, pre), imaging.grey(img), size, sha, ph, thumb)


def load_sample(source: DataSource, path: str, pre: Preprocess, limits: imaging.Limits,
                transform: Transform | None = None, capture: bool = True) -> Decoded | imaging.ImageRejected:
    """Read and decode one sample; a file that cannot be used comes back as ``ImageRejected`` with its reason."""
    try:
        return decode_sample(source.open(path, limits), pre, limits, transform, capture)
    except imaging.ImageRejected as e:
        return e
    except OSError as e:  # unreadable file (permissions, vanished)
        return imaging.ImageRejected(f"unreadable file ({e.strerror or e})")


@dataclass(frozen=True)
class Measured:
    """The measurements of one batch of decoded images, row for row."""

    properties: dict[str, np.ndarray]  # imaging.PROPERTY_NAMES -> (n,)
    sha256: tuple[str, ...]  # empty unless capturing
    phash: np.ndarray  # (n,) uint64; empty unless capturing
    thumbnails: np.ndarray | None = None  # (n, THUMBNAIL_BYTES) uint8 colour thumbnails when capturing


def measure(decoded: Sequence[Decoded], capture: bool) -> Measured:
    """Image properties for every decoded image, and its hashes and thumbnail when ``capture`` (the original pass)."""
    props = imaging.batch_properties(np.stack([d.grey for d in decoded]), np.array([d.size for d in decoded]))
    if not capture:
        return Measured(props, (), np.zeros(0, np.uint64))
    phash = imaging.batch_phash(np.stack([d.phash_pixels for d in decoded]))
    return Measured(props, tuple(d.sha256 for d in decoded), phash, np.stack([d.thumbnail for d in decoded]))


class Collector:
    """Accumulates per-batch outputs into one ``Predictions`` table plus the rejected samples."""

    def __init__(self, labels: Sequence[str], samples: Sequence[Sample], capture: bool) -> None:
        self.labels = tuple(labels)
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        self.attr_names = sorted({k for s in samples for k, _ in s.attributes})
        self.capture = capture
        self.paths: list[str] = []
        self.y_true: list[int] = []
        self.probas: list[np.ndarray] = []
        self.attrs: dict[str, list[str]] = {a: [] for a in self.attr_names}
        self.props: dict[str, list[np.ndarray]] = {k: [] for k in imaging.PROPERTY_NAMES}
        self.shas: list[str] = []
        self.phashes: list[np.ndarray] = []
        self.thumbnails = ThumbnailStore() if capture else None
        self.rejected: list[Skipped] = []

    def reject(self, sample: Sample, reason: str) -> None:
        self.rejected.append(Skipped(sample.path, reason))

    def add(self, samples: Sequence[Sample], decoded: Sequence[Decoded], proba: np.ndarray) -> None:
        """One batch of successfully decoded samples and their (n, C) probabilities."""
        if samples:
            self.add_measured(samples, proba, measure(decoded, self.capture))

    def add_measured(self, samples: Sequence[Sample], proba: np.ndarray, measured: Measured) -> None:
        """Samples with their probabilities and measurements, taken where they were decoded."""
        if not samples:
            return
        self.probas.append(proba)
        for k, v in measured.properties.items():
            self.props[k].append(v)
        if self.capture:
            self.phashes.append(measured.phash)
            self.shas += measured.sha256
            self.thumbnails.append(measured.thumbnails)
        for s in samples:
            self.paths.append(s.path)
            self.y_true.append(self.index[s.label])
            a = dict(s.attributes)
            for name in self.attr_names:
                self.attrs[name].append(a.get(name, ""))

    def result(self) -> tuple[Predictions, list[Skipped]]:
        c = len(self.labels)
        preds = Predictions(
            labels=self.labels,
            paths=tuple(self.paths),
            y_true=np.asarray(self.y_true, dtype=np.int64),
            proba=np.concatenate(self.probas) if self.probas else np.zeros((0, c), np.float32),
            attributes={a: np.asarray(v, dtype=object) for a, v in self.attrs.items()},
            properties={k: np.concatenate(v).astype(float) if v else np.zeros(0) for k, v in self.props.items()},
            sha256=tuple(self.shas),
            phash=np.concatenate(self.phashes) if self.phashes else np.zeros(0, np.uint64),
            thumbnails=self.thumbnails,
        )
        return preds, self.rejected
