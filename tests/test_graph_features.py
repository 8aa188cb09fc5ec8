"""The features seam: the penultimate tensor found in real ONNX graphs (ours, timm's through training/, foreign
variants), returned by the same session.run, checked against numpy and PyTorch; a graph without one is skipped
with its reason and the rest of the audit runs."""

from __future__ import annotations

import json
import subprocess
import sys

import builders
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from audit.errors import ModelError
from audit.features import FeatureStore, reducer
from audit.model import ModelCard, OnnxClassifier, Preprocess, write_card

# 72 images cannot decide the accuracy threshold (exit 4, inconclusive): these tests are about the features
FAST = ["--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance", "--no-label-errors", "--no-pdf",
        "--on-inconclusive", "pass"]
OVERRIDES = {"labels": list(builders.COLOURS), "preprocess": {"mean": [builders.MEAN], "std": [builders.STD]}}


def batch(layout: str = "NCHW", n: int = 5, size: int = 16) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("variant", [{}, {"layout": "NHWC"}, {"softmax": True}, {"batch": 1}, {"card": False}])
def test_the_colour_models_features_are_its_pooled_input(tmp_path, variant):
    """The colour model classifies mean R, G, B with a Gemm: its features are the per-channel means."""
    path = builders.colour_model(tmp_path / "m.onnx", **variant)
    clf = OnnxClassifier.load(path, overrides={} if variant.get("card", True) else OVERRIDES)
    assert clf.features.name == "flat" and "Gemm" in clf.features.how
    x = batch(variant.get("layout", "NCHW"))
    proba, feats = clf.predict(x, with_features=True)
    nchw = x if variant.get("layout", "NCHW") == "NCHW" else x.transpose(0, 3, 1, 2)
    assert feats == pytest.approx(nchw.mean(axis=(2, 3)), abs=1e-5)
    assert proba == pytest.approx(clf.predict_proba(x))  # the extra output changes nothing


def test_a_timm_model_exported_by_training_gives_its_pre_logits(tmp_path):
    timm = pytest.importorskip("timm")
    import torch

    from training.export import export_model

    torch.manual_seed(0)
    pre = Preprocess(size=(32, 32), color="RGB", mean=(0.5,) * 3, std=(0.5,) * 3)
    net = timm.create_model("tf_efficientnet_lite0", num_classes=3).eval()
    x = batch(size=32, n=4)
    export_model(net, ModelCard(labels=("a", "b", "c"), preprocess=pre, arch="tf_efficientnet_lite0"), tmp_path,
                 parity_inputs=x)
    clf = OnnxClassifier.load(tmp_path / "model.onnx")
    assert clf.features.name is not None
    _, feats = clf.predict(x, with_features=True)
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(torch.from_numpy(x)), pre_logits=True).numpy()
    assert feats.shape == (4, net.num_features)
    assert feats == pytest.approx(ref, abs=1e-4)


def _save(nodes, inits, path, out_dim=3, in_shape=("N", 3, 8, 8), labels=tuple(builders.COLOURS)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", out_dim])],
                              initializer=[numpy_helper.from_array(v if v.dtype.kind == "i" else v.astype(np.float32), k)
                                           for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    write_card(path, ModelCard(labels=labels, preprocess=Preprocess(size=(8, 8), mean=(0.5,), std=(0.25,))))
    return path


def test_matmul_with_a_bias_and_a_1x1_conv_classifier_are_found(tmp_path):
    rng = np.random.default_rng(0)
    matmul = _save([helper.make_node("GlobalAveragePool", ["input"], ["pool"]),
                    helper.make_node("Flatten", ["pool"], ["feat"]),
                    helper.make_node("MatMul", ["feat", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["output"])],
                   {"W": rng.normal(size=(3, 3)), "B": np.zeros(3)}, tmp_path / "matmul.onnx")
    conv = _save([helper.make_node("Relu", ["input"], ["act"]),
                  helper.make_node("Conv", ["act", "K"], ["map"], kernel_shape=[1, 1]),
                  helper.make_node("GlobalAveragePool", ["map"], ["pool"]),
                  helper.make_node("Flatten", ["pool"], ["output"])],
                 {"K": rng.normal(size=(3, 3, 1, 1))}, tmp_path / "conv.onnx")
    x = batch(size=8)
    for path, name, ref in ((matmul, "feat", x.mean(axis=(2, 3))), (conv, "act", np.maximum(x, 0).mean(axis=(2, 3)))):
        clf = OnnxClassifier.load(path)
        assert clf.features.name == name
        assert clf.predict(x, with_features=True)[1] == pytest.approx(ref, abs=1e-5)  # spatial maps are pooled


def two_heads(path):
    """An ensemble: the mean of two linear heads' logits. No single classifier layer ends the graph."""
    rng = np.random.default_rng(1)
    w = builders.colour_weights()[0]
    return _save([helper.make_node("GlobalAveragePool", ["input"], ["pool"]),
                  helper.make_node("Flatten", ["pool"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "W1"], ["a"]), helper.make_node("Gemm", ["flat", "W2"], ["b"]),
                  helper.make_node("Add", ["a", "b"], ["output"])],
                 {"W1": w, "W2": w + 0.01 * rng.normal(size=w.shape)}, path, in_shape=("N", 3, 16, 16))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_a_graph_without_a_classifier_layer_is_skipped_with_its_reason_and_the_rest_runs(tmp_path):
    model = two_heads(tmp_path / "ensemble.onnx")
    write_card(model, ModelCard(labels=tuple(builders.COLOURS), preprocess=Preprocess(size=(16, 16), mean=(0.5,),
                                                                                      std=(0.25,))))
    data = builders.image_folder(tmp_path / "data", 24, confusers=2)
    proc = run_cli("run", "--model", model, "--data", data, "--out", tmp_path / "out", *FAST)
    assert proc.returncode == 0, proc.stderr
    v = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert "walk back from the output stopped at a Add node" in v["discovered_slices"]["skipped"]
    assert "--features-output" in v["discovered_slices"]["skipped"]
    assert v["metrics"]["accuracy"]["value"] == pytest.approx(22 / 24)
    assert "Not run:" in (tmp_path / "out" / "report.html").read_text()
    # named, the tensor is used
    proc = run_cli("run", "--model", model, "--data", data, "--out", tmp_path / "named", "--features-output", "flat",
                   *FAST)
    v = json.loads((tmp_path / "named" / "verdict.json").read_text())["discovered_slices"]
    assert proc.returncode == 0 and v["skipped"] == "" and v["features"].startswith("flat (named")


def test_a_features_name_that_is_not_in_the_graph_is_a_usage_error(tmp_path):
    model = two_heads(tmp_path / "ensemble.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    proc = run_cli("run", "--model", model, "--data", data, "--out", tmp_path / "out", "--features-output", "nope",
                   *FAST)
    assert proc.returncode == 2
    assert "features tensor 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ModelError, match="card key 'audit.features' must be the name of a tensor"):
        OnnxClassifier.load(model, overrides={"features": 7})


def test_views_batched_through_one_classifier_give_no_features_and_say_why(tmp_path):
    """Test-time views concatenated on the batch axis: the tensor has k x N rows, so it is not per image."""
    path = _save([helper.make_node("Concat", ["input", "input"], ["both"], axis=0),
                  helper.make_node("GlobalAveragePool", ["both"], ["pool"]),
                  helper.make_node("Flatten", ["pool"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "W"], ["logits"]),
                  helper.make_node("Reshape", ["logits", "S"], ["views"]),
                  helper.make_node("ReduceMean", ["views"], ["output"], axes=[0], keepdims=0)],
                 {"W": builders.colour_weights()[0], "S": np.array([2, -1, 3], np.int64)}, tmp_path / "tta.onnx")
    clf = OnnxClassifier.load(path)
    proba, feats = clf.predict(batch(size=8), with_features=True)
    assert proba.shape == (5, 3) and feats is None
    assert clf.features.name is None and "10 rows for 5 images" in clf.features.how


def test_the_store_round_trips_float16_and_the_pca_sees_a_bounded_sample():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 12)) @ rng.normal(size=(12, 12))
    store = FeatureStore(12)
    for lo in range(0, 3000, 700):
        store.append(x[lo : lo + 700])
    assert len(store) == 3000
    assert store.read([2999, 0]) == pytest.approx(x[[2999, 0]].astype(np.float16).astype(np.float32))
    red = reducer(store, np.arange(3000), dims=4, sample=1000, seed=0)
    assert red.fitted_on == 1000 and red.dims <= 4
    sample = np.sort(np.random.default_rng(0).choice(3000, 1000, replace=False))
    ref = PCA(n_components=4, svd_solver="full").fit(store.read(sample).astype(np.float64))
    assert red.explained == pytest.approx(np.cumsum(ref.explained_variance_ratio_)[red.dims - 1], rel=1e-6)
    z = red.apply(store, np.arange(3000))
    assert z.shape == (3000, red.dims)
    assert z[sample].std(axis=0) == pytest.approx(1.0, abs=1e-3)  # unit variance on the fitting sample
    store.close()


def test_reduced_features_read_from_the_store_equal_the_reduced_array():
    from audit.features import Reduced

    rng = np.random.default_rng(1)
    store = FeatureStore(6)
    store.append(rng.normal(size=(500, 6)))
    red = reducer(store, np.arange(500), dims=3, sample=500, seed=0)
    full = red.apply(store, np.arange(500))
    z = Reduced(store, red)
    assert z.shape == full.shape and len(z) == 500
    rows = np.array([499, 3, 3, 0])
    assert np.array_equal(z[rows], full[rows])
    assert np.array_equal(z[10:20], full[10:20])
    mask = np.arange(500) % 7 == 0
    assert np.array_equal(z[mask], full[mask])
    store.close()
