"""Export: one self-contained ``model.onnx`` carrying the model card (§3) + ``model.safetensors``.

The export is checked on real images: ONNX Runtime (through ``audit.model.OnnxClassifier``, i.e.
exactly what the auditor runs) against PyTorch, max absolute probability difference <= tolerance.

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


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    safetensors_path: Path
    max_abs_diff: float  # ONNX Runtime vs PyTorch, probabilities, on the parity images
    top1_agreement: float
    n_images: int
    onnx_bytes: int


def export_model(net: nn.Module, card: ModelCard, out_dir: str | Path, *, parity_inputs: np.ndarray,
                 tolerance: float = 1e-4) -> ExportResult:
    """Write ``model.onnx`` (card in metadata, dynamic batch) and ``model.safetensors``; check parity."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    onnx_path = out_dir / "model.onnx"
    example = torch.from_numpy(np.ascontiguousarray(parity_inputs[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in timm
        buf = io.BytesIO()
        torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    onnx_path.write_bytes(buf.getvalue())
    write_card(onnx_path, card)
    st_path = out_dir / "model.safetensors"
    save_safetensors(net, st_path)
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
    """(max abs probability difference, top-1 agreement) between ONNX Runtime and PyTorch."""
    net = net.eval()
    clf = OnnxClassifier.load(onnx_path, threads=torch.get_num_threads())
    p_onnx = clf.predict_proba(np.ascontiguousarray(inputs, dtype=np.float32))
    p_torch = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(inputs))).double(), 1).numpy()
    diff = float(np.abs(p_onnx - p_torch).max())
    agree = float((p_onnx.argmax(1) == p_torch.argmax(1)).mean())
    return diff, agree


def onnx_predict(onnx_path: str | Path, inputs: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Probabilities from the exported model, through the auditor's own loader."""
    clf = OnnxClassifier.load(onnx_path, threads=torch.get_num_threads())
    return np.concatenate([clf.predict_proba(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
