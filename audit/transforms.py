"""Label-preserving image transforms at graded severities (docs/ARCHITECTURE.md §4.3), as picklable callables.

Each transform acts on a decoded Pillow image, before resizing; ``TRANSFORMS[name].at(severity)``
is a ``functools.partial`` of a module-level function, so it can be sent to another process (a
Ray actor) and gives the same pixels there. ``none`` is a no-op, a sanity check.

Example::

    flip = TRANSFORMS["hflip"].at(1)
    copy = flip(img)
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


def _identity(_, img: Image.Image) -> Image.Image:
    return img


def _hflip(_, img: Image.Image) -> Image.Image:
    return ImageOps.mirror(img)


def _vflip(_, img: Image.Image) -> Image.Image:
    return ImageOps.flip(img)


def _rotate(degrees: float, img: Image.Image) -> Image.Image:
    return img.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=_border_fill(img))


def _border_fill(img: Image.Image):
    # Fill uncovered corners with the border's median, not black, so the copy looks like the data.
    a = np.asarray(img)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    med = np.median(border, axis=0)
    return int(med) if np.ndim(med) == 0 else tuple(int(v) for v in med)


def _crop(keep: float, img: Image.Image) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)


def _brightness(factor: float, img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


def _contrast(factor: float, img: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(factor)


def _blur(radius: float, img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def _noise(sigma: float, img: Image.Image) -> Image.Image:
    # Seeded by the pixels, so a copy is the same whatever thread, process or order decodes it.
    rng = np.random.default_rng(zlib.crc32(img.tobytes()))
    a = np.asarray(img, dtype=np.float32)
    return Image.fromarray(np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8), img.mode)


def _jpeg(quality: int, img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert(img.mode)


@dataclass(frozen=True)
class TransformSpec:
    name: str
    describe: str  # with {} for the severity parameter
    params: tuple  # the parameter at severity 1, 2, 3
    fn: Callable[..., Image.Image]  # fn(param, image), module-level (picklable)

    def at(self, severity: int) -> Callable[[Image.Image], Image.Image]:
        return partial(self.fn, self.param(severity))

    def param(self, severity: int):
        return self.params[min(severity, len(self.params)) - 1]

    def severities(self, wanted: Sequence[int]) -> list[int]:
        return sorted({min(s, len(self.params)) for s in wanted})


TRANSFORMS: dict[str, TransformSpec] = {t.name: t for t in (
    TransformSpec("none", "no change", (None,), _identity),
    TransformSpec("hflip", "horizontal flip", (None,), _hflip),
    TransformSpec("vflip", "vertical flip", (None,), _vflip),
    TransformSpec("rotate", "rotate {}°", (5, 10, 20), _rotate),
    TransformSpec("crop", "centre crop to {:.0%} and resize back", (0.95, 0.9, 0.8), _crop),
    TransformSpec("brightness", "brightness x{}", (0.9, 0.75, 0.5), _brightness),
    TransformSpec("contrast", "contrast x{}", (0.9, 0.75, 0.5), _contrast),
    TransformSpec("blur", "Gaussian blur radius {} px", (0.5, 1.0, 2.0), _blur),
    TransformSpec("noise", "Gaussian noise sigma {}/255", (4, 8, 16), _noise),
    TransformSpec("jpeg", "JPEG quality {}", (90, 70, 40), _jpeg),
)}
DEFAULT_TRANSFORMS = ("hflip", "rotate", "crop", "brightness", "blur")  # 9 re-runs at severities (1, 3)
