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


def linear_model(path: Path, weights: np.ndarray, bias: np.ndarray, *, labels, size: int) -> Path:
    """A linear classifier over the flattened (3, size, size) input: not invariant to anything in general."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "W", "B"], ["output"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", len(labels)])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "W"),
                     numpy_helper.from_array(bias.astype(np.float32), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    write_card(path, ModelCard(labels=labels, preprocess=Preprocess(size=(size, size), mean=(MEAN,), std=(STD,))))
    return path


def side_model(path: Path, size: int = 16) -> Path:
    """Classifies which half ("left" or "right") of the image is brighter: a horizontal flip swaps the answer."""
    w = np.zeros((3, size, size, 2), np.float32)
    w[:, :, : size // 2, 0], w[:, :, size // 2 :, 0] = 1.0, -1.0
    w[..., 1] = -w[..., 0]
    return linear_model(path, w.reshape(-1, 2) / (3 * size * size), np.zeros(2, np.float32),
                        labels=("left", "right"), size=size)


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


def timm_export(root: Path, *, arch: str = "resnet10t", size: int = 32, labels=tuple(COLOURS), seed: int = 0,
                color: str = "RGB"):
    """A tiny timm model exported to one ONNX file with its card (arch set), and its weights as safetensors."""
    import warnings

    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    channels = 1 if color == "L" else 3
    model = timm.create_model(arch, pretrained=False, num_classes=len(labels), in_chans=channels).eval()
    root.mkdir(parents=True, exist_ok=True)
    onnx_path, weights = root / "model.onnx", root / "model.safetensors"
    with warnings.catch_warnings():  # TorchScript-exporter deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, channels, size, size), str(onnx_path), dynamo=False,
                          input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    write_card(onnx_path, ModelCard(labels=labels, arch=arch, preprocess=Preprocess(
        size=(size, size), color=color, mean=(0.485, 0.456, 0.406)[:channels], std=(0.229, 0.224, 0.225)[:channels])))
    return onnx_path, weights


def perturb_onnx(src: Path, dst: Path, scale: float = 1e-2, seed: int = 0) -> Path:
    """A copy of ``src`` whose last weight matrix has ``scale`` relative noise added (card kept)."""
    model = onnx.load(str(src))
    init = [t for t in model.graph.initializer if len(t.dims) >= 2][-1]
    w = numpy_helper.to_array(init)
    rng = np.random.default_rng(seed)
    noisy = (w + scale * np.abs(w).mean() * rng.standard_normal(w.shape)).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst))
    return dst


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
    """An audit context after the inference pass (what probe checks receive), built like ``run_audit`` does."""
    from audit.config import load_config
    from audit.pipeline import infer, open_context

    cfg = config if config is not None else load_config(None, overrides or {})
    ctx, _ = infer(open_context(model, data, cfg, progress=False))
    return ctx


def class_labels(n: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(n))


def nan_model(path: Path, *, everywhere: bool = False, inf: bool = False) -> Path:
    """The colour model whose logits are NaN (or +Inf) for images that are not red, or for every image.

    ``log(mean red channel)`` is NaN where the normalised red mean is negative (green and blue
    images); multiplied by zero it is 0 for red images and NaN elsewhere, and added to the logits.
    """
    w, b = colour_weights(3)
    poison = np.array([np.inf if inf else np.nan], np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    if everywhere:
        inits.append(numpy_helper.from_array(poison, "poison"))
        nodes.append(helper.make_node("Add", ["logits", "poison"], ["output"]))
    else:
        inits += [numpy_helper.from_array(np.array([v], np.int64), name) for name, v in
                  (("start", 0), ("end", 1), ("axis", 1))]
        inits += [numpy_helper.from_array(np.zeros(1, np.float32), "zero"), numpy_helper.from_array(poison, "poison")]
        nodes += [
            helper.make_node("Slice", ["flat", "start", "end", "axis"], ["red"]),
            helper.make_node("Log", ["red"], ["logred"]),
            helper.make_node("IsNaN", ["logred"], ["bad"]),
            helper.make_node("Where", ["bad", "poison", "zero"], ["shift"]),
            helper.make_node("Add", ["logits", "shift"], ["output"]),
        ]
    graph = helper.make_graph(
        nodes, "nan", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_card(path, ModelCard(labels=tuple(COLOURS), preprocess=Preprocess(size=(16, 16), mean=(MEAN,), std=(STD,))))
    return path


def fp16_model(path: Path, size: int = 16) -> Path:
    """The colour model with float16 input and output (Cast at both ends), as fp16 exports have."""
    w, b = colour_weights(3)
    nodes = [
        helper.make_node("Cast", ["input"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("GlobalAveragePool", ["x32"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        helper.make_node("Cast", ["logits"], ["output"], to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(
        nodes, "fp16", [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT16, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_card(path, ModelCard(labels=tuple(COLOURS),
                               preprocess=Preprocess(size=(size, size), mean=(MEAN,), std=(STD,))))
    return path


def set_metadata(path: Path, **values: str) -> Path:
    """Overwrite raw ``audit.<key>`` metadata strings (to write cards the ModelCard class would refuse)."""
    model = onnx.load(str(path))
    keys = {f"audit.{k}" for k in values}
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in values.items():
        model.metadata_props.add(key=f"audit.{k}", value=v)
    onnx.save(model, str(path))
    return path


def dynamic_size(path: Path) -> Path:
    """Make the model's input height and width symbolic, so the card alone decides the input size."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    onnx.save(model, str(path))
    return path
