"""The three-phase transfer-learning schedule (docs/ARCHITECTURE.md §11).

* phase 1 — backbone frozen, head only. With ``cache = true`` the frozen backbone runs once
  over the training set and the head trains on the cached pooled features.
* phase 2 — the last ``unfreeze`` stages (+ the final conv/norm) and the head train at ``lr``
  (1e-4). With ``cache = true`` the frozen prefix's output is cached (``cache_views`` augmented
  views per image, view 0 clean), so the frozen part again runs once, not once per epoch.
* phase 3 — everything trains, AdamW with two param groups: backbone ``lr_backbone`` (1e-5)
  and head ``lr`` (1e-3).

``trainable_names`` and ``param_groups`` expose the schedule so tests can check which parameters
train in each phase and at what learning rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.model import Preprocess
from training.augment import AugmentedDataset, BatchMix, SampleAugment
from training.config import Config, PhaseConfig
from training.data import ImageArray, normalise
from training.module import Classifier, EpochRecorder, make_trainer, quiet_lightning
from training.resume import EpochSampler, completed_epochs

log = logging.getLogger("training")


# ----------------------------------------------------------------------------- model anatomy


@dataclass
class Anatomy:
    """A timm model cut into stem -> stages -> tail -> head, with prefix/suffix forwards."""

    model: nn.Module
    stem: list[nn.Module]
    stages: list[nn.Module]
    tail: list[nn.Module]
    head: nn.Module
    prefix: Callable[[torch.Tensor, int], torch.Tensor] | None = None  # x, k -> features after stages[:k]
    suffix: Callable[..., torch.Tensor] | None = None  # h, k[, pre_logits] -> logits


def _cut(model: nn.Module, stem: Callable, stages, tail: Callable):
    """prefix(x, k): stem then stages[:k]; suffix(h, k): stages[k:], tail, head."""
    def prefix(x, k):
        x = stem(x)
        for s in stages[:k]:
            x = s(x)
        return x

    def suffix(h, k, pre_logits=False):
        for s in stages[k:]:
            h = s(h)
        return model.forward_head(tail(h), pre_logits=pre_logits)

    return prefix, suffix


def anatomy(model: nn.Module) -> Anatomy:
    """Recognise the EfficientNet, ConvNeXt and ViT layouts of timm (and the scratch CNN)."""
    head = model.get_classifier()
    if hasattr(model, "conv_stem") and hasattr(model, "blocks"):  # EfficientNet / -Lite / V2
        prefix, suffix = _cut(model, lambda x: model.bn1(model.conv_stem(x)), model.blocks,
                              lambda h: model.bn2(model.conv_head(h)))
        return Anatomy(model, [model.conv_stem, model.bn1], list(model.blocks), [model.conv_head, model.bn2],
                       head, prefix, suffix)
    if hasattr(model, "stem") and hasattr(model, "stages"):  # ConvNeXt
        prefix, suffix = _cut(model, model.stem, model.stages, model.norm_pre)
        return Anatomy(model, [model.stem], list(model.stages), [model.norm_pre], head, prefix, suffix)
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):  # ViT
        prefix, suffix = _cut(model, lambda x: model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))),
                              model.blocks, model.norm)
        return Anatomy(model, [model.patch_embed], list(model.blocks), [model.norm], head, prefix, suffix)
    if hasattr(model, "features") and hasattr(model, "head"):  # ScratchCNN
        return Anatomy(model, [], list(model.features), list(model.head)[:-1], head)
    raise ValueError(f"unsupported model layout {type(model).__name__}")


def trainable_names(model: nn.Module, phase: str, unfreeze: int = 2) -> set[str]:
    """Names of the parameters that train in ``phase`` ("phase1", "phase2", "phase3", "scratch")."""
    groups = _groups(model, phase, unfreeze)
    ids = {id(p) for ps in groups.values() for p in ps}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def set_phase(model: nn.Module, phase: str, ph: PhaseConfig) -> list[dict]:
    """Freeze/unfreeze ``model`` for ``phase`` and return its AdamW param groups (name, params, lr)."""
    groups = _groups(model, phase, ph.unfreeze)
    ids = {id(p) for ps in groups.values() for p in ps}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return param_groups(groups, phase, ph)


def param_groups(groups: dict[str, list[nn.Parameter]], phase: str, ph: PhaseConfig) -> list[dict]:
    out = []
    for name, params in groups.items():
        lr = ph.lr_backbone if (phase == "phase3" and name == "backbone") else ph.lr
        out.append({"name": name, "params": params, "lr": lr})
    return out


def _groups(model: nn.Module, phase: str, unfreeze: int) -> dict[str, list[nn.Parameter]]:
    a = anatomy(model)
    head = list(a.head.parameters())
    head_ids = {id(p) for p in head}
    if phase == "phase1":
        return {"head": head}
    if phase == "phase2":
        k = max(0, len(a.stages) - unfreeze)
        mods = a.stages[k:] + a.tail
        return {"last_blocks": [p for m in mods for p in m.parameters() if id(p) not in head_ids], "head": head}
    if phase in ("phase3", "scratch"):
        return {"backbone": [p for p in model.parameters() if id(p) not in head_ids], "head": head}
    raise ValueError(f"unknown phase {phase!r}")


# ----------------------------------------------------------------------------- running


@dataclass(frozen=True)
class PhaseResult:
    name: str
    epochs: int
    cached: bool
    cache_seconds: float  # time to compute the cache (0 when not cached)
    train_seconds: float  # time in training epochs (excl. validation)
    samples_per_second: float  # training throughput, excl. cache and validation
    val_acc: tuple[float, ...]  # per epoch
    best_val_acc: float
    groups: tuple[tuple[str, float, int], ...]  # (name, lr, number of parameters)
    wall_seconds: float


@dataclass
class PhaseData:
    train: ImageArray
    val: ImageArray
    pre: Preprocess
    extra: dict = field(default_factory=dict)


@dataclass
class _Inputs:
    """What one phase trains: the module, its datasets and how to reseed their augmentation."""

    net: nn.Module
    train_ds: torch.utils.data.Dataset
    val_ds: torch.utils.data.Dataset
    num_samples: int  # training samples per epoch
    reseed: Callable[[int], None] | None = None
    cache_seconds: float = 0.0


def run_phase(cfg: Config, model: nn.Module, phase: str, data: PhaseData, out_dir: Path, *,
              cache: bool | None = None, checkpoint_dir: Path | None = None, resume_from: Path | None = None,
              callbacks: tuple = ()) -> PhaseResult:
    """Train ``model`` in place for one phase; the best epoch's weights (val accuracy) are kept.

    ``checkpoint_dir`` receives the full training state after every epoch; ``resume_from`` (such a
    ``last.ckpt``) continues the phase after its last finished epoch.
    """
    ph: PhaseConfig = getattr(cfg.phases, phase)
    cache = ph.cache if cache is None else cache
    cached = bool(cache and phase in ("phase1", "phase2"))
    t_start = time.perf_counter()
    log.info("%s: %d epoch(s) on %d images%s", phase, ph.epochs, len(data.train),
             " (cached activations)" if cached else "")
    groups = set_phase(model, phase, ph)
    inp = _phase_inputs(cfg, model, phase, data, cached)
    channels_last = cfg.train.channels_last and inp.net is model
    if channels_last:
        inp.net.to(memory_format=torch.channels_last)
    seed = cfg.seed * 10 + ("scratch", "phase1", "phase2", "phase3").index(phase)
    sampler = EpochSampler(len(inp.train_ds), num_samples=inp.num_samples, seed=seed, reseed=inp.reseed)
    bs = cfg.train.batch_size
    train_dl = torch.utils.data.DataLoader(inp.train_ds, batch_size=bs, sampler=sampler,
                                           drop_last=inp.num_samples > bs, num_workers=0)
    val_dl = torch.utils.data.DataLoader(inp.val_ds, batch_size=cfg.train.eval_batch_size, num_workers=0)
    module = Classifier(inp.net, groups, weight_decay=ph.weight_decay, label_smoothing=cfg.train.label_smoothing,
                        warmup_frac=ph.warmup_frac, mixer=BatchMix(cfg.augment, len(data.train.classes)),
                        freeze_bn_stats=ph.freeze_bn_stats and phase != "scratch", channels_last=channels_last,
                        class_weight=class_weights(cfg, data.train.labels, len(data.train.classes)))
    if cfg.train.compile:
        module.net = torch.compile(module.net)
    if inp.cache_seconds:
        log.info("%s: cache computed in %.0f s", phase, inp.cache_seconds)
    inp.net.train()  # the caches above ran in eval mode; frozen BatchNorms are reset per epoch
    recorder = EpochRecorder(t_start)
    if resume_from is not None:
        sampler.set_epoch(completed_epochs(resume_from))  # its first batch is fetched before Lightning's set_epoch
        log.info("%s: resuming after epoch %d from %s", phase, sampler.epoch, resume_from)
    with quiet_lightning():
        trainer = make_trainer(cfg, out_dir, phase, ph.epochs, limit_train_batches=ph.limit_train_batches,
                               recorder=recorder, checkpoint_dir=checkpoint_dir, callbacks=callbacks)
        trainer.fit(module, train_dl, val_dl, ckpt_path=resume_from, weights_only=False)
    recorder.restore_best(module)
    if channels_last:  # back to the default layout for caching, export and evaluation
        inp.net.to(memory_format=torch.contiguous_format)
    n_params = tuple((g["name"], g["lr"], sum(p.numel() for p in g["params"])) for g in groups)
    train_s = sum(recorder.train_seconds)
    return PhaseResult(phase, len(recorder.val_acc), cached, inp.cache_seconds, train_s,
                       sum(recorder.train_samples) / max(train_s, 1e-9), tuple(recorder.val_acc),
                       recorder.best_acc, n_params, recorder.wall_before + time.perf_counter() - t_start)


def class_weights(cfg: Config, labels: np.ndarray, k: int) -> torch.Tensor | None:
    """``train.class_weights = "balanced"``: weight n / (k * n_c) per class, as scikit-learn's."""
    if cfg.train.class_weights == "none":
        return None
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return torch.tensor(len(labels) / (k * np.maximum(counts, 1)), dtype=torch.float32)


def _phase_inputs(cfg: Config, model: nn.Module, phase: str, data: PhaseData, cached: bool) -> _Inputs:
    a = anatomy(model)
    if cached and phase == "phase1":
        return _phase1_cached(cfg, a, data)
    if cached and phase == "phase2" and a.prefix is not None:
        return _phase2_cached(cfg, a, data)
    aug = SampleAugment(cfg.augment, data.pre.size, seed=cfg.seed)
    train_ds = AugmentedDataset(data.train.images, data.train.train_targets(), data.pre, aug, cfg.augment.erasing)
    val_ds = AugmentedDataset(data.val.images, data.val.labels, data.pre)
    return _Inputs(model, train_ds, val_ds, len(train_ds), aug.reseed)


def _phase1_cached(cfg: Config, a: Anatomy, data: PhaseData) -> _Inputs:
    t0 = time.perf_counter()
    p2 = cfg.phases.phase2
    bsz = cfg.train.eval_batch_size
    if p2.epochs > 0 and p2.cache and a.prefix is not None:
        # One pass serves both phases: keep phase 2's prefix activations, pool them through
        # the (still frozen) suffix for phase 1.
        k = max(0, len(a.stages) - p2.unfreeze)
        for split, arr in (("train", data.train), ("val", data.val)):
            data.extra[("prefix", k, split)] = prefix_features(a, k, arr.images, data.pre, bsz)
        feats_tr = _pool_suffix(a, k, data.extra[("prefix", k, "train")], bsz)
        feats_val = _pool_suffix(a, k, data.extra[("prefix", k, "val")], bsz)
    else:
        feats_tr = features(a.model, data.train.images, data.pre, bsz)
        feats_val = features(a.model, data.val.images, data.pre, bsz)
    train_ds = torch.utils.data.TensorDataset(feats_tr, torch.from_numpy(data.train.train_targets()))
    val_ds = torch.utils.data.TensorDataset(feats_val, torch.from_numpy(data.val.labels))
    return _Inputs(a.head, train_ds, val_ds, len(train_ds), cache_seconds=time.perf_counter() - t0)


def _phase2_cached(cfg: Config, a: Anatomy, data: PhaseData) -> _Inputs:
    ph = cfg.phases.phase2
    k = max(0, len(a.stages) - ph.unfreeze)
    t0 = time.perf_counter()
    views = []
    for v in range(max(1, ph.cache_views)):
        if v == 0 and ("prefix", k, "train") in data.extra:  # computed during phase 1
            views.append(data.extra.pop(("prefix", k, "train")))
            continue
        aug = SampleAugment(cfg.augment, data.pre.size, seed=cfg.seed + v) if v else None
        imgs = data.train.images if aug is None else np.stack([aug(im) for im in data.train.images])
        views.append(prefix_features(a, k, imgs, data.pre, cfg.train.eval_batch_size))
    feats_val = data.extra.pop(("prefix", k, "val"), None)
    if feats_val is None:
        feats_val = prefix_features(a, k, data.val.images, data.pre, cfg.train.eval_batch_size)
    labels = torch.from_numpy(np.concatenate([data.train.train_targets()] * len(views)))
    train_ds = _HalfDataset(torch.cat(views), labels)
    val_ds = _HalfDataset(feats_val, torch.from_numpy(data.val.labels))
    # Each epoch draws one training-set's worth of samples from all cached views.
    return _Inputs(_Suffix(a, k), train_ds, val_ds, len(data.train), cache_seconds=time.perf_counter() - t0)


class _Suffix(nn.Module):
    def __init__(self, a: Anatomy, k: int) -> None:
        super().__init__()
        self.model = a.model  # registers every parameter; only the unfrozen ones train
        self._suffix, self.k = a.suffix, k

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self._suffix(h, self.k)


class _HalfDataset(torch.utils.data.Dataset):
    """Cached activations stored as float16 (half the memory), served as float32."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i].float(), self.y[i]


@torch.no_grad()
def features(model: nn.Module, images: np.ndarray, pre: Preprocess, batch_size: int = 256) -> torch.Tensor:
    """Pooled pre-logit features of the frozen backbone, one forward pass per image."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(normalise(images[i:i + batch_size], pre))
        if hasattr(model, "forward_features"):
            out.append(model.forward_head(model.forward_features(x), pre_logits=True))
        else:  # ScratchCNN
            out.append(model.head[:-1](model.features(x)))
    return torch.cat(out)


@torch.no_grad()
def _pool_suffix(a: Anatomy, k: int, h: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pooled pre-logit features from cached prefix activations (the frozen rest of the backbone)."""
    a.model.eval()
    return torch.cat([a.suffix(h[i:i + batch_size].float(), k, True) for i in range(0, len(h), batch_size)])


@torch.no_grad()
def prefix_features(a: Anatomy, k: int, images: np.ndarray, pre: Preprocess, batch_size: int = 256) -> torch.Tensor:
    a.model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        out.append(a.prefix(torch.from_numpy(normalise(images[i:i + batch_size], pre)), k).half())
    return torch.cat(out)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class ids for float NCHW inputs."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).argmax(1).numpy()
                           for i in range(0, len(x), batch_size)])
