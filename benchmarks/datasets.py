"""Test sets for the scale and memory benchmarks, built once in a scratch folder (``--work``), never copied pixels
where a hard link will do.

* ``subset``: the first ``n`` images of a folder (hard links).
* ``repeated``: every image of a folder ``copies`` times under new names (hard links: exact copies, one SHA-256).
* ``one_repeated``: ``n`` images of which one picture is ``times`` hard links (a blank frame repeated), the rest
  the folder's images repeated as needed.
* ``synthetic``: ``n`` images of distinct content (28 x 28 grey PNG, ten class folders): a random smooth field,
  a random ellipse and noise, drawn from a per-image seed, so every file has its own bytes and pHash. Written by
  two processes; about 1 GB of disk per million images.

Each folder has a ``.complete`` marker once built; a folder without one is built again.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

FASHION_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot")


def _done(dst: Path) -> bool:
    return (dst / ".complete").exists()


def _mark(dst: Path) -> Path:
    (dst / ".complete").write_text("")
    return dst


def images_of(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def subset(src: Path, n: int, dst: Path) -> Path:
    """The first ``n`` images of each class in turn (round robin), hard-linked: a small set with every class."""
    if _done(dst):
        return dst
    by_class: dict[str, list[Path]] = {}
    for f in images_of(src):
        by_class.setdefault(f.parent.name, []).append(f)
    picked = [f for row in zip(*by_class.values()) for f in row][:n]
    for f in picked:
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        target = dst / f.parent.name / f.name
        if not target.exists():
            os.link(f, target)
    return _mark(dst)


def repeated(src: Path, copies: int, dst: Path) -> Path:
    """Every image of ``src`` ``copies`` times under new names (hard links)."""
    if _done(dst):
        return dst
    for f in images_of(src):
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            target = dst / f.parent.name / f"{f.stem}_{i}{f.suffix}"
            if not target.exists():
                os.link(f, target)
    return _mark(dst)


def one_repeated(src: Path, n: int, times: int, dst: Path) -> Path:
    """``n`` images: the first image of ``src`` ``times`` times, then ``src``'s images (repeated as needed)."""
    if _done(dst):
        return dst
    files = images_of(src)
    first = files[0]
    (dst / first.parent.name).mkdir(parents=True, exist_ok=True)
    for i in range(times):
        target = dst / first.parent.name / f"blank_{i:06d}{first.suffix}"
        if not target.exists():
            os.link(first, target)
    for k in range(n - times):
        f = files[1 + k % (len(files) - 1)]
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        target = dst / f.parent.name / f"{f.stem}_{k // (len(files) - 1)}{f.suffix}"
        if not target.exists():
            os.link(f, target)
    return _mark(dst)


def _draw(seed: int, size: int = 28) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.random((7, 7)) * 160
    field = np.kron(coarse, np.ones((size // 7, size // 7)))
    yy, xx = np.mgrid[:size, :size]
    cy, cx, ry, rx = rng.uniform(6, 22), rng.uniform(6, 22), rng.uniform(3, 10), rng.uniform(3, 10)
    field[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] += rng.uniform(40, 95)
    field += rng.normal(0, 6, field.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _write_range(args: tuple[str, int, int, int]) -> int:
    root, lo, hi, seed = args
    for k in range(lo, hi):
        cls = FASHION_CLASSES[k % len(FASHION_CLASSES)]
        Path(root, cls, f"s{k:07d}.png").write_bytes(_draw(seed * 10_000_019 + k))
    return hi - lo


def synthetic(n: int, dst: Path, *, seed: int = 0, workers: int = 2, chunk: int = 20_000) -> Path:
    """``n`` distinct-content 28 x 28 grey PNGs in the Fashion-MNIST class folders."""
    if _done(dst):
        return dst
    for cls in FASHION_CLASSES:
        (dst / cls).mkdir(parents=True, exist_ok=True)
    jobs = [(str(dst), lo, min(lo + chunk, n), seed) for lo in range(0, n, chunk)]
    with ProcessPoolExecutor(workers) as pool:
        done = 0
        for k in pool.map(_write_range, jobs):
            done += k
            print(f"  synthetic: {done:,} of {n:,} images written", flush=True)
    return _mark(dst)
