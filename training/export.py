"""Export: one self-contained ``model.onnx`` carrying the model card (docs/ARCHITECTURE.md §7) + ``model.safetensors``.

The export is checked on real images: ONNX Runtime (through ``audit.model.OnnxClassifier``, i.e.
exactly what the auditor runs) against PyTorch, max absolute probability difference <= tolerance.

Test-time augmentation lives inside the graph: with ``tta=("hflip", ...)`` the ONNX model outputs
the mean of the softmax probabilities over the input and each listed view of the preprocessed
input tensor (flips ``hflip``: W axis, ``vflip``: H axis, ``hvflip``: both; quarter turns ``rot90``,
``rot270``; ``transpose``, ``antitranspose``: the 8 symmetries of a square); the card then says
``output = "probabilities"`` and ``provenance["tta"]`` lists the views. ``model.safetensors`` keeps
the plain network's weights, so parity rebuilds it from ``audit.arch`` and averages the same views
(the auditor knows the flips). An ensemble (a list of networks, ``provenance["ensemble"]``) averages
every member's views in the same graph; its safetensors holds ``members.<i>.*``, which the
auditor's one-network parity cannot rebuild, so ``export_model`` checks its parity itself.

Example::

    result = export_model(net, card, "models/fmnist", parity_inputs=x_val[:64])
    result.max_abs_diff  # e.g. 3e-7
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.model import ModelCard, OnnxClassifier, write_card
from training.errors import ExportError

OPSET = 17
TTA_DIMS = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}  # NCHW axes each flip view flips


def view(x: torch.Tensor, name: str) -> torch.Tensor:
    """One symmetry of the square applied to an NCHW tensor (flips and transposes: exported as Slice/Transpose)."""
    if name in TTA_DIMS:
        return torch.flip(x, TTA_DIMS[name])
    turns = {"transpose": (), "rot90": (3,), "rot270": (2,), "antitranspose": (2, 3)}  # flip, then swap H and W
    if name not in turns:
        raise ExportError(f"tta view {name!r} is unknown", hint=f"choose from {sorted([*TTA_DIMS, *turns])}")
    return (torch.flip(x, turns[name]) if turns[name] else x).transpose(2, 3)


class ViewAverage(nn.Module):
    """Mean of softmax probabilities over the members and, for each, the identity and ``views`` of the input.

    Each member sees the input alone first (so its penultimate tensor is one row per image: the first
    member's is the card's ``features``), then all its views in one batch.
    """

    def __init__(self, nets, views: tuple[str, ...]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(list(nets) if isinstance(nets, (list, tuple)) else [nets])
        self.views = tuple(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = []
        for net in self.nets:
            probs.append(torch.softmax(net(x), dim=1))
            if self.views:
                p = torch.softmax(net(torch.cat([view(x, v) for v in self.views])), dim=1)
                probs.append(p.reshape(len(self.views), x.shape[0], p.shape[1]).sum(0))
        return torch.stack(probs).sum(0) / (len(self.nets) * (1 + len(self.views)))


def with_tta(nets, views: tuple[str, ...]) -> nn.Module:
    """One network alone (logits) without views, else the ``ViewAverage`` (probabilities) to export."""
    for v in views:
        view(torch.zeros(1, 1, 2, 2), v)  # unknown names raise here
    members = list(nets) if isinstance(nets, (list, tuple)) else [nets]
    return ViewAverage(members, views).eval() if (views or len(members) > 1) else members[0]


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    safetensors_path: Path
    max_abs_diff: float  # ONNX Runtime vs PyTorch, probabilities, on the parity images
    top1_agreement: float
    n_images: int
    onnx_bytes: int
    features: str | None = None  # the card's audit.features (an averaging graph's first member's penultimate tensor)


def export_model(net, card: ModelCard, out_dir: str | Path, *, parity_inputs: np.ndarray,
                 tolerance: float = 1e-4, tta: tuple[str, ...] = ()) -> ExportResult:
    """Write ``model.onnx`` (card in metadata, dynamic batch) and ``model.safetensors``; check parity.

    ``net`` is one network or a list (an ensemble: ``provenance["ensemble"]`` lists one entry per
    member). With ``tta`` views or several members the graph averages probabilities (see the
    module docstring); the card must then say ``output = "probabilities"`` and list the views in
    ``provenance["tta"]``, and it gets ``features`` = the first member's penultimate tensor.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    members = list(net) if isinstance(net, (list, tuple)) else [net]
    _check_card(card, tta, len(members))
    graph = with_tta([m.eval() for m in members], tuple(tta))
    onnx_path = out_dir / "model.onnx"
    example = torch.from_numpy(np.ascontiguousarray(parity_inputs[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in timm
        buf = io.BytesIO()
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=[card.output], dynamic_axes={"input": {0: "batch"}, card.output: {0: "batch"}},
                          do_constant_folding=True)
    onnx_path.write_bytes(buf.getvalue())
    if isinstance(graph, ViewAverage):
        card = replace(card, features=first_classifier_input(buf.getvalue()))
    write_card(onnx_path, card)
    st_path = out_dir / "model.safetensors"
    save_safetensors(members[0] if len(members) == 1 else nn.ModuleDict({"members": nn.ModuleList(members)}), st_path)
    diff, agree = parity(graph, onnx_path, parity_inputs)
    if diff > tolerance:
        raise ExportError(f"ONNX and PyTorch disagree: max abs probability difference {diff:.2e} > {tolerance:.0e}",
                          hint="check for training-only layers or unsupported ops; re-export with a newer opset")
    return ExportResult(onnx_path, st_path, diff, agree, len(parity_inputs), onnx_path.stat().st_size, card.features)


def _check_card(card: ModelCard, tta: tuple[str, ...], n_members: int) -> None:
    averaged = bool(tta) or n_members > 1
    listed = len(card.provenance.get("ensemble", ())) or 1
    if tuple(card.provenance.get("tta", ())) != tuple(tta) or (card.output == "probabilities") != averaged \
            or listed != n_members:
        raise ExportError(f"the card (output {card.output!r}, provenance tta {card.provenance.get('tta')}, "
                          f"{listed} member(s)) does not describe the graph (tta {list(tta)}, {n_members} member(s))",
                          hint="build the card with training.fit.make_card from the same config")


def first_classifier_input(onnx_bytes: bytes) -> str | None:
    """The input of the graph's first Gemm: the exporter writes nodes in execution order, so this is the
    first member's penultimate tensor on the untransformed input (one row per image)."""
    import onnx

    for node in onnx.load_model_from_string(onnx_bytes).graph.node:
        if node.op_type == "Gemm":
            return node.input[0]
    return None


def save_safetensors(net: nn.Module, path: str | Path) -> None:
    """Weights only (no pickle), contiguous, shared tensors de-duplicated."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


@torch.no_grad()
def parity(net: nn.Module, onnx_path: str | Path, inputs: np.ndarray) -> tuple[float, float]:
    """(max abs probability difference, top-1 agreement) between ONNX Runtime and PyTorch.

    ``net`` returns logits, or probabilities when it is a ``ViewAverage``.
    """
    net = net.eval()
    clf = OnnxClassifier.load(onnx_path, threads=torch.get_num_threads())
    p_onnx = clf.predict_proba(np.ascontiguousarray(inputs, dtype=np.float32))
    out = net(torch.from_numpy(np.ascontiguousarray(inputs))).double()
    p_torch = (out if isinstance(net, ViewAverage) else torch.softmax(out, 1)).numpy()
    diff = float(np.abs(p_onnx - p_torch).max())
    agree = float((p_onnx.argmax(1) == p_torch.argmax(1)).mean())
    return diff, agree


def onnx_predict(onnx_path: str | Path, inputs: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Probabilities from the exported model, through the auditor's own loader."""
    clf = OnnxClassifier.load(onnx_path, threads=torch.get_num_threads())
    return np.concatenate([clf.predict_proba(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
