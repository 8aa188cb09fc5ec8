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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from audit.model import ModelCard
from training.augment import SampleAugment, augmentation_agreement
from training.config import Config, allowed_views, invariances, with_values
from training.data import ImageArray, load_split, normalise, read_classes
from training.errors import TrainingError
from training.export import ExportResult, export_model, onnx_predict, with_tta
from training.members import (load_train_val, member_accuracies, save_val_probs, train_members, train_single,
                              view_accuracies, view_probabilities)
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
    members: dict[str, float] = field(default_factory=dict)  # an ensemble's members' own val accuracies


def prepare_runtime(cfg: Config) -> None:
    """Threads, seeds and determinism for a reproducible CPU run."""
    import lightning.pytorch as pl

    torch.set_num_threads(max(1, cfg.train.threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)


def load_data(cfg: Config, pre, classes, *, test: bool = True) -> tuple[ImageArray, ImageArray, ImageArray | None]:
    train, val = load_train_val(cfg, pre, classes)
    return train, val, load_test(cfg, pre, classes) if test else None


def load_test(cfg: Config, pre, classes) -> ImageArray:
    return load_split(Path(cfg.data.root) / "test", pre, classes=classes)


def fit(cfg: Config, *, out_dir: str | Path | None = None, resume: bool = False, callbacks: tuple = ()) -> FitResult:
    """Train (the scratch CNN, the three phases, or an ensemble of them), export with the card, evaluate
    the ONNX model on test.

    A checkpoint is written after every epoch and phase; ``resume=True`` continues a stopped run
    with the same training config in the same ``out_dir`` instead of starting over (``[export]``
    may differ). ``callbacks`` are extra Lightning callbacks for every phase.
    ``export.evaluate_test = false`` never loads the test split.
    """
    prepare_runtime(cfg)
    out = Path(out_dir or cfg.export.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.data.root)
    classes = read_classes(root)
    (out / "config.resolved.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    if cfg.ensemble.seeds:
        trained, state = train_members(cfg, classes, out, resume=resume, callbacks=callbacks), None
    else:
        trained, state = train_single(cfg, classes, out, resume=resume, callbacks=callbacks)
    t_trained = time.perf_counter()
    pre, val = trained.built.preprocess, trained.val
    card = make_card(cfg, trained, classes)
    x_val = normalise(val.images, pre)
    exported = export_model(trained.nets if len(trained.nets) > 1 else trained.nets[0], card, out,
                            parity_inputs=x_val[: cfg.export.parity_images],
                            tolerance=cfg.export.parity_tolerance, tta=cfg.export.tta)
    card = replace(card, features=exported.features)
    probs = view_probabilities(trained.nets, x_val, allowed_views(invariances(cfg.augment)), cfg.train.eval_batch_size)
    save_val_probs(out / "val_probs.npz", probs, val, trained.seeds)
    val_tta = view_accuracies(probs, val.labels, invariances(cfg.augment))
    test = load_test(cfg, pre, classes) if cfg.export.evaluate_test else None
    test_scores = _test_scores(cfg, trained.nets, exported, test, pre)
    graph = with_tta(trained.nets, ())
    agreement = None
    aug = SampleAugment(cfg.augment, pre.size, seed=cfg.seed + 1000)
    if aug.active:
        n = min(len(val), 1000)
        agreement = asdict(augmentation_agreement(lambda x: predict(graph, x), val.images[:n], val.labels[:n], aug, pre))
    wall = state.elapsed if state is not None else trained.seconds + time.perf_counter() - t_trained
    result = FitResult(
        name=cfg.name, arch=trained.built.arch, out_dir=out, phases=tuple(trained.results),
        val_accuracy=val_tta["none"], val_tta=val_tta, tta=tuple(cfg.export.tta), **test_scores,
        n_test=0 if test is None else len(test), export=exported, agreement=agreement,
        weights=trained.built.weights.detail, wall_seconds=wall, resumed=resume, card=card.to_dict(),
        members=member_accuracies(probs, val.labels, trained.seeds),
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


def _test_scores(cfg: Config, nets, exported: ExportResult, test: ImageArray | None, pre) -> dict:
    """Accuracy of the exported graph (ONNX and PyTorch) and macro F1 on the test split."""
    if test is None:
        return {"test_accuracy": None, "test_accuracy_torch": None, "test_macro_f1": None}
    from sklearn.metrics import f1_score

    x_test = normalise(test.images, pre)
    y_pred = onnx_predict(exported.onnx_path, x_test).argmax(1)
    graph = with_tta(nets, tuple(cfg.export.tta))
    torch_pred = predict(graph, x_test, cfg.train.eval_batch_size)
    return {"test_accuracy": float((y_pred == test.labels).mean()),
            "test_accuracy_torch": float((torch_pred == test.labels).mean()),
            "test_macro_f1": float(f1_score(test.labels, y_pred, average="macro"))}


def make_card(cfg: Config, trained, classes) -> ModelCard:
    """The card of the exported graph: preprocessing, invariances and how the weights came about."""
    import importlib.metadata as md

    built, results = trained.built, trained.results
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
    if cfg.ensemble.seeds:
        provenance["ensemble"] = [{"seed": s, "best_val_acc": round(b, 4)}
                                  for s, b in zip(trained.seeds, trained.member_best)]
    if built.arch == SCRATCH:
        provenance["model"] = "training.scratch.ScratchCNN"
    else:
        provenance["timm_kwargs"] = {k: v for k, v in built.timm_kwargs.items() if k != "drop_rate"}
    averaged = bool(cfg.export.tta) or len(trained.nets) > 1
    return ModelCard(labels=tuple(classes), preprocess=built.preprocess,
                     output="probabilities" if averaged else "logits",
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
