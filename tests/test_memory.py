"""Memory that must not grow with N beyond a few bytes a row, and the leaner paths agree with numpy's plain ones.

Memory is measured with tracemalloc (numpy reports its buffers to it), never with a clock.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from audit.discovery import DiscoveryParams, fit_mixture
from audit.duplicate_sets import Digests
from audit.predictions import HexDigests
from audit.stats import unique_codes

pytestmark = pytest.mark.fast


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_assigning_every_row_keeps_no_chunk_of_likelihoods():
    rng = np.random.default_rng(0)
    n, d, k = 200_000, 8, 20
    y = rng.integers(0, 5, n)
    z = rng.standard_normal((n, d)).astype(np.float32)
    mix = fit_mixture(z[:2000], y[:2000], rng.random(2000) < 0.2, k, 5, DiscoveryParams(max_iter=5), seed=0)
    (first, second), peak = _peak(lambda: mix.assign(z, y, second=True))
    ll = mix.log_likelihood(z[:5000].astype(np.float64), y[:5000])
    order = np.argsort(-ll, axis=1)
    assert np.array_equal(first[:5000], order[:, 0]) and np.array_equal(second[:5000], order[:, 1])
    # the answer is 2 x 8 bytes a row (3.2 MB); a view per chunk kept every chunk's (rows, k) argsort: 32 MB more
    assert peak < 2 * 8 * n + 8 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_digests_group_like_numpy_unique_at_a_third_of_the_memory():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (100_000, 32), dtype=np.uint8)
    raw[50_000:60_000] = raw[:10_000]  # 10,000 copies
    raw[70_000, :8] = raw[3, :8]  # the same first 8 bytes, different digest: must stay apart
    d, peak = _peak(lambda: Digests.of(HexDigests(raw)))
    _, first, inverse, counts = np.unique(raw.view("V32").ravel(), return_index=True, return_inverse=True,
                                          return_counts=True)
    assert np.array_equal(np.sort(d.first), np.sort(first))
    assert np.array_equal(np.sort(d.counts), np.sort(counts))
    assert np.array_equal(d.first[d.inverse], first[inverse])  # each row's group, named by its first row
    assert peak < 60 * len(raw), f"{peak / len(raw):.0f} bytes a row"  # lexsort of the four words took 115


@pytest.mark.parametrize("space", [16, 10**7])
def test_unique_codes_is_numpy_unique(space):
    key = np.random.default_rng(2).integers(0, space, 50_000)
    present, inverse = unique_codes(key, space)
    want, want_inverse = np.unique(key, return_inverse=True)
    assert np.array_equal(present, want) and np.array_equal(inverse, want_inverse) and inverse.dtype == np.int32


def test_digests_on_disk_are_grouped_without_holding_them():
    """An inference pass writes the digests to a RowStore: grouping reads them a chunk at a time and keeps the
    groups (int32 row numbers), never the 32 bytes a row."""
    from audit.rowstore import RowStore

    rng = np.random.default_rng(4)
    n = 200_000
    with RowStore((32,)) as store:
        for lo in range(0, n, 10_000):
            store.append(rng.integers(0, 256, (10_000, 32), dtype=np.uint8))
        tracemalloc.start()
        try:
            d = Digests.of(HexDigests(store))
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(d.counts) == n and np.array_equal(np.sort(d.first), np.arange(n))
        assert held < 16 * n, f"{held / n:.0f} bytes a row held"  # inverse, first and counts: 12 bytes a row
        assert peak < 40 * n, f"{peak / n:.0f} bytes a row at the peak"  # the sort: key, order, sorted key
