"""Small real models and data the tests build: ONNX graphs written with onnx.helper, PNG/JPEG files.

The "colour model" classifies an image by its mean R, G, B (global average pool + a linear
layer), so a red square is "red": predictable, yet a real ONNX graph run by ONNX Runtime.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from audit.model import ModelCard, Preprocess, write_card

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
MEAN, STD = 0.5, 0.25


def colour_weights(n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    w = np.full((3, n_classes), -4.0, np.float32)
    for i in range(min(3, n_classes)):
        w[i, i] = 4.0
    return w, np.zeros(n_classes, np.float32)


def colour_model(
    path: Path,
    *,
    labels=tuple(COLOURS),
    size: int = 16,
    layout: str = "NCHW",
    batch: int | str = "N",
    softmax: bool = False,
    card: bool = True,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a colour-classifying ONNX model; ``card=False`` leaves out the audit.* metadata."""
    c = len(labels)
    w, b = weights or colour_weights(c)
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    nodes = []
    x = "input"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits" if softmax else "output"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["output"], axis=1))
    graph = helper.make_graph(
        nodes, "colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, c])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    if card:
        write_card(path, ModelCard(
            labels=labels,
            preprocess=Preprocess(size=(size, size), mean=(MEAN,), std=(STD,), layout=layout),
            output="probabilities" if softmax else "logits",
            provenance={"dataset": "synthetic colours"},
        ))
    return path


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
    from audit.inference import Predictions

    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    rate = np.where(weak, weak_error, error) if weak is not None else np.full(n, error)
    wrong = rng.random(n) < rate
    pred = np.where(wrong, (y + 1 + rng.integers(0, c - 1, n)) % c, y)
    proba = np.full((n, c), 0.1 / (c - 1), np.float32)
    proba[np.arange(n), pred] = 0.9
    return Predictions(labels=tuple(f"c{i}" for i in range(c)), paths=tuple(f"img/{i}.png" for i in range(n)),
                       y_true=y, proba=proba, attributes=attributes or {}, properties=properties or {})
