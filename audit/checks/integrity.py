"""Integrity and leakage (docs/ARCHITECTURE.md §4.3): duplicates in the test set, test images seen in training, imbalance.

*Exact* duplicates share their file bytes (SHA-256). *Near* duplicates have perceptual hashes
(pHash, 64 bits) within ``hash_distance`` bits *and* colour thumbnails within
``max_colour_distance`` (``audit.duplicates.thumbnail_distance``: the mean grey difference of 32x32
thumbnails, or a colour difference that a recoloured look-alike cannot hide): a resized, cropped or
re-encoded copy of the same picture. The hash alone is a candidate filter: pHash works on grey, so
small plain images and the same shape in another colour share hashes without being copies. Pairs
inside the test set are listed (they inflate the test set's weight on those images); pairs between
``--train`` and the test set are *leakage* (the model may have memorised the answer) and are a
criterion. The test images' hashes and thumbnails come from the inference pass; training files are
hashed on a thread pool. The pair search is a multi-index hash search (``audit.duplicates.near_pairs``),
near-linear, with exactly the pairs an all-pairs search finds.

Example::

    res = integrity(ctx)
    res.leaked, res.test_pairs[:3]
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from audit import imaging
from audit.clusters import cluster_ids
from audit.context import AuditContext
from audit.contract import CheckSpec, Option
from audit.copies import CopyRule, copy_rule, nearest_within
from audit.duplicate_sets import (  # noqa: F401  (DuplicatePair, hashes_of: re-exported)
    MAX_CANDIDATES, PER_IMAGE, DuplicatePair, Hashes, PairSet, find_pairs, hash_one, hashes_of, local_rows, thumbnails_for,
)
from audit.duplicates import ThumbnailStore, near_pairs, pair_distances
from audit.findings import Finding
from audit.predictions import Predictions
from audit.settings import Section, setting
from audit.sources import DataSource, open_source
from audit.stats import Estimate
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

MAX_LISTED = 200
SHOWN_PAIRS = 40  # pairs per grid in the report: 8 rows of 5, one PDF page at most


@dataclass(frozen=True)
class IntegrityConfig(Section):
    """Integrity (docs/ARCHITECTURE.md §4.3): duplicates in the test set, leakage from ``--train``, imbalance."""

    section: ClassVar[str] = "integrity"
    enabled: bool = True
    train: str | None = None  # the training ImageFolder or manifest; None = no leakage check
    near_duplicates: bool = True  # perceptual hash (pHash) in addition to exact byte hashes
    # Hamming distance (of 64 bits) at or below which two images are near-duplicate candidates
    hash_distance: int = setting(4, ge=0, le=32)
    # A hash candidate is confirmed when its thumbnails are this close (0-255 grey levels): resized, cropped
    # or re-encoded copies measured at most 9.3 (99.6% at most 8), recoloured look-alikes at least 8.5 (99% > 18)
    max_colour_distance: float = setting(8.0, ge=0.0, le=255.0)
    max_leaked: int = setting(0, ge=0)  # test images with a duplicate in the training data
    max_test_duplicates: int | None = setting(None, ge=0)  # None: reported, not judged
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
    leaked: int  # test images with a copy in the training data
    class_counts: tuple[tuple[str, int], ...]
    imbalance_ratio: float  # largest class / smallest non-empty class
    train_class_counts: tuple[tuple[str, int], ...] = ()
    unreadable: tuple[str, ...] = ()  # training files that could not be hashed
    lookalike_pairs: tuple[DuplicatePair, ...] = ()  # near pairs with training images that are not copies (capped)
    n_lookalike_pairs: int = 0
    copy_rule: CopyRule | None = None  # how near a pair must be to count as a copy, measured on the data
    shown: ClassVar[int] = SHOWN_PAIRS  # pairs the report lays out per grid (the rest are counted)

    def to_dict(self) -> dict:
        return {"n_test": self.n_test, "n_train": self.n_train, "hash_distance": self.hash_distance,
                "n_test_pairs": self.n_test_pairs, "n_test_duplicates": self.n_test_duplicates,
                "n_leak_pairs": self.n_leak_pairs, "leaked": self.leaked,
                "imbalance_ratio": self.imbalance_ratio, "class_counts": dict(self.class_counts),
                "train_class_counts": dict(self.train_class_counts),
                "test_pairs": [p.__dict__ for p in self.test_pairs], "leak_pairs": [p.__dict__ for p in self.leak_pairs],
                "n_lookalike_pairs": self.n_lookalike_pairs,
                "lookalike_pairs": [p.__dict__ for p in self.lookalike_pairs],
                "copy_rule": self.copy_rule.to_dict() if self.copy_rule else None,
                "n_train_unreadable": len(self.unreadable), "train_unreadable": list(self.unreadable[:MAX_LISTED])}


def hash_source(source: DataSource, *, workers: int = 0, limits: imaging.Limits = imaging.Limits(),
                chunk: int = 4096) -> Hashes:
    """SHA-256, 64-bit pHash and colour thumbnail (on disk) of every sample of ``source``; unreadable ones left out."""
    store, paths, labels, shas, hashes, unreadable = ThumbnailStore(), [], [], [], [], []
    with ThreadPoolExecutor(max_workers=workers or imaging.default_workers()) as pool:
        for start in range(0, len(source.samples), chunk):
            batch = source.samples[start:start + chunk]
            out = list(pool.map(lambda s: hash_one(source, s.path, limits), batch, chunksize=64))
            keep = [(s, h) for s, h in zip(batch, out) if h is not None]
            unreadable += [s.path for s, h in zip(batch, out) if h is None]
            if keep:
                paths += [s.path for s, _ in keep]
                labels += [s.label for s, _ in keep]
                shas += [h[0] for _, h in keep]
                hashes.append(imaging.batch_phash(np.stack([h[1] for _, h in keep])))
                store.append(np.stack([h[2] for _, h in keep]))
    phash = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    return Hashes(source, tuple(paths), tuple(labels), tuple(shas), phash, store, tuple(unreadable))


def _pairs(h1: Hashes, h2: Hashes | None, config: IntegrityConfig, leak: bool) -> PairSet:
    return find_pairs(h1, h2, near=config.near_duplicates, hash_distance=config.hash_distance,
                      max_colour_distance=config.max_colour_distance, leak=leak)


def duplicate_pairs(preds: Predictions, source: DataSource, config: IntegrityConfig) -> PairSet | None:
    """Exact and confirmed near-duplicate pairs inside the processed test images, as groups (None without hashes)."""
    if not preds.sha256:
        return None
    return _pairs(hashes_of(preds, source), None, config, leak=False)


def duplicate_clusters(preds: Predictions, pairs: PairSet | None) -> np.ndarray | None:
    """A cluster id per row of ``preds`` from its duplicate pairs; None when no two images are duplicates."""
    if pairs is None or not len(pairs):
        return None
    return cluster_ids(len(preds), *pairs.edges())


def integrity(ctx: AuditContext) -> IntegrityResult:
    """Exact and near duplicates inside the processed test images and between ``--train`` and them; balance."""
    config, test = ctx.config.integrity, ctx.predictions
    train = ctx.state("integrity")
    labels = test.labels
    ht = hashes_of(test, ctx.source)
    # the pipeline found them once after inference, for the clusters of the metrics' intervals
    test_pairs = ctx.test_pairs if ctx.test_pairs is not None else _pairs(ht, None, config, leak=False)
    leak_pairs = lookalikes = None
    train_counts: tuple[tuple[str, int], ...] = ()
    unreadable: tuple[str, ...] = ()
    rule = None
    if train is not None:
        hr = _train_hashes(ctx, train)
        leak_pairs, lookalikes, rule = leakage(ht, hr, config, ctx.seed)
        unreadable = hr.unreadable
        c = Counter(s.label for s in train.samples)
        train_counts = tuple((lab, c.get(lab, 0)) for lab in labels)
    counts = Counter(ht.labels)
    class_counts = tuple((lab, counts.get(lab, 0)) for lab in labels)
    nonzero = [n for _, n in class_counts if n]
    return IntegrityResult(
        n_test=len(test), n_train=None if train is None else len(train.samples),
        train_source=None if train is None else train.description, hash_distance=config.hash_distance,
        test_pairs=tuple(test_pairs.listed(MAX_LISTED)), n_test_pairs=len(test_pairs),
        n_test_duplicates=int(test_pairs.duplicated().sum()),
        leak_pairs=tuple(leak_pairs.listed(MAX_LISTED)) if leak_pairs else (),
        n_leak_pairs=len(leak_pairs) if leak_pairs else 0,
        leaked=int(leak_pairs.duplicated().sum()) if leak_pairs else 0,
        class_counts=class_counts, imbalance_ratio=max(nonzero) / min(nonzero) if nonzero else float("nan"),
        train_class_counts=train_counts, unreadable=unreadable,
        lookalike_pairs=tuple(lookalikes.listed(MAX_LISTED)) if lookalikes else (),
        n_lookalike_pairs=len(lookalikes) if lookalikes else 0, copy_rule=rule,
    )


NULL_IMAGES = 10_000  # images per set whose nearest candidate calibrates the copy rule


def leakage(ht: Hashes, hr: Hashes, config: IntegrityConfig, seed: int = 0) -> tuple[PairSet, PairSet, CopyRule]:
    """(copies, look-alikes, the rule): near pairs with training images, split by how near independent
    images of this data set get to each other (``audit.copies``). Exact pairs are always copies."""
    pairs = _pairs(ht, hr, config, leak=True)
    near = pairs.near
    tested = int(pairs.copies_a.sizes_of(np.unique(near.i)).sum())
    rule = copy_rule([_nearest_null(h, config, seed) for h in (hr, ht)], tested=tested,
                     max_distance=config.max_colour_distance)
    pairs = replace(pairs, near=replace(near, p_value=np.asarray(rule.p_value(near.confirmation), float)))
    copy = pairs.near.confirmation < rule.threshold
    return pairs.with_near(copy), pairs.with_near(~copy, exact=False), rule


def _nearest_null(h: Hashes, config: IntegrityConfig, seed: int) -> np.ndarray:
    """Each image's distance to its nearest hash candidate inside its own set (a seeded sample of the set)."""
    rows = np.arange(len(h.paths))
    if len(rows) > NULL_IMAGES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, NULL_IMAGES, replace=False))
    if len(rows) < 2:
        return np.zeros(0)
    cand = near_pairs(h.phash[rows], None, config.hash_distance, max_pairs=MAX_CANDIDATES, per_row=PER_IMAGE)
    i, j = rows[cand.i], rows[cand.j]
    both = np.r_[i, j]
    dist = pair_distances(thumbnails_for(h, both), thumbnails_for(h, both), local_rows(h, i, both),
                          local_rows(h, j, both), limit=config.max_colour_distance)
    return nearest_within(cand.i, cand.j, dist, len(rows))


def criteria(res: IntegrityResult, config: AuditConfig) -> list[Criterion]:
    """Leakage (when training data is given) and, if configured, duplicates inside the test set."""
    out, config = [], config.integrity
    if res.n_train is not None:
        title = "Test images copied in the training data (leakage)"
        unread = len(res.unreadable)
        if unread >= res.n_train:  # nothing compared: a gate that measured nothing fails (never a silent pass)
            detail = (f"not measured: none of the {res.n_train} training image(s) could be read "
                      f"(e.g. {res.unreadable[0]})" if res.unreadable else "not measured: no training image")
            out.append(judge(Measure("integrity.leakage", title, Estimate(math.nan, math.nan, math.nan), False,
                                     detail), config.max_leaked))
        else:
            ex = ", ".join(f"{p.a} ~ {p.b}" for p in res.leak_pairs[:3])
            detail = f"{res.n_leak_pairs} exact/near duplicate pair(s) with {res.n_train - unread} training images" + (
                f": {ex}" if ex else "")
            if unread:
                detail += (f"; {unread} training image(s) could not be read and were not compared "
                           f"(e.g. {res.unreadable[0]})")
            if res.n_lookalike_pairs:
                detail += (f"; {res.n_lookalike_pairs} look-alike pair(s) not counted (no nearer than independent "
                           "images get)")
            out.append(judge(Measure.count("integrity.leakage", title, res.leaked, detail=detail), config.max_leaked))
    if config.max_test_duplicates is not None:
        out.append(judge(Measure.count("integrity.test_duplicates", "Duplicated images inside the test set",
                                       res.n_test_duplicates, detail=f"{res.n_test_pairs} pair(s)"),
                         config.max_test_duplicates))
    return out


def findings(res: IntegrityResult, config: AuditConfig | None) -> list[Finding]:
    """Leakage into the training data, and duplicates inside the test set."""
    out = []
    if res.leaked:
        out.append(Finding("warn", f"{res.leaked} test image(s) also appear in the training data (exact or near "
                                   "duplicates): the accuracy on them overstates the model.", "integrity",
                           importance=res.leaked / res.n_test, criterion="integrity.leakage"))
    if res.n_test_duplicates:
        out.append(Finding("info", f"{res.n_test_duplicates} test images have an exact or near duplicate inside the "
                                   f"test set ({res.n_test_pairs} pair(s)): not independent evidence, so the metrics' "
                                   "intervals count them by cluster (effective sample size in the evidence section).",
                           "integrity", importance=res.n_test_duplicates / res.n_test,
                           criterion="integrity.test_duplicates"))
    return out


def thumbnails(res: IntegrityResult, ctx: AuditContext) -> list[tuple]:
    train = ctx.state("integrity")
    out = []
    for p in (*res.leak_pairs[:SHOWN_PAIRS], *res.test_pairs[:SHOWN_PAIRS]):
        out += [(ctx.source, p.a), (train if p.leak else ctx.source, p.b)]
    return out


def _train_hashes(ctx: AuditContext, train: DataSource) -> Hashes:
    """The training images' hashes: from the reference pass when it ran over all of them (one decode serves
    leakage and shift), else hashed here."""
    ref = ctx.reference
    if ref is not None and ref.source is train and ref.complete and ref.predictions is not None:
        hr = hashes_of(ref.predictions, train)
        return replace(hr, unreadable=tuple(s.path for s in ref.rejected))
    return hash_source(train, workers=ctx.config.workers, limits=ctx.limits)


def _open_train(ctx: AuditContext) -> DataSource | None:
    train = ctx.config.integrity.train
    if train is None:
        return None
    if ctx.reference is not None and ctx.reference.flag == "--train":
        return ctx.reference.source  # already scanned as the reference
    root = Path(ctx.config.data_root) if ctx.config.data_root else None
    return open_source(Path(train), ctx.classifier.labels, flag="--train", data_root=root)


SPEC = CheckSpec(
    "integrity", "integrity", integrity, config=IntegrityConfig, enabled=lambda c: c.integrity.enabled,
    prepare=_open_train, criteria=criteria, thumbnails=thumbnails,
    findings=findings, toggle=True, options=(Option("--train", "integrity.train",
                                 "training ImageFolder or manifest: check train/test duplicates (leakage)", "DIR"),),
)
