"""Suspected label errors: flipped labels in a real dataset are found, and the wrapper is cleanlab.

The data is scikit-learn's digits (1,797 real 8x8 scans). A logistic regression is trained on one
half and predicts the other half, so the probabilities are out-of-sample as in an audit. The
registered check runs end to end on real PNG files whose folder label is wrong for a known set.
"""

import json

import numpy as np
import pytest
from cleanlab.experimental.label_issues_batched import find_label_issues_batched
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores, order_label_issues
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.proportion import proportion_confint

import builders
from audit.checks.label_errors import CAVEAT, find_label_errors
from audit.cli import main

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

N_FLIP = 45  # 5% of the 899 test images


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(x_tr, y_tr)
    return y_te, clf.predict_proba(x_te)


def flip(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Give N_FLIP random images another (random, wrong) label."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), N_FLIP, replace=False)
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, 10, N_FLIP)) % 10
    return noisy, idx


def test_most_flipped_labels_are_found(digits):
    y, proba = digits
    recalls, precisions = [], []
    for seed in range(5):
        noisy, flipped = flip(y, seed)
        res = find_label_errors(noisy, proba)
        found = np.array([i.index for i in res.issues])
        assert res.method == "confident_learning" and res.n_flagged == len(found)
        recalls.append(np.isin(flipped, found).mean())
        precisions.append(np.isin(found, flipped).mean())
    # measured: recall 0.82, 0.84, 0.84, 0.67, 0.82 (mean 0.80); precision 0.81-0.93
    assert np.mean(recalls) >= 0.7, recalls
    assert min(recalls) >= 0.6, recalls
    assert np.mean(precisions) >= 0.7, precisions


def test_clean_labels_yield_few_flags(digits):
    y, proba = digits
    res = find_label_errors(y, proba)
    errors = int((proba.argmax(axis=1) != y).sum())
    assert errors > 20  # the model does make mistakes: flags are not just "wrong predictions"
    assert res.n_flagged <= 0.01 * len(y), res.n_flagged  # measured: 1 of 899


@pytest.mark.parametrize("method", ["confident_learning", "batched"])
def test_wrapper_returns_what_cleanlab_returns(digits, method):
    y, proba = digits
    noisy, _ = flip(y, 0)
    res = find_label_errors(noisy, proba, method=method, batch_size=300)
    if method == "batched":  # cleanlab returns row order here; the wrapper ranks like cleanlab's order_label_issues
        mask = find_label_issues_batched(noisy, proba, batch_size=300, n_jobs=1, verbose=False, return_mask=True)
        direct = order_label_issues(mask, noisy, proba, rank_by="self_confidence")
    else:
        direct = find_label_issues(noisy, proba, filter_by="prune_by_noise_rate",
                                   return_indices_ranked_by="self_confidence", n_jobs=1)
    assert [i.index for i in res.issues] == list(direct)
    scores = get_label_quality_scores(noisy, proba, method="self_confidence")
    np.testing.assert_allclose([i.self_confidence for i in res.issues], scores[direct])
    assert [i.rank for i in res.issues] == list(range(len(direct)))
    assert [i.given for i in res.issues] == noisy[direct].tolist()
    assert [i.predicted for i in res.issues] == proba[direct].argmax(axis=1).tolist()
    np.testing.assert_array_equal(res.flagged_per_class, np.bincount(noisy[direct], minlength=10))


def test_auto_uses_the_batched_path_above_the_cell_budget(digits):
    y, proba = digits
    noisy, _ = flip(y, 1)
    small = find_label_errors(noisy, proba, max_cells=proba.size)
    big = find_label_errors(noisy, proba, max_cells=proba.size - 1)
    assert (small.method, big.method) == ("confident_learning", "batched")
    direct = find_label_issues_batched(noisy, proba, batch_size=10_000, n_jobs=1, verbose=False)
    assert sorted(i.index for i in big.issues) == list(direct)


def test_accuracy_with_and_without_flagged_images(digits):
    y, proba = digits
    noisy, _ = flip(y, 2)
    res = find_label_errors(noisy, proba, max_listed=5)
    assert len(res.issues) == 5 and res.n_flagged > 5  # the list is capped, the count is not
    flagged = find_label_issues(noisy, proba, filter_by="prune_by_noise_rate", n_jobs=1)  # boolean mask
    y_pred = proba.argmax(axis=1)
    keep = ~flagged
    assert res.n_flagged == flagged.sum()
    assert res.accuracy.value == pytest.approx(accuracy_score(noisy, y_pred))
    assert res.accuracy_without.value == pytest.approx(accuracy_score(noisy[keep], y_pred[keep]))
    for est, k, n in [(res.accuracy, (y_pred == noisy).sum(), len(y)),
                      (res.accuracy_without, (y_pred == noisy)[keep].sum(), keep.sum())]:
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (est.low, est.high) == pytest.approx((low, high), abs=1e-12)
    assert res.accuracy_without.value > res.accuracy.value


def test_cleanlab_warnings_become_notes_and_the_result_is_not_judged():
    rng = np.random.default_rng(0)
    y = np.r_[rng.integers(0, 2, 60), 2]  # class 2 has a single image: cleanlab warns it cannot flag there
    proba = rng.dirichlet(np.ones(3) * 0.3, len(y))
    res = find_label_errors(y, proba)  # pytest turns a leaked warning into an error
    assert any("class: 2" in note for note in res.notes), res.notes
    assert res.judged is False and res.caveat == CAVEAT
    assert "51%" in CAVEAT and "Northcutt" in CAVEAT and "never judged" in CAVEAT
    d = res.to_dict()
    assert d["n_flagged"] == res.n_flagged and len(d["issues"]) == len(res.issues)


@pytest.mark.parametrize("y,proba,message", [
    ([0, 1], np.full((2, 1), 1.0), "proba must be a 2-D (N, C) array with C >= 2"),
    ([0, 1, 1], np.full((2, 2), 0.5), "y_true must have shape (2,) to match proba"),
    ([0, 2], np.full((2, 2), 0.5), "y_true must hold class indices in [0, 2)"),
    ([0, 1], np.full((2, 2), 2.0), "proba must hold probabilities"),
    ([0, 1], np.array([[np.nan, 1.0], [0.5, 0.5]]), "proba must hold probabilities"),
    ([0, 1], np.array([[0.2, 0.2], [0.5, 0.5]]), "rows summing to 1"),
])
def test_bad_inputs_are_named(y, proba, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        find_label_errors(np.asarray(y), proba)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="method must be one of"):
        find_label_errors([0, 1], np.full((2, 2), 0.5), method="fast")


# --- the registered check, end to end -------------------------------------------------------------

FAST = ["--n-boot", "30", "--no-progress", "--no-latency", "--no-invariance", "--no-pdf", "--min-accuracy", "0.5"]


@pytest.fixture(scope="module")
def painted(tmp_path_factory):
    """A colour ImageFolder where 2 images per class are painted the next class's colour: the colour model
    predicts the painted colour, so their folder label is the error."""
    root = tmp_path_factory.mktemp("label_errors")
    data = builders.image_folder(root / "data", 20, confusers=2)
    model = builders.colour_model(root / "model.onnx")
    return root, data, model


def test_the_audit_lists_the_painted_images_with_thumbnails(painted):
    root, data, model = painted
    out = root / "out"
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST]) == 0
    v = json.loads((out / "verdict.json").read_text())
    le = v["label_errors"]
    painted_paths = {f"{c}/{i:03d}.png" for c in builders.COLOURS for i in range(2)}
    flagged = {i["path"] for i in le["issues"]}
    assert flagged == painted_paths  # recall 6/6 and nothing else flagged
    by_path = {i["path"]: i for i in le["issues"]}
    assert by_path["red/000.png"]["given_label"] == "red" and by_path["red/000.png"]["predicted_label"] == "green"
    assert le["accuracy"]["value"] == pytest.approx(54 / 60) and le["accuracy_without"]["value"] == 1.0
    (crit,) = [c for c in v["criteria"] if c["id"] == "label_errors.flagged_share"]
    assert crit["judged"] is False and crit["value"] == pytest.approx(0.1) and v["passed"] is True
    html = (out / "report.html").read_text()
    section = html.split('<section id="label_errors">', 1)[1].split("</section>", 1)[0]
    assert section.count('<img class="thumb" src="data:image/jpeg') == 6
    assert "about half of such flagged items are real label errors" in section and "never judged" in section
    assert any(f["section"] == "label_errors" for f in v["findings"])


def test_no_thumbnails_and_no_label_errors(painted):
    root, data, model = painted
    base = ["run", "--model", str(model), "--data", str(data), *FAST]
    assert main([*base, "--out", str(root / "plain"), "--no-thumbnails"]) == 0
    html = (root / "plain" / "report.html").read_text()
    assert '<section id="label_errors">' in html and "data:image/jpeg" not in html
    assert main([*base, "--out", str(root / "off"), "--no-label-errors"]) == 0
    assert '<section id="label_errors">' not in (root / "off" / "report.html").read_text()
    assert "label_errors" not in json.loads((root / "off" / "verdict.json").read_text())


def test_judged_label_errors_can_fail_the_audit(painted, tmp_path):
    _, data, model = painted
    cfg = tmp_path / "audit.toml"
    # 6 of 60 flagged: 0.10 [0.047, 0.20], all of it above 0.02 (against 0.05 it would be inconclusive)
    cfg.write_text('[audit.label_errors]\njudged = true\nmax_share = 0.02\nmax_listed = 3\n')
    out = tmp_path / "out"
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--config", str(cfg),
                 *FAST]) == 1
    v = json.loads((out / "verdict.json").read_text())
    assert len(v["label_errors"]["issues"]) == 3 and v["label_errors"]["n_flagged"] == 6
    assert v["label_errors"]["judged"] is True
    assert [f["severity"] for f in v["findings"]][0] == "fail"


@pytest.mark.parametrize("toml,message", [
    ('method = "fast"', "config key 'label_errors.method' must be one of 'auto', 'confident_learning', 'batched'"),
    ("max_cells = 0", "config key 'label_errors.max_cells' must be >= 1, got 0"),
    ("max_share = 1.5", "config key 'label_errors.max_share' must be >= 0 and <= 1, got 1.5"),
])
def test_settings_out_of_bounds_exit_2_with_the_key(painted, tmp_path, capsys, toml, message):
    _, data, model = painted
    cfg = tmp_path / "audit.toml"
    cfg.write_text(f"[audit.label_errors]\n{toml}\n")
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--config", str(cfg), *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_class_names_in_notes_and_a_single_given_class():
    res = find_label_errors(np.zeros(5, int), np.full((5, 2), 0.5), labels=("cat", "dog"))
    assert res.n_flagged == 0 and "fewer than two classes" in res.notes[0]
    rng = np.random.default_rng(0)
    y = np.r_[rng.integers(0, 2, 60), 2]
    res = find_label_errors(y, rng.dirichlet(np.ones(3) * 0.3, len(y)), labels=("a", "b", "c"))
    assert any("class 'c'" in n for n in res.notes), res.notes


@pytest.mark.parametrize("method, module", [("auto", "cleanlab.filter"), ("confident_learning", "cleanlab.filter"),
                                            ("batched", "cleanlab.experimental.label_issues_batched")])
def test_preparing_the_check_starts_the_side_process_importing_cleanlab(method, module):
    import dataclasses
    from types import SimpleNamespace

    from audit import side_process
    from audit.checks import label_errors
    from audit.config import AuditConfig

    if side_process.running():
        side_process.running().stop()  # a fresh one, started by the check
    config = AuditConfig()
    config = dataclasses.replace(config, label_errors=dataclasses.replace(config.label_errors, method=method))
    side = label_errors.SPEC.prepare(SimpleNamespace(config=config, source=SimpleNamespace(samples=range(10))))
    assert side is side_process.running() and side.call(side_process.loaded, module)  # imported before it serves


def test_above_the_side_process_limit_cleanlab_runs_in_the_audits_own_process(painted, tmp_path, monkeypatch):
    from audit import side_process
    from audit.checks import label_errors

    root, data, model = painted
    if side_process.running():
        side_process.running().stop()
    monkeypatch.setattr(label_errors, "SIDE_PROCESS_MAX_IMAGES", 10)  # the painted folder has 120 images
    out = tmp_path / "out"
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST]) == 0
    v = json.loads((out / "verdict.json").read_text())
    assert side_process.running() is None and v["label_errors"]["n_flagged"] > 0
    assert all("side_process_peak_rss_mib" not in s for s in v["run"]["stages"])
