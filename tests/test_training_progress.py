"""Progress output of ``fit``: plain lines per 10% of an epoch when stderr is not a terminal (CI logs),
Lightning's bar on a terminal."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import needs_fmnist, tiny_fmnist

from audit.model import OnnxClassifier
from training.progress import wants_bar

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^scratch epoch (\d)/2: (\d+)% \((\d+)/15 batches\), [\d.]+ img/s, loss [\d.]+, ")


@needs_fmnist
def test_fit_logs_one_line_per_tenth_of_an_epoch_when_stderr_is_a_pipe(tmp_path):
    data = tiny_fmnist(tmp_path / "fm", limit=60)  # 60 training images, batch 4: 15 batches per epoch
    out = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "training", "fit", "--config", "configs/fashion_mnist_scratch.toml",
           "--out", str(out), "--set", f"data.root={json.dumps(str(data))}", "--set", "phases.scratch.epochs=2",
           "--set", "train.batch_size=4", "--set", "train.logger='none'", "--set", "train.progress_interval_s=1e9",
           "--set", "export.parity_images=8", "--set", "export.tta=['hflip']"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)  # stderr is a pipe
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "\r" not in err and "it/s" not in err  # no carriage-return bar
    progress = [LINE.match(line) for line in err.splitlines()]
    progress = [m.groups() for m in progress if m]
    assert len(progress) == 20  # 10 per epoch: 15 batches cross each 10% mark once
    assert [int(p[1]) for p in progress[:10]] == [13, 20, 33, 40, 53, 60, 73, 80, 93, 100]
    assert [p[0] for p in progress] == ["1"] * 10 + ["2"] * 10
    assert len(re.findall(r"^scratch epoch [12]/2: val acc 0\.\d{4}", err, re.M)) == 2
    assert len(err.splitlines()) < 30

    # the same run exported its flip average inside the graph, as the card says
    card = OnnxClassifier.load(out / "model.onnx").card
    assert card.output == "probabilities" and card.provenance["tta"] == ["hflip"] and "hflip" in card.invariances
    results = json.loads((out / "results.json").read_text())
    assert set(results["val_tta"]) == {"none", "hflip"} and results["tta"] == ["hflip"]


def test_a_terminal_gets_the_bar_and_a_pipe_or_file_does_not(tmp_path):
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty, open(tmp_path / "log.txt", "w") as f:
        assert wants_bar(tty) and not wants_bar(f)
    os.close(master)
    r, w = os.pipe()
    with os.fdopen(r) as pr, os.fdopen(w, "w") as pw:
        assert not wants_bar(pw) and not wants_bar(pr)


def test_unknown_or_undeclared_tta_views_are_config_errors():
    from training.config import load_config
    from training.errors import TrainingError

    base = {"model": {"arch": "scratch_cnn"}, "phases": {"scratch": {"epochs": 1}}, "augment": {"hflip": True}}
    assert load_config(raw={**base, "export": {"tta": ["hflip"]}}).export.tta == ("hflip",)
    with pytest.raises(TrainingError, match=r"export.tta lists 'vflip' but the card's invariances \['hflip'\] lack "
                                            r"'vflip'") as e:
        load_config(raw={**base, "export": {"tta": ["hflip", "vflip"]}})
    assert "augment.vflip = true" in e.value.hint
    with pytest.raises(TrainingError, match="export.tta lists 'hvflip' but .* lack 'vflip'"):
        load_config(raw={**base, "export": {"tta": ["hvflip"]}})
    with pytest.raises(TrainingError, match="export.tta: unknown view 'rot45'"):
        load_config(raw={**base, "export": {"tta": ["rot45"]}})
