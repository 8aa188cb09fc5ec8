"""Label invariance (DESIGN §6.4): do predictions survive label-preserving transforms?

The model is re-run on transformed copies of (a seeded sample of) the test images at graded
severities, through the same batched, threaded inference path as the audit itself
(``audit.inference.predict(..., transform=...)``; the transform acts on the decoded image,
before resizing). Per transform and severity: the *flip rate* (share of images whose top-1
prediction changes) and the *accuracy drop* (accuracy on the originals minus on the copies),
overall and per true class, with bootstrap CIs.

Which transforms run: ``invariance.transforms`` from the config, else the model card's
``audit.invariances``, else ``DEFAULT_TRANSFORMS``; minus ``invariance.exclude`` (e.g. a
vertical flip is not label-preserving for digits). ``none`` is a no-op, a sanity check.

Example::

    res = invariance(clf, samples, preds, InvarianceConfig(transforms=("hflip", "rotate")))
    res.runs[0].flip_rate.value
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from audit import imaging
from audit.config import InvarianceConfig
from audit.data import Sample
from audit.errors import ConfigError
from audit.inference import Predictions, predict
from audit.stats import Estimate, bootstrap, bootstrap_many
from audit.verdict import Criterion, judge


def _rotate(img: Image.Image, degrees: float) -> Image.Image:
    fill = _border_fill(img)
    return img.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def _border_fill(img: Image.Image):
    # Fill uncovered corners with the border's median, not black, so the copy looks like the data.
    a = np.asarray(img)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    med = np.median(border, axis=0)
    return int(med) if np.ndim(med) == 0 else tuple(int(v) for v in med)


def _crop(img: Image.Image, keep: float) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)


def _noise(img: Image.Image, sigma: float) -> Image.Image:
    # Seeded by the pixels, so a copy is the same whatever thread or order decodes it.
    rng = np.random.default_rng(zlib.crc32(img.tobytes()))
    a = np.asarray(img, dtype=np.float32)
    return Image.fromarray(np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8), img.mode)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert(img.mode)


@dataclass(frozen=True)
class TransformSpec:
    name: str
    describe: str  # with {} for the severity parameter
    params: tuple  # the parameter at severity 1, 2, 3
    fn: Callable[..., Image.Image]

    def at(self, severity: int) -> Callable[[Image.Image], Image.Image]:
        return partial(self.fn, self.params[min(severity, len(self.params)) - 1])

    def severities(self, wanted: Sequence[int]) -> list[int]:
        return sorted({min(s, len(self.params)) for s in wanted})


TRANSFORMS: dict[str, TransformSpec] = {t.name: t for t in (
    TransformSpec("none", "no change", (None,), lambda _, img: img),
    TransformSpec("hflip", "horizontal flip", (None,), lambda _, img: ImageOps.mirror(img)),
    TransformSpec("vflip", "vertical flip", (None,), lambda _, img: ImageOps.flip(img)),
    TransformSpec("rotate", "rotate {}°", (5, 10, 20), lambda d, img: _rotate(img, d)),
    TransformSpec("crop", "centre crop to {:.0%} and resize back", (0.95, 0.9, 0.8), lambda k, img: _crop(img, k)),
    TransformSpec("brightness", "brightness x{}", (0.9, 0.75, 0.5),
                  lambda f, img: ImageEnhance.Brightness(img).enhance(f)),
    TransformSpec("contrast", "contrast x{}", (0.9, 0.75, 0.5), lambda f, img: ImageEnhance.Contrast(img).enhance(f)),
    TransformSpec("blur", "Gaussian blur radius {} px", (0.5, 1.0, 2.0),
                  lambda r, img: img.filter(ImageFilter.GaussianBlur(r))),
    TransformSpec("noise", "Gaussian noise sigma {}/255", (4, 8, 16), lambda s, img: _noise(img, s)),
    TransformSpec("jpeg", "JPEG quality {}", (90, 70, 40), lambda q, img: _jpeg(img, q)),
)}
DEFAULT_TRANSFORMS = ("hflip", "rotate", "crop", "brightness", "blur")  # 9 re-runs at severities (1, 3)


@dataclass(frozen=True)
class ClassFlips:
    label: str
    n: int
    flip_rate: float
    accuracy_drop: float


@dataclass(frozen=True)
class InvarianceRun:
    transform: str
    severity: int
    description: str
    n: int
    flip_rate: Estimate
    accuracy: Estimate  # on the transformed copies
    accuracy_drop: Estimate  # accuracy on originals minus on copies (positive = worse)
    per_class: tuple[ClassFlips, ...]
    flipped: tuple[str, ...] = ()  # a few paths whose prediction changed

    def to_dict(self) -> dict:
        return {"transform": self.transform, "severity": self.severity, "description": self.description,
                "n": self.n, "flip_rate": self.flip_rate.to_dict(), "accuracy": self.accuracy.to_dict(),
                "accuracy_drop": self.accuracy_drop.to_dict(),
                "per_class": {c.label: {"n": c.n, "flip_rate": _num(c.flip_rate), "accuracy_drop": _num(c.accuracy_drop)}
                              for c in self.per_class}}


@dataclass(frozen=True)
class InvarianceResult:
    source: str  # where the transform list came from: "config", "model card" or "default"
    n_images: int  # images re-run per transform (a seeded sample)
    n_total: int
    accuracy: Estimate  # on the sampled originals
    runs: tuple[InvarianceRun, ...]
    excluded: tuple[str, ...]
    unknown: tuple[str, ...]  # names in the card that this audit does not implement

    def worst(self, transform: str) -> InvarianceRun:
        return max((r for r in self.runs if r.transform == transform), key=lambda r: r.flip_rate.value)

    @property
    def transforms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.transform for r in self.runs))

    def to_dict(self) -> dict:
        return {"source": self.source, "n_images": self.n_images, "n_total": self.n_total,
                "accuracy": self.accuracy.to_dict(), "excluded": list(self.excluded), "unknown": list(self.unknown),
                "runs": [r.to_dict() for r in self.runs]}


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def choose_transforms(config: InvarianceConfig, card_invariances: Sequence[str]) -> tuple[list[str], str, list[str]]:
    """(transforms to run, where the list came from, unknown names from the card)."""
    bad = [t for t in (*config.transforms, *config.exclude) if t not in TRANSFORMS]
    if bad:
        raise ConfigError(f"unknown invariance transform {bad[0]!r}", hint=f"known: {', '.join(TRANSFORMS)}")
    if config.transforms:
        names, source, unknown = list(config.transforms), "config", []
    elif card_invariances:
        names = [t for t in card_invariances if t in TRANSFORMS]
        unknown = [t for t in card_invariances if t not in TRANSFORMS]
        source = "model card"
    else:
        names, source, unknown = list(DEFAULT_TRANSFORMS), "default", []
    return [t for t in dict.fromkeys(names) if t not in config.exclude], source, unknown


def invariance(
    clf, samples: Sequence[Sample], preds: Predictions, config: InvarianceConfig, *, batch_size: int = 64,
    workers: int = 0, limits: imaging.Limits = imaging.Limits(), n_boot: int = 1000, seed: int = 0,
    max_flipped: int = 8,
) -> InvarianceResult:
    """Re-run ``clf`` on transformed copies of ``samples`` (those in ``preds``) and compare with ``preds``."""
    names, source, unknown = choose_transforms(config, clf.card.invariances)
    row = {p: i for i, p in enumerate(preds.paths)}
    usable = [s for s in samples if s.path in row]
    if config.max_images and len(usable) > config.max_images:
        pick = np.sort(np.random.default_rng(seed).choice(len(usable), config.max_images, replace=False))
        usable = [usable[i] for i in pick]
    rows = np.array([row[s.path] for s in usable], dtype=np.int64)
    y, base = preds.y_true[rows], preds.y_pred[rows]
    base_ok = (base == y).astype(float)
    n = len(rows)
    runs = []
    for name in names:
        spec = TRANSFORMS[name]
        for sev in spec.severities(config.severities):
            p2, rejected = predict(clf, usable, batch_size=batch_size, workers=workers, limits=limits,
                                   transform=spec.at(sev), progress=False)
            runs.append(_compare(spec, sev, usable, y, base, base_ok, p2, preds.labels, n_boot, seed, max_flipped))
    acc = bootstrap(lambda idx: base_ok[idx].mean(axis=1), n, n_boot=n_boot, seed=seed) if n else Estimate(
        math.nan, math.nan, math.nan)
    excluded = tuple(t for t in config.exclude)
    return InvarianceResult(source, n, len(preds), acc, tuple(runs), excluded, tuple(unknown))


def _compare(spec, sev, usable, y, base, base_ok, p2: Predictions, labels, n_boot, seed, max_flipped) -> InvarianceRun:
    # A transform can make an image undecodable only in theory; keep the rows both runs have.
    if len(p2) != len(usable):
        keep = {p: i for i, p in enumerate(p2.paths)}
        sel = np.array([i for i, s in enumerate(usable) if s.path in keep])
        y, base, base_ok = y[sel], base[sel], base_ok[sel]
        new = p2.y_pred[[keep[usable[i].path] for i in sel]]
        paths = [usable[i].path for i in sel]
    else:
        new, paths = p2.y_pred, [s.path for s in usable]
    flips = (new != base).astype(float)
    new_ok = (new == y).astype(float)
    n = len(flips)
    stats = np.column_stack([flips, new_ok, base_ok - new_ok])
    ests = bootstrap_many(lambda idx: stats[idx].mean(axis=1), n, n_boot=n_boot, seed=seed) if n else [
        Estimate(math.nan, math.nan, math.nan)] * 3
    per_class = []
    for ci, lab in enumerate(labels):
        m = y == ci
        if m.any():
            per_class.append(ClassFlips(lab, int(m.sum()), float(flips[m].mean()), float((base_ok - new_ok)[m].mean())))
    param = spec.params[min(sev, len(spec.params)) - 1]
    return InvarianceRun(
        transform=spec.name, severity=sev, description=spec.describe.format(param), n=n,
        flip_rate=ests[0], accuracy=ests[1], accuracy_drop=ests[2], per_class=tuple(per_class),
        flipped=tuple(paths[i] for i in np.flatnonzero(flips)[:max_flipped]),
    )


def invariance_criteria(res: InvarianceResult, config: InvarianceConfig, judge_on: str = "value") -> list[Criterion]:
    """Per transform: the flip rate at its worst severity run must not exceed the maximum."""
    out = []
    # Judge only invariances somebody claimed (the card or the config); the default set is evidence, not a contract.
    judged = res.source != "default"
    for t in res.transforms:
        worst = res.worst(t)
        limit = getattr(config.max_flip_rate_by, t)
        limit = config.max_flip_rate if limit is None else limit
        out.append(judge(f"invariance.{t}", f"Flip rate under {t} (worst severity)", worst.flip_rate, "<=", limit,
                         judge_on=judge_on,
                         detail=("" if judged else "not judged: neither the model card nor the config declares "
                                 "invariances; ") + f"worst severity: {worst.description}; accuracy drop "
                                f"{worst.accuracy_drop.value:+.3f} on {worst.n} images", judged=judged))
    return out
