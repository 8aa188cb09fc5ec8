"""audit.resample.lanczos_l gives exactly the bytes of Pillow's LANCZOS resize of each "L" image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from audit import resample
from audit.resample import batched_ok, lanczos_l

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

LANCZOS = Image.Resampling.LANCZOS


def pillow(greys: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = [np.asarray(Image.fromarray(g, "L").resize(size, LANCZOS)) for g in greys]
    return np.stack(out) if out else np.zeros((0, size[1], size[0]), np.uint8)


def kinds(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(8, h, w) uint8: noise, a gradient, a constant, and 0/255 patterns whose ringing is clipped at both ends."""
    y, x = np.ogrid[0:h, 0:w]
    a = rng.uniform(0, 255)
    frame = np.full((h, w), 255)
    frame[1:-1, 1:-1] = 0
    return np.stack([
        rng.integers(0, 256, (h, w)),
        np.rint(x / max(w - 1, 1) * a + y / max(h - 1, 1) * (255 - a)),
        np.full((h, w), rng.integers(0, 256)),
        (rng.random((h, w)) < 0.5) * 255,
        (x + y) % 2 * 255,
        np.broadcast_to(np.where(x < w // 2, 0, 255) if rng.random() < 0.5 else np.where(y < h // 2, 255, 0), (h, w)),
        frame,
        np.clip(rng.normal(128, 200, (h, w)), 0, 255),  # mostly saturated
    ]).astype(np.uint8)


def assert_as_pillow(greys: np.ndarray, size: tuple[int, int] = (32, 32)) -> None:
    out = lanczos_l(greys, size)
    assert out.dtype == np.uint8 and out.shape == (len(greys), size[1], size[0])
    np.testing.assert_array_equal(out, pillow(greys, size), err_msg=f"{greys.shape[1:]} -> {size}")


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (1, 200), (9, 1), (200, 1), (2, 17), (17, 2), (28, 28), (32, 32),
                                  (31, 33), (33, 31), (64, 64), (100, 37), (37, 100), (32, 100), (100, 32), (256, 64),
                                  (64, 256), (224, 224), (255, 256)])
def test_sizes_that_matter(h, w):
    assert_as_pillow(kinds(np.random.default_rng(h * 1000 + w), h, w))


@pytest.mark.parametrize("size", [(16, 16), (8, 40), (40, 8), (1, 1), (1, 32), (64, 64), (32, 28), (100, 3)])
def test_other_output_sizes(size):
    rng = np.random.default_rng(sum(size))
    for h, w in [(1, 1), (5, 3), (28, 28), (32, 32), (64, 48), (41, 9), (size[1], 70), (90, size[0])]:
        assert_as_pillow(kinds(rng, h, w), size)


def test_a_thousand_random_sizes():
    rng = np.random.default_rng(0)
    for i in range(1000):
        h, w = (int(n) for n in rng.integers(1, 257, 2))
        size = (32, 32) if i % 10 else tuple(int(n) for n in rng.integers(1, 65, 2))
        assert_as_pillow(kinds(rng, h, w)[rng.permutation(8)[:3]], size)


def test_the_pass_order_either_side_of_pillows_switch():
    """Pillow 13 resizes vertically first when the height shrinks by more than twice as many pixels as the width."""
    rng = np.random.default_rng(1)
    for size in [(32, 32), (8, 40)]:
        for h in range(size[1] + 1, size[1] + 60, 3):
            for w in {max(1, (h - size[1]) // 2 + size[0] + d) for d in (-1, 0, 1)}:
                assert_as_pillow(rng.integers(0, 256, (2, h, w), dtype=np.uint8), size)


def test_the_same_size_is_a_copy():
    greys = kinds(np.random.default_rng(2), 32, 32)
    out = lanczos_l(greys)
    np.testing.assert_array_equal(out, greys)
    assert not np.shares_memory(out, greys)


def test_an_empty_batch():
    for size in [(32, 32), (8, 40)]:
        out = lanczos_l(np.zeros((0, 28, 28), np.uint8), size)
        assert out.shape == (0, size[1], size[0]) and out.dtype == np.uint8


def test_batches_split_into_chunks_and_strided_input(monkeypatch):
    greys = np.random.default_rng(3).integers(0, 256, (45, 56, 60), dtype=np.uint8)[:, ::2, 1::2]  # 28x30, strided
    want = pillow(greys, (32, 32))
    np.testing.assert_array_equal(lanczos_l(greys), want)  # 16 images a chunk
    monkeypatch.setattr(resample, "CHUNK_PIXELS", 1)  # one image a chunk
    np.testing.assert_array_equal(lanczos_l(greys), want)


def test_the_float64_sums_are_exact_and_pillows_int32_sums_never_overflow():
    """Every weight is an integer over 2**22, and 255 x the sum of a column's |weights| (a bound on any partial sum,
    in any order) stays below 2**31: Pillow's C int never overflows, and float64 holds every partial sum exactly."""
    one = 1 << resample.PRECISION_BITS
    biggest = 0.0
    for n_in in range(1, 257):
        for n_out in (1, 3, 16, 32, 40, 64):
            k = resample._weights(n_in, n_out) * one
            assert np.array_equal(k, np.rint(k))
            biggest = max(biggest, float(np.abs(k).sum(0).max()))
    assert 255 * biggest + (1 << 21) < 2**31


def test_batched_ok():
    assert batched_ok(28, 28) and batched_ok(64, 64) and batched_ok(128, 128) and batched_ok(1, 1)
    assert batched_ok(28, 28, (64, 64))
    assert not batched_ok(224, 224) and not batched_ok(512, 512) and not batched_ok(0, 28)


@pytest.mark.parametrize("greys, size", [
    (np.zeros((2, 8, 8), np.float32), (4, 4)),  # not uint8
    (np.zeros((8, 8), np.uint8), (4, 4)),  # not a batch
    (np.zeros((2, 0, 8), np.uint8), (4, 4)),
    (np.zeros((2, 8, 8), np.uint8), (0, 4)),
])
def test_rejects_what_it_cannot_resize(greys, size):
    with pytest.raises(ValueError):
        lanczos_l(greys, size)
