"""Label invariance: a left/right model flips under a horizontal flip and not under a no-op; transforms are chosen
from the config, then the card, then the defaults; excluded ones do not run."""

import numpy as np
import pytest

import builders
from audit.checks.invariance import (DEFAULT_TRANSFORMS, TRANSFORMS, choose_transforms, invariance,
                                     invariance_criteria)
from audit.config import FlipLimits, InvarianceConfig
from audit.data import scan
from audit.errors import ConfigError
from audit.inference import predict
from audit.model import OnnxClassifier


def setup(tmp_path, model="side"):
    if model == "side":
        clf = OnnxClassifier.load(builders.side_model(tmp_path / "m.onnx"))
        root = builders.side_folder(tmp_path / "data", 20)
    else:
        clf = OnnxClassifier.load(builders.colour_model(tmp_path / "m.onnx"))
        root = builders.image_folder(tmp_path / "data", 12)
    samples = scan(root, clf.labels).samples
    preds, _ = predict(clf, samples)
    return clf, samples, preds


def test_not_flip_invariant_model_flips_under_hflip_not_under_noop(tmp_path):
    clf, samples, preds = setup(tmp_path)
    assert (preds.y_pred == preds.y_true).all()
    cfg = InvarianceConfig(transforms=("none", "hflip", "vflip"))
    res = invariance(clf, samples, preds, cfg, n_boot=200)
    by = {r.transform: r for r in res.runs}
    assert by["hflip"].flip_rate.value == 1.0 and by["hflip"].accuracy_drop.value == 1.0
    assert by["none"].flip_rate.value == 0.0 and by["none"].accuracy_drop.value == 0.0
    assert by["vflip"].flip_rate.value == 0.0  # left stays left upside down
    assert {c.label: c.flip_rate for c in by["hflip"].per_class} == {"left": 1.0, "right": 1.0}
    assert len(by["hflip"].flipped) == 8 and res.n_images == 40
    crit = {c.id: c for c in invariance_criteria(res, cfg)}
    assert not crit["invariance.hflip"].passed and crit["invariance.none"].passed


def test_graded_severities_and_colour_model_is_invariant(tmp_path):
    clf, samples, preds = setup(tmp_path, "colour")
    cfg = InvarianceConfig(transforms=("hflip", "rotate", "noise", "jpeg", "blur", "crop", "contrast"),
                           severities=(1, 2, 3))
    res = invariance(clf, samples, preds, cfg, n_boot=100)
    assert [(r.transform, r.severity) for r in res.runs if r.transform in ("hflip", "rotate")] == [
        ("hflip", 1), ("rotate", 1), ("rotate", 2), ("rotate", 3)]
    assert res.worst("hflip").flip_rate.value == 0.0  # a global-average-pool model cannot see a flip
    assert all(c.passed for c in invariance_criteria(res, cfg))
    assert res.runs[1].description == "rotate 5°"


def test_bounded_sample_and_per_transform_limit(tmp_path):
    clf, samples, preds = setup(tmp_path)
    cfg = InvarianceConfig(transforms=("hflip",), max_images=10, max_flip_rate_by=FlipLimits(hflip=1.0))
    res = invariance(clf, samples, preds, cfg, n_boot=50)
    assert res.n_images == 10 and res.n_total == 40 and res.runs[0].n == 10
    (c,) = invariance_criteria(res, cfg)
    assert c.passed and c.threshold == 1.0


def test_transform_choice_config_then_card_then_default():
    assert choose_transforms(InvarianceConfig(), ()) == (list(DEFAULT_TRANSFORMS), "default", [])
    assert choose_transforms(InvarianceConfig(), ("hflip", "mixup")) == (["hflip"], "model card", ["mixup"])
    assert choose_transforms(InvarianceConfig(transforms=("vflip", "blur")), ("hflip",))[:2] == (
        ["vflip", "blur"], "config")
    assert choose_transforms(InvarianceConfig(exclude=("hflip",)), ())[0] == [t for t in DEFAULT_TRANSFORMS
                                                                             if t != "hflip"]
    with pytest.raises(ConfigError, match="unknown invariance transform 'flip'.*known: none, hflip"):
        choose_transforms(InvarianceConfig(transforms=("flip",)), ())


def test_transforms_keep_size_and_mode_and_are_deterministic():
    img = builders.colour_image("red", size=20)
    for name, spec in TRANSFORMS.items():
        for sev in (1, 2, 3):
            out = spec.at(sev)(img)
            assert out.size == img.size and out.mode == img.mode, name
            assert np.array_equal(np.asarray(out), np.asarray(spec.at(sev)(img))), name
