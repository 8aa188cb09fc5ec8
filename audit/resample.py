"""Pillow's LANCZOS resize of greyscale images, bit for bit, for a whole batch at once.

``Image.fromarray(g, "L").resize(size, Image.Resampling.LANCZOS)`` costs tens of microseconds a call, most of it
per-call overhead when the image is as small as 28x28. :func:`lanczos_l` gives the same bytes for a stack of
same-size images in one go by reproducing Pillow's fixed-point arithmetic (``libImaging/Resample.c``, 8 bits a
sample) with float64 matrix products:

* The filter weights of each output pixel are computed as ``precompute_coeffs`` does (same formulas, same order of
  operations, same libm ``sin``), then rounded to integers with 22 fractional bits as ``normalize_coeffs_8bpc`` does.
* Each pass is ``clip8((2**21 + sum(pixel * weight)) >> 22)``, its result stored as 8 bits before the next pass.
  Here the weights are stored divided by 2**22, which is exact, and every product and partial sum is a multiple of
  2**-22 below 2**31 in magnitude: float64 holds them all exactly, so BLAS returns Pillow's exact sum whatever its
  order of summation, and ``floor(sum + 0.5)`` is the arithmetic shift.
* The passes run in Pillow's order: a dimension that keeps its size is not resampled at all, and the vertical pass
  comes first where Pillow 13 puts it first (:func:`_vertical_first`), horizontal first otherwise.

Use it for small images only (:func:`batched_ok`): the weight matrices are dense, so the work grows with the
product of the input and output sizes, while Pillow's loops only visit the filter's taps. 256 28x28 images take
about 4 µs each to 32x32, against 30 µs each through ``Image.fromarray(...).resize(...)``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import PIL

PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2 for 8-bit samples
BATCHED_MAX_WORK = 1 << 19  # batched_ok: multiply-adds per image in the larger dense product (see there)
# Images per chunk of the batch: CHUNK_PIXELS // (pixels of the larger of input and output). Each float64 temporary
# then stays within 128 KiB, below glibc's mmap threshold; larger ones can be mapped afresh at every call, and their
# page faults then cost more than the arithmetic (28x28 images: 11 µs an image instead of 4).
CHUNK_PIXELS = 1 << 14
_PILLOW_13 = int(PIL.__version__.split(".")[0]) >= 13  # Pillow 13 may run the vertical pass first


def batched_ok(h: int, w: int, out_size: tuple[int, int] = (32, 32)) -> bool:
    """Whether :func:`lanczos_l` is worth it for ``h`` x ``w`` images; resize with Pillow per image otherwise.

    True while each image's dense products stay small: 28x28, 64x64, 128x128 or 256x64 to 32x32, not 224x224. Beyond
    that OpenBLAS splits each product over its threads, which on a busy machine costs more than Pillow's loops
    (measured on 2 cores: 256x256 to 32x32 took 400 µs an image against Pillow's 300; 140 µs with one BLAS thread).
    """
    out_w, out_h = out_size
    return min(h, w, out_w, out_h) > 0 and max(h, out_h) * max(w, out_w) * max(out_h, out_w) <= BATCHED_MAX_WORK


def lanczos_l(greys: np.ndarray, out_size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """(B, H, W) uint8 -> (B, out_h, out_w) uint8, equal to Pillow's LANCZOS resize of each image ("L" mode).

    ``out_size`` is ``(out_w, out_h)``, width first, as in ``Image.resize``.
    """
    greys = np.asarray(greys)
    if greys.dtype != np.uint8 or greys.ndim != 3:
        raise ValueError(f"expected a (B, H, W) uint8 array, got {greys.dtype} of shape {greys.shape}")
    b, h, w = greys.shape
    out_w, out_h = (int(n) for n in out_size)
    if min(h, w, out_w, out_h) < 1:
        raise ValueError(f"cannot resize {w}x{h} images to {out_w}x{out_h}")
    if (out_w, out_h) == (w, h):
        return greys.copy()  # as Pillow does
    mw = _weights(w, out_w) if out_w != w else None  # Pillow skips the pass of a dimension that keeps its size
    mh = _weights(h, out_h) if out_h != h else None
    first_v = _vertical_first(h, w, out_h, out_w)
    out = np.empty((b, out_h, out_w), dtype=np.uint8)
    step = max(1, CHUNK_PIXELS // (max(h, out_h) * max(w, out_w)))
    for i in range(0, b, step):
        x = greys[i:i + step].astype(np.float64)
        if first_v:
            x = _horizontal(_vertical(x, mh), mw)
        else:
            x = _vertical(_horizontal(x, mw), mh)
        out[i:i + step] = x
    return out


def _vertical_first(h: int, w: int, out_h: int, out_w: int) -> bool:
    """Whether Pillow resizes ``h`` x ``w`` to ``out_h`` x ``out_w`` by its vertical pass first.

    Pillow 13 does so when the height shrinks by more than twice as many pixels as the width (python-pillow/Pillow
    pull request 9549; the rule here is read off Pillow 13.0.0's output); earlier Pillow always goes horizontal first.
    The order changes the result, as each pass rounds to 8 bits.
    """
    return _PILLOW_13 and h > out_h and h - out_h > 2 * (w - out_w)


def _horizontal(x: np.ndarray, m: np.ndarray | None) -> np.ndarray:
    """(B, H, W) -> (B, H, out_w): one Pillow pass along the rows, or none if ``m`` is None."""
    return x if m is None else _round_clip(x @ m)


def _vertical(x: np.ndarray, m: np.ndarray | None) -> np.ndarray:
    """(B, H, W) -> (B, out_h, W): one Pillow pass along the columns, or none if ``m`` is None."""
    return x if m is None else _round_clip(m.T @ x)


def _round_clip(sums: np.ndarray) -> np.ndarray:
    """Resample.c's ``clip8(2**21 + sum)`` for sums already divided by 2**22, in place."""
    sums += 0.5
    np.floor(sums, out=sums)
    return np.clip(sums, 0.0, 255.0, out=sums)


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


@functools.lru_cache(maxsize=256)
def _weights(in_size: int, out_size: int) -> np.ndarray:
    """The (in_size, out_size) matrix of Pillow's integer LANCZOS weights divided by 2**22 (exact in float64)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    inv_filterscale = 1.0 / filterscale
    one = 1 << PRECISION_BITS
    m = np.zeros((in_size, out_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C's cast does
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ks = [_lanczos((x + xmin - center + 0.5) * inv_filterscale) for x in range(xmax)]
        ww = 0.0
        for k in ks:  # C's left-to-right sum: sum() compensates its rounding errors from Python 3.12 on
            ww += k
        if ww != 0.0:
            ks = [k / ww for k in ks]
        for x, k in enumerate(ks):
            m[xmin + x, xx] = int(k * one + (0.5 if k >= 0 else -0.5)) / one
    m.setflags(write=False)
    return m
