import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

import builders  # noqa: E402


@pytest.fixture
def colour_model(tmp_path: Path) -> Path:
    return builders.colour_model(tmp_path / "model.onnx")


@pytest.fixture
def colour_data(tmp_path: Path) -> Path:
    return builders.image_folder(tmp_path / "data", 12, confusers=2)


@pytest.fixture(scope="session")
def shape_model(tmp_path_factory):
    """A small CNN trained on shapes in their usual poses, and a test folder where 15% of the squares are
    turned 45 degrees (a pose it never saw). Returns (model, test folder, path -> subgroup)."""
    import builders_slices

    root = tmp_path_factory.mktemp("shapes")
    builders_slices.subgroup_split(root / "train", 400, seed=0)
    model = builders_slices.train_shape_model(root / "train", root / "model.onnx")
    groups = builders_slices.subgroup_split(root / "test", 250, seed=100, diamond=0.15)
    return model, root / "test", groups


@pytest.fixture(scope="session")
def shape_audit(shape_model, tmp_path_factory):
    """One CLI audit of the shape model (every default but latency, invariance and the PDF)."""
    import subprocess

    model, data, groups = shape_model
    out = tmp_path_factory.mktemp("shape_audit") / "out"
    proc = subprocess.run([sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(data), "--out",
                           str(out), "--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance", "--no-pdf"],
                          capture_output=True, text=True, timeout=600)
    return (out, proc), groups
