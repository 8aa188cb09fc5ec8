"""What ``fit`` trains: one network, or an ensemble of one network per seed; and their val scores per view.

An ensemble (``[ensemble] seeds = [...]``) runs the phases once per seed, each member in
``OUT/members/seed<s>/`` with its own checkpoints. A member's config is the ensemble's with
``seed = s`` and no ``[ensemble]``, built and trained exactly as a single run with that seed (the
same RNG draws), and ``fit --resume`` checks the member's training digest
(``Config.training_digest``): a finished single run of seed s, copied to ``OUT/members/seed<s>``,
serves as that member, so pilots are not trained twice.

``view_probabilities`` scores every member on every view the card allows (the 8 symmetries of the
square at most); ``val_probs.npz`` keeps them so that other ensembles and views can be compared
on validation without training again.

Example::

    trained = train_single(cfg, classes, out, resume=False)      # or train_members(...)
    trained.nets, trained.results, trained.train_seconds
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from training.config import Config, EnsembleConfig, allowed_views
from training.data import ImageArray, load_split, soft_targets
from training.export import view
from training.module import BuiltModel, build_model
from training.phases import PhaseData, PhaseResult
from training.resume import RunState

log = logging.getLogger("training")


@dataclass
class Trained:
    nets: list  # one network per member (one for a single run), eval mode, frozen
    built: BuiltModel  # the first member's (arch, weights, preprocessing)
    results: list[PhaseResult]  # every member's phases; an ensemble's are named "seed<s>/<phase>"
    train: ImageArray
    val: ImageArray
    seeds: tuple[int, ...]
    member_best: tuple[float, ...]  # each member's best val accuracy over its phases
    seconds: float  # wall seconds of the training kept, over every invocation (resumes)


def member_config(cfg: Config, seed: int) -> Config:
    """The single-run config of the ensemble's member with ``seed``."""
    return replace(cfg, seed=seed, ensemble=EnsembleConfig())


def load_train_val(cfg: Config, pre, classes) -> tuple[ImageArray, ImageArray]:
    root = Path(cfg.data.root)
    train = load_split(root / "train", pre, classes=classes, limit=cfg.data.train_limit, seed=cfg.seed)
    if cfg.train.soft_label_column:
        train = soft_targets(root / "train", train, cfg.train.soft_label_column)
    val = load_split(root / "val", pre, classes=classes, limit=cfg.data.val_limit, seed=cfg.seed)
    return train, val


def train_single(cfg: Config, classes, out: Path, *, resume: bool, callbacks: tuple = ()) -> tuple[Trained, RunState]:
    """The phases of one network in ``out`` (its checkpoints in ``out/checkpoints``)."""
    from training.fit import prepare_runtime, train_phases

    prepare_runtime(cfg)
    state = RunState.open(out, cfg, resume=resume)
    built = build_model(cfg, len(classes))
    train, val = load_train_val(cfg, built.preprocess, classes)
    results = train_phases(cfg, built.net, PhaseData(train, val, built.preprocess), out, state, callbacks)
    _freeze(built.net)
    best = max(r.best_val_acc for r in results)
    return Trained([built.net], built, results, train, val, (cfg.seed,), (best,), state.elapsed), state


def train_members(cfg: Config, classes, out: Path, *, resume: bool, callbacks: tuple = ()) -> Trained:
    """One single run per seed of ``cfg.ensemble.seeds``, in ``out/members/seed<s>``, one after the other."""
    nets, results, best, seconds, first = [], [], [], 0.0, None
    for seed in cfg.ensemble.seeds:
        mdir = out / "members" / f"seed{seed}"
        again = resume and (mdir / "checkpoints" / "progress.json").is_file()
        log.info("ensemble member seed %d: %s", seed, "resuming" if again else "training")
        t, state = train_single(member_config(cfg, seed), classes, mdir, resume=again, callbacks=callbacks)
        nets.append(t.nets[0])
        results += [replace(r, name=f"seed{seed}/{r.name}") for r in t.results]
        best.append(t.member_best[0])
        seconds += state.elapsed
        first = first or t
    return Trained(nets, first.built, results, first.train, first.val, tuple(cfg.ensemble.seeds), tuple(best), seconds)


def _freeze(net) -> None:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)


@torch.no_grad()
def view_probabilities(nets, x: np.ndarray, views: tuple[str, ...], batch_size: int) -> dict[tuple[int, str], np.ndarray]:
    """Softmax probabilities of every member on the identity ("none") and every view of ``x`` (NCHW)."""
    out = {}
    for i, net in enumerate(nets):
        for v in ("none", *views):
            out[i, v] = np.concatenate([
                torch.softmax(net(_view(torch.from_numpy(x[j:j + batch_size]), v)), 1).numpy()
                for j in range(0, len(x), batch_size)])
    return out


def _view(x: torch.Tensor, name: str) -> torch.Tensor:
    return x if name == "none" else view(x, name).contiguous()


def view_accuracies(probs: dict, y: np.ndarray, declared: tuple[str, ...]) -> dict[str, float]:
    """Val accuracy of the averaged members without views ("none"), with each allowed view, and with all."""
    members = sorted({i for i, _ in probs})
    views = [v for v in allowed_views(declared) if (members[0], v) in probs]

    def acc(vs) -> float:
        p = np.mean([probs[i, v] for i in members for v in ("none", *vs)], axis=0)
        return float((p.argmax(1) == y).mean())

    out = {"none": acc(())}
    for s in [(v,) for v in views] + ([tuple(views)] if len(views) > 1 else []):
        out["+".join(s)] = acc(s)
    return out


def member_accuracies(probs: dict, y: np.ndarray, seeds: tuple[int, ...]) -> dict[str, float]:
    """Each member's own val accuracy, without and with all its views (an ensemble's members only)."""
    if len(seeds) < 2:
        return {}
    out = {}
    for i, s in enumerate(seeds):
        vs = [v for (j, v) in probs if j == i]
        out[f"seed{s}"] = float((probs[i, "none"].argmax(1) == y).mean())
        if len(vs) > 1:
            out[f"seed{s}+views"] = float((np.mean([probs[i, v] for v in vs], axis=0).argmax(1) == y).mean())
    return out


def save_val_probs(path: Path, probs: dict, val: ImageArray, seeds: tuple[int, ...]) -> None:
    """``val_probs.npz``: labels, image paths and one (N, classes) array per member and view."""
    arrays = {f"seed{seeds[i]}__{v}": p.astype(np.float32) for (i, v), p in probs.items()}
    np.savez_compressed(path, y=val.labels, paths=np.array(val.paths), **arrays)

