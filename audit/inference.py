"""Batched, threaded decode -> preprocess -> ONNX Runtime, streaming (DESIGN §5).

Images are decoded by a thread pool (Pillow releases the GIL) one batch ahead of the model, so
decoding overlaps inference and at most two batches of pixels are alive at any time: memory is
flat in the number of images. What is kept per image is its probability vector and a few
floats, which is what the ``Predictions`` table holds.

Example::

    preds, rejected = predict(clf, dataset.samples)
    preds.accuracy()
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from audit import imaging
from audit.data import Sample, Skipped
from audit.model import OnnxClassifier

Transform = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Predictions:
    """One row per processed image: the only thing the checks read (DESIGN §5)."""

    labels: tuple[str, ...]
    paths: tuple[str, ...]
    y_true: np.ndarray  # (N,) int, index into labels
    proba: np.ndarray  # (N, C) float32
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) str
    properties: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float
    sha256: tuple[str, ...] = ()  # of each file's bytes (exact duplicates)
    phash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # 64-bit perceptual hashes

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.y_true.shape != (n,) or self.proba.shape != (n, len(self.labels)):
            raise ValueError(f"inconsistent Predictions: {n} paths, y_true {self.y_true.shape}, "
                             f"proba {self.proba.shape}, {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def y_pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.proba.max(axis=1)

    def to_frame(self):
        """A pandas DataFrame with every column needed to recompute every number."""
        import pandas as pd

        y_pred = self.y_pred
        cols = {
            "path": list(self.paths),
            "label": [self.labels[i] for i in self.y_true],
            "predicted": [self.labels[i] for i in y_pred],
            "correct": self.y_true == y_pred,
            "confidence": self.confidence,
        }
        cols.update({f"attr:{k}": v for k, v in self.attributes.items()})
        cols.update({f"prop:{k}": v for k, v in self.properties.items()})
        if self.sha256:
            cols["sha256"] = list(self.sha256)
            cols["phash"] = [f"{h:016x}" for h in self.phash.tolist()]
        cols.update({f"p:{lab}": self.proba[:, i] for i, lab in enumerate(self.labels)})
        return pd.DataFrame(cols)

    @classmethod
    def from_frame(cls, df, labels: Sequence[str]) -> Predictions:
        """Rebuild from ``to_frame()`` output (e.g. a predictions.csv read back)."""
        index = {lab: i for i, lab in enumerate(labels)}
        return cls(
            labels=tuple(labels),
            paths=tuple(df["path"].astype(str)),
            y_true=np.array([index[str(v)] for v in df["label"]], dtype=np.int64),
            proba=df[[f"p:{lab}" for lab in labels]].to_numpy(np.float32),
            attributes={c[5:]: df[c].astype(str).to_numpy() for c in df.columns if c.startswith("attr:")},
            properties={c[5:]: df[c].to_numpy(float) for c in df.columns if c.startswith("prop:")},
            sha256=tuple(df["sha256"].astype(str)) if "sha256" in df else (),
            phash=np.array([int(h, 16) for h in df["phash"].astype(str)], np.uint64) if "phash" in df
            else np.zeros(0, np.uint64),
        )


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def predict(
    clf: OnnxClassifier,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    workers: int = 0,
    limits: imaging.Limits = imaging.Limits(),
    transform: Transform | None = None,
    progress: bool | None = None,
    desc: str = "inference",
) -> tuple[Predictions, list[Skipped]]:
    """Run ``clf`` over ``samples``; images that fail to decode come back as ``Skipped``.

    ``transform`` (an image -> image function) is applied after decoding and before resizing;
    the invariance check uses it to re-run the same path on transformed copies. The SHA-256 and
    perceptual hash of each original image are taken in the same pass (for duplicate checks),
    so no file is read or decoded twice.
    """
    labels = clf.labels
    index = {lab: i for i, lab in enumerate(labels)}
    attr_names = sorted({k for s in samples for k, _ in s.attributes})
    paths, y_true, probas, attrs = [], [], [], {a: [] for a in attr_names}
    props: dict[str, list[np.ndarray]] = {k: [] for k in imaging.PROPERTY_NAMES}
    shas: list[str] = []
    phashes: list[np.ndarray] = []
    rejected: list[Skipped] = []
    bar = _progress(len(samples), desc, progress)
    for batch_samples, loaded in _decoded_batches(samples, clf, batch_size, workers, limits, transform):
        ok = []
        for s, item in zip(batch_samples, loaded):
            if isinstance(item, imaging.ImageRejected):
                rejected.append(Skipped(s.path, item.reason))
            else:
                ok.append((s, item))
        if ok:
            probas.append(clf.predict_proba(np.stack([d.tensor for _, d in ok])))
            batch_props = imaging.batch_properties(np.stack([d.grey for _, d in ok]),
                                                   np.array([d.size for _, d in ok]))
            if transform is None:
                phashes.append(imaging.batch_phash(np.stack([d.phash_pixels for _, d in ok])))
                shas += [d.sha256 for _, d in ok]
            for k, v in batch_props.items():
                props[k].append(v)
            for s, _ in ok:
                paths.append(s.path)
                y_true.append(index[s.label])
                a = dict(s.attributes)
                for name in attr_names:
                    attrs[name].append(a.get(name, ""))
        if bar is not None:
            bar.update(len(batch_samples))
    if bar is not None:
        bar.close()
    preds = Predictions(
        labels=labels,
        paths=tuple(paths),
        y_true=np.asarray(y_true, dtype=np.int64),
        proba=np.concatenate(probas) if probas else np.zeros((0, len(labels)), np.float32),
        attributes={a: np.asarray(v, dtype=object) for a, v in attrs.items()},
        properties={k: np.concatenate(v).astype(float) if v else np.zeros(0) for k, v in props.items()},
        sha256=tuple(shas),
        phash=np.concatenate(phashes) if phashes else np.zeros(0, np.uint64),
    )
    return preds, rejected


@dataclass(frozen=True)
class _Decoded:
    tensor: np.ndarray
    grey: np.ndarray
    size: tuple[int, int]
    sha256: str
    phash_pixels: np.ndarray | None


def _decoded_batches(
    samples: Sequence[Sample], clf: OnnxClassifier, batch_size: int, workers: int,
    limits: imaging.Limits, transform: Transform | None,
) -> Iterator[tuple[Sequence[Sample], list]]:
    """Yield (samples, decoded items) per batch, decoding the next batch while this one runs."""
    pre = clf.card.preprocess

    def load(s: Sample):
        try:
            data = imaging.read_bytes(s.file, limits)
            img, size = imaging.decode(data, pre.color, limits)
            sha, ph = "", None
            if transform is None:  # hashes describe the original file, not a transformed copy
                sha, ph = hashlib.sha256(data).hexdigest(), imaging.phash_input(img)
            else:
                img = transform(img)
            img = imaging.resize(img, pre)
            return _Decoded(imaging.to_tensor(img, pre), imaging.grey(img), size, sha, ph)
        except imaging.ImageRejected as e:
            return e
        except OSError as e:  # unreadable file (permissions, vanished)
            return imaging.ImageRejected(f"unreadable file ({e.strerror or e})")

    batches = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        pending: list[tuple[Sequence[Sample], list[Future]]] = []
        for b in batches:
            pending.append((b, [pool.submit(load, s) for s in b]))
            if len(pending) == 2:  # one batch ahead
                done, futures = pending.pop(0)
                yield done, [f.result() for f in futures]
        for done, futures in pending:
            yield done, [f.result() for f in futures]


def _progress(total: int, desc: str, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)

