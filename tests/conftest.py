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
