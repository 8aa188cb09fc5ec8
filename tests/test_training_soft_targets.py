"""Soft targets from a metadata column (ELPV's defect probability): (1 - p, p) instead of the thresholded label."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import tiny_config

from audit.model import Preprocess
from training.augment import AugmentedDataset
from training.data import load_split, soft_targets
from training.errors import TrainingError
from training.fit import fit

PROBS = {"functional": (0.0, 1 / 3), "defective": (2 / 3, 1.0)}


def _cells(root, n=12, bad=None):
    """A two-class ImageFolder like ELPV: a dark line on defective cells, a probability column per image."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        rows = []
        for label, ps in PROBS.items():
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(150, 200, (32, 32), dtype=np.uint8)
                if label == "defective":
                    img[:, 10 + i % 10] = 20
                Image.fromarray(img).save(root / split / label / f"c{i}.png")
                p = ps[i % 2] if bad is None or i else bad
                rows.append({"path": f"{label}/c{i}.png", "label": label, "defect_probability": f"{p:.4f}"})
        with open(root / split / "metadata.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (root / "classes.txt").write_text("functional\ndefective\n")
    return root


def test_targets_are_one_minus_p_and_p_and_reach_the_training_samples(tmp_path):
    root = _cells(tmp_path / "cells")
    pre = Preprocess(size=(32, 32), color="L", mean=(0.5,), std=(0.5,))
    arr = soft_targets(root / "train", load_split(root / "train", pre, classes=("functional", "defective")),
                       "defect_probability")
    p = arr.targets[:, 1]
    assert arr.targets.shape == (24, 2) and np.allclose(arr.targets.sum(1), 1)
    assert sorted(np.unique(p.round(4))) == [0.0, 0.3333, 0.6667, 1.0]
    assert ((p >= 0.5) == (arr.labels == 1)).all()
    ds = AugmentedDataset(arr.images, arr.train_targets(), pre)
    x, y = ds[0]
    assert isinstance(y, torch.Tensor) and torch.allclose(y, torch.from_numpy(arr.targets[0]))


def test_a_probability_that_contradicts_the_label_is_refused(tmp_path):
    root = _cells(tmp_path / "cells", bad=0.9)  # a functional image with p = 0.9
    pre = Preprocess(size=(32, 32), color="L", mean=(0.5,), std=(0.5,))
    arr = load_split(root / "train", pre, classes=("functional", "defective"))
    with pytest.raises(TrainingError, match="must lie in \\[0, 1\\] and be >= 0.5 exactly for class 'defective'"):
        soft_targets(root / "train", arr, "defect_probability")
    with pytest.raises(TrainingError, match="has no 'missing' value"):
        soft_targets(root / "train", arr, "missing")


@pytest.mark.parametrize("arch", ["scratch_cnn", "tf_efficientnet_lite0"])
def test_fit_trains_on_soft_targets_in_every_phase(tmp_path, arch):
    root = _cells(tmp_path / "cells")
    phases = ({"scratch": {"epochs": 2, "lr": 3e-3}} if arch == "scratch_cnn" else
              {"phase1": {"epochs": 1}, "phase2": {"epochs": 1, "unfreeze": 1}, "phase3": {"epochs": 1}})
    cfg = tiny_config(root, tmp_path / "out", data={"size": [32, 32]}, model={"arch": arch}, phases=phases,
                      train={"soft_label_column": "defect_probability", "label_smoothing": 0.1, "batch_size": 8})
    r = fit(cfg)
    assert [p.name for p in r.phases] == list(phases) and all(np.isfinite(p.best_val_acc) for p in r.phases)
    assert r.test_accuracy is not None


def test_soft_targets_need_two_classes_and_no_mixup(tmp_path):
    from training.config import load_config

    base = {"model": {"arch": "scratch_cnn"}, "phases": {"scratch": {"epochs": 1}},
            "train": {"soft_label_column": "p"}}
    with pytest.raises(TrainingError, match="cannot be combined with MixUp/CutMix"):
        load_config(raw={**base, "augment": {"mixup_alpha": 0.2}})
    pre = Preprocess(size=(8, 8), color="L")
    arr = load_split(_cells(tmp_path / "c", n=2) / "train", pre, classes=("functional", "defective"))
    with pytest.raises(TrainingError, match="needs two classes"):
        soft_targets(tmp_path / "c" / "train", type(arr)(arr.images, arr.labels, ("a", "b", "c"), arr.paths), "p")
