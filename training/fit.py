"""``fit``: config -> trained, exported, evaluated model with a training report.

Everything a run produces lands in ``export.out`` (default ``models/<name>/``): ``model.onnx``
(with the card), ``model.safetensors``, ``config.resolved.json``, ``results.json``,
``training_report.md`` (+ curves), Lightning CSV logs and checkpoints.

Example::

    result = fit(load_config("configs/fashion_mnist_baseline.toml"))
    result.test_accuracy
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from audit.model import ModelCard
from training.augment import SampleAugment, augmentation_agreement, invariances
from training.config import Config, with_values
from training.data import ImageArray, load_split, normalise, read_classes
from training.errors import TrainingError
from training.export import ExportResult, export_model, onnx_predict
from training.module import BASELINE, build_model
from training.phases import PhaseData, PhaseResult, predict, run_phase

log = logging.getLogger("training")


@dataclass(frozen=True)
class FitResult:
    name: str
    arch: str
    out_dir: Path
    phases: tuple[PhaseResult, ...]
    test_accuracy: float  # ONNX Runtime on the test split, auditor preprocessing
    test_accuracy_torch: float
    test_macro_f1: float
    n_test: int
    export: ExportResult
    agreement: dict | None  # augmentation label-invariance check (AgreementResult as dict)
    weights: str
    wall_seconds: float
    card: dict


def prepare_runtime(cfg: Config) -> None:
    """Threads, seeds and determinism for a reproducible CPU run."""
    import lightning.pytorch as pl

    torch.set_num_threads(max(1, cfg.train.threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)


def load_data(cfg: Config, pre, classes) -> tuple[ImageArray, ImageArray, ImageArray]:
    root = Path(cfg.data.root)
    train = load_split(root / "train", pre, classes=classes, limit=cfg.data.train_limit, seed=cfg.seed)
    val = load_split(root / "val", pre, classes=classes, limit=cfg.data.val_limit, seed=cfg.seed)
    test = load_split(root / "test", pre, classes=classes)
    return train, val, test


def fit(cfg: Config, *, out_dir: str | Path | None = None) -> FitResult:
    """Train (baseline or the three phases), export with the card, evaluate the ONNX model on test."""
    t0 = time.perf_counter()
    prepare_runtime(cfg)
    out = Path(out_dir or cfg.export.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.data.root)
    classes = read_classes(root)
    built = build_model(cfg, len(classes))
    net, pre = built.net, built.preprocess
    train, val, test = load_data(cfg, pre, classes)
    (out / "config.resolved.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    data = PhaseData(train, val, pre)
    names = ["baseline"] if cfg.model.arch == BASELINE else ["phase1", "phase2", "phase3"]
    results = []
    best_acc, best_state = -1.0, None
    for name in names:
        if getattr(cfg.phases, name).epochs > 0:
            r = run_phase(cfg, net, name, data, out)
            results.append(r)
            if r.best_val_acc >= best_acc:
                best_acc, best_state = r.best_val_acc, copy.deepcopy(net.state_dict())
            else:  # a later phase that does worse on val does not replace the earlier weights
                log.info("%s: best val acc %.4f < %.4f of an earlier phase; keeping the earlier weights",
                         name, r.best_val_acc, best_acc)
                net.load_state_dict(best_state)
    if not results:
        raise TrainingError("no phase has epochs > 0", hint="set phases.<phase>.epochs in the config")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    card = make_card(cfg, built, classes, results)
    x_val = normalise(val.images[: cfg.export.parity_images], pre)
    exported = export_model(net, card, out, parity_inputs=x_val, tolerance=cfg.export.parity_tolerance)
    x_test = normalise(test.images, pre)
    probs = onnx_predict(exported.onnx_path, x_test)
    y_pred = probs.argmax(1)
    torch_pred = predict(net, x_test, cfg.train.eval_batch_size)
    from sklearn.metrics import f1_score

    agreement = None
    aug = SampleAugment(cfg.augment, pre.size, seed=cfg.seed + 1000)
    if aug.active:
        n = min(len(val), 1000)
        agreement = asdict(augmentation_agreement(lambda x: predict(net, x), val.images[:n], val.labels[:n], aug, pre))
    result = FitResult(
        name=cfg.name, arch=built.arch, out_dir=out, phases=tuple(results),
        test_accuracy=float((y_pred == test.labels).mean()),
        test_accuracy_torch=float((torch_pred == test.labels).mean()),
        test_macro_f1=float(f1_score(test.labels, y_pred, average="macro")),
        n_test=len(test), export=exported, agreement=agreement, weights=built.weights.detail,
        wall_seconds=time.perf_counter() - t0, card=card.to_dict(),
    )
    from training.report import write_fit_report

    write_fit_report(result, cfg, root)
    return result


def make_card(cfg: Config, built, classes, results: list[PhaseResult]) -> ModelCard:
    import importlib.metadata as md

    versions = {}
    for lib in ("torch", "timm", "lightning", "albumentations", "onnx", "onnxruntime"):
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    provenance = {
        "dataset": Path(cfg.data.root).name,
        "config": cfg.name,
        "config_hash": cfg.digest(),
        "seed": cfg.seed,
        "weights": built.weights.detail,
        "phases": {r.name: {"epochs": r.epochs, "best_val_acc": round(r.best_val_acc, 4)} for r in results},
        "libraries": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if built.arch == BASELINE:
        provenance["model"] = "training.baseline.BaselineCNN"
    else:
        provenance["timm_kwargs"] = {k: v for k, v in built.timm_kwargs.items() if k != "drop_rate"}
    return ModelCard(labels=tuple(classes), preprocess=built.preprocess, output="logits",
                     arch=None if built.arch == BASELINE else built.arch,
                     invariances=invariances(cfg.augment), provenance=provenance)


ABLATION_VARIANTS = {
    "none": {},
    "flip_crop": {"hflip": True, "crop_scale": (0.8, 1.0)},
    "randaugment": {"randaugment": True},
    "randaugment_mixup_cutmix": {"randaugment": True, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
}


@dataclass(frozen=True)
class AblationRun:
    variant: str
    augment: dict
    val_acc: tuple[float, ...]
    best_val_acc: float
    train_seconds: float


def ablate(cfg: Config, *, out_dir: str | Path, epochs: int, train_limit: int | None = None,
           variants: tuple[str, ...] = tuple(ABLATION_VARIANTS)) -> tuple[AblationRun, ...]:
    """Train the same model once per augmentation variant; returns val-accuracy curves.

    The baseline trains from scratch; a timm backbone trains phase 3 (everything, differential
    LR) from the pretrained weights, where pixel-level augmentation matters.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phase = "baseline" if cfg.model.arch == BASELINE else "phase3"
    off = {"hflip": False, "vflip": False, "crop_scale": None, "affine_degrees": 0.0, "affine_translate": 0.0,
           "color": 0.0, "erasing": 0.0, "randaugment": False, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}
    classes = read_classes(cfg.data.root)
    runs = []
    for v in variants:
        if v not in ABLATION_VARIANTS:
            raise TrainingError(f"unknown ablation variant {v!r}", hint=f"choose from {list(ABLATION_VARIANTS)}")
        aug = {**off, **ABLATION_VARIANTS[v]}
        vcfg = with_values(cfg, augment=aug, data={"train_limit": train_limit or cfg.data.train_limit},
                           train={"early_stopping_patience": 0})
        vcfg = with_values(vcfg, phases={phase: replace(getattr(vcfg.phases, phase), epochs=epochs)})
        prepare_runtime(vcfg)
        built = build_model(vcfg, len(classes))
        train, val, _ = load_data(vcfg, built.preprocess, classes)
        r = run_phase(vcfg, built.net, phase, PhaseData(train, val, built.preprocess), out / v)
        runs.append(AblationRun(v, {k: aug[k] for k in ABLATION_VARIANTS[v]}, r.val_acc, r.best_val_acc, r.train_seconds))
    from training.report import write_ablation_report

    write_ablation_report(runs, cfg, out, epochs=epochs, train_limit=train_limit, phase=phase)
    return tuple(runs)
