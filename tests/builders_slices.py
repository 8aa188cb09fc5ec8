"""Images with hidden visual subgroups, and a small CNN trained on them and exported to ONNX.

Three shape classes (circle, square, triangle) drawn in grey on noise. Two subgroups that no
metadata column names: ``diamond`` (squares turned 45 degrees: a pose) and ``hatched`` (any shape
filled with diagonal stripes: a pattern). Both are rare or absent in the training split, so the
model trained on it is worse on them: the situation the discovered-slices check exists for.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
SIZE = 32


def shape_image(kind: str, rng: np.random.Generator, *, diamond: bool = False, hatched: bool = False,
                size: int = SIZE) -> Image.Image:
    """One grey shape on a noisy background; the fill is one grey level, or stripes of the same mean."""
    scale = 4
    s = size * scale
    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    r = rng.uniform(0.26, 0.36) * s
    cx, cy = rng.uniform(0.42, 0.58, 2) * s
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "square":
        a = 0.85 * r
        pts = [(-a, -a), (a, -a), (a, a), (-a, a)]
        if diamond:
            pts = [(x * 0.7071 - y * 0.7071, x * 0.7071 + y * 0.7071) for x, y in pts]
        draw.polygon([(cx + x, cy + y) for x, y in pts], fill=255)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=255)
    mask = np.asarray(canvas.resize((size, size), Image.BILINEAR), np.float32) / 255.0
    level = rng.uniform(150, 200)
    fill = np.full((size, size), level, np.float32)
    if hatched:  # stripes between 0.4 and 1.6 x the level: the same mean grey as a flat fill
        yy, xx = np.mgrid[:size, :size]
        fill = level * np.where(((xx + yy) // 2) % 2 == 0, 1.6, 0.4)
    background = rng.uniform(30, 60)
    img = background * (1 - mask) + fill * mask + rng.normal(0, 8, (size, size))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")


def subgroup_split(root: Path, n_per_class: int, *, seed: int = 0, diamond: float = 0.0,
                   hatched: float = 0.0) -> dict[str, str]:
    """ROOT/<shape>/<i>.png with a ``metadata.csv`` (a ``site`` column unrelated to the subgroups).

    ``diamond``: the share of squares turned 45 degrees; ``hatched``: the share of every class filled
    with stripes. Returns path -> subgroup ("diamond", "hatched" or "") for every image written.
    """
    rng = np.random.default_rng(seed)
    groups, rows = {}, []
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            is_diamond = kind == "square" and rng.random() < diamond
            is_hatched = not is_diamond and rng.random() < hatched
            rel = f"{kind}/{i:04d}.png"
            shape_image(kind, rng, diamond=is_diamond, hatched=is_hatched).save(root / rel)
            groups[rel] = "diamond" if is_diamond else "hatched" if is_hatched else ""
            rows.append({"path": rel, "site": "ab"[int(rng.random() < 0.5)]})
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["path", "site"])
        w.writeheader()
        w.writerows(rows)
    return groups


def train_shape_model(train_dir: Path, out: Path, *, seed: int = 0, epochs: int = 8) -> Path:
    """A small CNN (two conv blocks, global pooling, 32 features, a linear head) trained on ``train_dir``
    and exported to ONNX with its card. Seconds on a CPU."""
    import warnings

    import torch
    from torch import nn

    from audit.model import ModelCard, Preprocess, write_card

    torch.manual_seed(seed)
    xs, ys = [], []
    for k, kind in enumerate(SHAPES):
        for p in sorted((train_dir / kind).glob("*.png")):
            xs.append(np.asarray(Image.open(p), np.float32) / 255.0)
            ys.append(k)
    x = (torch.tensor(np.stack(xs))[:, None] - 0.5) / 0.25
    y = torch.tensor(ys)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(SHAPES)),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, SIZE, SIZE), str(out), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17)
    write_card(out, ModelCard(labels=SHAPES, preprocess=Preprocess(size=(SIZE, SIZE), color="L", mean=(0.5,),
                                                                   std=(0.25,)),
                              provenance={"dataset": "synthetic shapes"}))
    return out
