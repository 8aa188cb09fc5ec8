"""Parity (docs/ARCHITECTURE.md §4.3): does the ONNX file compute what the PyTorch model computes?

The PyTorch side is ``model.safetensors`` (weights only, never a pickle) loaded into
``timm.create_model(arch, num_classes=len(labels))``, with ``arch`` from the model card's
``audit.arch`` (or ``parity.arch``). Both run on the real test images, decoded and preprocessed
by the same engine (``ctx.rerun(..., classifier=torch_model)``), so the only difference left
is the runtime. A model exported with test-time augmentation (the card's provenance lists
``tta`` views: ``hflip``, ``vflip``, ``hvflip``) averages softmax probabilities over the
identity and those flips of the input tensor; the PyTorch side does the same. Reported: max and
p99 absolute probability difference, top-1 agreement, and the images that disagree.

Example::

    res = parity(ctx)
    res.max_abs_diff, res.agreement.value
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from audit.context import AuditContext
from audit.contract import CheckSpec, Option
from audit.errors import ModelError
from audit.settings import Section, setting, unit
from audit.stats import Estimate, proportion_ci
from audit.svg import ACCENT, BAD, Canvas, Panel
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

TTA_VIEWS = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}  # flipped axes of an NCHW tensor


@dataclass(frozen=True)
class ParityConfig(Section):
    """Parity (docs/ARCHITECTURE.md §4.3): ONNX Runtime against the PyTorch weights (``--torch-model``)."""

    section: ClassVar[str] = "parity"
    torch_model: str | None = None  # model.safetensors; None = no parity check
    arch: str | None = None  # timm model name; default: the card's audit.arch
    max_images: int = setting(2000, ge=0)  # a seeded sample of the test images; 0 = all
    max_abs_diff: float = setting(1e-4, ge=0.0)
    min_agreement: float = unit(1.0)


@dataclass(frozen=True)
class Disagreement:
    path: str
    onnx_label: str
    torch_label: str
    max_abs_diff: float


@dataclass(frozen=True)
class ParityResult:
    arch: str
    weights: str  # file name of the safetensors weights
    n: int
    max_abs_diff: float
    p99_abs_diff: float
    mean_abs_diff: float
    agreement: Estimate  # top-1 agreement rate
    disagreements: tuple[Disagreement, ...]  # every top-1 disagreement (capped), then nothing
    n_disagree: int
    worst: tuple[Disagreement, ...]  # the images with the largest probability difference
    per_image_diff: np.ndarray  # (n,) max abs difference per image, for the histogram

    def to_dict(self) -> dict:
        return {"arch": self.arch, "weights": self.weights, "n": self.n, "max_abs_diff": self.max_abs_diff,
                "p99_abs_diff": self.p99_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "agreement": self.agreement.to_dict(), "n_disagree": self.n_disagree,
                "disagreements": [d.__dict__ for d in self.disagreements]}


class TorchClassifier:
    """A timm model with safetensors weights, shaped like ``OnnxClassifier`` for ``predict``."""

    def __init__(self, weights: Path, arch: str, card) -> None:
        self.weights, self.arch, self.card = weights, arch, card
        self.tta = tuple(card.provenance.get("tta", ()))
        unknown = [v for v in self.tta if v not in TTA_VIEWS]
        if unknown:
            raise ModelError(f"the card's provenance.tta names unknown view {unknown[0]!r}",
                             hint=f"known views: {', '.join(TTA_VIEWS)}")
        try:
            import timm
            import torch
            from safetensors.torch import load_file
        except ImportError as e:  # the [train] extra
            raise ModelError(f"parity needs PyTorch, timm and safetensors ({e.name} is missing)",
                             hint='pip install -e ".[train]"') from None
        if not weights.is_file():
            raise ModelError(f"--torch-model file not found: {weights}", hint="pass the model.safetensors file")
        if weights.suffix != ".safetensors":
            raise ModelError(f"--torch-model must be a .safetensors file (weights only, never a pickle), got {weights.name}")
        self.torch = torch
        # The card says how the network was built: input channels (grey models have a 1-channel stem) and any
        # other constructor arguments the training package recorded (e.g. img_size for a ViT).
        kwargs = {"in_chans": card.preprocess.channels, **dict(card.provenance.get("timm_kwargs", {})),
                  "num_classes": len(card.labels), "pretrained": False}
        try:
            self.model = timm.create_model(arch, **kwargs)
        except RuntimeError as e:
            raise ModelError(f"timm has no model {arch!r}: {e}", hint="fix audit.arch or parity.arch") from None
        state = load_file(str(weights))
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelError(f"{weights.name} does not fit timm's {arch} with {len(card.labels)} classes: "
                             f"{str(e).splitlines()[0]}", hint="check audit.arch and the number of labels") from None
        self.model.eval()

    def __reduce__(self):  # rebuilt from its files in another process (an engine's worker)
        return (TorchClassifier, (self.weights, self.arch, self.card))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.card.preprocess.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        with torch.inference_mode():
            x = x.float()
            if self.tta:  # the exported graph averages softmax probabilities over the views
                views = [x, *(torch.flip(x, dims=TTA_VIEWS[v]) for v in self.tta)]
                out = torch.stack([torch.softmax(self.model(v).double(), dim=1) for v in views]).mean(dim=0)
            else:
                out = self.model(x)
                if self.card.output == "logits":
                    out = torch.softmax(out.double(), dim=1)
        return out.numpy().astype(np.float32)


def torch_classifier(ctx: AuditContext) -> TorchClassifier:
    """The PyTorch twin of the audited model (built before inference, so a bad file fails early)."""
    config, card = ctx.config.parity, ctx.classifier.card
    arch = config.arch or card.arch
    if not arch:
        raise ModelError("parity needs the timm architecture name and the model card has no audit.arch",
                         hint="set parity.arch in the config (e.g. resnet18)")
    return TorchClassifier(Path(config.torch_model), arch, card)


def parity(ctx: AuditContext, max_listed: int = 20) -> ParityResult:
    """Run the PyTorch model over a seeded sample of the processed images and compare with ONNX Runtime."""
    torch_clf = ctx.state("parity") or torch_classifier(ctx)
    preds, arch, weights = ctx.predictions, torch_clf.arch, torch_clf.weights
    picked = ctx.sample_rows(ctx.config.parity.max_images)
    usable = ctx.samples_at(picked)
    row = {s.path: int(r) for s, r in zip(usable, picked)}
    tp, _ = ctx.rerun(usable, classifier=torch_clf, desc="parity")
    rows = np.array([row[p] for p in tp.paths], dtype=np.int64)
    onnx_p = preds.proba[rows].astype(np.float64)
    torch_p = tp.proba.astype(np.float64)
    diff = np.abs(onnx_p - torch_p).max(axis=1)
    a, b = onnx_p.argmax(axis=1), torch_p.argmax(axis=1)
    agree = (a == b).astype(float)
    n = len(diff)
    labels = preds.labels

    def rec(i: int) -> Disagreement:
        return Disagreement(tp.paths[i], labels[a[i]], labels[b[i]], float(diff[i]))

    dis = np.flatnonzero(a != b)
    worst = np.argsort(-diff, kind="stable")[:max_listed]
    return ParityResult(
        arch=arch, weights=weights.name, n=n,
        max_abs_diff=float(diff.max()) if n else math.nan,
        p99_abs_diff=float(np.quantile(diff, 0.99)) if n else math.nan,
        mean_abs_diff=float(diff.mean()) if n else math.nan,
        agreement=proportion_ci(int(agree.sum()), n),  # Wilson: 100% agreement on n images is not [1, 1]
        disagreements=tuple(rec(i) for i in dis[:max_listed]), n_disagree=int(dis.size),
        worst=tuple(rec(i) for i in worst), per_image_diff=diff.astype(np.float32),
    )


def criteria(res: ParityResult, config: AuditConfig) -> list[Criterion]:
    """Max abs probability difference <= max_abs_diff and top-1 agreement >= min_agreement (judged on values:
    a single disagreeing image is a fact, not a sampling question)."""
    diff, agree = measures(res)
    return [judge(diff, config.parity.max_abs_diff), judge(agree, config.parity.min_agreement, exact=True)]


def measures(res: ParityResult, config: AuditConfig | None = None) -> list[Measure]:
    listed = ": " + ", ".join(d.path for d in res.disagreements[:5]) if res.n_disagree else ""
    nan = math.nan
    return [
        Measure("parity.max_abs_diff", "ONNX vs PyTorch: max abs probability difference",
                Estimate(res.max_abs_diff, nan, nan), False,
                f"max {res.max_abs_diff:.2e}, p99 {res.p99_abs_diff:.2e} over {res.n} images ({res.arch})"),
        Measure("parity.agreement", "ONNX vs PyTorch: top-1 agreement", res.agreement, True,
                f"{res.n_disagree} of {res.n} images disagree{listed}"),
    ]


def charts(res: ParityResult, config: AuditConfig) -> dict[str, Canvas]:
    return {"histogram": parity_histogram(res.per_image_diff, config.parity.max_abs_diff)}


def parity_histogram(per_image_diff: np.ndarray, threshold: float | None = None) -> Canvas:
    """Distribution of the per-image max abs probability difference, ONNX vs PyTorch (log x)."""
    d = np.maximum(np.asarray(per_image_diff, dtype=float), 1e-12)
    edges = np.logspace(-12, 0, 49)
    counts, _ = np.histogram(d, bins=edges)
    c = Canvas(600, 270)
    panel = Panel(c, 62, 12, 520, 200, (1e-12, 1.0), (0, max(int(counts.max()), 1) * 1.1), log_x=True)
    panel.axes("max |p_onnx - p_torch| per image", "images")
    panel.bars(edges[:-1], edges[1:], counts, ACCENT)
    if threshold is not None:
        c.line(panel.x(threshold), panel.top, panel.x(threshold), panel.top + panel.height, BAD, dash=True)
        panel.legend([(f"limit {threshold:g}", BAD, "dash")])
    return c


SPEC = CheckSpec(
    "parity", "parity (PyTorch)", parity, config=ParityConfig,
    enabled=lambda c: bool(c.parity.torch_model), prepare=torch_classifier,
    criteria=criteria, comparable=measures, charts=charts,
    options=(Option("--torch-model", "parity.torch_model",
                    "model.safetensors for ONNX/PyTorch parity (arch from audit.arch)", "FILE"),),
)
