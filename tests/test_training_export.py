"""Export: one self-contained model.onnx with the full card, safetensors weights, ONNX-vs-PyTorch parity."""

import numpy as np
import pytest
import torch

from audit.model import ModelCard, OnnxClassifier, Preprocess
from training.baseline import BaselineCNN
from training.errors import ExportError
from training.export import export_model, parity

LABELS = ("a", "b", "c")


def _card(pre, arch=None):
    return ModelCard(labels=LABELS, preprocess=pre, arch=arch, invariances=("hflip", "crop"),
                     provenance={"dataset": "tiny", "config_hash": "abc"})


def _inputs(pre, n=8):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, pre.channels, *pre.size)).astype(np.float32)


@pytest.mark.parametrize("arch", [None, "tf_efficientnet_lite0"])
def test_export_is_one_file_with_the_card_and_matches_pytorch(tmp_path, arch):
    torch.manual_seed(0)
    if arch is None:
        pre = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
        net = BaselineCNN(1, 3, (28, 28))
    else:
        timm = pytest.importorskip("timm")
        pre = Preprocess(size=(32, 32), color="RGB", mean=(0.5,) * 3, std=(0.5,) * 3)
        net = timm.create_model(arch, num_classes=3)
    res = export_model(net, _card(pre, arch), tmp_path, parity_inputs=_inputs(pre))
    assert res.max_abs_diff <= 1e-4 and res.top1_agreement == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.safetensors"]  # no external data
    clf = OnnxClassifier.load(res.onnx_path)
    assert clf.card.labels == LABELS and clf.card.preprocess == pre and clf.card.arch == arch
    assert clf.card.invariances == ("hflip", "crop") and clf.card.output == "logits"
    assert clf.card.provenance["config_hash"] == "abc"
    for n in (1, 5):  # dynamic batch axis
        assert clf.predict_proba(_inputs(pre, n)).shape == (n, 3)


def test_safetensors_round_trip_matches_onnx(tmp_path):
    from safetensors.torch import load_file

    pre = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
    torch.manual_seed(1)
    export_model(BaselineCNN(1, 3, (28, 28)), _card(pre), tmp_path, parity_inputs=_inputs(pre))
    again = BaselineCNN(1, 3, (28, 28))
    again.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    diff, agree = parity(again, tmp_path / "model.onnx", _inputs(pre, 16))
    assert diff <= 1e-4 and agree == 1.0


def test_parity_failure_is_an_export_error(tmp_path):
    pre = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
    with pytest.raises(ExportError, match="ONNX and PyTorch disagree: max abs probability difference"):
        export_model(BaselineCNN(1, 3, (28, 28)), _card(pre), tmp_path, parity_inputs=_inputs(pre), tolerance=-1.0)
