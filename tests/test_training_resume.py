"""``fit --resume``: a run stopped mid-phase continues from its last epoch checkpoint, skips the
phases it finished, and ends with exactly the weights of an uninterrupted run."""

import json
from dataclasses import asdict

import lightning.pytorch as pl
import pytest
from safetensors.numpy import load_file
from training_helpers import needs_fmnist, tiny_config, tiny_fmnist

from training.cli import main
from training.fit import fit


class Stop(pl.Callback):
    """Stops the run (as a crash or a killed job would) when phase number ``fit_no`` starts ``epoch``."""

    def __init__(self, fit_no: int, epoch: int) -> None:
        self.fit_no, self.epoch, self.fits = fit_no, epoch, 0

    def on_fit_start(self, trainer, module) -> None:
        self.fits += 1

    def on_train_epoch_start(self, trainer, module) -> None:
        if self.fits == self.fit_no and trainer.current_epoch == self.epoch:
            raise RuntimeError("stopped")


class CountEpochs(pl.Callback):
    """Epochs trained in this invocation, per phase (one Lightning fit per phase)."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_fit_start(self, trainer, module) -> None:
        self.epochs.append(0)

    def on_train_epoch_start(self, trainer, module) -> None:
        self.epochs[-1] += 1


def _weights(out):
    return load_file(str(out / "model.safetensors"))


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    return tiny_fmnist(tmp_path_factory.mktemp("fm"), limit=40)


@needs_fmnist
def test_three_phases_resume_mid_phase_and_end_with_the_uninterrupted_weights(fm, tmp_path):
    phases = {"phase1": {"epochs": 1, "lr": 1e-2}, "phase2": {"epochs": 3, "lr": 1e-3, "unfreeze": 1},
              "phase3": {"epochs": 1, "lr": 1e-3, "lr_backbone": 1e-4}}
    kw = dict(data={"size": [32, 32]}, model={"arch": "tf_efficientnet_lite0", "weights": "auto"},
              augment={"hflip": True, "crop_scale": [0.8, 1.0]}, phases=phases, train={"batch_size": 16})
    whole = fit(tiny_config(fm, tmp_path / "whole", **kw))

    cfg = tiny_config(fm, tmp_path / "stopped", **kw)
    with pytest.raises(RuntimeError, match="stopped"):
        fit(cfg, callbacks=(Stop(2, 2),))  # phase 2 has finished 2 of its 3 epochs
    progress = json.loads((tmp_path / "stopped" / "checkpoints" / "progress.json").read_text())
    assert list(progress["phases"]) == ["phase1"]
    assert (tmp_path / "stopped" / "checkpoints" / "phase2" / "last.ckpt").is_file()

    counter = CountEpochs()
    resumed = fit(cfg, resume=True, callbacks=(counter,))
    assert counter.epochs == [1, 1]  # phase 1 skipped, phase 2 from its 3rd epoch, phase 3
    assert resumed.resumed and [p.name for p in resumed.phases] == ["phase1", "phase2", "phase3"]
    # phase 1 was not trained again: its result, timings included, is the one recorded before the stop
    assert json.loads(json.dumps(asdict(resumed.phases[0]))) == progress["phases"]["phase1"]
    assert resumed.phases[0].val_acc == whole.phases[0].val_acc
    assert resumed.phases[1].val_acc == whole.phases[1].val_acc and len(resumed.phases[1].val_acc) == 3
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "stopped")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert resumed.val_accuracy == whole.val_accuracy


@needs_fmnist
def test_resume_refuses_another_config_and_a_missing_checkpoint(fm, tmp_path, capsys):
    cfg = tiny_config(fm, tmp_path / "m", phases={"scratch": {"epochs": 1}})
    fit(cfg)
    args = ["fit", "--config", "configs/fashion_mnist_scratch.toml", "--no-progress", "--resume",
            "--set", f"data.root={json.dumps(str(fm))}", "--set", "train.logger='none'"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: the checkpoints in") and "config hash" in err
    assert len(err.strip().splitlines()) == 1
    assert main([*args, "--out", str(tmp_path / "nothing")]) == 2
    assert "--resume: no checkpoint to resume from" in capsys.readouterr().err


@needs_fmnist
def test_sigterm_stops_with_exit_143_and_resume_finishes_the_run(fm, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "training", "fit", "--config", "configs/fashion_mnist_scratch.toml", "--out", str(out),
           "--set", f"data.root={json.dumps(str(fm))}", "--set", "phases.scratch.epochs=30", "--set",
           "train.batch_size=4", "--set", "train.early_stopping_patience=0", "--set", "train.logger='none'",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "scratch" / "last.ckpt"
    while proc.poll() is None and not ckpt.is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # a job scheduler stopping the run
    _, err = proc.communicate()
    assert proc.returncode == 143, err
    assert "stopped (SIGTERM)" in err and "--resume" in err
    assert not (out / "model.onnx").exists()  # nothing half-trained was exported
    done = subprocess.run([*cmd, "--resume"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "scratch: resuming after epoch" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["resumed"] and len(results["phases"][0]["val_acc"]) == 30
