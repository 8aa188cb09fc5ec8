"""Small real ONNX models the tests build, written with onnx.helper, and edits of ONNX files.

The "colour model" classifies an image by its mean R, G, B (global average pool + a linear
layer), so a red square is "red": predictable, yet a real ONNX graph run by ONNX Runtime.
``tests/builders.py`` re-exports everything here, so tests call ``builders.colour_model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
