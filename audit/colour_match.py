"""Colour confirmation of near-duplicate candidates: colour thumbnails, their distance, a disk store for them.

pHash works on grey, so the same shape in another colour has the same hash: a hash match
(``audit.duplicates.near_pairs``) is a candidate, confirmed by ``thumbnail_distance`` on small colour
thumbnails (``colour_thumbnail``) taken in the inference pass and kept on disk (``ThumbnailStore``).
No image file is opened here. ``audit.duplicates`` re-exports the public names.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from audit import imaging
from audit.rowstore import RowStore

LUMA_SIZE, CHROMA_SIZE = imaging.PHASH_INPUT, 16  # grey 32 x 32 (the pHash input), Cb and Cr 16 x 16 (as 4:2:0)
THUMBNAIL_BYTES = LUMA_SIZE**2 + 2 * CHROMA_SIZE**2  # 1,536 bytes an image: 768 MB on disk at 500k
CHROMA_QUANTILE = 0.1  # chroma is judged on the tenth of the thumbnail that differs most
CHROMA_WEIGHT = 0.7  # puts chroma on the luma scale, so one threshold serves both
DEFAULT_MAX_COLOUR_DISTANCE = 8.0  # measured on copies vs colour look-alikes: benchmarks/near_duplicates.py
_PAIRS_AT_ONCE = 4096  # about 40 MB of float32 temporaries


def colour_thumbnail(img: Image.Image, phash_pixels: np.ndarray | None = None) -> np.ndarray:
    """A (1536,) uint8 thumbnail of a decoded image: 32x32 grey levels, then 16x16 (Cb, Cr) pairs.

    The grey part is ``imaging.phash_input`` (pass ``phash_pixels`` when computed), the colour part a
    box-filtered 16x16 YCbCr (128 for grey images). Taken in the inference pass: no file is decoded again.

    >>> t = colour_thumbnail(Image.new("RGB", (40, 30), (200, 10, 10)))
    >>> t.shape, t[0], t[1024:1026].tolist()
    ((1536,), np.uint8(67), [95, 223])
    """
    grey = np.asarray(imaging.phash_input(img) if phash_pixels is None else phash_pixels, np.uint8).ravel()
    return np.concatenate([grey, chroma(img)])


def chroma(img: Image.Image) -> np.ndarray:
    """The colour part of ``colour_thumbnail``: (512,) uint8, a box-filtered 16x16 (Cb, Cr); 128 for grey images."""
    if img.mode == "L":
        return np.full(2 * CHROMA_SIZE**2, 128, np.uint8)
    small = (img if img.mode == "RGB" else img.convert("RGB")).resize((CHROMA_SIZE, CHROMA_SIZE), Image.Resampling.BOX)
    return np.asarray(small.convert("YCbCr"))[..., 1:].ravel()


def colour_differences(ta: np.ndarray, tb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(luma, chroma) differences of thumbnail pairs ``ta[k]``, ``tb[k]`` (P, 1536) uint8, in levels 0-255.

    luma: mean absolute difference of the 32x32 grey levels (the old grey check, unchanged). chroma: how
    far each pixel's Cb, Cr lie outside the range of the other thumbnail's 3x3 neighbourhood (a shifted
    edge mixes colours that are there, a recoloured shape brings new ones), over the worst tenth of pixels.
    """
    return _luma(ta, tb), _chroma(ta, tb)


def _luma(ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    g = LUMA_SIZE**2
    return (np.abs(ta[:, :g].astype(np.int16) - tb[:, :g]).sum(axis=1, dtype=np.int32) / g).astype(np.float32)


def _chroma(ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    ca, cb = (t[:, LUMA_SIZE**2:].reshape(len(t), CHROMA_SIZE, CHROMA_SIZE, 2) for t in (ta, tb))
    return np.maximum(_outside(ca, cb), _outside(cb, ca))


def _outside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over a's worst CHROMA_QUANTILE pixels of the distance to b's local 3x3 [min, max] range."""
    p = np.pad(b, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    lo, hi = _local(np.minimum, p).astype(np.int16), _local(np.maximum, p).astype(np.int16)
    d = np.maximum(np.maximum(a - hi, lo - a), 0)  # int16: uint8 with int16
    d = (d[..., 0] + d[..., 1]).reshape(len(a), CHROMA_SIZE**2)  # Cb + Cr, halved below
    k = max(1, round(d.shape[1] * CHROMA_QUANTILE))
    return np.partition(d, d.shape[1] - k, axis=1)[:, -k:].sum(axis=1, dtype=np.int32) / np.float32(2 * k)


def _local(f, p: np.ndarray) -> np.ndarray:
    r = f(f(p[:, :-2], p[:, 1:-1]), p[:, 2:])  # 3 rows, then 3 columns
    return f(f(r[:, :, :-2], r[:, :, 1:-1]), r[:, :, 2:])


def thumbnail_distance(ta: np.ndarray, tb: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Confirmation distance of many thumbnail pairs at once: max(luma, CHROMA_WEIGHT * chroma), float32.

    At most ``DEFAULT_MAX_COLOUR_DISTANCE``: the same picture (re-encodes, resizes and 2-5% crops stay
    under it; the same shape in another colour does not). Parts: ``colour_differences``. With ``limit``,
    a pair whose luma alone exceeds it skips the chroma part and its distance is that luma (over anyway).

    >>> red, green = (colour_thumbnail(Image.new("RGB", (8, 8), c))[None] for c in ((200, 0, 0), (0, 102, 0)))
    >>> red[0, 0] == green[0, 0], [round(float(thumbnail_distance(red, t)[0]), 1) for t in (red, green)]
    (np.True_, [0.0, 50.0])
    """
    ta, tb = np.asarray(ta), np.asarray(tb)
    if ta.shape != tb.shape or ta.shape[1:] != (THUMBNAIL_BYTES,) or ta.dtype != np.uint8 or tb.dtype != np.uint8:
        raise ValueError(f"ta and tb must be uint8 arrays of shape (pairs, {THUMBNAIL_BYTES}), got {ta.shape} "
                         f"{ta.dtype} and {tb.shape} {tb.dtype}; stack colour_thumbnail() outputs")
    out = np.empty(len(ta), np.float32)
    for s in range(0, len(ta), _PAIRS_AT_ONCE):
        a, b = ta[s:s + _PAIRS_AT_ONCE], tb[s:s + _PAIRS_AT_ONCE]
        dist = _luma(a, b)
        todo = np.flatnonzero(dist <= limit) if limit is not None else np.arange(len(a))
        dist[todo] = np.maximum(dist[todo], CHROMA_WEIGHT * _chroma(a[todo], b[todo]))
        out[s:s + _PAIRS_AT_ONCE] = dist
    return out


def pair_distances(source_a, source_b, i, j, *, limit: float | None = None, chunk: int = 2_048) -> np.ndarray:
    """``thumbnail_distance`` of ``source_a[i[k]]`` and ``source_b[j[k]]``, ``chunk`` pairs at a time.

    Sources are ``ThumbnailStore`` objects or thumbnail arrays; memory is bounded by ``chunk`` (2,048 pairs:
    about 9 MB of thumbnails and their gathers; 8,192 put 45 MB more on the peak at 50,000 images, 65,536
    another 150 MB).
    """
    i, j, out = np.asarray(i), np.asarray(j), np.empty(len(i), np.float32)  # any integer rows, read per chunk
    for s in range(0, len(i), chunk):
        a, b = _rows(source_a, i[s:s + chunk]), _rows(source_b, j[s:s + chunk])
        out[s:s + chunk] = thumbnail_distance(a, b, limit)
    return out


def _rows(source, idx: np.ndarray) -> np.ndarray:
    return source.read(idx) if isinstance(source, ThumbnailStore) else np.asarray(source)[idx]


class ThumbnailStore(RowStore):
    """Colour thumbnails (``THUMBNAIL_BYTES`` a row) on disk, one row per image.

    >>> with ThumbnailStore() as store:
    ...     store.append(np.zeros((3, THUMBNAIL_BYTES), np.uint8)), store.read([2, 0]).shape
    (range(0, 3), (2, 1536))
    """

    def __init__(self, shape: tuple[int, ...] = (THUMBNAIL_BYTES,), *, dir: str | None = None) -> None:
        super().__init__(shape, dir=dir, what="image thumbnails")
