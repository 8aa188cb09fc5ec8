"""Typed training config, read from TOML; every field has a default so configs stay short.

Example::

    cfg = load_config("configs/fashion_mnist_scratch.toml", overrides=["phases.scratch.epochs=1"])
    cfg.model.arch  # "scratch_cnn"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from audit.settings import build, set_dotted, setting
from training.errors import TrainingError


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/fashion-mnist"  # holds train/ val/ test/ ImageFolders
    size: tuple[int, int] = setting((28, 28), ge=8)
    color: str = setting("L", choices=("RGB", "L"))
    resize: str = "resize"
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    mean: tuple[float, ...] | None = None  # None: the backbone's own (timm pretrained_cfg)
    std: tuple[float, ...] | None = None
    train_limit: int | None = None  # use at most this many training images (stratified head)
    val_limit: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "scratch_cnn"  # "scratch_cnn" or a timm model name
    weights: str = "auto"  # "auto", "none" or a file path
    allow_download: bool = False
    drop_rate: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False  # quarter turns (with both flips: all 8 symmetries of the square); needs a square input
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop scale; None = off
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    color: float = 0.0  # brightness/contrast jitter strength; 0 = off
    erasing: float = 0.0  # probability of one random erased rectangle
    randaugment: bool = False
    randaugment_n: int = 2
    randaugment_m: int = 9
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    invariances: tuple[str, ...] | None = None  # None: derived from the switches above


@dataclass(frozen=True)
class PhaseConfig:
    epochs: int = setting(0, ge=0)
    lr: float = 1e-3
    lr_backbone: float = 1e-5  # phase 3 only
    unfreeze: int = 2  # phase 2: how many last stages/blocks train
    cache: bool = True  # phase 1: cache pooled features; phase 2: cache the frozen prefix
    cache_views: int = 1  # phase 2 cache: augmented views per training image (view 0 is clean)
    limit_train_batches: float = setting(1.0, gt=0, le=1)  # fraction of an epoch (phase 3 on a slow CPU)
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    freeze_bn_stats: bool = True  # BatchNorm keeps its running statistics (eval mode) while weights train


@dataclass(frozen=True)
class PhasesConfig:
    scratch: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=0, lr=2e-3))
    phase1: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=0, lr=1e-3))
    phase2: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=0, lr=1e-4))
    phase3: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=0, lr=1e-3, lr_backbone=1e-5))


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    eval_batch_size: int = 256
    accumulate: int = setting(1, ge=1)
    precision: str = "32-true"
    compile: bool = False
    channels_last: bool = True  # NHWC activations when training on images: 1.1-1.4x faster on CPU
    threads: int = 2
    deterministic: bool = True
    early_stopping_patience: int = 3
    label_smoothing: float = 0.0
    logger: str = setting("csv", choices=("csv", "mlflow", "none"))
    progress_bar: bool = True  # a terminal gets Lightning's bar; a log file gets plain lines
    progress_interval_s: float = 30.0  # plain-line progress: a line per 10% of an epoch or per this many s
    class_weights: str = setting("none", choices=("none", "balanced"))  # balanced: weights n / (k * n_class)
    # two classes only: a metadata.csv column holding each training image's probability of the second class
    # (ELPV: "defect_probability", 0, 1/3, 2/3 or 1); the training targets become (1 - p, p), not the label
    soft_label_column: str | None = None


@dataclass(frozen=True)
class ExportConfig:
    out: str = "models/model"
    parity_tolerance: float = 1e-4
    parity_images: int = 64
    tta: tuple[str, ...] = ()  # extra views averaged inside the ONNX graph (TTA_NEEDS): "hflip", "rot90", ...
    evaluate_test: bool = True  # false for pilots: select on val, never look at the test split


# how a run uses the machine, not what it learns: a resumed run may change them (fewer threads on a busier CPU)
RUNTIME_KNOBS = ("threads", "progress_bar", "progress_interval_s")


@dataclass(frozen=True)
class EnsembleConfig:
    seeds: tuple[int, ...] = ()  # one member per seed, each a full run of the phases; () = one model (``seed``)


@dataclass(frozen=True)
class Config:
    name: str = "model"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """A short hash of the resolved config (goes into the model card's provenance)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def training_digest(self) -> str:
        """A short hash of what decides the trained weights: not the name, the export, the ensemble or the
        ``RUNTIME_KNOBS``.

        ``fit --resume`` checks it, so a finished run can be exported again with other ``[export]``
        values, and a single run with seed s can serve as the member of seed s of an ensemble.
        """
        d = {k: v for k, v in self.to_dict().items() if k not in ("name", "export", "ensemble")}
        d["train"] = {k: v for k, v in d["train"].items() if k not in RUNTIME_KNOBS}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def load_config(path: str | Path | None = None, *, overrides: list[str] | tuple[str, ...] = (),
                raw: dict[str, Any] | None = None) -> Config:
    """Read a TOML config (or ``raw`` values), apply ``key.sub=value`` overrides, validate."""
    data: dict[str, Any] = dict(raw or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise TrainingError(f"config file not found: {p}", hint="pass --config configs/<name>.toml")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise TrainingError(f"config {p} is not valid TOML: {e}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainingError(f"override {item!r} must look like key.sub=value", hint="e.g. --set phases.phase1.epochs=2")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare string
        set_dotted(data, key, parsed)
    cfg = build(Config, data, "")  # the audit's loader: unknown keys and wrong types name the key
    _validate(cfg)
    return cfg


def with_values(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some fields of some sections replaced (used by the ablation)."""
    changes = {name: replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return replace(cfg, **changes)


def _validate(cfg: Config) -> None:
    """What the fields' declared bounds cannot say: shapes and rules across fields."""
    if len(cfg.data.size) != 2:
        raise TrainingError(f"data.size must be [H, W], got {list(cfg.data.size)}")
    _validate_tta(cfg)
    is_scratch = cfg.model.arch == "scratch_cnn"
    if is_scratch and any(getattr(cfg.phases, p).epochs for p in ("phase1", "phase2", "phase3")):
        raise TrainingError("model.arch = 'scratch_cnn' trains from scratch: use phases.scratch only",
                            hint="set phases.phase1/2/3.epochs = 0 or choose a timm backbone")
    if not is_scratch and cfg.phases.scratch.epochs:
        raise TrainingError("phases.scratch is for model.arch = 'scratch_cnn'",
                            hint="train the scratch CNN with its own config (configs/*_scratch.toml)")


def invariances(cfg: AugmentConfig) -> tuple[str, ...]:
    """The label-preserving transforms (audit names, docs/ARCHITECTURE.md §4.3) the model was trained to tolerate."""
    if cfg.invariances is not None:
        return tuple(cfg.invariances)
    out = []
    if cfg.hflip:
        out.append("hflip")
    if cfg.vflip:
        out.append("vflip")
    if cfg.rot90:
        out.append("rot90")
    if cfg.crop_scale:
        out.append("crop")
    if cfg.affine_degrees or cfg.randaugment:
        out.append("rotate")
    if cfg.color or cfg.randaugment:
        out += ["brightness", "contrast"]
    return tuple(dict.fromkeys(out))


# view -> sets of invariances, any one of which makes it label-preserving: the view lies in the group they
# generate (rot180 = hvflip = two quarter turns; a quarter turn and one flip give all 8 symmetries)
TTA_NEEDS = {
    "hflip": (("hflip",), ("rot90", "vflip")), "vflip": (("vflip",), ("rot90", "hflip")),
    "hvflip": (("hflip", "vflip"), ("rot90",)),
    "rot90": (("rot90",),), "rot270": (("rot90",),),
    "transpose": (("rot90", "hflip"), ("rot90", "vflip")), "antitranspose": (("rot90", "hflip"), ("rot90", "vflip")),
}
QUARTER_TURNS = ("rot90", "rot270", "transpose", "antitranspose")  # views that swap H and W
D4_VIEWS = ("hflip", "vflip", "hvflip", "rot90", "rot270", "transpose", "antitranspose")  # with the identity: all 8


def allowed_views(declared) -> tuple[str, ...]:
    """The views of ``TTA_NEEDS`` that the declared invariances make label-preserving."""
    have = set(declared)
    return tuple(v for v, needs in TTA_NEEDS.items() if any(set(n) <= have for n in needs))


def _validate_tta(cfg: Config) -> None:
    """Only views the card's invariances make label-preserving may be averaged inside the graph."""
    declared = invariances(cfg.augment)
    allowed = allowed_views(declared)
    for view in cfg.export.tta:
        if view not in TTA_NEEDS:
            raise TrainingError(f"export.tta: unknown view {view!r}", hint=f"choose from {list(TTA_NEEDS)}")
        if view not in allowed:
            missing = [f for f in TTA_NEEDS[view][0] if f not in declared]
            raise TrainingError(f"export.tta lists {view!r} but the card's invariances {sorted(declared)} lack "
                                f"{missing[0]!r}", hint=f"train with augment.{missing[0]} = true or drop {view!r}")
    if len(set(cfg.export.tta)) != len(cfg.export.tta):
        raise TrainingError(f"export.tta lists a view twice: {list(cfg.export.tta)}")
    turns = cfg.augment.rot90 or any(v in QUARTER_TURNS for v in cfg.export.tta)
    if turns and cfg.data.size[0] != cfg.data.size[1]:
        raise TrainingError(f"quarter turns need a square input, data.size is {list(cfg.data.size)}",
                            hint="set data.size = [S, S] or augment.rot90 = false")
    if cfg.train.soft_label_column and (cfg.augment.mixup_alpha or cfg.augment.cutmix_alpha):
        raise TrainingError("train.soft_label_column cannot be combined with MixUp/CutMix",
                            hint="set augment.mixup_alpha = augment.cutmix_alpha = 0")
    if len(set(cfg.ensemble.seeds)) != len(cfg.ensemble.seeds):
        raise TrainingError(f"ensemble.seeds lists a seed twice: {list(cfg.ensemble.seeds)}")
