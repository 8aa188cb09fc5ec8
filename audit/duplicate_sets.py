"""Duplicate pairs kept as groups: counted exactly, built only where they are listed (docs/ARCHITECTURE.md §4.3).

*Exact* copies share their bytes (SHA-256). k copies of one picture are k(k-1)/2 pairs: 50 copies of
each of 10,000 images make 12 million pairs, one blank frame 10,000 times 50 million, and a pair
object each took gigabytes. So rows are grouped by SHA-256 (``ShaGroups``) and a ``PairSet`` holds
the groups: it counts their pairs per group, links each group into one duplicate cluster with k - 1
edges, and builds ``DuplicatePair`` records only for the pairs a report lists.

*Near* duplicates are searched among one representative per group: copies have the same hashes and
thumbnails, so a confirmed near pair of representatives stands for every pair of their members
(counted as the product of the groups' sizes), and the search never sees the repeats. Each
representative keeps its ``PER_IMAGE`` closest hash candidates at most (``audit.duplicates.near_pairs``),
so a crowd of images with one perceptual hash (blank frames that differ in a few bytes) stays linear.

Example::

    pairs = find_pairs(hashes, None, hash_distance=4, max_colour_distance=8.0)
    len(pairs), pairs.duplicated().sum(), pairs.listed(200)[:3]
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from audit import imaging
from audit.duplicates import THUMBNAIL_BYTES, colour_thumbnail, near_pairs, pair_distances
from audit.packed import index_dtype
from audit.predictions import Coded, HexDigests, Predictions
from audit.sources import DataSource

MAX_CANDIDATES = 2_000_000  # hash candidates confirmed at most (the closest); beyond it the count is reported
PER_IMAGE = 64  # hash candidates per image at most (the closest); Fashion-MNIST's most crowded test image has 52


@dataclass(frozen=True)
class DuplicatePair:
    a: str  # path (test set, relative to the data root)
    b: str  # path (test set, or training set when leak)
    kind: str  # "exact" or "near"
    distance: int  # Hamming distance of the perceptual hashes (0 for exact)
    same_label: bool
    leak: bool  # b is in the training data
    confirmation: float = 0.0  # thumbnail distance that confirmed a near pair (0 for exact)
    p_value: float = 0.0  # leak pairs: the chance that two independent look-alikes are this close (audit.copies)


@dataclass(frozen=True)
class Hashes:
    """One set's per-image hashes: what the duplicate search reads."""

    source: DataSource  # where the images are read from
    paths: Sequence[str]
    labels: Sequence[str]  # one per path ("" unlabelled)
    sha: Sequence[str]
    phash: Any  # (n,) uint64: an array or a StoredColumn
    thumbnails: Any = None  # ThumbnailStore (one row per path) or an array; None: decode on demand
    unreadable: tuple[str, ...] = ()


def hashes_of(preds: Predictions, source: DataSource) -> Hashes:
    """The hashes and thumbnails the inference pass took of every processed image."""
    # codes into the names, no str per row; code -1 (an unlabelled reference image) reads the last name: ""
    labels = Coded(preds.y_true, (*preds.labels, ""))
    return Hashes(source, preds.paths, labels, preds.sha256, preds.phash, preds.thumbnails)


@dataclass(frozen=True)
class Grouped:
    """Rows in groups, compactly: members of group g are ``rows[start[g]:start[g] + size[g]]``, in row order."""

    rows: np.ndarray
    start: np.ndarray
    size: np.ndarray

    @classmethod
    def by_key(cls, inverse: np.ndarray, wanted: np.ndarray) -> Grouped:
        """The rows whose key id (``inverse``) is one of ``wanted`` (sorted ids), grouped in that order."""
        pos = np.searchsorted(wanted, inverse)
        hit = pos < len(wanted)
        hit[hit] = wanted[pos[hit]] == inverse[hit]
        rows = np.flatnonzero(hit)
        rows = rows[np.argsort(pos[rows], kind="stable")].astype(index_dtype(len(inverse)))
        size = np.bincount(pos[rows], minlength=len(wanted)).astype(np.int64)
        return cls(rows, np.cumsum(size) - size, size)

    def __len__(self) -> int:
        return len(self.size)

    def members(self, g: int) -> np.ndarray:
        return self.rows[self.start[g]:self.start[g] + self.size[g]]

    def leaders(self) -> np.ndarray:
        return self.rows[self.start]

    def group_of(self, rows: np.ndarray) -> np.ndarray:
        """The group each row leads (is the first member of), or -1."""
        rows = np.asarray(rows, np.int64)
        if not len(self.size):
            return np.full(len(rows), -1, np.int64)
        leaders = self.leaders()
        order = np.argsort(leaders)
        pos = np.minimum(np.searchsorted(leaders[order], rows), len(order) - 1)
        return np.where(leaders[order][pos] == rows, order[pos], -1)

    def sizes_of(self, rows: np.ndarray) -> np.ndarray:
        """How many rows each row stands for: its group's size when it leads one, else 1."""
        g = self.group_of(rows)
        return np.where(g >= 0, self.size[np.maximum(g, 0)] if len(self.size) else 1, 1).astype(np.int64)

    def expand(self, row: int) -> list[int]:
        g = int(self.group_of(np.array([row]))[0])
        return self.members(g).tolist() if g >= 0 else [row]


@dataclass(frozen=True)
class Digests:
    """Each row's SHA-256 as the id of one of the set's distinct digests; rows without one match nothing."""

    digests: HexDigests  # each row's 32 bytes (on disk after an inference pass), read where needed
    inverse: np.ndarray  # (N,) key id per row
    counts: np.ndarray  # (K,)
    first: np.ndarray  # (K,) the first row of each key: its representative
    hashed: np.ndarray  # (K,) bool: a real digest (False: a row the pass did not hash, one key each)

    def words(self, rows) -> np.ndarray:
        """(len(rows), 4) big-endian words of the digests of ``rows``."""
        return self.digests.take(rows).view(">u8")

    @property
    def keys(self) -> np.ndarray:
        """(K, 4) uint64: the distinct digests, sorted (made when asked: only a comparison of two sets needs them)."""
        return self.words(self.first).astype(np.uint64)

    @classmethod
    def of(cls, sha, chunk: int = 65_536) -> Digests:
        n = len(sha)
        if isinstance(sha, HexDigests):  # every row hashed, 32 bytes each already
            digests, missing = sha, np.zeros(n, bool)
        else:
            words = np.zeros((n, 4), ">u8")
            for lo in range(0, n, chunk):  # one fromhex per chunk: no bytes object per row
                part = sha[lo:lo + chunk]
                words[lo:lo + len(part)] = np.frombuffer(bytes.fromhex("".join(h or "0" * 64 for h in part)),
                                                         ">u8").reshape(-1, 4)
            missing = np.array([not h for h in sha], bool)
            words[missing, 0], words[missing, 1] = np.arange(n, dtype=np.uint64)[missing], np.uint64(2 ** 64 - 1)
            digests = HexDigests(words.view(np.uint8))
        index = index_dtype(n)  # row numbers: 12 bytes a row fewer held below 2**31 rows
        order, new = _digest_order(digests, chunk)
        inverse = np.empty(n, index)
        ids = np.cumsum(new, dtype=index)
        ids -= 1
        inverse[order] = ids
        first = order[new]
        del ids, order
        counts = np.diff(np.flatnonzero(new), append=n).astype(index)
        return cls(digests, inverse, counts, first, ~missing[first])

    def copies(self) -> Grouped:
        """The groups of two or more rows with the same bytes."""
        return Grouped.by_key(self.inverse, np.flatnonzero((self.counts > 1) & self.hashed))

    def common(self, other: Digests) -> tuple[np.ndarray, np.ndarray]:
        """(key ids here, key ids there) of the digests both sets hold, in sorted order."""
        mine, theirs = self.keys, other.keys
        both = np.r_[mine, theirs]
        side = np.r_[np.zeros(len(mine), np.int64), np.ones(len(theirs), np.int64)]
        order = np.lexsort((side, *both.T[::-1]))
        b = both[order]
        same = (b[1:] == b[:-1]).all(axis=1) & (side[order][1:] == 1) & (side[order][:-1] == 0)
        here, there = order[:-1][same], order[1:][same] - len(mine)
        real = self.hashed[here] & other.hashed[there]
        return here[real], there[real]


def _digest_order(digests: HexDigests, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(a stable order of the rows by digest, True where a new digest starts in it). Sorted on the first 8 bytes
    (read ``chunk`` rows at a time), then every tie checked on all 32 (``chunk`` pairs at a time): with
    ``Digests.of`` about 35 bytes a row at the peak where sorting all four words took 115. Ties that differ past
    the first 8 bytes (never seen in SHA-256) take the full sort."""
    n = len(digests)
    first_word = np.empty(n, np.uint64)
    for lo in range(0, n, chunk):
        first_word[lo:lo + chunk] = digests.block(lo, lo + chunk).view(">u8")[:, 0]
    order = np.argsort(first_word, kind="stable").astype(index_dtype(n))
    sorted_first = first_word[order]
    del first_word
    tie = np.flatnonzero(sorted_first[1:] == sorted_first[:-1])
    new = np.ones(n, bool)
    new[1:] = sorted_first[1:] != sorted_first[:-1]
    for lo in range(0, len(tie), chunk):
        k = tie[lo:lo + chunk]
        if (digests.take(order[k]) != digests.take(order[k + 1])).any():
            words = digests.raw.view(">u8")
            order = np.lexsort(words.T[::-1]).astype(index_dtype(n))
            ordered = words[order]
            return order, np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)] if n else np.zeros(0, bool)
    return order, new


@dataclass(frozen=True)
class Near:
    """Confirmed near pairs of representative rows (one per distinct SHA-256), closest first."""

    i: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    j: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    distance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    confirmation: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    p_value: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def take(self, keep: np.ndarray) -> Near:
        return Near(self.i[keep], self.j[keep], self.distance[keep], self.confirmation[keep], self.p_value[keep])


@dataclass(frozen=True)
class PairSet:
    """Exact and near duplicate pairs within one set (``b is a``) or between two (leak: ``b`` is the training set).

    ``exact_a[g]`` and ``exact_b[g]`` are the rows of each side with one digest (the same groups within one set);
    ``copies_a``/``copies_b`` every group of two or more rows of each side, which a near representative stands for.
    """

    a: Hashes
    b: Hashes
    exact_a: Grouped
    exact_b: Grouped
    copies_a: Grouped
    copies_b: Grouped
    near: Near
    leak: bool = False
    candidates: int = 0  # hash candidates among the representatives, before the caps and the confirmation
    capped: bool = False  # the candidates were cut (``MAX_CANDIDATES``, ``PER_IMAGE``)

    @property
    def within(self) -> bool:
        return self.b is self.a

    @property
    def n_exact(self) -> int:
        k = self.exact_a.size
        return int((k * (k - 1) // 2).sum()) if self.within else int((k * self.exact_b.size).sum())

    @property
    def n_near(self) -> int:
        return int((self.copies_a.sizes_of(self.near.i) * self.copies_b.sizes_of(self.near.j)).sum())

    def __len__(self) -> int:
        return self.n_exact + self.n_near

    def duplicated(self) -> np.ndarray:
        """(rows of a,) bool: the images of ``a`` in at least one pair."""
        out = np.zeros(len(self.a.paths), bool)
        out[self.exact_a.rows] = True
        for reps in (self.near.i, self.near.j) if self.within else (self.near.i,):
            out[reps] = True
            for g in np.unique(self.copies_a.group_of(reps)):
                if g >= 0:
                    out[self.copies_a.members(g)] = True
        return out

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Row pairs that link every duplicate cluster within the set: each group's members to its first, and the
        near pairs of representatives."""
        g = self.exact_a
        index = index_dtype(len(self.a.paths))  # half the memory at 500,000 copies
        first = np.repeat(g.leaders().astype(index), g.size)
        keep = first != g.rows
        return (np.concatenate([first[keep], self.near.i], dtype=index, casting="same_kind"),
                np.concatenate([g.rows[keep], self.near.j], dtype=index, casting="same_kind"))

    def with_near(self, keep: np.ndarray, *, exact: bool = True) -> PairSet:
        """The same set with only the near pairs ``keep`` (and without the exact ones unless ``exact``)."""
        empty = Grouped(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return replace(self, near=self.near.take(keep), exact_a=self.exact_a if exact else empty,
                       exact_b=self.exact_b if exact else empty)

    def listed(self, limit: int) -> list[DuplicatePair]:
        """The first ``limit`` pairs, built: exact ones group by group (in order of their first row), then near ones
        closest first, each standing for every pair of its groups' members."""
        return list(itertools.islice(itertools.chain(self._exact_pairs(), self._near_pairs()), limit))

    def _exact_pairs(self):
        for g in np.argsort(self.exact_a.leaders(), kind="stable").tolist():
            rows_a = self.exact_a.members(g).tolist()
            pairs = itertools.combinations(rows_a, 2) if self.within else \
                itertools.product(rows_a, self.exact_b.members(g).tolist())
            for i, j in pairs:
                yield self._pair(i, j, "exact", 0, 0.0, 0.0)

    def _near_pairs(self):
        n = self.near
        for k in range(len(n.i)):
            for i, j in itertools.product(self.copies_a.expand(int(n.i[k])), self.copies_b.expand(int(n.j[k]))):
                if self.within:
                    i, j = min(i, j), max(i, j)
                yield self._pair(i, j, "near", int(n.distance[k]), round(float(n.confirmation[k]), 3),
                                 float(n.p_value[k]))

    def _pair(self, i: int, j: int, kind: str, d: int, confirmation: float, p: float) -> DuplicatePair:
        return DuplicatePair(self.a.paths[i], self.b.paths[j], kind, d, self.a.labels[i] == self.b.labels[j],
                             self.leak, confirmation, p)


def find_pairs(a: Hashes, b: Hashes | None = None, *, near: bool = True, hash_distance: int = 4,
               max_colour_distance: float = 8.0, leak: bool = False) -> PairSet:
    """Exact and confirmed near duplicate pairs within ``a`` (``b`` None) or between ``a`` and ``b``, as groups."""
    within = b is None
    b = a if within else b
    da = Digests.of(a.sha)
    db = da if within else Digests.of(b.sha)
    copies_a = da.copies()
    copies_b = copies_a if within else db.copies()
    if within:
        exact_a = exact_b = copies_a
    else:
        ka, kb = da.common(db)
        exact_a, exact_b = Grouped.by_key(da.inverse, ka), Grouped.by_key(db.inverse, kb)
    found, candidates, capped = Near(), 0, False
    if near and len(a.phash) and len(b.phash):
        found, candidates, capped = _near(a, b, da, db, within, hash_distance, max_colour_distance)
    return PairSet(a, b, exact_a, exact_b, copies_a, copies_b, found, leak, candidates, capped)


def _near(a: Hashes, b: Hashes, da: Digests, db: Digests, within: bool, d: int,
          limit: float) -> tuple[Near, int, bool]:
    """Hash candidates among one representative per distinct digest, confirmed on their thumbnails."""
    ra, rb = da.first, db.first
    ha = np.asarray(a.phash)  # read once (an inference pass keeps them on disk)
    if within and len(ra) == len(ha):  # no two images share bytes (the usual test set): each row represents
        ra = rb = np.arange(len(ra), dtype=ra.dtype)  # itself, and the hashes are searched as read, not copied
    else:
        ha = ha[ra]
    cand = near_pairs(ha, None if within else np.asarray(b.phash)[rb], d, max_pairs=MAX_CANDIDATES,
                      per_row=PER_IMAGE)
    total, capped = cand.total, len(cand) < cand.total
    ci, cj, dist = cand.i, cand.j, cand.distance
    del cand
    if not within:  # the same bytes: an exact pair already
        keep = ~((da.words(ra[ci]) == db.words(rb[cj])).all(axis=1) & da.hashed[ci] & db.hashed[cj])
        ci, cj, dist = ci[keep], cj[keep], dist[keep]
    # row numbers in int32 below 2**31 rows, and no copy more than needed: up to MAX_CANDIDATES pairs
    i, j = ra[ci], rb[cj]
    del ci, cj
    if within:  # each pair as (lower row, higher row), in place
        swap = np.flatnonzero(i > j)
        i[swap], j[swap] = j[swap], i[swap]
        del swap
    conf = pair_distances(thumbnails_for(a, i), thumbnails_for(b, j), local_rows(a, i), local_rows(b, j), limit=limit)
    ok = np.flatnonzero(conf <= limit)
    ok = ok[np.lexsort((j[ok], i[ok], dist[ok]))]
    return (Near(i[ok].astype(np.int64), j[ok].astype(np.int64), dist[ok], conf[ok], np.zeros(len(ok))), total,
            capped)


def hash_one(source: DataSource, path: str, limits: imaging.Limits):
    """(SHA-256, pHash input, colour thumbnail) of one file, or None when it cannot be read or decoded."""
    try:
        data = source.open(path, limits)
        img, _ = imaging.decode(data, None, limits)
        ph = imaging.phash_input(img)
        return hashlib.sha256(data).hexdigest(), ph, colour_thumbnail(img, ph)
    except (imaging.ImageRejected, OSError):
        return None


def thumbnails_for(h: Hashes, rows: np.ndarray):
    """The thumbnail source for ``rows``: the stored thumbnails, or (without them) the files decoded again."""
    if h.thumbnails is not None:
        return h.thumbnails
    wanted = np.unique(rows)
    out = np.zeros((len(wanted), THUMBNAIL_BYTES), np.uint8)
    for k, r in enumerate(wanted):
        hashed = hash_one(h.source, h.paths[r], imaging.Limits())
        if hashed is not None:
            out[k] = hashed[2]
    return out


def local_rows(h: Hashes, rows: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """``rows`` as indices into ``thumbnails_for(h, among)`` (``among`` defaults to ``rows``)."""
    if h.thumbnails is not None:
        return rows
    return np.searchsorted(np.unique(rows if among is None else among), rows)
