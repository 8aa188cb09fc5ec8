"""Packed per-image records (audit.packed.Strings, audit.sources.SampleTable) read back exactly what went in.

The reference is the plain Python tuple of the same items: every read (index, negative index, slice,
step, mask, row numbers, iteration, equality, pickling) must agree with it.
"""

from __future__ import annotations

import pickle
import random
import tracemalloc

import numpy as np
import pytest

from audit.packed import Strings
from audit.sources import DataSource, Sample, SampleTable
from audit.sources.folder import scan_folder

pytestmark = pytest.mark.fast


def _words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcXYZ/._- é漢😀" + "\udc80\udcff"  # lone surrogates: undecodable bytes of a file name (os.scandir)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(n)]


def test_strings_read_back_what_went_in_however_they_are_read():
    ref = _words(500)
    s = Strings.of(ref)
    assert len(s) == len(ref) and list(s) == ref and s.tolist() == ref
    assert all(s[i] == ref[i] for i in range(-len(ref), len(ref)))
    for sl in (slice(0, 0), slice(3, 40), slice(-7, None), slice(None, None, 3), slice(400, 10_000), slice(9, 2)):
        assert s[sl].tolist() == ref[sl], sl
    rows = np.array([5, 0, 5, 499])
    assert s[rows].tolist() == [ref[i] for i in rows]
    mask = np.arange(len(ref)) % 7 == 0
    assert s.take(mask).tolist() == [w for w, m in zip(ref, mask) if m]
    assert s == ref and s == tuple(ref) and s != ref[:-1] and s == Strings.of(iter(ref))
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(IndexError):
        s[len(ref)]


def test_strings_cross_the_packing_chunk(monkeypatch):
    monkeypatch.setattr(Strings, "CHUNK", 7)
    ref = _words(50, seed=1)
    assert Strings.of(ref).tolist() == ref


def test_a_packed_path_costs_its_characters_and_a_4_byte_offset():
    paths = [f"class_{i % 10}/image_{i:07d}.png" for i in range(100_000)]
    s = Strings.of(paths)
    assert s.nbytes == sum(len(p) for p in paths) + 4 * len(paths)  # int32 offsets below 2 GiB of text
    tracemalloc.start()
    try:
        table = SampleTable.of(Sample(p, p.split("/")[0]) for p in paths)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table[12_345] == Sample(paths[12_345], "class_5")
    assert held < 40 * len(paths), f"{held / len(paths):.0f} bytes a sample"  # a tuple of Samples takes ~190


def test_sample_table_reads_like_the_tuple_it_replaces():
    ref = tuple(Sample(p, f"c{i % 3}", (("site", str(i % 2)),) if i % 4 == 0 else ())
                for i, p in enumerate(_words(200, seed=2)))
    t = SampleTable.of(ref)
    assert len(t) == len(ref) and tuple(t) == ref and t == ref
    assert t[-1] == ref[-1] and tuple(t[10:20]) == ref[10:20] and t[10:20].paths.tolist() == [s.path for s in ref[10:20]]
    assert SampleTable.of([]) == () and SampleTable.of([]).attributes is None
    plain = SampleTable.of(Sample(s.path, s.label) for s in ref)
    assert plain.attributes is None and all(s.attributes == () for s in plain)


def test_a_source_packs_its_samples_and_counts_classes_from_the_codes(tmp_path):
    for label, n in (("b", 3), ("a", 2), ("empty", 0)):
        (tmp_path / label).mkdir()
        for i in range(n):
            (tmp_path / label / f"{i}.png").write_bytes(b"x")
    src = scan_folder(tmp_path)
    assert isinstance(src.samples, SampleTable)
    assert [s.path for s in src.samples] == ["a/0.png", "a/1.png", "b/0.png", "b/1.png", "b/2.png"]
    assert src.class_counts == {"a": 2, "b": 3, "empty": 0}
    given = DataSource("ImageFolder", "x", tmp_path, (Sample("a/0.png", "a"),), (), ("a",))
    assert isinstance(given.samples, SampleTable) and given.samples == (Sample("a/0.png", "a"),)
