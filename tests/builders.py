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
