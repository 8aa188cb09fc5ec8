"""Duplicate pairs kept as groups: the same pairs as an all-pairs search, counted without being built, and memory
that does not grow with the square of a group's size."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from audit.clusters import cluster_ids
from audit.duplicate_sets import Hashes, find_pairs
from audit.duplicates import THUMBNAIL_BYTES, near_pairs, thumbnail_distance

pytestmark = pytest.mark.fast


def hashes(n_distinct: int, repeats, seed: int = 0, near_every: int = 7, tag: str = "t") -> Hashes:
    """``n_distinct`` pictures, picture k repeated ``repeats[k]`` times (same bytes); every ``near_every``-th
    picture is a slightly changed version of the one before (pHash 2 bits away, a close thumbnail)."""
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2 ** 63, n_distinct, dtype=np.uint64)
    thumbs = rng.integers(0, 256, (n_distinct, THUMBNAIL_BYTES), dtype=np.uint8)
    for k in range(1, n_distinct, near_every) if near_every else ():
        phash[k] = phash[k - 1] ^ np.uint64(0b101)
        thumbs[k] = np.clip(thumbs[k - 1].astype(int) + rng.integers(-3, 4, THUMBNAIL_BYTES), 0, 255)
    reps = np.repeat(np.arange(n_distinct), repeats)
    sha = tuple(f"{k:064x}" for k in reps)
    paths = tuple(f"{tag}/{i:06d}.png" for i in range(len(reps)))
    labels = tuple(str(k % 3) for k in reps)
    return Hashes(None, paths, labels, sha, phash[reps], thumbs[reps])


def brute_force(a: Hashes, b: Hashes | None, d: int = 4, limit: float = 8.0) -> set[tuple[str, str, str]]:
    same = b is None
    b = a if same else b
    pairs = itertools.combinations(range(len(a.paths)), 2) if same else \
        itertools.product(range(len(a.paths)), range(len(b.paths)))
    out = set()
    for i, j in pairs:
        if a.sha[i] == b.sha[j]:
            out.add((a.paths[i], b.paths[j], "exact"))
        elif int(a.phash[i] ^ b.phash[j]).bit_count() <= d and \
                thumbnail_distance(a.thumbnails[[i]], b.thumbnails[[j]])[0] <= limit:
            out.add((a.paths[i], b.paths[j], "near"))
    return out


def test_the_pairs_within_a_set_are_those_of_an_all_pairs_search():
    h = hashes(60, np.random.default_rng(1).integers(1, 4, 60))
    found = find_pairs(h)
    expected = brute_force(h, None)
    assert len(found) == len(expected) and 0 < found.n_exact < len(expected)
    assert {(p.a, p.b, p.kind) for p in found.listed(10 ** 6)} == expected
    assert found.duplicated().sum() == len({x for a, b, _ in expected for x in (a, b)})


def test_the_pairs_between_two_sets_are_those_of_an_all_pairs_search():
    test = hashes(40, np.random.default_rng(2).integers(1, 3, 40), tag="test")
    train = hashes(40, np.random.default_rng(3).integers(1, 4, 40), tag="train")  # the same pictures, other counts
    found = find_pairs(test, train, leak=True)
    expected = brute_force(test, train)
    assert len(found) == len(expected) and found.n_exact > 0 and found.n_near > 0
    assert {(p.a, p.b, p.kind) for p in found.listed(10 ** 6)} == expected
    assert all(p.leak for p in found.listed(5))
    assert found.duplicated().sum() == len({a for a, _, _ in expected})


def test_copies_are_counted_per_group_and_only_the_listed_pairs_are_built():
    """10,000 copies of one frame are 49,995,000 pairs: counted, 200 built, one cluster of 10,000 rows."""
    h = hashes(2001, [10_000] + [1] * 2000, near_every=0)
    found = find_pairs(h)
    assert found.n_exact == 10_000 * 9_999 // 2 == len(found)
    listed = found.listed(200)
    assert len(listed) == 200 and all(p.kind == "exact" for p in listed)
    assert found.duplicated().sum() == 10_000
    i, j = found.edges()
    assert len(i) == 9_999
    ids = cluster_ids(len(h.paths), i, j)
    assert len(np.unique(ids)) == 2001 and (ids[:10_000] == ids[0]).all()


def test_near_pairs_of_groups_stand_for_every_pair_of_their_members():
    h = hashes(2, [3, 4], near_every=1)  # picture 1 is near picture 0: 3 x 4 near pairs, 3 + 6 exact
    found = find_pairs(h)
    assert (found.n_exact, found.n_near) == (3 + 6, 12)
    assert len(found.near.i) == 1  # one confirmed pair of representatives
    assert sorted(p.kind for p in found.listed(100)).count("near") == 12
    assert len(np.unique(cluster_ids(7, *found.edges()))) == 1


def test_a_crowd_of_equal_hashes_is_bounded_per_image_and_stays_one_cluster():
    """5,000 frames with one pHash and one thumbnail but other bytes: 12.5 M candidate pairs; each image keeps a
    few, and the crowd is still one duplicate cluster."""
    rng = np.random.default_rng(0)
    n = 5000
    h = Hashes(None, tuple(f"f/{i}.png" for i in range(n)), ("0",) * n, tuple(f"{i:064x}" for i in range(n)),
               np.full(n, 77, np.uint64), np.repeat(rng.integers(0, 256, (1, THUMBNAIL_BYTES), dtype=np.uint8), n, 0))
    found = find_pairs(h)
    assert found.capped and found.candidates == n * (n - 1) // 2
    assert len(found.near.i) <= 64 * n
    assert len(np.unique(cluster_ids(n, *found.edges()))) == 1


def test_near_pairs_per_row_keeps_the_closest_and_no_pair_that_is_not_one():
    rng = np.random.default_rng(4)
    a = np.r_[np.full(1000, 5, np.uint64), rng.integers(0, 2 ** 63, 500, dtype=np.uint64)]
    a[1000:1100] = a[1100:1200] ^ np.uint64(1)
    full, capped = near_pairs(a, None, 4), near_pairs(a, None, 4, per_row=8)
    assert capped.total == full.total and len(capped) < len(full)
    every = set(zip(full.i.tolist(), full.j.tolist()))
    assert set(zip(capped.i.tolist(), capped.j.tolist())) <= every
    assert np.bincount(np.r_[capped.i, capped.j]).max() <= 2 * 8
    assert len(np.unique(cluster_ids(len(a), capped.i, capped.j))) == len(np.unique(cluster_ids(len(a), full.i, full.j)))
    small = near_pairs(a[1000:], None, 4, per_row=64)  # no row over the cap: the plain search's pairs
    plain = near_pairs(a[1000:], None, 4)
    assert np.array_equal(small.i, plain.i) and np.array_equal(small.j, plain.j)


def test_digests_held_as_bytes_read_as_the_hex_strings_and_group_the_same():
    from audit.duplicate_sets import Digests
    from audit.predictions import HexDigests

    hexes = tuple(f"{k % 5:064x}" for k in range(5000))  # more than one block of text at a time
    d = HexDigests.of(hexes)
    assert d.raw.nbytes == 32 * 5000 and len(d) == 5000
    assert list(d) == list(hexes) and d[4999] == hexes[4999] and list(d[10:13]) == list(hexes[10:13])
    assert d == hexes and d != hexes[:-1]
    a, b = Digests.of(d), Digests.of(hexes)
    assert np.array_equal(a.inverse, b.inverse) and np.array_equal(a.counts, b.counts)
    assert np.array_equal(a.keys, b.keys) and a.hashed.all()


def test_digests_on_disk_read_as_the_same_hex_strings_and_group_the_same():
    """An inference pass keeps the digests in a RowStore: every read matches the in-memory digests."""
    from audit.duplicate_sets import Digests
    from audit.predictions import HexDigests
    from audit.rowstore import RowStore

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (9000, 32), dtype=np.uint8)
    raw[5000:] = raw[rng.integers(0, 5000, 4000)]  # copies, and ties on the first 8 bytes
    raw[100, 8:] ^= 1  # the same first word as row 101, different bytes after it: the full sort
    raw[101, :8] = raw[100, :8]
    mem = HexDigests(raw)
    with RowStore((32,)) as store:
        for lo in range(0, len(raw), 700):  # batches, as an inference pass appends them
            store.append(raw[lo:lo + 700])
        disk = HexDigests(store)
        assert len(disk) == len(mem) and list(disk) == list(mem) and disk == mem
        assert disk[-1] == mem[-1] and disk[4097] == mem[4097] and list(disk[4090:4200]) == list(mem[4090:4200])
        assert list(disk[10:20][3:5]) == list(mem[13:15]) and list(disk[::7]) == list(mem[::7])
        rows = rng.integers(0, len(raw), 300)
        assert np.array_equal(disk.take(rows), raw[rows]) and np.array_equal(disk[50:].take([0, 2]), raw[[50, 52]])
        a, b = Digests.of(disk, chunk=1000), Digests.of(mem)
        for f in ("inverse", "counts", "first", "hashed", "keys"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        assert len(a.counts) == len(np.unique(raw, axis=0))
        with pytest.raises(IndexError):
            disk[len(raw)]


def test_a_stored_column_reads_like_the_array_it_replaces():
    """An inference pass keeps each image's pHash on disk (StoredColumn): every way the checks index it."""
    from audit.rowstore import RowStore, StoredColumn

    ref = np.random.default_rng(5).integers(0, 2**63, 5000, dtype=np.uint64)
    with RowStore((8,)) as store:
        for lo in range(0, len(ref), 300):
            store.append(ref[lo:lo + 300].view(np.uint8).reshape(-1, 8))
        col = StoredColumn(store, np.uint64)
        mask = ref % 3 == 0
        rows = np.array([4999, 0, 17, 17, -1], np.int32)
        assert len(col) == len(ref) and col.shape == ref.shape
        assert np.array_equal(np.asarray(col), ref) and np.asarray(col).dtype == np.uint64
        for index in (slice(None), slice(10, 4000), slice(4990, 6000), slice(3, 900, 7), slice(7, 7), mask, rows):
            assert np.array_equal(col[index], ref[index])
        assert col[-2] == ref[-2] and col[12] == ref[12]
        part = col[100:200]
        part ^= np.uint64(1)  # a read is the caller's own array
        assert np.array_equal(col[100:200], ref[100:200])
        with pytest.raises(ValueError, match="needs rows of 4 bytes"):
            StoredColumn(store, np.uint32)


def test_a_row_store_reads_wide_rows_a_megabyte_at_a_time_and_returns_them_in_order():
    from audit.rowstore import RowStore

    rng = np.random.default_rng(6)
    ref = rng.integers(0, 256, (3000, 1536), dtype=np.uint8)  # thumbnails: 682 rows fill one read
    with RowStore((1536,)) as store:
        store.append(ref[:1700])
        store.append(ref[1700:])
        for rows in (np.arange(3000), np.sort(rng.choice(3000, 900, replace=False)), rng.integers(0, 3000, 5000),
                     np.array([2999, 0, 681, 682, 683, 0]), np.zeros(0, np.int64)):
            assert np.array_equal(store.read(rows), ref[rows])
        assert np.array_equal(store.read_range(600, 2100), ref[600:2100])
        with pytest.raises(IndexError):
            store.read([3000])
