"""Model building and the LightningModule used by every phase.

``build_model`` returns the network (the scratch CNN or a timm backbone with pretrained weights
resolved offline); ``Classifier`` trains any ``nn.Module`` with the param groups a phase gives it;
``make_trainer`` wires seed/determinism, gradient accumulation, checkpointing, early stopping,
precision, CSV/MLflow logging and progress bars from the config.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audit.model import Preprocess
from training.scratch import ScratchCNN
from training.config import Config
from training.errors import TrainingError
from training.weights import LoadReport, ResolvedWeights, load_pretrained, resolve_weights

SCRATCH = "scratch_cnn"
IMAGENET_GREY = ((0.449,), (0.226,))


@dataclass(frozen=True)
class BuiltModel:
    net: nn.Module
    arch: str
    weights: ResolvedWeights
    load: LoadReport | None
    preprocess: Preprocess
    timm_kwargs: dict = field(default_factory=dict)


def build_model(cfg: Config, num_classes: int) -> BuiltModel:
    """The network for ``cfg.model.arch`` and the preprocessing its card will carry."""
    d = cfg.data
    in_chans = 1 if d.color == "L" else 3
    if cfg.model.arch == SCRATCH:
        mean = d.mean or (0.5,) * in_chans
        std = d.std or (0.5,) * in_chans
        pre = Preprocess(size=d.size, resize=d.resize, crop_pct=d.crop_pct, interpolation=d.interpolation,
                         mean=mean, std=std, color=d.color)
        net = ScratchCNN(in_chans, num_classes, tuple(d.size))
        return BuiltModel(net, SCRATCH, ResolvedWeights(SCRATCH, "none", detail="trained from scratch"), None, pre)
    import timm

    if not timm.is_model(cfg.model.arch):
        raise TrainingError(f"model.arch {cfg.model.arch!r} is not a timm model",
                            hint="e.g. tf_efficientnet_lite0, convnext_tiny, tf_efficientnetv2_s, vit_base_patch16_224")
    resolved = resolve_weights(cfg.model.arch, cfg.model.weights, allow_download=cfg.model.allow_download)
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": cfg.model.drop_rate}
    if "vit" in cfg.model.arch or "deit" in cfg.model.arch:
        kwargs["img_size"] = tuple(d.size)
    net = timm.create_model(cfg.model.arch, pretrained=False, **kwargs)
    report = load_pretrained(net, resolved)
    _reset_head(net)
    pcfg = net.pretrained_cfg
    mean, std = tuple(pcfg.get("mean", (0.485, 0.456, 0.406))), tuple(pcfg.get("std", (0.229, 0.224, 0.225)))
    if in_chans == 1:  # the stem was summed over RGB, so feed it one channel on the same scale
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    pre = Preprocess(size=d.size, resize=d.resize, crop_pct=d.crop_pct, interpolation=d.interpolation,
                     mean=d.mean or mean, std=d.std or std, color=d.color)
    return BuiltModel(net, cfg.model.arch, resolved, report, pre, kwargs)


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError:
        raise TrainingError("PyTorch Lightning is not installed", hint='pip install -e ".[train]"') from None
    return pl


pl = _lightning()


def _reset_head(net: nn.Module) -> None:
    """A small, zero-mean new head. timm's EfficientNet init scales the classifier by
    1/sqrt(num_classes) (0.7 for 2 classes), which makes the first logits huge on 1280 features
    and leaves a frozen-backbone head training at 1e-3 unable to recover."""
    head = net.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)


class Classifier(pl.LightningModule):
    """Cross-entropy training of ``net`` with AdamW over the given param groups, warmup + cosine LR.

    ``param_groups`` is a list of ``{"name", "params", "lr"}``; ``mixer`` (MixUp/CutMix) turns
    integer labels into soft targets during training only.
    """

    def __init__(self, net: nn.Module, param_groups: list[dict], *, weight_decay: float = 0.05,
                 label_smoothing: float = 0.0, warmup_frac: float = 0.1, mixer=None,
                 freeze_bn_stats: bool = False, channels_last: bool = False,
                 class_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.groups = param_groups
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.warmup_frac = warmup_frac
        self.mixer = mixer if mixer is not None and mixer.active else None
        self.freeze_bn_stats = freeze_bn_stats
        self.channels_last = channels_last
        self.class_weight = class_weight

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        # Frozen BatchNorm layers keep their pretrained statistics; with freeze_bn_stats all do. Without
        # it, full fine-tuning on grey 48 px images re-estimates ImageNet statistics within a few
        # steps and the layers trained on the old statistics collapse (measured: val 0.87 -> 0.69).
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                    self.freeze_bn_stats or not any(p.requires_grad for p in m.parameters())):
                m.eval()

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        x = self._layout(x)
        loss = F.cross_entropy(self.net(x), y, weight=self.class_weight, label_smoothing=self.label_smoothing)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(self._layout(x))
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=False)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        groups = [{"params": g["params"], "lr": g["lr"], "name": g["name"]} for g in self.groups]
        opt = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = max(1, int(total * self.warmup_frac))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochRecorder(pl.Callback):
    """Records val accuracy and training throughput per epoch; keeps the best weights in memory.

    Its state travels in Lightning's checkpoint, so a resumed phase knows its earlier epochs.
    """

    def __init__(self, t_start: float | None = None) -> None:
        self.val_acc: list[float] = []
        self.train_seconds: list[float] = []
        self.train_samples: list[int] = []
        self.best_acc = -1.0
        self.best_state: dict | None = None
        self.wall_before = 0.0  # wall seconds of this phase in earlier invocations (resume)
        self._t0 = 0.0
        self._n = 0
        self._t_start = time.perf_counter() if t_start is None else t_start  # this invocation's phase start

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t0, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._n += len(batch[1])

    def on_train_epoch_end(self, trainer, module) -> None:
        self.train_seconds.append(time.perf_counter() - self._t0)
        self.train_samples.append(self._n)

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        acc = float(trainer.callback_metrics.get("val_acc", float("nan")))
        self.val_acc.append(acc)
        if acc > self.best_acc:
            self.best_acc = acc
            self.best_state = copy.deepcopy(module.net.state_dict())

    def state_dict(self) -> dict:
        return {"val_acc": list(self.val_acc), "train_seconds": list(self.train_seconds),
                "train_samples": list(self.train_samples), "best_acc": self.best_acc, "best_state": self.best_state,
                "wall": self.wall_before + time.perf_counter() - self._t_start}

    def load_state_dict(self, state: dict) -> None:
        self.val_acc, self.train_seconds = list(state["val_acc"]), list(state["train_seconds"])
        self.train_samples, self.best_acc = list(state["train_samples"]), float(state["best_acc"])
        self.best_state = state["best_state"]
        self.wall_before = float(state["wall"])

    def restore_best(self, module) -> None:
        if self.best_state is not None:
            module.net.load_state_dict(self.best_state)


def make_trainer(cfg: Config, out_dir: Path, phase: str, epochs: int, *, limit_train_batches: float = 1.0,
                 recorder: EpochRecorder | None = None, checkpoint_dir: Path | None = None,
                 callbacks: tuple = ()):
    """A Lightning Trainer for one phase, configured from ``cfg.train``.

    With ``checkpoint_dir`` the full training state is saved there as ``last.ckpt`` after every
    epoch (``fit --resume`` continues from it). Progress: Lightning's bar on a terminal, plain
    lines (``training.progress.LineProgress``) otherwise.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from training.progress import LineProgress, wants_bar

    t = cfg.train
    bar = t.progress_bar and wants_bar()
    cbs = [recorder] if recorder is not None else []
    if t.progress_bar and not bar:
        cbs.append(LineProgress(phase, interval_s=t.progress_interval_s))
    if t.early_stopping_patience > 0:
        cbs.append(EarlyStopping(monitor="val_acc", mode="max", patience=t.early_stopping_patience))
    if checkpoint_dir is not None:
        cbs.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1,
                                   every_n_epochs=1, enable_version_counter=False))
    cbs += list(callbacks)
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate,
        deterministic=t.deterministic,
        limit_train_batches=limit_train_batches,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=bar,
        enable_checkpointing=checkpoint_dir is not None,
        logger=_logger(cfg, out_dir, phase),
        callbacks=cbs,
        default_root_dir=str(out_dir),
        log_every_n_steps=20,
    )


def _logger(cfg: Config, out_dir: Path, phase: str):
    kind = cfg.train.logger
    if kind == "none":
        return False
    if kind == "mlflow":
        try:
            from lightning.pytorch.loggers import MLFlowLogger

            import mlflow  # noqa: F401
        except ImportError:
            raise TrainingError("train.logger = 'mlflow' but mlflow is not installed",
                                hint="pip install mlflow, or use train.logger = 'csv'") from None
        return MLFlowLogger(experiment_name=cfg.name, run_name=phase,
                            tracking_uri=f"file:{(out_dir / 'mlruns').resolve()}")
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(str(out_dir / "logs"), name=phase, version=0)


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's advice aimed at GPU/multi-worker setups (irrelevant on a 2-core CPU)."""
    import logging

    names = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
             "lightning.pytorch.accelerators.cuda")
    levels = {n: logging.getLogger(n).level for n in names}
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*number of training batches.*",
                        ".*GPU available but not used.*", ".*exists and is not empty.*",
                        ".*LeafSpec.*", ".*treespec.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
                        ".*deterministic.*", ".*could be non-deterministic.*", ".*torch.jit.*"):
            warnings.filterwarnings("ignore", message=pattern)
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for n, lvl in levels.items():
                logging.getLogger(n).setLevel(lvl)
