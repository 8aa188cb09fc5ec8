"""Augmentation: every switch keeps shape, dtype and label; MixUp/CutMix give proper soft targets;
a trained model predicts the same class on augmented and clean copies (label invariance)."""

import numpy as np
import pytest
import torch
from training_helpers import needs_fmnist, tiny_config, tiny_fmnist

from audit.model import Preprocess
from training.augment import AugmentedDataset, BatchMix, SampleAugment, augmentation_agreement
from training.config import AugmentConfig, invariances
from training.data import load_split, read_classes
from training.module import build_model
from training.phases import PhaseData, predict, run_phase

PRE = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
SWITCHES = {
    "none": AugmentConfig(),
    "flip_crop": AugmentConfig(hflip=True, crop_scale=(0.8, 1.0)),
    "affine_colour": AugmentConfig(affine_degrees=10, affine_translate=0.1, color=0.3),
    "randaugment": AugmentConfig(randaugment=True),
    "all": AugmentConfig(hflip=True, vflip=True, crop_scale=(0.8, 1.0), affine_degrees=10, color=0.3, randaugment=True,
                         erasing=0.5),
}


pytestmark = needs_fmnist


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    root = tiny_fmnist(tmp_path_factory.mktemp("fm"), limit=200)
    classes = read_classes(root)
    return root, load_split(root / "train", PRE, classes=classes), load_split(root / "val", PRE, classes=classes)


@pytest.mark.parametrize("name", list(SWITCHES))
def test_every_switch_keeps_shape_dtype_and_label(fm, name):
    _, train, _ = fm
    cfg = SWITCHES[name]
    ds = AugmentedDataset(train.images[:32], train.labels[:32], PRE, SampleAugment(cfg, PRE.size, seed=0), cfg.erasing)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
        assert y == train.labels[i]
        assert torch.isfinite(x).all() and -1.0 - 1e-6 <= x.min() and x.max() <= 1.0 + 1e-6


def test_no_augmentation_gives_the_auditor_tensor(fm):
    from audit.imaging import preprocess

    root, train, _ = fm
    x, _ = AugmentedDataset(train.images, train.labels, PRE)[0]
    expected = preprocess((root / "train" / train.paths[0]).read_bytes(), PRE)
    np.testing.assert_array_equal(x.numpy(), expected)


def test_augmentation_is_seeded():
    img = np.random.default_rng(0).integers(0, 255, (28, 28, 1), dtype=np.uint8)
    cfg = SWITCHES["flip_crop"]
    a = [SampleAugment(cfg, (28, 28), seed=3)(img) for _ in range(2)]
    b = [SampleAugment(cfg, (28, 28), seed=3)(img) for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("cfg", [AugmentConfig(mixup_alpha=0.2), AugmentConfig(cutmix_alpha=1.0),
                                 AugmentConfig(mixup_alpha=0.2, cutmix_alpha=1.0)])
def test_mixup_cutmix_soft_targets(cfg):
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 4
    xm, ym = BatchMix(cfg, num_classes=4)(x, y)
    assert xm.shape == x.shape and ym.shape == (8, 4)
    torch.testing.assert_close(ym.sum(1), torch.ones(8))
    assert ((ym > 0).sum(1) <= 2).all()  # mass only on the two mixed labels
    assert (ym[torch.arange(8), y] > 0).all()  # each sample keeps part of its own label


def test_mixup_on_pooled_features():
    xm, ym = BatchMix(AugmentConfig(mixup_alpha=0.2, cutmix_alpha=1.0), 3)(torch.randn(6, 16), torch.arange(6) % 3)
    assert xm.shape == (6, 16) and ym.shape == (6, 3)


def test_invariances_follow_the_switches():
    assert invariances(AugmentConfig()) == ()
    assert invariances(SWITCHES["flip_crop"]) == ("hflip", "crop")
    assert invariances(AugmentConfig(hflip=True, vflip=True)) == ("hflip", "vflip")
    assert invariances(AugmentConfig(randaugment=True)) == ("rotate", "brightness", "contrast")
    assert invariances(AugmentConfig(hflip=True, invariances=("hflip", "jpeg"))) == ("hflip", "jpeg")


def test_trained_model_keeps_its_prediction_under_augmentation(fm, tmp_path):
    root, train, val = fm
    cfg = tiny_config(root, tmp_path, augment={"hflip": True, "crop_scale": [0.9, 1.0]},
                      phases={"scratch": {"epochs": 4, "lr": 3e-3}})
    built = build_model(cfg, len(train.classes))
    run_phase(cfg, built.net, "scratch", PhaseData(train, val, built.preprocess), tmp_path)
    aug = SampleAugment(cfg.augment, PRE.size, seed=1)
    res = augmentation_agreement(lambda x: predict(built.net, x), val.images, val.labels, aug, built.preprocess)
    assert res.n == len(val) and res.clean_accuracy > 0.5
    assert res.agreement >= 0.8, res  # flips and mild crops keep the predicted class
    assert res.augmented_accuracy >= res.clean_accuracy - 0.1
