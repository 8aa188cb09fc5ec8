"""The phase schedule: which parameters train in each phase, the LR of each param group, and that
cached prefix/suffix forwards equal the model's own forward."""

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
from training_helpers import needs_fmnist, tiny_config, tiny_fmnist  # noqa: E402

from training.config import PhaseConfig  # noqa: E402
from training.data import load_split, read_classes  # noqa: E402
from training.module import build_model  # noqa: E402
from training.phases import PhaseData, anatomy, run_phase, set_phase, trainable_names  # noqa: E402


@pytest.fixture(scope="module")
def lite0():
    return timm.create_model("tf_efficientnet_lite0", num_classes=3, in_chans=1)


def test_phase1_trains_the_head_only(lite0):
    assert trainable_names(lite0, "phase1") == {"classifier.weight", "classifier.bias"}


def test_phase2_trains_the_last_stages_and_head(lite0):
    names = trainable_names(lite0, "phase2", unfreeze=2)
    prefixes = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "") for n in names}
    assert prefixes == {"blocks.5", "blocks.6", "conv_head", "bn2", "classifier"}
    assert len(trainable_names(lite0, "phase2", unfreeze=3)) > len(names)


def test_phase3_trains_everything(lite0):
    assert trainable_names(lite0, "phase3") == {n for n, _ in lite0.named_parameters()}


def test_param_group_learning_rates():
    model = timm.create_model("tf_efficientnet_lite0", num_classes=3, in_chans=1)
    g1 = set_phase(model, "phase1", PhaseConfig(lr=1e-3))
    assert [(g["name"], g["lr"]) for g in g1] == [("head", 1e-3)]
    assert sum(p.requires_grad for p in model.parameters()) == 2
    g2 = set_phase(model, "phase2", PhaseConfig(lr=1e-4, unfreeze=2))
    assert [(g["name"], g["lr"]) for g in g2] == [("last_blocks", 1e-4), ("head", 1e-4)]
    g3 = set_phase(model, "phase3", PhaseConfig(lr=1e-3, lr_backbone=1e-5))
    assert [(g["name"], g["lr"]) for g in g3] == [("backbone", 1e-5), ("head", 1e-3)]
    assert all(p.requires_grad for p in model.parameters())
    n3 = sum(p.numel() for g in g3 for p in g["params"])
    assert n3 == sum(p.numel() for p in model.parameters())  # every parameter in exactly one group


@pytest.mark.parametrize("arch,k", [("tf_efficientnet_lite0", 5), ("convnext_atto", 2), ("vit_tiny_patch16_224", 10)])
def test_prefix_then_suffix_equals_the_model(arch, k):
    kwargs = {"img_size": 32} if arch.startswith("vit") else {}
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=3, **kwargs).eval()
    a = anatomy(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.suffix(a.prefix(x, k), k), model(x), rtol=1e-4, atol=1e-5)


@needs_fmnist
@pytest.mark.parametrize("cached", [True, False])
def test_each_phase_changes_only_its_trainable_parameters(tmp_path_factory, cached):
    root = tiny_fmnist(tmp_path_factory.mktemp("fm"), limit=40)
    out = tmp_path_factory.mktemp("out")
    cfg = tiny_config(root, out, data={"size": [32, 32]}, model={"arch": "tf_efficientnet_lite0", "weights": "auto"},
                      phases={"phase1": {"epochs": 1, "lr": 1e-2, "cache": cached},
                              "phase2": {"epochs": 1, "lr": 1e-3, "cache": cached, "unfreeze": 1},
                              "phase3": {"epochs": 1, "lr": 1e-3, "lr_backbone": 1e-5}},
                      train={"batch_size": 16, "deterministic": True})
    classes = read_classes(root)
    built = build_model(cfg, len(classes))
    data = PhaseData(load_split(root / "train", built.preprocess, classes=classes),
                     load_split(root / "val", built.preprocess, classes=classes), built.preprocess)
    model = built.net
    for phase in ("phase1", "phase2", "phase3"):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        stats = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
        trainable = trainable_names(model, phase, getattr(cfg.phases, phase).unfreeze)
        res = run_phase(cfg, model, phase, data, tmp_path_factory.mktemp(phase))
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and changed <= trainable, phase
        assert res.cached == (cached and phase != "phase3")
        assert res.epochs == 1 and 0 <= res.best_val_acc <= 1
        # freeze_bn_stats (the default): BatchNorm statistics stay pretrained in every phase
        assert all(torch.equal(b, stats[n]) for n, b in model.named_buffers() if n in stats), phase
        # phase 3 trains in channels_last; the model comes back in the default layout for export
        assert all(p.is_contiguous() for p in model.parameters()), phase
    assert dict((n, lr) for n, lr, _ in res.groups) == {"backbone": 1e-5, "head": 1e-3}
    assert np.isfinite(res.samples_per_second)
