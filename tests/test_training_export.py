"""Export: one self-contained model.onnx with the full card, safetensors weights, ONNX-vs-PyTorch parity."""

import numpy as np
import pytest
import torch

from audit.model import ModelCard, OnnxClassifier, Preprocess
from training.scratch import ScratchCNN
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
        net = ScratchCNN(1, 3, (28, 28))
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
    export_model(ScratchCNN(1, 3, (28, 28)), _card(pre), tmp_path, parity_inputs=_inputs(pre))
    again = ScratchCNN(1, 3, (28, 28))
    again.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    diff, agree = parity(again, tmp_path / "model.onnx", _inputs(pre, 16))
    assert diff <= 1e-4 and agree == 1.0


def test_parity_failure_is_an_export_error(tmp_path):
    pre = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
    with pytest.raises(ExportError, match="ONNX and PyTorch disagree: max abs probability difference"):
        export_model(ScratchCNN(1, 3, (28, 28)), _card(pre), tmp_path, parity_inputs=_inputs(pre), tolerance=-1.0)


VIEWS = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}


@pytest.mark.parametrize("tta", [("hflip",), ("hflip", "vflip", "hvflip")])
def test_tta_graph_outputs_the_mean_softmax_over_the_declared_flips(tmp_path, tta):
    from safetensors.torch import load_file

    timm = pytest.importorskip("timm")
    pre = Preprocess(size=(32, 32), color="L", mean=(0.5,), std=(0.5,))
    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_lite0", num_classes=3, in_chans=1).eval()
    card = ModelCard(labels=LABELS, preprocess=pre, output="probabilities", arch="tf_efficientnet_lite0",
                     invariances=("hflip", "vflip"), provenance={"tta": list(tta)})
    x = _inputs(pre, 6)
    res = export_model(net, card, tmp_path, parity_inputs=x, tta=tta)
    clf = OnnxClassifier.load(res.onnx_path)
    assert clf.card.output == "probabilities" and clf.card.provenance["tta"] == list(tta)
    # What the auditor's parity does: rebuild the plain network from arch + safetensors, then
    # average its softmax over the identity and each listed flip of the preprocessed tensor.
    again = timm.create_model("tf_efficientnet_lite0", num_classes=3, in_chans=1).eval()
    again.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    with torch.no_grad():
        views = [x] + [np.ascontiguousarray(np.flip(x, VIEWS[v])) for v in tta]
        manual = np.mean([torch.softmax(again(torch.from_numpy(v)), 1).numpy() for v in views], axis=0)
        plain = torch.softmax(again(torch.from_numpy(x)), 1).numpy()
    onnx = clf.predict_proba(x)
    np.testing.assert_allclose(onnx, manual, atol=1e-5, rtol=0)
    assert np.abs(onnx - plain).max() > 1e-3  # the flips change the answer: the average is really taken
    np.testing.assert_allclose(onnx.sum(1), 1.0, atol=1e-5)
    assert clf.predict_proba(x[:1]).shape == (1, 3)  # dynamic batch through the reshape


def test_card_must_describe_the_tta_graph(tmp_path):
    pre = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
    with pytest.raises(ExportError, match=r"does not describe the graph \(tta \['hflip'\], 1 member"):
        export_model(ScratchCNN(1, 3, (28, 28)), _card(pre), tmp_path, parity_inputs=_inputs(pre), tta=("hflip",))
