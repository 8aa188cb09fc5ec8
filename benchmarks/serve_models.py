"""The models and images the serving benchmarks use, built here so anyone can rerun them.

* ``quickstart``: the Fashion-MNIST scratch CNN (28x28 grey) the README's quick start trains
  (``python -m training fit --config configs/fashion_mnist_scratch.toml``) on its test images;
  skipped with a note when it has not been built.
* ``colour224``: the tests' colour classifier (global average pool + linear) at 224 px: a model
  that costs almost nothing, so what remains is the serving overhead at 224 px.
* ``resnet18_224``: timm's ResNet-18 with random weights, exported at 224 px with a dynamic
  batch axis: a model whose own cost is realistic (about 20-40 ms on 2 cores).

Images for the 224 px models are 224x224 noisy colour PNGs (about 170 kB, 230 kB as base64 JSON).
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICKSTART = ROOT / "models/fashion_mnist_scratch/model.onnx"
QUICKSTART_DATA = ROOT / "data/fashion-mnist/test"


@dataclass(frozen=True)
class Case:
    name: str
    model: Path
    images: list[bytes]


def photos(n: int, size: int = 224) -> list[bytes]:
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import COLOURS, colour_image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        colour_image(list(COLOURS)[i % len(COLOURS)], size=size, seed=i).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def quickstart(n: int) -> Case | None:
    if not (QUICKSTART.exists() and QUICKSTART_DATA.exists()):
        print(f"skipping the quick-start model: build {QUICKSTART.relative_to(ROOT)} with python -m training fit "
              "--config configs/fashion_mnist_scratch.toml", file=sys.stderr)
        return None
    files = sorted(QUICKSTART_DATA.rglob("*.png"))
    step = max(1, len(files) // n)
    return Case("fashion_mnist_scratch (L 28x28)", QUICKSTART, [f.read_bytes() for f in files[::step][:n]])


def colour224(tmp: Path, n: int) -> Case:
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import colour_model

    return Case("colour model (RGB 224x224)", colour_model(tmp / "colour224.onnx", size=224), photos(n))


def resnet18_224(tmp: Path, n: int) -> Case:
    import timm
    import torch

    from audit.model import ModelCard, Preprocess, write_card

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp / "resnet18_224.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    write_card(path, ModelCard(labels=tuple(f"class{i}" for i in range(10)),
                               preprocess=Preprocess(size=(224, 224), mean=(0.485, 0.456, 0.406),
                                                     std=(0.229, 0.224, 0.225))))
    return Case("resnet18, random weights (RGB 224x224)", path, photos(n))
