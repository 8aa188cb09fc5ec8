"""Small real models and data the tests build: ONNX graphs written with onnx.helper, PNG/JPEG files.

The ONNX models (the colour model and its variants) live in ``builders_models`` and are
re-exported here, so every test calls them as ``builders.colour_model`` and so on.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from builders_models import (  # noqa: F401  (re-exported: tests call builders.<name>)
    COLOURS, MEAN, STD, colour_model, colour_weights, dynamic_size, fp16_model, linear_model, nan_model, perturb_onnx,
    set_metadata, side_model, timm_export,
)


def colour_image(colour: str, size: int = 24, seed: int = 0, noise: float = 20.0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[colour], np.float32)
    arr = np.clip(base + rng.normal(0, noise, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img.convert(mode) if mode != "RGB" else img


def image_folder(
    root: Path, n_per_class: int = 10, *, classes=tuple(COLOURS), metadata: bool = False, seed: int = 0,
    confusers: int = 0,
) -> Path:
    """DIR/<colour>/<i>.png; ``confusers`` images per class are painted another colour (model errors)."""
    rows = []
    for ci, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            painted = classes[(ci + 1) % len(classes)] if i < confusers else cls
            colour_image(painted, seed=seed * 1000 + ci * 100 + i).save(d / f"{i:03d}.png")
            rows.append({"path": f"{cls}/{i:03d}.png", "site": "a" if i % 2 else "b"})
    if metadata:
        with (root / "metadata.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, ["path", "site"])
            w.writeheader()
            w.writerows(rows)
    return root


BRIGHT = {"red": (230, 60, 60), "green": (60, 220, 60), "blue": (70, 110, 250)}  # grey level 0.43 and up


def _dark(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(0.3 * v + 10) for v in rgb)  # grey level 0.22 and below


def sliced_folder(
    root: Path, n_per_class: int = 80, *, weak: str | None = None, base_error: float = 0.05,
    weak_error: float = 0.5, seed: int = 0,
) -> Path:
    """A colour ImageFolder with ``metadata.csv`` (site a-d, camera x/y) and a planted weakness.

    A quarter of each class, picked at random, is darker (brightness is an image property, not a
    column). Errors are images painted another colour than their label: at ``base_error``
    everywhere, and at ``weak_error`` in the weak slice: ``weak="site"`` -> site c,
    ``weak="brightness"`` -> the darker quarter, ``None`` -> nowhere (no slice is truly worse).
    """
    rng = np.random.default_rng(seed)
    classes = tuple(COLOURS)
    rows = []
    for ci, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        darker = rng.permutation(n_per_class) < n_per_class // 4
        for i in range(n_per_class):
            site, camera, dark = "abcd"[rng.integers(4)], "xy"[rng.integers(2)], darker[i]
            in_weak = (weak == "site" and site == "c") or (weak == "brightness" and dark)
            wrong = rng.random() < (weak_error if in_weak else base_error)
            painted = classes[(ci + 1 + rng.integers(2)) % 3] if wrong else cls
            rgb = _dark(BRIGHT[painted]) if dark else BRIGHT[painted]
            noise = rng.normal(0, 10, (24, 24, 3))
            arr = np.clip(np.array(rgb, np.float32) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(d / f"{i:03d}.png")
            rows.append({"path": f"{cls}/{i:03d}.png", "site": site, "camera": camera})
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["path", "site", "camera"])
        w.writeheader()
        w.writerows(rows)
    return root


def predictions(n: int, c: int = 3, *, seed: int = 0, error: float = 0.1, weak: np.ndarray | None = None,
                weak_error: float = 0.5, attributes: dict | None = None, properties: dict | None = None):
    """A Predictions table without a model: errors at random (rate ``error``), or ``weak_error`` where ``weak``."""
    from audit.predictions import Predictions

    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    rate = np.where(weak, weak_error, error) if weak is not None else np.full(n, error)
    wrong = rng.random(n) < rate
    pred = np.where(wrong, (y + 1 + rng.integers(0, c - 1, n)) % c, y)
    proba = np.full((n, c), 0.1 / (c - 1), np.float32)
    proba[np.arange(n), pred] = 0.9
    return Predictions(labels=tuple(f"c{i}" for i in range(c)), paths=tuple(f"img/{i}.png" for i in range(n)),
                       y_true=y, proba=proba, attributes=attributes or {}, properties=properties or {})


def side_folder(root: Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """DIR/left|right/<i>.png: a bright band on that side of a dark noisy image."""
    rng = np.random.default_rng(seed)
    for side in ("left", "right"):
        (root / side).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.normal(60, 15, (24, 24, 3))
            band = slice(0, 9) if side == "left" else slice(15, 24)
            arr[:, band] += 150
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(root / side / f"{i:03d}.png")
    return root


def pattern_image(seed: int, size: int = 64) -> Image.Image:
    """A picture with structure (random boxes and ellipses), so perceptual hashes tell pictures apart."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(8, size // 2), y0 + rng.integers(8, size // 2)
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([int(x0), int(y0), int(x1), int(y1)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def leaky_split(root: Path, n_per_class: int = 10, classes=tuple(COLOURS)) -> tuple[Path, Path, dict]:
    """train/ and test/ ImageFolders of distinct pictures, with planted duplicates.

    Returns (train, test, planted) where planted maps a test path to how it copies a training image:
    "exact" (same bytes), "resized" (75%), "jpeg" (re-encoded at quality 70); plus one exact copy inside test.
    """
    train, test = root / "train", root / "test"
    planted = {}
    seed = 0
    for cls in classes:
        (train / cls).mkdir(parents=True, exist_ok=True)
        (test / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pattern_image(seed).save(train / cls / f"{i:03d}.png")
            pattern_image(seed + 10_000).save(test / cls / f"{i:03d}.png")
            seed += 1
    src = train / classes[0] / "000.png"
    (test / classes[0] / "exact.png").write_bytes(src.read_bytes())
    img = Image.open(src)
    img.resize((48, 48), Image.Resampling.BILINEAR).save(test / classes[0] / "resized.png")
    img.save(test / classes[1] / "jpeg.jpg", quality=70)
    planted.update({f"{classes[0]}/exact.png": "exact", f"{classes[0]}/resized.png": "resized",
                    f"{classes[1]}/jpeg.jpg": "jpeg"})
    (test / classes[2] / "copy.png").write_bytes((test / classes[2] / "000.png").read_bytes())
    return train, test, planted


def context(model: Path, data: Path, overrides: dict | None = None, config=None):
    """An audit context after the inference pass (what every check receives), built like ``run_audit`` does; the
    latency check is off unless asked for (it would start its server when the context is prepared)."""
    from audit.config import load_config
    from audit.pipeline import find_duplicates, infer, open_context

    cfg = config if config is not None else load_config(None, {"latency.enabled": False, **(overrides or {})})
    ctx, _ = infer(open_context(model, data, cfg, progress=False))
    return find_duplicates(ctx)


def class_labels(n: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(n))


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # Pillow's RGB -> L


def _same_grey_colours(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """``n`` colours of one grey level and hues at least 90 degrees apart: grey pHash cannot tell them apart."""
    import colorsys

    luma = rng.uniform(70, 170)
    hues = rng.uniform() + np.cumsum(np.r_[0, rng.uniform(0.25, 0.5, n - 1)])
    dirs = [np.array(colorsys.hsv_to_rgb(h % 1, 1, 1)) * 255 for h in hues]
    dirs = [d - _luma(d) for d in dirs]  # luma-free directions
    # the largest chroma that keeps every colour inside [0, 255]
    room = min(min((255 - luma) / v if v > 0 else np.inf, -luma / v if v < 0 else np.inf) for d in dirs for v in d)
    k = room * rng.uniform(0.6, 1.0)
    return [tuple(int(round(v)) for v in np.clip(luma + k * d, 0, 255)) for d in dirs]


def _shape_picture(layout: list[dict], size: int, background, scale: float = 1.0, colour_key: str = "colour"):
    from PIL import ImageDraw

    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    for s in layout:
        cx, cy, rx, ry = s["cx"] * size, s["cy"] * size, s["rx"] * size * scale, s["ry"] * size * scale
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        if s["kind"] == "ellipse":
            draw.ellipse(box, fill=s[colour_key])
        elif s["kind"] == "rectangle":
            draw.rectangle(box, fill=s[colour_key])
        else:
            draw.polygon([(cx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)], fill=s[colour_key])
    return img


def _shape_layout(rng: np.random.Generator) -> list[dict]:
    layout = []
    for k in range(int(rng.integers(1, 3))):
        big = k == 0
        r = rng.uniform(0.2, 0.32) if big else rng.uniform(0.1, 0.16)
        colour, other = _same_grey_colours(rng, 2)
        layout.append({"kind": str(rng.choice(["ellipse", "rectangle", "triangle"])),
                       "cx": rng.uniform(0.35, 0.65) if big else rng.uniform(0.2, 0.8),
                       "cy": rng.uniform(0.35, 0.65) if big else rng.uniform(0.2, 0.8),
                       "rx": r, "ry": r * rng.uniform(0.7, 1.3), "colour": colour, "other": other})
    return layout


def _copy_of(img: Image.Image, kind: str, rng: np.random.Generator, path: Path) -> Path:
    """Save a real copy of ``img``: JPEG re-encode, resize, crop 2-5% (split between sides), or crop + JPEG."""
    w, h = img.size
    if kind == "resized":
        f = rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.25, 1.6)])
        img = img.resize((round(w * f), round(h * f)), Image.Resampling.BICUBIC)
    if kind.startswith("cropped"):
        cw, ch = (round(v * rng.uniform(0.02, 0.05)) for v in (w, h))
        left, top = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
        img = img.crop((left, top, w - (cw - left), h - (ch - top)))
    if kind in ("jpeg", "cropped+jpeg"):
        path = path.with_suffix(".jpg")
        img.save(path, quality=int(rng.integers(50, 91)))
    else:
        img.save(path)
    return path


COPY_KINDS = ("jpeg", "resized", "cropped", "cropped+jpeg")


def colour_lookalike_split(root: Path, n: int = 60, n_copies: int = 24, n_distinct: int = 20,
                           seed: int = 0) -> tuple[Path, Path, dict[str, str], dict[str, str]]:
    """train/ and test/ ImageFolders of synthetic coloured shapes with planted copies and look-alikes.

    train/ holds ``n`` pictures (one or two filled shapes on a plain background). test/ holds
    ``n_copies`` real copies of training pictures (``COPY_KINDS`` in turn: JPEG quality 50-90,
    resized x0.5-0.8 or x1.25-1.6, cropped 2-5% of each side length, cropped + JPEG), one look-alike
    of every training picture (the same shapes recoloured at the same grey level with the hue turned
    90-180 degrees, and scaled by 0.9-0.96 or 1.04-1.1 about their centres: the same pHash, a
    different picture) and ``n_distinct`` unrelated pictures. Returns (train, test, copies,
    lookalikes), the last two mapping a test path to its training original (paths relative to
    train/ and test/).
    """
    rng = np.random.default_rng(seed)
    train, test = root / "train", root / "test"
    classes = tuple(COLOURS)
    for d in (train, test):
        for cls in classes:
            (d / cls).mkdir(parents=True, exist_ok=True)
    copies, lookalikes, originals = {}, {}, []
    for k in range(n):
        size, layout = int(rng.integers(64, 97)), _shape_layout(rng)
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        cls = classes[k % len(classes)]
        rel = f"{cls}/{k:03d}.png"
        original = _shape_picture(layout, size, background)
        original.save(train / rel)
        originals.append((rel, original))
        scale = rng.choice([rng.uniform(0.9, 0.96), rng.uniform(1.04, 1.1)])
        _shape_picture(layout, size, background, scale, "other").save(test / cls / f"lookalike_{k:03d}.png")
        lookalikes[f"{cls}/lookalike_{k:03d}.png"] = rel
    for c, k in enumerate(rng.choice(n, n_copies, replace=False)):
        rel, img = originals[k]
        cls = rel.split("/")[0]
        path = _copy_of(img, COPY_KINDS[c % len(COPY_KINDS)], rng, test / cls / f"copy_{c:03d}.png")
        copies[f"{cls}/{path.name}"] = rel
    for k in range(n_distinct):
        size, layout = int(rng.integers(64, 97)), _shape_layout(rng)
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        _shape_picture(layout, size, background).save(test / classes[k % 3] / f"distinct_{k:03d}.png")
    return train, test, copies, lookalikes


def _garment(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """One light garment-like shape (shirt, trousers, shoe, bag) with its own proportions,
    brightness and stripes, on black."""
    from PIL import ImageDraw

    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    u = lambda lo, hi: float(rng.uniform(lo, hi)) * size  # noqa: E731
    fill, mid = int(rng.integers(130, 256)), size / 2
    if kind == 0:  # shirt: body and sleeves
        w, top, bottom = u(0.3, 0.45), u(0.08, 0.2), u(0.8, 0.95)
        draw.rectangle([mid - w / 2, top, mid + w / 2, bottom], fill=fill)
        for side in (-1, 1):
            draw.polygon([(mid + side * w / 2, top), (mid + side * (mid - u(0.02, 0.12)), u(0.45, 0.7)),
                          (mid + side * w / 2, u(0.35, 0.5))], fill=fill)
    elif kind == 1:  # trousers: two legs
        gap, w = u(0.02, 0.1), u(0.12, 0.22)
        for side in (-1, 1):
            x0 = mid + side * gap / 2
            draw.rectangle([min(x0, x0 + side * w), u(0.05, 0.15), max(x0, x0 + side * w), u(0.85, 0.97)], fill=fill)
    elif kind == 2:  # shoe: sole and upper
        y = u(0.6, 0.75)
        draw.rectangle([u(0.03, 0.1), y, u(0.88, 0.97), y + u(0.08, 0.15)], fill=fill)
        draw.polygon([(u(0.05, 0.2), y), (u(0.3, 0.5), u(0.25, 0.45)), (u(0.6, 0.8), y)], fill=fill)
    else:  # bag: body and handle
        draw.rectangle([u(0.08, 0.2), u(0.35, 0.5), u(0.8, 0.92), u(0.85, 0.95)], fill=fill)
        draw.arc([u(0.25, 0.35), u(0.1, 0.2), u(0.6, 0.75), u(0.5, 0.6)], 180, 360, fill=fill, width=2)
    period, phase = int(rng.integers(2, 6)), int(rng.integers(0, 6))
    stripes = 1 - rng.uniform(0.15, 0.5) * ((np.arange(size)[:, None] + phase) // period % 2)
    return (np.asarray(img) * stripes).astype(np.uint8)


def clothes_like(n: int, seed: int = 0, size: int = 28, min_difference: float = 16.0) -> list[Image.Image]:
    """``n`` distinct small grey pictures in the manner of Fashion-MNIST: four kinds of garment-like
    shapes on black (``_garment``). Pictures of one kind share a silhouette, so their pHashes often
    match; yet every two differ by at least ``min_difference`` grey levels on average (drawn again
    until they do), so none is a copy of another."""
    rng = np.random.default_rng(seed)
    kept: list[list[np.ndarray]] = [[], [], [], []]
    for k in range(n):
        while True:
            arr = _garment(rng, k % 4, size)
            if all(np.abs(arr.astype(np.float32) - other).mean() >= min_difference for other in kept[k % 4]):
                break
        kept[k % 4].append(arr.astype(np.float32))
    return [Image.fromarray(kept[k % 4][k // 4].astype(np.uint8), "L") for k in range(n)]
