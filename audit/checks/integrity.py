"""Integrity and leakage (DESIGN §6.7): duplicates in the test set, test images seen in training, imbalance.

*Exact* duplicates share their file bytes (SHA-256). *Near* duplicates have perceptual hashes
(pHash, 64 bits) within ``hash_distance`` bits *and* 32x32 grey thumbnails within
``max_pixel_difference`` grey levels on average: a resized copy or a re-encoded JPEG of the same
picture. (The hash alone is a candidate filter: small, plain images such as Fashion-MNIST's
share hashes without being copies.) Pairs inside the test set are listed (they inflate the test
set's weight on those images); pairs between ``--train`` and the test set are *leakage* (the model
may have memorised the answer) and are a criterion. The test images' hashes come from the
inference pass; training files are hashed on a thread pool. Only the files of hash candidates are
read again through their data source, once each, for the thumbnail check. The pair search XORs
64-bit hashes in blocks and counts bits, so 10k x 60k comparisons take seconds.

Example::

    res = integrity(ctx)
    res.leaked, res.test_pairs[:3]
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from audit import imaging
from audit.checks import CheckSpec, Option
from audit.engines.local import default_workers
from audit.predictions import Predictions
from audit.settings import Section, setting
from audit.sources import DataSource, open_source
from audit.verdict import Criterion, Measure, judge

MAX_LISTED = 200
MAX_THUMBNAIL_PAIRS = 30  # pairs per table shown with thumbnails in the report


@dataclass(frozen=True)
class IntegrityConfig(Section):
    """Integrity (DESIGN §6.7): duplicates in the test set, leakage from ``--train``, imbalance."""

    section: ClassVar[str] = "integrity"
    enabled: bool = True
    train: str | None = None  # the training ImageFolder or manifest; None = no leakage check
    near_duplicates: bool = True  # perceptual hash (pHash) in addition to exact byte hashes
    # Hamming distance (of 64 bits) at or below which two images are near-duplicate candidates
    hash_distance: int = setting(4, ge=0, le=32)
    # pHash alone pairs distinct but similar small images (Fashion-MNIST: thousands of pairs 0-4 bits apart with
    # a mean grey difference of 13/255); a candidate is confirmed only when its 32x32 grey thumbnails differ by at
    # most this much on average (resized or re-encoded copies: under 6/255)
    max_pixel_difference: float = setting(8.0, ge=0.0, le=255.0)
    max_leaked: int = setting(0, ge=0)  # test images with a duplicate in the training data
    max_test_duplicates: int | None = setting(None, ge=0)  # None: reported, not judged
BLOCK = 256  # rows per XOR block: 256 x 60,000 hashes is 120 MB


@dataclass(frozen=True)
class DuplicatePair:
    a: str  # path (test set, relative to the data root)
    b: str  # path (test set, or training set when leak)
    kind: str  # "exact" or "near"
    distance: int  # Hamming distance of the perceptual hashes (0 for exact)
    same_label: bool
    leak: bool  # b is in the training data


@dataclass(frozen=True)
class IntegrityResult:
    n_test: int
    n_train: int | None  # None: no training data given
    train_source: str | None
    hash_distance: int
    test_pairs: tuple[DuplicatePair, ...]  # capped at MAX_LISTED
    n_test_pairs: int
    n_test_duplicates: int  # test images with another test image as exact/near duplicate
    leak_pairs: tuple[DuplicatePair, ...]  # capped
    n_leak_pairs: int
    leaked: int  # test images with a duplicate in the training data
    class_counts: tuple[tuple[str, int], ...]
    imbalance_ratio: float  # largest class / smallest non-empty class
    train_class_counts: tuple[tuple[str, int], ...] = ()
    unreadable: tuple[str, ...] = ()  # training files that could not be hashed

    def to_dict(self) -> dict:
        return {"n_test": self.n_test, "n_train": self.n_train, "hash_distance": self.hash_distance,
                "n_test_pairs": self.n_test_pairs, "n_test_duplicates": self.n_test_duplicates,
                "n_leak_pairs": self.n_leak_pairs, "leaked": self.leaked,
                "imbalance_ratio": self.imbalance_ratio, "class_counts": dict(self.class_counts),
                "train_class_counts": dict(self.train_class_counts),
                "test_pairs": [p.__dict__ for p in self.test_pairs], "leak_pairs": [p.__dict__ for p in self.leak_pairs]}


@dataclass(frozen=True)
class _Hashes:
    source: DataSource  # where the images are read from
    paths: tuple[str, ...]
    labels: tuple[str, ...]
    sha: tuple[str, ...]
    phash: np.ndarray  # (n,) uint64
    unreadable: tuple[str, ...] = ()


def hashes_of(preds: Predictions, source: DataSource) -> _Hashes:
    """The hashes the inference pass took of every processed test image."""
    return _Hashes(source, preds.paths, tuple(preds.labels[i] for i in preds.y_true), preds.sha256, preds.phash)


def _hash_one(source: DataSource, path: str, limits: imaging.Limits):
    try:
        data = source.open(path, limits)
        img, _ = imaging.decode(data, "L", limits)
        return hashlib.sha256(data).hexdigest(), imaging.phash_input(img)
    except (imaging.ImageRejected, OSError):
        return None


def hash_source(source: DataSource, *, workers: int = 0, limits: imaging.Limits = imaging.Limits()) -> _Hashes:
    """SHA-256 of the bytes and a 64-bit pHash of every sample of ``source`` (unreadable ones are left out)."""
    samples = source.samples
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        out = list(pool.map(lambda s: _hash_one(source, s.path, limits), samples, chunksize=64))
    keep = [(s, h) for s, h in zip(samples, out) if h is not None]
    pixels = np.stack([h[1] for _, h in keep]) if keep else np.zeros((0, 32, 32), np.uint8)
    return _Hashes(source, tuple(s.path for s, _ in keep), tuple(s.label for s, _ in keep),
                   tuple(h[0] for _, h in keep),
                   imaging.batch_phash(pixels), tuple(s.path for s, h in zip(samples, out) if h is None))


def _near_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, same: bool):
    """(i, j, distance) with popcount(a[i] ^ b[j]) <= max_distance; i < j when ``same``."""
    out = []
    for start in range(0, len(a), BLOCK):
        block = a[start:start + BLOCK]
        dist = np.bitwise_count(block[:, None] ^ b[None, :])
        i, j = np.nonzero(dist <= max_distance)
        i = i + start
        if same:
            keep = i < j
            i, j = i[keep], j[keep]
        out.append(np.column_stack([i, j, dist[i - start, j]]))
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)


def _pairs(h1: _Hashes, h2: _Hashes, config: IntegrityConfig, leak: bool) -> list[DuplicatePair]:
    same = h2 is h1
    pairs: dict[tuple[int, int], DuplicatePair] = {}
    by_sha: dict[str, list[int]] = {}
    for j, s in enumerate(h2.sha):
        by_sha.setdefault(s, []).append(j)
    for i, s in enumerate(h1.sha):
        for j in by_sha.get(s, ()):
            if not same or i < j:
                pairs[(i, j)] = _pair(h1, h2, i, j, "exact", 0, leak)
    if config.near_duplicates and len(h1.phash) and len(h2.phash):
        thumbs: dict[tuple[int, str], np.ndarray | None] = {}
        for i, j, d in _near_pairs(h1.phash, h2.phash, config.hash_distance, same):
            i, j = int(i), int(j)
            if (i, j) not in pairs and _same_picture(_thumb(h1, i, thumbs), _thumb(h2, j, thumbs),
                                                     config.max_pixel_difference):
                pairs[(i, j)] = _pair(h1, h2, i, j, "near", int(d), leak)
    return sorted(pairs.values(), key=lambda p: (p.kind != "exact", p.distance, p.a, p.b))


def _thumb(h: _Hashes, i: int, cache: dict[tuple[int, str], np.ndarray | None]) -> np.ndarray | None:
    key = (id(h.source), h.paths[i])
    if key not in cache:
        try:
            img, _ = imaging.decode(h.source.open(h.paths[i]), "L")
            cache[key] = imaging.phash_input(img).astype(np.float32)
        except (imaging.ImageRejected, OSError):
            cache[key] = None
    return cache[key]


def _same_picture(ta: np.ndarray | None, tb: np.ndarray | None, max_difference: float) -> bool:
    """Confirm a pHash candidate: mean absolute difference of the 32x32 grey thumbnails (0-255)."""
    return ta is not None and tb is not None and float(np.abs(ta - tb).mean()) <= max_difference


def _pair(h1, h2, i, j, kind, d, leak) -> DuplicatePair:
    return DuplicatePair(h1.paths[i], h2.paths[j], kind, d, h1.labels[i] == h2.labels[j], leak)


def integrity(ctx) -> IntegrityResult:
    """Exact and near duplicates inside the processed test images and between ``--train`` and them; balance."""
    config, test = ctx.config.integrity, ctx.predictions
    train = ctx.state("integrity")
    labels = test.labels
    ht = hashes_of(test, ctx.source)
    test_pairs = _pairs(ht, ht, config, leak=False)
    leak_pairs: list[DuplicatePair] = []
    train_counts: tuple[tuple[str, int], ...] = ()
    unreadable: tuple[str, ...] = ()
    if train is not None:
        hr = hash_source(train, workers=ctx.config.workers, limits=ctx.limits)
        leak_pairs, unreadable = _pairs(ht, hr, config, leak=True), hr.unreadable
        c = Counter(s.label for s in train.samples)
        train_counts = tuple((lab, c.get(lab, 0)) for lab in labels)
    counts = Counter(ht.labels)
    class_counts = tuple((lab, counts.get(lab, 0)) for lab in labels)
    nonzero = [n for _, n in class_counts if n]
    return IntegrityResult(
        n_test=len(test), n_train=None if train is None else len(train.samples),
        train_source=None if train is None else train.description, hash_distance=config.hash_distance,
        test_pairs=tuple(test_pairs[:MAX_LISTED]), n_test_pairs=len(test_pairs),
        n_test_duplicates=len({p.a for p in test_pairs} | {p.b for p in test_pairs}),
        leak_pairs=tuple(leak_pairs[:MAX_LISTED]), n_leak_pairs=len(leak_pairs),
        leaked=len({p.a for p in leak_pairs}),
        class_counts=class_counts, imbalance_ratio=max(nonzero) / min(nonzero) if nonzero else float("nan"),
        train_class_counts=train_counts, unreadable=unreadable,
    )


def integrity_criteria(res: IntegrityResult, config: IntegrityConfig) -> list[Criterion]:
    """Leakage (when training data is given) and, if configured, duplicates inside the test set."""
    out = []
    if res.n_train is not None:
        ex = ", ".join(f"{p.a} ~ {p.b}" for p in res.leak_pairs[:3])
        detail = f"{res.n_leak_pairs} exact/near duplicate pair(s) with {res.n_train} training images" + (
            f": {ex}" if ex else "")
        out.append(judge(Measure.count("integrity.leakage", "Test images duplicated in the training data (leakage)",
                                       res.leaked, detail=detail), config.max_leaked))
    if config.max_test_duplicates is not None:
        out.append(judge(Measure.count("integrity.test_duplicates", "Duplicated images inside the test set",
                                       res.n_test_duplicates, detail=f"{res.n_test_pairs} pair(s)"),
                         config.max_test_duplicates))
    return out


def thumbnails(res: IntegrityResult, ctx) -> list[tuple]:
    train = ctx.state("integrity")
    out = []
    for p in (*res.leak_pairs[:MAX_THUMBNAIL_PAIRS], *res.test_pairs[:MAX_THUMBNAIL_PAIRS]):
        out += [(ctx.source, p.a), (train if p.leak else ctx.source, p.b)]
    return out


def _open_train(ctx) -> DataSource | None:
    train = ctx.config.integrity.train
    root = Path(ctx.config.data_root) if ctx.config.data_root else None
    return None if train is None else open_source(Path(train), ctx.classifier.labels, flag="--train", data_root=root)


SPEC = CheckSpec(
    "integrity", "integrity", integrity, probe=True, config=IntegrityConfig, enabled=lambda c: c.integrity.enabled,
    prepare=_open_train, criteria=lambda r, c: integrity_criteria(r, c.integrity), thumbnails=thumbnails,
    toggle=True, options=(Option("--train", "integrity.train",
                                 "training ImageFolder or manifest: check train/test duplicates (leakage)", "DIR"),),
)
