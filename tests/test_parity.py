"""Parity: an exact export of a timm model passes; an ONNX file with perturbed weights fails."""

import pytest

import builders
from audit.checks.parity import ParityConfig, criteria, parity
from audit.errors import ModelError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("timm")
    onnx_path, weights = builders.timm_export(root / "model")
    data = builders.image_folder(root / "data", 8)
    return onnx_path, weights, data


def run(onnx_path, weights, data, **cfg):
    """Parity as the audit runs it: the PyTorch model is built before inference (bad files fail there)."""
    overrides = {"n_boot": 100, "parity.torch_model": str(weights), **{f"parity.{k}": v for k, v in cfg.items()}}
    ctx = builders.context(onnx_path, data, overrides)
    res = parity(ctx)
    return res, {c.id: c for c in criteria(res, ctx.config)}


def test_exact_export_passes(exported):
    res, crit = run(*exported)
    assert res.arch == "resnet10t" and res.n == 24
    assert res.max_abs_diff <= 1e-5 and res.p99_abs_diff <= res.max_abs_diff
    assert res.agreement.value == 1.0 and res.n_disagree == 0
    assert crit["parity.max_abs_diff"].passed and crit["parity.agreement"].passed
    assert len(res.per_image_diff) == 24 and len(res.worst) == 20


def test_perturbed_onnx_weights_fail(exported, tmp_path):
    onnx_path, weights, data = exported
    bad = builders.perturb_onnx(onnx_path, tmp_path / "perturbed.onnx", scale=0.5)
    res, crit = run(bad, weights, data)
    assert res.max_abs_diff > 1e-3
    assert not crit["parity.max_abs_diff"].passed
    assert crit["parity.agreement"].passed == (res.n_disagree == 0)
    assert all(d.path.endswith(".png") for d in res.disagreements)


def test_sample_cap_and_clear_errors(exported, tmp_path):
    onnx_path, weights, data = exported
    res, _ = run(onnx_path, weights, data, max_images=5)
    assert res.n == 5
    with pytest.raises(ModelError, match="weights only, never a pickle"):
        run(onnx_path, weights.with_suffix(".pt"), data) if weights.with_suffix(".pt").write_bytes(b"x") else None
    with pytest.raises(ModelError, match="timm has no model 'nonet'"):
        run(onnx_path, weights, data, arch="nonet")
    with pytest.raises(ModelError, match="does not fit timm's resnet14t"):
        run(onnx_path, weights, data, arch="resnet14t")


def test_grey_model_is_rebuilt_with_one_input_channel(tmp_path):
    """A grey model's card (color L) tells parity to build the timm network with in_chans=1."""
    onnx_path, weights = builders.timm_export(tmp_path / "grey", color="L")
    data = builders.image_folder(tmp_path / "data", 4)
    res, crit = run(onnx_path, weights, data)
    assert crit["parity.max_abs_diff"].passed and res.max_abs_diff <= 1e-5
