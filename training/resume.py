"""Checkpoints that let ``fit --resume`` continue a stopped run where it stopped.

``OUT/checkpoints/`` holds

* ``progress.json``: the training config's hash (``Config.training_digest``: all but the name,
  ``[export]`` and ``[ensemble]``), the finished phases (their ``PhaseResult``), the best val
  accuracy so far and the wall time spent;
* ``after_<phase>.safetensors``: the network after each finished phase;
* ``<phase>/last.ckpt``: Lightning's full state (weights, optimiser, LR schedule, loop counters,
  callbacks) after every epoch of the phase that is running.

``EpochSampler`` makes an epoch a function of (weights, seed, epoch) alone, so that a resumed run
trains on the same batches as an uninterrupted one and ends with the same weights.

Example::

    state = RunState.open(Path("models/x"), cfg, resume=True)
    state.finished("phase1")        # -> PhaseResult or None
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from training.config import Config
from training.errors import TrainingError


class EpochSampler(torch.utils.data.Sampler):
    """A permutation per epoch drawn from (seed, epoch) alone, not from the global RNG.

    At the start of each epoch it also reseeds torch (RandAugment, erasing, MixUp/CutMix, dropout)
    and ``reseed`` (the albumentations pipeline). Lightning calls ``set_epoch`` before every epoch;
    a resumed phase calls it once more before its first batch is prefetched.
    """

    def __init__(self, n: int, *, num_samples: int | None = None, seed: int = 0,
                 reseed: Callable[[int], None] | None = None) -> None:
        self.n, self.num_samples = n, min(n, num_samples or n)
        self.seed, self.reseed, self.epoch = seed, reseed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        s = self.seed * 100_003 + self.epoch
        torch.manual_seed(s)
        if self.reseed is not None:
            self.reseed(s)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(s))[: self.num_samples]
        return iter(order.tolist())


class RunState:
    """What a run has finished so far, on disk under ``OUT/checkpoints``."""

    def __init__(self, root: Path, digest: str, progress: dict) -> None:
        self.root, self.digest, self.progress = root, digest, progress
        self._t0 = time.perf_counter()
        self._prior = float(progress.get("elapsed_s", 0.0))

    @classmethod
    def open(cls, out: Path, cfg: Config, *, resume: bool) -> RunState:
        """Read the checkpoints of an earlier run (``resume``) or start afresh (deleting old ones)."""
        root = Path(out) / "checkpoints"
        path = root / "progress.json"
        if not resume:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            return cls(root, cfg.training_digest(),
                       {"config_hash": cfg.training_digest(), "phases": {}, "best_val_acc": -1.0})
        if not path.is_file():
            raise TrainingError(f"--resume: no checkpoint to resume from in {root}",
                                hint="run without --resume to start, or pass the --out of the stopped run")
        progress = json.loads(path.read_text())
        if progress.get("config_hash") != cfg.training_digest():
            raise TrainingError(f"--resume: the checkpoints in {root} were written by config hash "
                                f"{progress.get('config_hash')}, this config is {cfg.training_digest()}",
                                hint="resume with the same config and --set values (only [export] and the name "
                                     "may change), or run without --resume")
        return cls(root, cfg.training_digest(), progress)

    @property
    def elapsed(self) -> float:
        """Wall seconds of the kept work: earlier invocations up to their last checkpoint, plus this one."""
        return self._prior + time.perf_counter() - self._t0

    @property
    def best_val_acc(self) -> float:
        return float(self.progress["best_val_acc"])

    def finished(self, phase: str) -> dict | None:
        """The ``PhaseResult`` (as a dict) of a finished phase, else None."""
        return self.progress["phases"].get(phase)

    def last_finished(self) -> str | None:
        names = list(self.progress["phases"])
        return names[-1] if names else None

    def phase_dir(self, phase: str) -> Path:
        return self.root / phase

    def epoch_checkpoint(self, phase: str) -> Path | None:
        """Lightning's checkpoint of the phase that was running, if it finished an epoch."""
        p = self.phase_dir(phase) / "last.ckpt"
        return p if p.is_file() else None

    def finish_phase(self, phase: str, result, net: nn.Module, best_val_acc: float) -> None:
        """Record a finished phase and the network it leaves (the best so far)."""
        from training.export import save_safetensors

        save_safetensors(net, self.root / f"after_{phase}.safetensors")
        self.progress["phases"][phase] = asdict(result)
        self.progress["best_val_acc"] = best_val_acc
        self.save()
        shutil.rmtree(self.phase_dir(phase), ignore_errors=True)

    def load_weights(self, phase: str, net: nn.Module) -> None:
        from training.weights import read_state_dict

        net.load_state_dict(read_state_dict(self.root / f"after_{phase}.safetensors"))

    def save(self) -> None:
        """Write progress.json atomically (called after every epoch and phase)."""
        self.progress["elapsed_s"] = round(self.elapsed, 1)
        tmp = self.root / "progress.json.tmp"
        tmp.write_text(json.dumps(self.progress, indent=2))
        tmp.replace(self.root / "progress.json")


def completed_epochs(ckpt: Path) -> int:
    """How many epochs a Lightning checkpoint written at the end of an epoch has finished."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1
