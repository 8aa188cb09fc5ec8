"""Decoding and preprocessing, shared by the audit and the server so both see the same tensor.

``decode`` turns bytes or a path into an RGB/L Pillow image or raises ``ImageRejected`` with a
short reason (empty, not an image, truncated, too many pixels). ``to_tensor`` applies a
``Preprocess``; ``properties`` measures the image for slicing (brightness, contrast, sharpness,
ink coverage).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from audit import resample
from audit.preprocess import Preprocess

DEFAULT_MAX_PIXELS = 64_000_000  # a 8000x8000 photo decodes; a 20000x20000 header does not
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# The one allow-list of image formats, for the audit and the server alike: Pillow also opens EPS (which runs
# Ghostscript where it is installed), PSD, FITS and more, which neither has a reason to parse. PPM covers PGM/PBM.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Decode threads when none are asked for: one per core but one (left to ONNX Runtime and the calling
    thread), at least 1, at most 8. On an idle 2-core machine one decode thread, each batch's vectorised steps
    in it too, was the fastest placement measured (``benchmarks/inference_vs_floor.py``, 2026-12-06: 1.28x the
    floor, against 1.66x with the vectorised steps on the calling thread and 1.92x for two decode threads, which
    oversubscribe the cores)."""
    return max(1, min(8, cpu_count() - 1))


class ImageRejected(Exception):
    """An input that is not a usable image; ``reason`` is a short phrase for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = FORMATS  # Pillow format names that may be decoded


def sniff_format(data: bytes) -> str | None:
    """The Pillow format whose signature ``data`` starts with, by each plugin's prefix test only (no plugin
    parses the bytes); None when none matches."""
    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        with contextlib.suppress(Exception):
            if accept is not None and accept(prefix):
                return name
    return None


def open_image(data: bytes, formats: tuple[str, ...] = FORMATS) -> Image.Image:
    """``Image.open`` restricted to ``formats``; a file of another format raises ``ImageRejected`` naming it."""
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except Image.UnidentifiedImageError:
        other = sniff_format(data)
        if other is not None and other not in formats:
            raise ImageRejected(f"image format {other} is not allowed (allowed: {', '.join(formats)})") from None
        raise


GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def decode(data: bytes, color: str | None, limits: Limits = Limits()) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``data`` to a Pillow image in mode ``color`` ("RGB" or "L"; None: "L" for grey files, else "RGB").

    ``decode(data, None)[0].convert(color)`` gives the same pixels as ``decode(data, color)``
    (tested for every mode the audit reads), so one decode serves the colour thumbnail and the model.

    Returns the image and its original (width, height). The header is checked against
    ``limits.max_pixels`` before any pixel is decoded (decompression bombs never allocate).
    """
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"file too large ({len(data):,} bytes > {limits.max_bytes:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = open_image(data, limits.formats)
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ImageRejected(f"too many pixels ({w}x{h} > {limits.max_pixels:,}): possible decompression bomb")
            img.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected("too many pixels: possible decompression bomb") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).lower()
        if "truncated" in msg or "broken data stream" in msg or "premature end" in msg:
            raise ImageRejected("truncated image") from None
        raise ImageRejected(f"undecodable image ({str(e).splitlines()[0][:80]})") from None
    if "exif" in img.info or img.format in ("JPEG", "MPO", "TIFF", "WEBP"):  # PNG/BMP rarely carry EXIF
        img = ImageOps.exif_transpose(img)
    return _to_mode(img, color), (w, h)


def _to_mode(img: Image.Image, color: str | None) -> Image.Image:
    if color is None:
        color = "L" if img.mode in GREY_MODES else "RGB"
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the type's range, not by clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency over white, as a viewer would show it.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert(color) if img.mode != color else img


def resize(img: Image.Image, pre: Preprocess) -> Image.Image:
    """Resize (and centre-crop) a decoded image to ``pre.size``."""
    h, w = pre.size
    resample = _RESAMPLE[pre.interpolation]
    if pre.resize == "resize":
        return img.resize((w, h), resample) if img.size != (w, h) else img
    # Scale the shorter side to size / crop_pct, then take the centre size x size.
    scale_h, scale_w = h / pre.crop_pct, w / pre.crop_pct
    iw, ih = img.size
    s = max(scale_h / ih, scale_w / iw)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    img = img.resize((nw, nh), resample)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))


def to_tensor(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """A resized image as one float32 model input (C,H,W or H,W,C per ``pre.layout``)."""
    return batch_tensor(np.asarray(img)[None], pre)[0]


def batch_tensor(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Resized uint8 images (B, H, W) or (B, H, W, C) as one float32 model input batch, normalised per channel."""
    arr = pixels.astype(np.float32) * (1.0 / 255.0)
    if arr.ndim == 3:
        arr = arr[..., None]
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2) if pre.layout == "NCHW" else arr)


def preprocess(data: bytes, pre: Preprocess, limits: Limits = Limits()) -> np.ndarray:
    """Bytes to one model input tensor: decode, resize, normalise."""
    img, _ = decode(data, pre.color, limits)
    return to_tensor(resize(img, pre), pre)


PROPERTY_NAMES = ("brightness", "contrast", "sharpness", "ink_coverage", "aspect_ratio", "resolution")
# the pixel statistics are computed in float32 and kept so (16 bytes an image fewer at scale); the two that
# describe the file stay float64 (a 20-megapixel count is not exact in float32)
PROPERTY_DTYPES = {"brightness": np.float32, "contrast": np.float32, "sharpness": np.float32,
                   "ink_coverage": np.float32, "aspect_ratio": np.float64, "resolution": np.float64}


PHASH_INPUT = 32  # pHash: DCT of a 32x32 grey image, 8x8 low frequencies (imagehash's defaults)


def phash_input(img: Image.Image) -> np.ndarray:
    """The 32x32 grey pixels a perceptual hash is computed from (as ``imagehash.phash``)."""
    return np.asarray(phash_image(img))


def phash_source(img: Image.Image) -> np.ndarray:
    """What ``phash_inputs`` makes the pHash input from: the grey pixels of a small image (resized later with its
    batch, ``audit.resample``), the 32x32 input itself (resized now by Pillow) for a large one."""
    g = img if img.mode == "L" else img.convert("L")
    if not resample.batched_ok(g.height, g.width):
        return np.asarray(phash_image(g))
    return np.frombuffer(g.tobytes(), np.uint8).reshape(g.height, g.width)  # half of ``np.asarray``'s cost


def phash_inputs(sources: Sequence[np.ndarray]) -> np.ndarray:
    """(B, 32, 32) uint8 pHash inputs (``phash_input``) of a batch of ``phash_source`` arrays: the images of each
    small size resized together, equal to Pillow's resize of each (``audit.resample``) at a tenth of its cost."""
    side = PHASH_INPUT
    out = np.empty((len(sources), side, side), np.uint8)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(sources):
        by_shape.setdefault(a.shape, []).append(i)
    for shape, rows in by_shape.items():
        stack = np.stack([sources[i] for i in rows])
        out[rows] = stack if shape == (side, side) else resample.lanczos_l(stack, (side, side))
    return out


def phash_image(img: Image.Image) -> Image.Image:
    """``phash_input`` as a Pillow image."""
    g = img if img.mode == "L" else img.convert("L")
    return g.resize((PHASH_INPUT, PHASH_INPUT), Image.Resampling.LANCZOS)


def batch_phash(pixels: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes of a batch of ``phash_input`` arrays (B, 32, 32), as uint64.

    ``imagehash.phash``: the 8x8 lowest frequencies of the 2-D DCT-II (scipy's unnormalised
    convention) compared with their median, bits packed row-major, most significant first. The DCT
    is two small matrix products instead of scipy's FFT (importing scipy cost more CPU than the
    rest of a small audit's imports); coefficients are compared after rounding to 1e-9 of their
    largest, so coefficients that tie exactly (flat or symmetric images) tie whatever the rounding
    noise. Tested equal to ``imagehash.phash`` on photos, patterns, flat and symmetric images.
    """
    if len(pixels) == 0:
        return np.zeros(0, np.uint64)
    basis = _dct_basis()
    coeffs = (basis @ pixels.astype(np.float64) @ basis.T).reshape(len(pixels), 64)
    scale = np.maximum(np.abs(coeffs).max(axis=1, keepdims=True), np.finfo(float).tiny)
    coeffs = np.round(coeffs / scale, 9)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


@functools.cache
def _dct_basis(n: int = PHASH_INPUT, k: int = 8) -> np.ndarray:
    """(k, n): row f is 2 cos(pi f (2i + 1) / 2n), so ``basis @ x`` is the DCT-II of x's first k frequencies."""
    i = np.arange(n)
    return 2 * np.cos(np.pi * np.arange(k)[:, None] * (2 * i[None, :] + 1) / (2 * n))


def grey(img: Image.Image) -> np.ndarray:
    """The resized image as uint8 grey levels, the input of ``batch_properties``."""
    return np.asarray(img if img.mode == "L" else img.convert("L"))


def batch_properties(greys: np.ndarray, original_sizes: np.ndarray) -> dict[str, np.ndarray]:
    """Image properties used for slicing, for a batch of resized grey images (B, H, W) at once.

    brightness and contrast are the mean and standard deviation of grey levels in [0, 1];
    sharpness is the variance of a 4-neighbour Laplacian (low = blurry); ink_coverage is the
    fraction of pixels more than 0.2 away from the border's median grey (object area);
    aspect_ratio and resolution describe the original file (width / height, width x height).
    """
    g = greys.astype(np.float32) * (1.0 / 255.0)
    b = len(g)
    flat = g.reshape(b, -1)
    if min(g.shape[1:]) > 2:
        lap = -4 * g[:, 1:-1, 1:-1] + g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]
        sharpness = lap.reshape(b, -1).var(axis=1)
    else:
        sharpness = np.zeros(b, np.float32)
    border = np.concatenate([g[:, 0], g[:, -1], g[:, :, 0], g[:, :, -1]], axis=1)
    background = np.median(border, axis=1)
    w, h = original_sizes[:, 0].astype(float), original_sizes[:, 1].astype(float)
    return {
        "brightness": flat.mean(axis=1),
        "contrast": flat.std(axis=1),
        "sharpness": sharpness,
        "ink_coverage": (np.abs(flat - background[:, None]) > 0.2).mean(axis=1, dtype=np.float32),
        "aspect_ratio": np.divide(w, h, out=np.zeros(b), where=h > 0),
        "resolution": w * h,
    }
