"""Shift and novelty against a reference set: the null holds, planted shifts are found, the most novel images are
the planted new ones, and the reference runs through the same source and engine (labels optional)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from audit import shift as stats

FAST = ["--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance", "--no-label-errors", "--no-pdf"]


def blobs(seed: int, n: int, shift: float = 0.0, dim: int = 8):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (4, dim))
    x = centres[rng.integers(0, 4, n)] + rng.normal(0, 1, (n, dim))
    x[:, 0] += shift
    return x


@pytest.mark.fast
def test_same_distribution_gives_no_significant_shift_in_95_percent_of_seeds():
    p = [stats.mmd_test(blobs(2 * s, 200), blobs(2 * s + 1, 200), permutations=200, seed=s).p_value
         for s in range(200)]
    assert np.mean(np.array(p) < 0.05) <= 0.05
    assert np.mean(np.array(p) < 0.5) == pytest.approx(0.5, abs=0.1)  # roughly uniform under the null


def test_power_grows_with_the_shift_and_a_clear_shift_is_always_found():
    power = {}
    for size in (0.25, 0.75, 1.5):
        power[size] = np.mean([stats.mmd_test(blobs(2 * s, 200), blobs(2 * s + 1, 200, size), permutations=200,
                                              seed=s).p_value < 0.05 for s in range(40)])
    assert power[0.25] < power[0.75] <= power[1.5]
    assert power[1.5] >= 0.95


@pytest.mark.fast
def test_the_witness_auc_is_the_mann_whitney_auc_and_covers_one_half_under_the_null():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s, y = rng.normal(size=300), rng.integers(0, 2, 300)
    s[y == 1] += 0.5
    assert stats.auc_estimate(s, y).value == pytest.approx(roc_auc_score(y, s))
    covered = [(lambda a: a.low <= 0.5 <= a.high)(stats.mmd_test(blobs(2 * k, 150), blobs(2 * k + 1, 150),
                                                                  permutations=100, seed=k).auc) for k in range(100)]
    assert np.mean(covered) >= 0.9


@pytest.mark.fast
def test_novelty_ranks_the_planted_out_of_distribution_points_first():
    ref = blobs(0, 2000)
    test = blobs(1, 500)
    rng = np.random.default_rng(2)
    test[:25] = rng.normal(0, 1, (25, 8)) + 9.0  # far from every reference blob
    nov = stats.novelty(ref, test, seed=0)
    top = np.argsort(-nov.score)[:25]
    assert np.mean(top < 25) >= 0.9  # precision at 25
    assert nov.score[25:].mean() == pytest.approx(0.5, abs=0.1)  # in-distribution points look like the reference
    own = stats.nearest(ref, ref[:5], k=2)[0][:, 1]
    assert nov.reference_null[np.searchsorted(nov.reference_null, own[0])] == pytest.approx(own[0], abs=1e-5)


@pytest.mark.fast
def test_property_and_label_shift_against_scipy():
    from scipy.stats import chi2_contingency, ks_2samp

    rng = np.random.default_rng(0)
    ref = {"brightness": rng.normal(0.5, 0.1, 400), "contrast": rng.normal(0.2, 0.05, 400)}
    test = {"brightness": rng.normal(0.6, 0.1, 300), "contrast": rng.normal(0.2, 0.05, 300)}
    props = stats.property_shift(ref, test)
    assert props[0].name == "brightness"
    assert props[0].statistic == pytest.approx(ks_2samp(ref["brightness"], test["brightness"]).statistic)
    assert props[0].q_value < 0.01 < props[1].q_value
    ls = stats.label_shift(("a", "b", "c"), np.array([0] * 50 + [1] * 50), np.array([0] * 20 + [1] * 60 + [2] * 20))
    assert ls.missing_in_reference == ("c",)
    assert ls.p_value == pytest.approx(chi2_contingency([[50, 50, 0], [20, 60, 20]])[1])
    assert ls.distance == pytest.approx(0.3)


# ----------------------------------------------------------------------------- end to end


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def shift_audit(shape_model, tmp_path_factory):
    """The shape model audited with its own training split as --train: the turned squares are new to it."""
    model, data, groups = shape_model
    out = tmp_path_factory.mktemp("shift") / "out"
    proc = run_cli("run", "--model", model, "--data", data, "--train", data.parent / "train", "--out", out, *FAST)
    return proc, out, groups


def test_the_training_split_as_reference_shows_the_shift_and_the_new_pose_is_the_most_novel(shift_audit):
    proc, out, groups = shift_audit
    assert proc.returncode == 0, proc.stderr
    v = json.loads((out / "verdict.json").read_text())
    sh = v["shift"]
    assert sh["reference"]["flag"] == "--train" and sh["n_reference"] == 1200 and sh["n_test"] == len(groups)
    assert sh["p_value"] < 0.01 and sh["significant"] and sh["domain_auc"]["value"] > 0.5
    with open(out / "predictions.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: -float(r["novelty"]))
    n_new = sum(g == "diamond" for g in groups.values())
    top = rows[:n_new]
    assert sum(groups[r["path"]] == "diamond" for r in top) / n_new >= 0.5
    assert all(r["nearest_reference"].startswith(("circle/", "square/", "triangle/")) for r in top)
    assert any(b["drop"] and b["low"] >= 0.9 for b in sh["novelty_bands"])
    assert v["integrity"]["n_train"] == 1200  # the same reference pass served the leakage check
    assert 'id="shift"' in (out / "report.html").read_text()


def test_a_second_sample_of_the_same_distribution_shows_no_shift(shape_model, tmp_path):
    import builders_slices

    model, data, _ = shape_model
    other = tmp_path / "other"
    builders_slices.subgroup_split(other, 250, seed=7, diamond=0.15)  # same recipe as the test set, new seed
    proc = run_cli("run", "--model", model, "--data", data, "--reference", other, "--out", tmp_path / "out", *FAST)
    assert proc.returncode == 0, proc.stderr
    sh = json.loads((tmp_path / "out" / "verdict.json").read_text())["shift"]
    assert sh["p_value"] >= 0.05 and not sh["significant"]
    assert sh["reference"]["flag"] == "--reference"


def test_an_unlabelled_reference_folder_and_a_manifest_without_labels_work(shape_model, tmp_path):
    model, data, groups = shape_model
    flat = tmp_path / "flat"
    flat.mkdir()
    paths = sorted(groups)[::5]
    for p in paths:
        (flat / p.replace("/", "_")).write_bytes((data / p).read_bytes())
    (flat / "notes.txt").write_text("not an image")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"flat/{p.replace('/', '_')}\n" for p in paths))
    for ref, name in ((flat, "folder"), (manifest, "manifest")):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text("[audit.shift]\nmax_domain_auc = 0.9\n")
        proc = run_cli("run", "--model", model, "--data", data, "--reference", ref, "--out", tmp_path / name,
                       "--config", cfg, *FAST)
        assert proc.returncode == 0, (name, proc.stderr)
        v = json.loads((tmp_path / name / "verdict.json").read_text())
        sh = v["shift"]
        assert sh["reference"]["labelled"] is False and sh["labels"] is None
        assert sh["reference"]["processed"] == len(paths)
        assert sh["reference"]["skipped"] == (1 if name == "folder" else 0)  # notes.txt, with its reason
        crit = [c for c in v["criteria"] if c["id"] == "shift.domain_auc"]
        assert crit and crit[0]["threshold"] == 0.9
