"""What every engine does per image and per batch, so all engines produce the same numbers.

``decode_sample`` turns a sample's bytes into the model input and, on the original pass, the
measurements taken in the same decode: image properties (for slices), SHA-256, the pHash input
and a small colour thumbnail (for duplicates; kept on disk, ``audit.duplicates.ThumbnailStore``). ``Collector`` gathers batches of decoded images and their probabilities
into a ``Predictions`` table. An engine only decides *where* these run (threads, Ray actors).
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
from audit.sources import NON_FINITE, Sample, Skipped

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
        """One batch of successfully decoded samples and their (n, C) probabilities.

        Rows whose probabilities are not finite (the model output NaN or Inf) are set aside as
        skipped, never scored: an argmax over NaN would silently say class 0.
        """
        finite = np.isfinite(proba).all(axis=1)
        if not finite.all():
            self.rejected += [Skipped(s.path, NON_FINITE) for s, ok in zip(samples, finite) if not ok]
            keep = np.flatnonzero(finite)
            samples, decoded, proba = [samples[i] for i in keep], [decoded[i] for i in keep], proba[keep]
        if not samples:
            return
        self.probas.append(proba)
        batch_props = imaging.batch_properties(np.stack([d.grey for d in decoded]), np.array([d.size for d in decoded]))
        for k, v in batch_props.items():
            self.props[k].append(v)
        if self.capture:
            self.phashes.append(imaging.batch_phash(np.stack([d.phash_pixels for d in decoded])))
            self.shas += [d.sha256 for d in decoded]
            self.thumbnails.append(np.stack([d.thumbnail for d in decoded]))
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
