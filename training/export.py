"""Export: one self-contained ``model.onnx`` carrying the model card (docs/ARCHITECTURE.md §7) + ``model.safetensors``.

The export is checked on real images: ONNX Runtime (through ``audit.model.OnnxClassifier``, i.e.
exactly what the auditor runs) against PyTorch, max absolute probability difference <= tolerance.

Test-time augmentation lives inside the graph: with ``tta=("hflip", ...)`` the ONNX model outputs
the mean of the softmax probabilities over the input and each listed flip of the preprocessed
input tensor (``hflip``: W axis, ``vflip``: H axis, ``hvflip``: both); the card then says
``output = "probabilities"`` and ``provenance["tta"]`` lists the views. ``model.safetensors`` keeps
the plain network's weights, so parity rebuilds it from ``audit.arch`` and averages the same views.

Example::

    result = export_model(net, card, "models/fmnist", parity_inputs=x_val[:64])
    result.max_abs_diff  # e.g. 3e-7
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.model import ModelCard, OnnxClassifier, write_card
from training.errors import ExportError

OPSET = 17
TTA_DIMS = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}  # NCHW axes each view flips


class FlipAverage(nn.Module):
    """Mean of softmax probabilities over the identity and ``views`` (flips of the NCHW input)."""

    def __init__(self, net: nn.Module, views: tuple[str, ...]) -> None:
        super().__init__()
        self.net, self.views = net, tuple(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = torch.cat([x] + [torch.flip(x, TTA_DIMS[v]) for v in self.views])  # one forward for all views
        p = torch.softmax(self.net(batch), dim=1)
        return p.reshape(1 + len(self.views), x.shape[0], p.shape[1]).mean(0)


def with_tta(net: nn.Module, views: tuple[str, ...]) -> nn.Module:
    """``net`` itself (logits) without views, else the ``FlipAverage`` (probabilities) to export."""
    unknown = [v for v in views if v not in TTA_DIMS]
    if unknown:
        raise ExportError(f"tta view {unknown[0]!r} is unknown", hint=f"choose from {sorted(TTA_DIMS)}")
    return FlipAverage(net, views).eval() if views else net


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    safetensors_path: Path
    max_abs_diff: float  # ONNX Runtime vs PyTorch, probabilities, on the parity images
    top1_agreement: float
    n_images: int
    onnx_bytes: int


def export_model(net: nn.Module, card: ModelCard, out_dir: str | Path, *, parity_inputs: np.ndarray,
                 tolerance: float = 1e-4, tta: tuple[str, ...] = ()) -> ExportResult:
    """Write ``model.onnx`` (card in metadata, dynamic batch) and ``model.safetensors``; check parity.

    With ``tta`` views the graph averages probabilities over them (see the module docstring); the
    card must then say ``output = "probabilities"`` and list the views in ``provenance["tta"]``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tuple(card.provenance.get("tta", ())) != tuple(tta) or (card.output == "probabilities") != bool(tta):
        raise ExportError(f"the card (output {card.output!r}, provenance tta {card.provenance.get('tta')}) does not "
                          f"describe the graph (tta {list(tta)})",
                          hint="build the card with training.fit.make_card from the same config")
    plain = net.eval()
    net = with_tta(plain, tuple(tta))
    onnx_path = out_dir / "model.onnx"
    example = torch.from_numpy(np.ascontiguousarray(parity_inputs[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in timm
        buf = io.BytesIO()
        torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=[card.output], dynamic_axes={"input": {0: "batch"}, card.output: {0: "batch"}},
                          do_constant_folding=True)
    onnx_path.write_bytes(buf.getvalue())
    write_card(onnx_path, card)
    st_path = out_dir / "model.safetensors"
    save_safetensors(plain, st_path)
    diff, agree = parity(net, onnx_path, parity_inputs)
    if diff > tolerance:
        raise ExportError(f"ONNX and PyTorch disagree: max abs probability difference {diff:.2e} > {tolerance:.0e}",
                          hint="check for training-only layers or unsupported ops; re-export with a newer opset")
    return ExportResult(onnx_path, st_path, diff, agree, len(parity_inputs), onnx_path.stat().st_size)


def save_safetensors(net: nn.Module, path: str | Path) -> None:
    """Weights only (no pickle), contiguous, shared tensors de-duplicated."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


@torch.no_grad()
def parity(net: nn.Module, onnx_path: str | Path, inputs: np.ndarray) -> tuple[float, float]:
    """(max abs probability difference, top-1 agreement) between ONNX Runtime and PyTorch.

    ``net`` returns logits, or probabilities when it is a ``FlipAverage``.
    """
    net = net.eval()
    clf = OnnxClassifier.load(onnx_path, threads=torch.get_num_threads())
    p_onnx = clf.predict_proba(np.ascontiguousarray(inputs, dtype=np.float32))
    out = net(torch.from_numpy(np.ascontiguousarray(inputs))).double()
    p_torch = (out if isinstance(net, FlipAverage) else torch.softmax(out, 1)).numpy()
    diff = float(np.abs(p_onnx - p_torch).max())
    agree = float((p_onnx.argmax(1) == p_torch.argmax(1)).mean())
    return diff, agree


def onnx_predict(onnx_path: str | Path, inputs: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Probabilities from the exported model, through the auditor's own loader."""
    clf = OnnxClassifier.load(onnx_path, threads=torch.get_num_threads())
    return np.concatenate([clf.predict_proba(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
