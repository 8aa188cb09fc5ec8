"""Slices: a planted weakness is the top significant slice, no false alarms without one, numbers match sklearn."""

import numpy as np
import pytest
from sklearn import metrics as skm

import builders
from audit.checks.slices import SlicesConfig, _Cells, _replicates, criteria, find_slices, partitions
from audit.clusters import FAST_RATIO, Exchangeable
from audit.config import AuditConfig

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def audit_slices(tmp_path, weak, seed, n_boot=1000):
    root = builders.sliced_folder(tmp_path / "data", 80, weak=weak, seed=seed)
    preds = builders.context(builders.colour_model(tmp_path / "m.onnx"), root).predictions
    return find_slices(preds, SlicesConfig(), n_boot=n_boot, seed=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_metadata_weakness_is_the_top_significant_slice(tmp_path, seed):
    res = audit_slices(tmp_path, "site", seed)
    top = res.significant[0]
    assert (top.variable, top.level) == ("site", "c")
    assert top.accuracy_gap.low > 0.2 and top.q_value < 1e-3
    assert top.errors and all(p.endswith(".png") for p in top.errors)


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_brightness_band_is_the_top_significant_slice(tmp_path, seed):
    res = audit_slices(tmp_path, "brightness", seed)
    top = res.significant[0]
    assert top.variable == "brightness" and top.kind == "property" and top.level.startswith("Q1/4")
    assert top.accuracy_gap.value > 0.2


def test_no_planted_weakness_no_significant_slice_on_images(tmp_path):
    for seed in range(3):
        (tmp_path / str(seed)).mkdir()
        res = audit_slices(tmp_path / str(seed), None, seed)
        assert res.significant == (), [s.name for s in res.significant]
        (c,) = criteria(res, AuditConfig())
        assert c.passed and "no slice underperforms significantly" in c.detail


def test_no_false_alarm_over_repeated_seeds_at_default_settings():
    n = 600
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        attrs = {"site": rng.choice(list("abcd"), n).astype(object), "camera": rng.choice(list("xy"), n).astype(object)}
        props = {k: rng.random(n) for k in ("brightness", "contrast", "sharpness", "ink_coverage")}
        res = find_slices(builders.predictions(n, seed=seed, attributes=attrs, properties=props), SlicesConfig())
        assert res.significant == (), (seed, [s.name for s in res.significant])


def test_slice_numbers_equal_sklearn_on_masked_arrays():
    n = 500
    rng = np.random.default_rng(0)
    site = rng.choice(list("abc"), n).astype(object)
    p = builders.predictions(n, c=4, seed=3, error=0.3, attributes={"site": site},
                             properties={"brightness": rng.random(n)})
    res = find_slices(p, SlicesConfig(min_size=10), n_boot=50, seed=0)
    y, yp = p.y_true, p.y_pred
    by_name = {s.name: s for s in res.slices}
    for level in "abc":
        s = by_name[f"site = {level}"]
        m = site == level
        assert s.n == m.sum()
        assert s.accuracy.value == pytest.approx(skm.accuracy_score(y[m], yp[m]))
        assert s.macro_f1.value == pytest.approx(skm.f1_score(y[m], yp[m], average="macro", zero_division=0))
        assert s.accuracy_gap.value == pytest.approx(skm.accuracy_score(y[~m], yp[~m]) - s.accuracy.value)
        f1_rest = skm.f1_score(y[~m], yp[~m], average="macro", zero_division=0)
        assert s.f1_gap.value == pytest.approx(f1_rest - s.macro_f1.value)
        assert s.accuracy_gap.low <= s.accuracy_gap.value <= s.accuracy_gap.high
    bins = [s for s in res.slices if s.variable == "brightness"]
    assert len(bins) == 4 and sum(s.n for s in bins) == n
    gaps = [s.accuracy_gap.value for s in res.slices if s.judged]
    assert gaps == sorted(gaps, reverse=True)  # ranked, worst first


def test_small_slices_reported_not_tested_and_id_columns_skipped():
    n = 300
    site = np.array(["big"] * 290 + ["tiny"] * 10, dtype=object)
    ids = np.array([f"id{i}" for i in range(n)], dtype=object)
    p = builders.predictions(n, seed=1, attributes={"site": site, "image_id": ids, "const": np.full(n, "x", object)},
                             properties={"resolution": np.full(n, 576.0)})
    res = find_slices(p, SlicesConfig(), n_boot=100)
    # a slice is judged only when it and its complement both reach min_size
    assert {s.level for s in res.too_small} == {"big", "tiny"}
    tiny = next(s for s in res.too_small if s.level == "tiny")
    assert tiny.n == 10 and np.isnan(tiny.q_value) and not tiny.significant
    assert res.n_tests == 0 and res.slices[-1] in res.too_small
    reasons = dict(res.skipped)
    assert "distinct values" in reasons["image_id"] and reasons["const"] == "a single value"
    assert reasons["resolution"] == "constant over the data"


@pytest.mark.parametrize("mode,with_weak,passed", [
    ("report", True, True), ("report", False, True), ("require", True, True), ("require", False, False),
    ("forbid", True, False), ("forbid", False, True)])
def test_criterion_modes(mode, with_weak, passed):
    n = 800
    rng = np.random.default_rng(5)
    site = rng.choice(list("abcd"), n).astype(object)
    p = builders.predictions(n, seed=2, attributes={"site": site}, weak=(site == "c") if with_weak else None)
    cfg = SlicesConfig(criterion=mode)
    res = find_slices(p, cfg, n_boot=300)
    (c,) = criteria(res, AuditConfig(slices=cfg))
    assert c.passed is passed
    assert ("site = c" in c.detail) is with_weak


def test_same_seed_same_result():
    p = builders.predictions(400, seed=4, attributes={"s": np.array(list("ab") * 200, dtype=object)})
    assert find_slices(p, SlicesConfig(), n_boot=200, seed=1) == find_slices(p, SlicesConfig(), n_boot=200, seed=1)


@pytest.mark.parametrize("n", [400, 4000])  # cells drawn by index, then as multinomial counts
def test_bootstrap_replicates_equal_sklearn_on_each_resample(n):
    c = 5
    rng = np.random.default_rng(1)
    site = rng.choice(list("abc"), n).astype(object)
    p = builders.predictions(n, c=c, seed=2, error=0.3, attributes={"site": site})
    parts, _ = partitions(p, SlicesConfig())
    _, reps = _replicates(parts, p, n_boot=7, seed=5)
    y, yp = p.y_true, p.y_pred
    cells = _Cells.of(parts[0], y, yp, c)
    ex = Exchangeable.of(cells.cells, np.zeros(n, np.int8), None)
    assert (len(ex.units) * FAST_RATIO <= n) == (n == 4000)
    draws = np.concatenate(list(ex.resamples(7, 5)))
    assert draws.shape == (7, len(cells.true_lc)) and np.all(draws.sum(axis=1) == n)
    # each resample as rows: every cell's representative row as often as the cell was drawn
    for k, idx in enumerate(np.repeat(ex.rows, w.astype(int)) for w in draws):
        for li, level in enumerate(parts[0].levels):
            m = site[idx] == level
            acc = skm.accuracy_score(y[idx][m], yp[idx][m])
            f1 = skm.f1_score(y[idx][m], yp[idx][m], average="macro", zero_division=0)
            rest = skm.accuracy_score(y[idx][~m], yp[idx][~m])
            f1_rest = skm.f1_score(y[idx][~m], yp[idx][~m], average="macro", zero_division=0)
            assert reps[0][k, li] == pytest.approx([acc, f1, rest - acc, f1_rest - f1])
