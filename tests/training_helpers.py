"""Tiny real datasets and configs for the training tests (Fashion-MNIST from the Debian package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import load_config
from training.data import FASHION_MNIST_DIR, prepare_fashion_mnist

needs_fmnist = pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def tiny_fmnist(root: Path, limit: int = 60) -> Path:
    """``limit`` real Fashion-MNIST images per split (stratified), as prepared by the CLI."""
    prepare_fashion_mnist(root, limit=limit)
    return root


def tiny_config(root: Path, out: Path, **raw):
    """A fast config on ``root``: no progress bars or logs, 1 epoch unless overridden."""
    base = {
        "name": "tiny",
        "data": {"root": str(root), "size": [28, 28], "color": "L"},
        "model": {"arch": "scratch_cnn"},
        "phases": {"scratch": {"epochs": 1, "lr": 3e-3}},
        "train": {"batch_size": 32, "progress_bar": False, "logger": "none", "early_stopping_patience": 0},
        "export": {"out": str(out), "parity_images": 16},
    }
    for k, v in raw.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    if base["model"].get("arch", "scratch_cnn") != "scratch_cnn":
        base["phases"] = {k: v for k, v in base["phases"].items() if k != "scratch"}
    return load_config(raw=base)
