"""Near-duplicate search over 64-bit perceptual hashes, and colour confirmation of the candidates.

``near_pairs`` returns exactly the pairs within ``max_distance`` bits that an all-pairs search
returns, in near-linear time: multi-index hashing (``max_distance + 1`` bands of bits; two hashes
within d bits agree on one band at least, so candidates come from band buckets and a popcount
verifies them). Identical hashes are grouped first: a thousand blank images are one bucket entry.

pHash works on grey, so the same shape in another colour has the same hash: a hash match is a
candidate, confirmed by ``thumbnail_distance`` on small colour thumbnails (``colour_thumbnail``)
taken in the inference pass and kept on disk (``ThumbnailStore``); these live in ``audit.colour_match``
and are re-exported here. No image file is opened here:
``pair_distances(test_store, train_store, pairs.i, pairs.j) <= DEFAULT_MAX_COLOUR_DISTANCE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.colour_match import (  # noqa: F401  (re-exported: the confirmation half of near-duplicate search)
    CHROMA_QUANTILE, CHROMA_SIZE, CHROMA_WEIGHT, DEFAULT_MAX_COLOUR_DISTANCE, LUMA_SIZE, THUMBNAIL_BYTES,
    ThumbnailStore, colour_differences, colour_thumbnail, pair_distances, thumbnail_distance,
)
from audit.packed import index_dtype

BITS = 64
CHUNK = 1 << 18  # candidate pairs verified at once (about 6 MB of temporaries; 1 << 22 put 100 MB more on the peak
# at 500,000 distinct hashes and was twice as slow)
# A multi-index candidate costs ~6x a brute-force comparison (gathers vs a dense XOR, measured); with
# more than pairs / BRUTE_FORCE_RATIO candidates (crowded buckets) the blocked all-pairs search is faster.
BRUTE_FORCE_RATIO = 6


@dataclass(frozen=True)
class NearPairs:
    """Index pairs within ``max_distance`` bits, sorted by (distance, i, j). ``total`` counts every
    matching pair; it exceeds ``len(self)`` only when ``max_pairs`` cut the list (closest kept)."""

    i: np.ndarray  # int64 rows of a
    j: np.ndarray  # int64 rows of b (of a, with i < j, when b was None)
    distance: np.ndarray  # uint8 Hamming distance
    total: int

    def __len__(self) -> int:
        return len(self.i)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.i)


def _check_hashes(name: str, h) -> np.ndarray:
    h = np.asarray(h)
    if h.ndim != 1 or h.dtype != np.uint64:
        raise ValueError(f"{name} must be a 1-D array of 64-bit hashes (dtype uint64), got shape {h.shape} and "
                         f"dtype {h.dtype}; convert with np.asarray(hashes, dtype=np.uint64)")
    return h


def near_pairs(a, b=None, max_distance: int = 4, *, max_pairs: int | None = None, per_row: int | None = None,
               method: str = "auto") -> NearPairs:
    """All pairs (i, j) with popcount(a[i] ^ b[j]) <= ``max_distance``; within ``a`` (i < j) when b is None.

    Exactly the pairs an all-pairs search returns. ``max_pairs`` bounds the memory of degenerate
    inputs (thousands of identical blank images make millions of true pairs): the count is exact,
    the list is cut. ``per_row`` keeps each row's ``per_row`` closest pairs (a pair is kept when it is among
    the closest of one of its rows; a crowd of equal hashes is linked as a band, each row with its
    ``per_row // 2`` next ones, never expanded pair by pair), so the list has at most ``per_row`` pairs
    per row in all: linear in the rows, and a crowd stays one connected group. ``method``: "index" (multi-index), "all" (blocked all-pairs) or "auto" (the
    index unless its buckets are too crowded to pay off); all three return the same pairs.

    >>> a = np.array([0b1011, 0b0011, 0xFF00], np.uint64)
    >>> p = near_pairs(a, None, 1)
    >>> p.i.tolist(), p.j.tolist(), p.distance.tolist(), p.total
    ([0], [1], [1], 1)
    """
    a = _check_hashes("a", a)
    same = b is None
    b = a if same else _check_hashes("b", b)
    if not isinstance(max_distance, (int, np.integer)) or not 0 <= max_distance <= BITS:
        raise ValueError(f"max_distance must be an integer in [0, {BITS}], got {max_distance!r}")
    if method not in ("auto", "index", "all"):
        raise ValueError(f'method must be "auto", "index" or "all", got {method!r}')
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be None (no limit) or >= 0, got {max_pairs}")
    if per_row is not None and per_row < 1:
        raise ValueError(f"per_row must be None (no limit) or >= 1, got {per_row}")
    ga, gb = _Groups.of(a), (None if same else _Groups.of(b))
    sink = _Sink(ga, gb, max_pairs)
    _unique_pairs(ga.values, ga.values if same else gb.values, int(max_distance), same, method, sink)
    if same:  # members of one group are 0 bits apart
        many = np.flatnonzero(ga.counts > 1)
        sink.add(many, many, np.zeros(len(many), np.uint8))
    if per_row is not None:
        return _expand_capped(*_concat(sink.parts), ga, gb, max_pairs, sink.total, per_row)
    return _expand(*_concat(sink.parts), ga, gb, max_pairs, sink.total)


@dataclass(frozen=True)
class _Groups:
    """Identical hashes grouped: members of values[k] are order[start[k] : start[k] + counts[k]]."""

    values: np.ndarray
    counts: np.ndarray
    order: np.ndarray
    start: np.ndarray

    def sizes(self, k: np.ndarray) -> np.ndarray:
        """The sizes of groups ``k`` as int64 (their products count pairs)."""
        return self.counts[k].astype(np.int64)

    @classmethod
    def of(cls, h: np.ndarray) -> _Groups:
        # one stable sort, not np.unique's inverse sorted again; row numbers in int32 below 2**31 rows:
        # 20 bytes a row held, not 32 (most test sets have almost no two equal hashes)
        index = index_dtype(len(h))
        order = np.argsort(h, kind="stable").astype(index)
        values = h[order]
        first = np.ones(len(h), bool)
        np.not_equal(values[1:], values[:-1], out=first[1:])
        start = np.flatnonzero(first).astype(index)
        del first
        if len(start) < len(values):
            values = values[start]
        counts = np.diff(start, append=index(len(h)))
        return cls(values, counts, order, start)


class _Sink:
    """Pairs of hash groups as found, counting the row pairs they stand for; with a cap, only the
    ``cap`` closest are held (each stands for one row pair at least), so memory stays bounded."""

    def __init__(self, ga: _Groups, gb: _Groups | None, cap: int | None) -> None:
        self.ga, self.gb, self.cap, self.total, self.parts, self.held = ga, gb, cap, 0, [], 0

    def add(self, x: np.ndarray, y: np.ndarray, dist: np.ndarray) -> None:
        if self.gb is None:  # one set: x < y, or x == y for a group with itself
            x, y = np.minimum(x, y), np.maximum(x, y)
            ca, cb = self.ga.sizes(x), self.ga.sizes(y)
            self.total += int(np.where(x == y, ca * (ca - 1) // 2, ca * cb).sum())
        else:
            self.total += int((self.ga.sizes(x) * self.gb.sizes(y)).sum())
        self.parts.append((x, y, dist))
        self.held += len(x)
        if self.cap is not None and self.held > max(2 * self.cap, CHUNK):
            x, y, dist = _concat(self.parts)
            o = np.lexsort((y, x, dist))[:self.cap]
            self.parts, self.held = [(x[o], y[o], dist[o])], len(o)


def _bands(ua: np.ndarray, ub: np.ndarray, max_distance: int) -> list[np.uint64]:
    """Bit masks of max_distance + 1 bands partitioning the 64 bits. Any partition works (pigeonhole), but
    pHashes have near-constant bits (the DC term) that would crowd contiguous bands into few buckets:
    bits are dealt, most informative first, to the band with the least entropy so far."""
    m = min(max_distance + 1, BITS)
    p = np.zeros(BITS)
    for h in (ua, ub):  # bit k of every hash: column k of the little-endian bytes, unpacked 65,536 hashes at a time
        for lo in range(0, len(h), 65_536):  # (all at once: 64 bytes a hash, 32 MB at 500,000)
            bits = np.unpackbits(h[lo:lo + 65_536].astype("<u8").view(np.uint8), bitorder="little")
            p += bits.reshape(-1, BITS).sum(axis=0)
    p /= max(len(ua) + len(ub), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.nan_to_num(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))
    masks, load = [0] * m, np.zeros(m)
    for bit in np.argsort(-entropy, kind="stable"):
        k = int(np.argmin(load))
        masks[k], load[k] = masks[k] | 1 << int(bit), load[k] + entropy[bit]
    return [np.uint64(v) for v in masks]


def _keys(ua: np.ndarray, ub: np.ndarray, mask: np.uint64, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """One band's bucket keys of both sides (one array when they are the same set)."""
    ka = ua & mask
    return ka, ka if same else ub & mask


def _bucket_ranges(ka: np.ndarray, kb: np.ndarray, same: bool):
    """For each key of ka, the equal keys of kb: ``order[lo:lo + count]`` (within one set, those after it).
    Positions in int32 below 2**31 keys: 12 bytes a key, not 24, in every band."""
    index = index_dtype(len(kb))
    order = np.argsort(kb, kind="stable").astype(index)
    sb = kb[order]
    if same:  # only the keys after x's own place
        lo = np.empty(len(order), index)
        lo[order] = np.arange(1, len(order) + 1, dtype=index)
    else:
        lo = np.searchsorted(sb, ka, "left").astype(index)
    ends = np.searchsorted(sb, ka, "right")
    del sb
    ends -= lo  # in place: one array a row fewer at the peak
    return order, lo, ends.astype(index)


def _unique_pairs(ua: np.ndarray, ub: np.ndarray, d: int, same: bool, method: str, sink: _Sink) -> None:
    """Pairs of distinct values within d bits into ``sink``: multi-index, or blocked all-pairs."""
    if method != "all" and d < BITS:  # d + 1 bands need d < 64 (at 64 bits every pair matches anyway)
        masks = _bands(ua, ub, d)
        # each band's buckets are counted, then made again when searched: holding all of them took 24 bytes a
        # hash a band (60 MB at 500,000 hashes), the second sort costs less than a tenth of the search
        n_candidates = sum(int(_bucket_ranges(*_keys(ua, ub, m, same), same)[2].sum()) for m in masks)
        pairs = len(ua) * (len(ua) - 1) // 2 if same else len(ua) * len(ub)
        if method == "index" or n_candidates * BRUTE_FORCE_RATIO <= pairs:
            for k, m in enumerate(masks):
                _band_matches(ua, ub, *_bucket_ranges(*_keys(ua, ub, m, same), same), d, masks[:k], sink)
            return
    _all_pairs(ua, ub, d, same, sink)


def _band_matches(ua, ub, order, lo, counts, d: int, earlier: list, sink: _Sink) -> None:
    """Verify each x against its bucket, CHUNK candidates at a time; a pair counts in its first equal band only."""
    sorted_b = ub[order]
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(CHUNK, int(ends[-1]) if len(ends) else 0, CHUNK), "right")
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(counts)]):
        c = counts[start:stop]
        if (total := int(c.sum())) == 0:
            continue
        first = np.cumsum(c) - c  # where each x's run starts among this chunk's candidates
        pos = np.arange(total) + np.repeat(lo[start:stop] - first, c)  # into sorted_b
        xor = np.repeat(ua[start:stop], c) ^ sorted_b[pos]
        dist = np.bitwise_count(xor)
        hit = np.flatnonzero(dist <= d)
        for m in earlier:
            hit = hit[(xor[hit] & m) != 0]
        x = start + np.searchsorted(first, hit, "right") - 1
        sink.add(x, order[pos[hit]], dist[hit])


def _all_pairs(ua: np.ndarray, ub: np.ndarray, d: int, same: bool, sink: _Sink) -> None:
    """The blocked all-pairs search: XOR a block of rows against every column, count bits."""
    rows = max(1, CHUNK // max(len(ub), 1))
    for start in range(0, len(ua), rows):
        off = start + 1 if same else 0  # within one set, only the columns after the row
        dist = np.bitwise_count(ua[start:start + rows, None] ^ ub[None, off:])
        keep = dist <= d
        if same:
            keep &= np.arange(keep.shape[0])[:, None] <= np.arange(keep.shape[1])[None, :]
        x, y = np.nonzero(keep)
        sink.add(x + start, y + off, dist[x, y])


def _concat(parts):
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))
    return tuple(np.concatenate([e] + [p[k] for p in parts]).astype(e.dtype) for k, e in enumerate(empty))


def _expand(x, y, d, ga: _Groups, gb: _Groups | None, max_pairs: int | None, total: int) -> NearPairs:
    """Pairs of hash groups to pairs of rows: every member of x with every member of y."""
    same, gb = gb is None, ga if gb is None else gb
    diag = (x == y) if same else np.zeros(len(x), bool)  # one group with itself: r < s only
    ca, cb = ga.sizes(x), gb.sizes(y)
    w = np.where(diag, ca * (ca - 1) // 2, ca * cb)
    if max_pairs is not None and total > max_pairs:  # keep the closest groups, cut the last one
        o = np.lexsort((y, x, d))
        x, y, d, w, diag, cb = x[o], y[o], d[o], w[o], diag[o], cb[o]
        w = np.clip(max_pairs - (np.cumsum(w) - w), 0, w)
    p = np.repeat(np.arange(len(w)), w)
    t = np.arange(int(w.sum()), dtype=np.int64) - np.repeat(np.cumsum(w) - w, w)
    r, s = t // cb[p], t % cb[p]
    on_diag = diag[p]
    if on_diag.any():
        r[on_diag], s[on_diag] = _unrank_triangle(t[on_diag])
    i, j = _rows(ga, x[p], r), _rows(gb, y[p], s)
    if same:
        i, j = np.minimum(i, j), np.maximum(i, j)
    o = np.lexsort((j, i, d[p]))
    return NearPairs(i[o], j[o], d[p][o], total)


def _rows(g: _Groups, k: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Row numbers (int64) of member ``r`` of groups ``k``."""
    return g.order[g.start[k] + r].astype(np.int64)


def _unrank_triangle(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The t-th pair (r, s), r < s, in the order (0,1), (0,2), (1,2), (0,3), ..."""
    s = np.floor((1 + np.sqrt(1 + 8 * t.astype(np.float64))) / 2).astype(np.int64)
    s -= s * (s - 1) // 2 > t  # float rounding, either way
    s += (s + 1) * s // 2 <= t
    return t - s * (s - 1) // 2, s


def _expand_capped(x, y, d, ga: _Groups, gb: _Groups | None, max_pairs: int | None, total: int,
                   per_row: int) -> NearPairs:
    """Pairs of hash groups to about ``per_row`` pairs per row: each member of the larger group with its
    ``per_row`` next members of the other (a band, wrapping round); within one group, its ``per_row // 2`` next."""
    same, gb = gb is None, ga if gb is None else gb
    o = np.lexsort((y, x, d))
    x, y, d = x[o], y[o], d[o]
    ca, cb = ga.sizes(x), gb.sizes(y)
    diag = (x == y) if same else np.zeros(len(x), bool)
    steps = np.where(diag, np.minimum(ca - 1, max(1, per_row // 2)), np.minimum(np.minimum(ca, cb), per_row))
    w = np.maximum(ca, cb) * steps
    if max_pairs is not None:
        w = np.clip(max_pairs - (np.cumsum(w) - w), 0, w)
    p = np.repeat(np.arange(len(w)), w)
    t = np.arange(int(w.sum()), dtype=np.int64) - np.repeat(np.cumsum(w) - w, w)
    u, v = t // steps[p], t % steps[p]
    a_big = ca[p] >= cb[p]
    r = np.where(diag[p], u, np.where(a_big, u, (u + v) % ca[p]))
    s = np.where(diag[p], u + v + 1, np.where(a_big, (u + v) % cb[p], u))
    ok = ~diag[p] | (s < ca[p])
    p, r, s = p[ok], r[ok], s[ok]
    i, j = _rows(ga, x[p], r), _rows(gb, y[p], s)
    if same:
        i, j = np.minimum(i, j), np.maximum(i, j)
    i, j, dist = _cap_rows(i, j, d[p], per_row)
    return NearPairs(i, j, dist, total)


def _cap_rows(i: np.ndarray, j: np.ndarray, d: np.ndarray, k: int):
    """The pairs among the ``k`` closest (by distance, then partner) of either of their rows, sorted by (d, i, j):
    at most ``k`` per row in all."""
    o = np.lexsort((j, i, d))
    i, j, d = i[o], j[o], d[o]
    n = len(i)
    ends, other, dist = np.r_[i, j], np.r_[j, i], np.r_[d, d]
    order = np.lexsort((other, dist, ends))
    e = ends[order]
    first = np.r_[True, e[1:] != e[:-1]] if len(e) else np.zeros(0, bool)
    run = np.maximum.accumulate(np.where(first, np.arange(2 * n), 0)) if len(e) else np.zeros(0, np.int64)
    rank = np.empty(2 * n, np.int64)
    rank[order] = np.arange(2 * n) - run
    keep = (rank[:n] < k) | (rank[n:] < k)
    return i[keep], j[keep], d[keep]
