"""Label invariance: a left/right model flips under a horizontal flip and not under a no-op; transforms are chosen
from the config, then the card, then the defaults; excluded ones do not run."""

import numpy as np
import pytest

import builders
import dataclasses
import pickle

from audit.checks.invariance import FlipLimits, InvarianceConfig, choose_transforms, criteria, findings, invariance
from audit.config import AuditConfig
from audit.errors import ConfigError
from audit.transforms import DEFAULT_TRANSFORMS, TRANSFORMS
from audit.verdict import decide

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def setup(tmp_path, model="side"):
    """The audit context after inference; ``run(cfg, n_boot)`` runs the check with that invariance config."""
    if model == "side":
        ctx = builders.context(builders.side_model(tmp_path / "m.onnx"), builders.side_folder(tmp_path / "data", 20))
    else:
        ctx = builders.context(builders.colour_model(tmp_path / "m.onnx"), builders.image_folder(tmp_path / "data", 12))

    def run(cfg, n_boot):
        return invariance(dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, invariance=cfg,
                                                                              n_boot=n_boot)))

    return run, ctx.predictions


def test_not_flip_invariant_model_flips_under_hflip_not_under_noop(tmp_path):
    run, preds = setup(tmp_path)
    assert (preds.y_pred == preds.y_true).all()
    cfg = InvarianceConfig(transforms=("none", "hflip", "vflip"))
    res = run(cfg, n_boot=200)
    by = {r.transform: r for r in res.runs}
    assert by["hflip"].flip_rate.value == 1.0 and by["hflip"].accuracy_drop.value == 1.0
    assert by["none"].flip_rate.value == 0.0 and by["none"].accuracy_drop.value == 0.0
    assert by["vflip"].flip_rate.value == 0.0  # left stays left upside down
    assert {c.label: c.flip_rate for c in by["hflip"].per_class} == {"left": 1.0, "right": 1.0}
    assert len(by["hflip"].flipped) == 8 and res.n_images == 40
    crit = {c.id: c for c in criteria(res, AuditConfig(invariance=cfg))}
    assert not crit["invariance.hflip"].passed and crit["invariance.none"].passed
    (f,) = findings(res, None)  # the findings block names the least stable transform
    assert (f.severity, f.criterion, f.importance) == ("warn", "invariance.hflip", 1.0)
    assert f.text.startswith("Least stable under horizontal flip: 100.0% of 40 predictions change")


def test_graded_severities_and_colour_model_is_invariant(tmp_path):
    run, _ = setup(tmp_path, "colour")
    cfg = InvarianceConfig(transforms=("hflip", "rotate", "noise", "jpeg", "blur", "crop", "contrast"),
                           severities=(1, 2, 3))
    res = run(cfg, n_boot=100)
    assert [(r.transform, r.severity) for r in res.runs if r.transform in ("hflip", "rotate")] == [
        ("hflip", 1), ("rotate", 1), ("rotate", 2), ("rotate", 3)]
    assert res.worst("hflip").flip_rate.value == 0.0  # a global-average-pool model cannot see a flip
    assert all(c.passed for c in criteria(res, AuditConfig(invariance=cfg)))
    assert findings(res, None) == []  # nothing flips: nothing to report
    assert res.runs[1].description == "rotate 5°"


def test_bounded_sample_and_per_transform_limit(tmp_path):
    run, _ = setup(tmp_path)
    cfg = InvarianceConfig(transforms=("hflip",), max_images=10, max_flip_rate_by=FlipLimits(hflip=1.0))
    res = run(cfg, n_boot=50)
    assert res.n_images == 10 and res.n_total == 40 and res.runs[0].n == 10
    (c,) = criteria(res, AuditConfig(invariance=cfg))
    assert c.passed and c.threshold == 1.0


def test_transform_choice_config_then_card_then_default():
    assert choose_transforms(InvarianceConfig(), ()) == (list(DEFAULT_TRANSFORMS), "default", [])
    assert choose_transforms(InvarianceConfig(), ("hflip", "mixup")) == (["hflip"], "model card", ["mixup"])
    assert choose_transforms(InvarianceConfig(transforms=("vflip", "blur")), ("hflip",))[:2] == (
        ["vflip", "blur"], "config")
    assert choose_transforms(InvarianceConfig(exclude=("hflip",)), ())[0] == [t for t in DEFAULT_TRANSFORMS
                                                                             if t != "hflip"]
    with pytest.raises(ConfigError, match="'invariance.transforms' must be one of 'none', 'hflip'.*got 'flip'"):
        InvarianceConfig(transforms=("flip",))


def test_transforms_keep_size_and_mode_and_are_deterministic():
    img = builders.colour_image("red", size=20)
    for name, spec in TRANSFORMS.items():
        for sev in (1, 2, 3):
            out = spec.at(sev)(img)
            assert out.size == img.size and out.mode == img.mode, name
            assert np.array_equal(np.asarray(out), np.asarray(spec.at(sev)(img))), name
            # picklable, with the same pixels after a round trip (engines send transforms to other processes)
            assert np.array_equal(np.asarray(out), np.asarray(pickle.loads(pickle.dumps(spec.at(sev)))(img))), name


def test_an_arm_far_from_its_limit_stops_at_the_first_look_that_decides(tmp_path):
    """0 flips: the flip rate's sequence excludes 0.1 after 35 images, so the 60-image look ends the arm."""
    from audit.sequential import rate_sequence

    ctx = builders.context(builders.colour_model(tmp_path / "m.onnx"), builders.image_folder(tmp_path / "d", 40))
    cfg = InvarianceConfig(transforms=("hflip",), severities=(1,), first_look=30)
    res = invariance(dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, invariance=cfg, n_boot=50)))
    (run,) = res.runs
    assert (run.n, run.budget, run.sequential, run.stopped_early) == (60, 120, True, True)
    assert (run.flip_rate.value, run.flip_rate.low, run.flip_rate.high) == (0.0, *rate_sequence(0, 60, 0.1))
    assert run.flip_rate.high < 0.1 and (res.images_run, res.images_budget) == (60, 120)
    # the 60 are a random sample of the three classes, not the first folders in the listing
    assert sum(c.n for c in run.per_class) == 60 and all(c.n >= 10 for c in run.per_class) and len(run.per_class) == 3
    (c,) = decide(criteria(res, AuditConfig(invariance=cfg)), "interval")
    assert c.status == "pass" and "stopped after 60 of 120 images" in c.detail and c.n == 60
    assert res.to_dict()["images_run"] == 60 and res.to_dict()["runs"][0]["budget"] == 120


def test_an_arm_that_flips_everything_fails_at_its_first_look(tmp_path):
    run, _ = setup(tmp_path)
    res = run(InvarianceConfig(transforms=("hflip",), first_look=10), n_boot=50)
    (arm,) = res.runs
    assert arm.n == 10 and arm.flip_rate.value == 1.0 and arm.flip_rate.low > 0.1
    (c,) = decide(criteria(res, AuditConfig(invariance=InvarianceConfig(transforms=("hflip",)))), "interval")
    assert c.status == "fail"


def test_without_early_stop_every_arm_runs_the_whole_sample_with_wilson_intervals(tmp_path):
    from audit.stats import proportion_ci

    run, _ = setup(tmp_path)
    res = run(InvarianceConfig(transforms=("none", "hflip"), first_look=10, early_stop=False), n_boot=50)
    assert [(r.n, r.budget, r.sequential) for r in res.runs] == [(40, 40, False)] * 2
    assert res.runs[1].flip_rate == proportion_ci(40, 40) and res.runs[0].flip_rate == proportion_ci(0, 40)
