"""Low-entropy look-alikes: independent renderings of the same content, and real copies among them.

A small vocabulary of content (3 shapes x 3 places x 2 sizes) is drawn again and again, each time
with its own grey tint and noise: two renderings of the same content look alike (the same pHash,
close thumbnails) without being copies of each other, as grey parts, EL cells or Fashion-MNIST
shoes do. The test split holds new renderings plus copies (JPEG re-encodes, resizes) of training
images: the leakage check must flag the copies and leave the look-alikes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "block", "wedge")
PLACES = ((0.35, 0.35), (0.5, 0.5), (0.65, 0.6))
SIZES = (0.18, 0.26)


def rendering(shape: str, place: int, size: int, rng: np.random.Generator, side: int = 64) -> Image.Image:
    """One rendering: the content fixed by (shape, place, size), the tint, background and noise drawn anew."""
    s = side * 4
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    (cx, cy), r = (v * s for v in PLACES[place]), SIZES[size] * s
    if shape == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "block":
        draw.rectangle([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=255)
    else:
        draw.polygon([(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)], fill=255)
    m = np.asarray(mask.resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255.0
    fg, bg = rng.uniform(140, 190), rng.uniform(30, 55)
    img = bg * (1 - m) + fg * m + rng.normal(0, 6, (side, side))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")


def rendering_split(root: Path, n_train: int = 270, n_test: int = 135, n_copies: int = 12,
                    seed: int = 0) -> tuple[Path, Path, dict[str, str]]:
    """train/ and test/ ImageFolders (class = shape) of independent renderings, plus ``n_copies`` copies of
    training images in test/ (JPEG quality 60-90 or a resize, in turn). Returns (train, test, copies: test
    path -> training original)."""
    rng = np.random.default_rng(seed)
    train, test = root / "train", root / "test"
    for d in (train, test):
        for shape in SHAPES:
            (d / shape).mkdir(parents=True, exist_ok=True)
    originals = []
    for split, n in ((train, n_train), (test, n_test)):
        for k in range(n):
            shape, place, size = SHAPES[k % 3], int(rng.integers(0, 3)), int(rng.integers(0, 2))
            rel = f"{shape}/{k:04d}.png"
            img = rendering(shape, place, size, rng)
            img.save(split / rel)
            if split is train:
                originals.append((rel, img))
    copies = {}
    for c, k in enumerate(rng.choice(len(originals), n_copies, replace=False)):
        rel, img = originals[k]
        shape = rel.split("/")[0]
        if c % 2:
            f = rng.uniform(1.25, 1.5)
            name = f"copy_{c:02d}.png"
            img.resize((round(64 * f), round(64 * f)), Image.Resampling.BICUBIC).save(test / shape / name)
        else:
            name = f"copy_{c:02d}.jpg"
            img.save(test / shape / name, quality=int(rng.integers(60, 91)))
        copies[f"{shape}/{name}"] = rel
    return train, test, copies
