"""Leakage flags copies, not look-alikes: the copy rule is measured on the data (independent renderings of the
same content, as grey parts and Fashion-MNIST shoes are), through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import builders
import builders_renderings
import numpy as np
import pytest

from audit.copies import copy_rule, nearest_within

FAST = ["--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance", "--no-label-errors", "--no-pdf",
        "--no-shift", "--no-discovered-slices", "--on-inconclusive", "pass"]


@pytest.mark.fast
def test_the_rule_fits_the_lower_tail_and_tightens_with_the_number_of_images_tested():
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    null = np.exp(rng.normal(np.log(5.0), 0.1, 5000))  # log-normal look-alike distances around 5
    rule = copy_rule([null[:2500], null[2500:]], tested=100, max_distance=8.0)
    assert (rule.location, rule.scale) == pytest.approx((np.log(5.0), 0.1), abs=0.01)
    assert rule.threshold == pytest.approx(np.exp(norm.ppf(0.05 / 100, np.log(5.0), 0.1)), abs=0.05)
    assert copy_rule([null], tested=10_000, max_distance=8.0).threshold < rule.threshold
    assert rule.p_value(np.array([1.0, 5.0]))[0] < 1e-9 and rule.p_value(np.array([5.0]))[0] == pytest.approx(0.5, abs=0.1)
    # never looser than the fixed rule; too few distances: the fixed rule decides
    assert copy_rule([rng.normal(30, 1, 500)], tested=10, max_distance=8.0).threshold == 8.0
    fixed = copy_rule([null[:10]], tested=10, max_distance=8.0)
    assert fixed.fixed and fixed.threshold == 8.0 and list(fixed.p_value(np.array([7.0, 9.0]))) == [0.0, 1.0]


@pytest.mark.fast
def test_nearest_within_takes_each_images_closest_candidate():
    i, j, d = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([3.0, 1.0, 2.0])
    assert sorted(nearest_within(i, j, d, 4).tolist()) == [1.0, 1.0, 2.0]  # image 3 has no candidate


@pytest.mark.parametrize("seed", [0, 1])
def test_copies_are_flagged_and_independent_renderings_are_not(tmp_path, seed):
    train, test, copies = builders_renderings.rendering_split(tmp_path, seed=seed)
    model = builders.colour_model(tmp_path / "m.onnx", labels=builders_renderings.SHAPES)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(test), "--train",
                           str(train), "--out", str(out), *FAST], capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    ig = json.loads((out / "verdict.json").read_text())["integrity"]
    flagged = {p["a"] for p in ig["leak_pairs"]}
    assert len(flagged - set(copies)) <= 3  # look-alikes flagged as copies
    assert len(flagged & set(copies)) >= len(copies) - 2  # the copies (pHash misses a strong resize now and then)
    assert ig["n_lookalike_pairs"] > 100 and not ig["copy_rule"]["fixed"]  # the fixed rule alone would flag these
    assert all(p["confirmation"] >= ig["copy_rule"]["threshold"] for p in ig["lookalike_pairs"])
    crit = next(c for c in json.loads((out / "verdict.json").read_text())["criteria"] if c["id"] == "integrity.leakage")
    assert crit["value"] == ig["leaked"] == len(flagged)
    assert "look-alike pair(s)" in (out / "report.html").read_text()
