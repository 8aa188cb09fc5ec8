"""``fit``: config -> trained, exported, evaluated model with a training report.

Everything a run produces lands in ``export.out`` (default ``models/<name>/``): ``model.onnx``
(with the card), ``model.safetensors``, ``config.resolved.json``, ``results.json``,
``training_report.md`` (+ curves), Lightning CSV logs and ``checkpoints/`` (``fit --resume``).

Example::

    result = fit(load_config("configs/fashion_mnist_scratch.toml"))
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

import lightning.pytorch as pl
import numpy as np
import torch

from audit.model import ModelCard
from training.augment import SampleAugment, augmentation_agreement
from training.config import TTA_FLIPS, Config, invariances, with_values
from training.data import ImageArray, load_split, normalise, read_classes
from training.errors import TrainingError
from training.export import TTA_DIMS, ExportResult, export_model, onnx_predict, with_tta
from training.module import SCRATCH, build_model
from training.phases import PhaseData, PhaseResult, predict, run_phase
from training.resume import RunState

log = logging.getLogger("training")


@dataclass(frozen=True)
class FitResult:
    name: str
    arch: str
    out_dir: Path
    phases: tuple[PhaseResult, ...]
    val_accuracy: float  # the exported network on the whole val split, without test-time augmentation
    val_tta: dict[str, float]  # val accuracy per flip set the card allows ("hflip", "hflip+vflip+hvflip", ...)
    tta: tuple[str, ...]  # the views averaged inside the exported graph
    test_accuracy: float | None  # ONNX Runtime on the test split, auditor preprocessing (None: not evaluated)
    test_accuracy_torch: float | None  # the same graph (TTA included) in PyTorch
    test_macro_f1: float | None
    n_test: int
    export: ExportResult
    agreement: dict | None  # augmentation label-invariance check (AgreementResult as dict)
    weights: str
    wall_seconds: float  # training + export + evaluation, summed over resumed invocations
    resumed: bool
    card: dict


def prepare_runtime(cfg: Config) -> None:
    """Threads, seeds and determinism for a reproducible CPU run."""
    import lightning.pytorch as pl

    torch.set_num_threads(max(1, cfg.train.threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)


def load_data(cfg: Config, pre, classes, *, test: bool = True) -> tuple[ImageArray, ImageArray, ImageArray | None]:
    root = Path(cfg.data.root)
    train = load_split(root / "train", pre, classes=classes, limit=cfg.data.train_limit, seed=cfg.seed)
    val = load_split(root / "val", pre, classes=classes, limit=cfg.data.val_limit, seed=cfg.seed)
    return train, val, load_split(root / "test", pre, classes=classes) if test else None


def fit(cfg: Config, *, out_dir: str | Path | None = None, resume: bool = False, callbacks: tuple = ()) -> FitResult:
    """Train (the scratch CNN or the three phases), export with the card, evaluate the ONNX model on test.

    A checkpoint is written after every epoch and phase; ``resume=True`` continues a stopped run
    with the same config in the same ``out_dir`` instead of starting over. ``callbacks`` are extra
    Lightning callbacks for every phase. ``export.evaluate_test = false`` never loads the test split.
    """
    prepare_runtime(cfg)
    out = Path(out_dir or cfg.export.out)
    out.mkdir(parents=True, exist_ok=True)
    state = RunState.open(out, cfg, resume=resume)
    root = Path(cfg.data.root)
    classes = read_classes(root)
    built = build_model(cfg, len(classes))
    net, pre = built.net, built.preprocess
    train, val, test = load_data(cfg, pre, classes, test=cfg.export.evaluate_test)
    (out / "config.resolved.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    results = train_phases(cfg, net, PhaseData(train, val, pre), out, state, callbacks)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    card = make_card(cfg, built, classes, results)
    x_val = normalise(val.images, pre)
    exported = export_model(net, card, out, parity_inputs=x_val[: cfg.export.parity_images],
                            tolerance=cfg.export.parity_tolerance, tta=cfg.export.tta)
    val_tta = flip_accuracies(net, x_val, val.labels, cfg, invariances(cfg.augment))
    test_scores = _test_scores(cfg, net, exported, test, pre)
    agreement = None
    aug = SampleAugment(cfg.augment, pre.size, seed=cfg.seed + 1000)
    if aug.active:
        n = min(len(val), 1000)
        agreement = asdict(augmentation_agreement(lambda x: predict(net, x), val.images[:n], val.labels[:n], aug, pre))
    result = FitResult(
        name=cfg.name, arch=built.arch, out_dir=out, phases=tuple(results), val_accuracy=val_tta["none"],
        val_tta=val_tta, tta=tuple(cfg.export.tta), **test_scores, n_test=0 if test is None else len(test),
        export=exported, agreement=agreement, weights=built.weights.detail, wall_seconds=state.elapsed,
        resumed=resume, card=card.to_dict(),
    )
    from training.report import write_fit_report

    write_fit_report(result, cfg, root)
    return result


def train_phases(cfg: Config, net, data: PhaseData, out: Path, state: RunState, callbacks: tuple = ()) -> list:
    """Run the phases in order, skipping those ``state`` has finished; a checkpoint after each."""
    names = ["scratch"] if cfg.model.arch == SCRATCH else ["phase1", "phase2", "phase3"]
    names = [n for n in names if getattr(cfg.phases, n).epochs > 0]
    if not names:
        raise TrainingError("no phase has epochs > 0", hint="set phases.<phase>.epochs in the config")
    if state.last_finished() is not None:
        state.load_weights(state.last_finished(), net)
        log.info("resuming: %s finished (best val acc %.4f)", ", ".join(state.progress["phases"]), state.best_val_acc)
    results, best_acc = [], state.best_val_acc
    for name in names:
        done = state.finished(name)
        if done is not None:
            results.append(_phase_result(done))
            continue
        best_state = copy.deepcopy(net.state_dict())
        r = run_phase(cfg, net, name, data, out, checkpoint_dir=state.phase_dir(name),
                      resume_from=state.epoch_checkpoint(name), callbacks=(SaveProgress(state), *callbacks))
        results.append(r)
        if r.best_val_acc >= best_acc:
            best_acc = r.best_val_acc
        else:  # a later phase that does worse on val does not replace the earlier weights
            log.info("%s: best val acc %.4f < %.4f of an earlier phase; keeping the earlier weights",
                     name, r.best_val_acc, best_acc)
            net.load_state_dict(best_state)
        state.finish_phase(name, r, net, best_acc)
    return results


def _phase_result(d: dict) -> PhaseResult:
    return PhaseResult(**{**d, "val_acc": tuple(d["val_acc"]), "groups": tuple(tuple(g) for g in d["groups"])})


class SaveProgress(pl.Callback):
    """Writes ``progress.json`` (wall time so far) after every epoch, next to Lightning's checkpoint."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.state.save()


def flip_accuracies(net, x: np.ndarray, y: np.ndarray, cfg: Config, declared: tuple[str, ...]) -> dict[str, float]:
    """Val accuracy of the network alone ("none"), with each allowed flip view, and with all of them.

    Only views whose flips the card declares as invariances are tried (the ones ``export.tta`` may list).
    """
    views = [v for v, flips in TTA_FLIPS.items() if all(f in declared for f in flips)]
    bs = cfg.train.eval_batch_size
    with torch.no_grad():
        probs = {v: np.concatenate([torch.softmax(net(_flip(torch.from_numpy(x[i:i + bs]), v)), 1).numpy()
                                    for i in range(0, len(x), bs)]) for v in ["none", *views]}
    out = {"none": float((probs["none"].argmax(1) == y).mean())}
    sets = [(v,) for v in views] + ([tuple(views)] if len(views) > 1 else [])
    for s in sets:
        mean = (probs["none"] + sum(probs[v] for v in s)) / (1 + len(s))
        out["+".join(s)] = float((mean.argmax(1) == y).mean())
    return out


def _flip(x: torch.Tensor, view: str) -> torch.Tensor:
    return x if view == "none" else torch.flip(x, TTA_DIMS[view])


def _test_scores(cfg: Config, net, exported: ExportResult, test: ImageArray | None, pre) -> dict:
    """Accuracy of the exported graph (ONNX and PyTorch) and macro F1 on the test split."""
    if test is None:
        return {"test_accuracy": None, "test_accuracy_torch": None, "test_macro_f1": None}
    from sklearn.metrics import f1_score

    x_test = normalise(test.images, pre)
    y_pred = onnx_predict(exported.onnx_path, x_test).argmax(1)
    graph = with_tta(net, tuple(cfg.export.tta))
    torch_pred = predict(graph, x_test, cfg.train.eval_batch_size)
    return {"test_accuracy": float((y_pred == test.labels).mean()),
            "test_accuracy_torch": float((torch_pred == test.labels).mean()),
            "test_macro_f1": float(f1_score(test.labels, y_pred, average="macro"))}


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
    if cfg.export.tta:
        provenance["tta"] = list(cfg.export.tta)
    if built.arch == SCRATCH:
        provenance["model"] = "training.scratch.ScratchCNN"
    else:
        provenance["timm_kwargs"] = {k: v for k, v in built.timm_kwargs.items() if k != "drop_rate"}
    return ModelCard(labels=tuple(classes), preprocess=built.preprocess,
                     output="probabilities" if cfg.export.tta else "logits",
                     arch=None if built.arch == SCRATCH else built.arch,
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

    The scratch CNN trains from scratch; a timm backbone trains phase 3 (everything, differential
    LR) from the pretrained weights, where pixel-level augmentation matters.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phase = "scratch" if cfg.model.arch == SCRATCH else "phase3"
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
