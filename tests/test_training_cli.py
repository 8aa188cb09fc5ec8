"""prepare + fit from the command line on tiny real data; the auditor sees the reported accuracy."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from training_helpers import needs_fmnist

from audit.imaging import preprocess
from audit.model import OnnxClassifier
from training.cli import main
from training.data import ELPV_4CLASS, _stratified_split, elpv_source, prepare_elpv


@needs_fmnist
def test_prepare_then_fit_scratch_end_to_end(tmp_path, capsys):
    data, out = tmp_path / "fm", tmp_path / "model"
    assert main(["prepare", "fashion-mnist", "--out", str(data), "--limit", "50"]) == 0
    for split in ("train", "val", "test"):
        with open(data / split / "metadata.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 50 and set(rows[0]) == {"path", "label", "source"}
        assert all((data / split / r["path"]).is_file() and r["path"].startswith(r["label"] + "/") for r in rows)
    eda = json.loads((data / "eda.json").read_text())
    assert sum(eda["class_counts"]["test"].values()) == 50 and eda["duplicates_between"]["train/test"] == 0
    assert (data / "examples.png").is_file() and "Class distribution" in (data / "eda.md").read_text()

    code = main(["fit", "--config", "configs/fashion_mnist_scratch.toml", "--out", str(out), "--no-progress",
                 "--set", f"data.root={json.dumps(str(data))}", "--set", "phases.scratch.epochs=1",
                 "--set", "train.logger='none'", "--set", "export.parity_images=16"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    clf = OnnxClassifier.load(out / "model.onnx")
    assert clf.card.invariances == ("hflip",) and clf.card.provenance["config"] == "fashion_mnist_scratch"
    # The auditor's own decode/resize/normalise on the test files reproduces the reported accuracy.
    labels = list(clf.labels)
    paths = sorted((data / "test").glob("*/*.png"))
    x = np.stack([preprocess(p.read_bytes(), clf.card.preprocess) for p in paths])
    acc = float((clf.predict_proba(x).argmax(1) == np.array([labels.index(p.parent.name) for p in paths])).mean())
    assert acc == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert (out / "training_report.md").is_file() and (out / "model.safetensors").is_file()

    code = main(["export", "--config", "configs/fashion_mnist_scratch.toml", "--checkpoint",
                 str(out / "model.safetensors"), "--out", str(tmp_path / "re"),
                 "--set", f"data.root={json.dumps(str(data))}", "--set", "export.parity_images=8"])
    assert code == 0 and (tmp_path / "re" / "model.onnx").is_file()


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["fit", "--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config file not found") and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.toml").write_text("[model]\narch = 'scratch_cnn'\nwidht = 3\n")
    assert main(["fit", "--config", str(tmp_path / "bad.toml")]) == 2
    assert "unknown config key 'model.widht'" in capsys.readouterr().err


def test_elpv_split_is_a_stratified_quarter_and_labels_follow_the_probability(tmp_path):
    try:
        src = elpv_source()
    except Exception:
        pytest.skip("pip install elpv-dataset")
    rows = [line.split() for line in (src / "labels.csv").read_text().splitlines() if line.strip()]
    strata = np.array([f"{float(p):.2f}-{t}" for _, p, t in rows])
    rest, test = _stratified_split(strata, 0.25, 0)
    assert len(test) == 656 and len(rest) == 1968
    for s in np.unique(strata):  # every (probability, module type) stratum is split 1:3
        n = (strata == s).sum()
        assert abs((strata[test] == s).sum() - 0.25 * n) <= 1
    for variant in ("binary", "4class"):
        res = prepare_elpv(tmp_path / variant, variant=variant, limit=12)
        with open(tmp_path / variant / "test" / "metadata.csv") as f:
            meta = list(csv.DictReader(f))
        assert {m["module_type"] for m in meta} <= {"mono", "poly"}
        for m in meta:
            p = float(m["defect_probability"])
            want = ("defective" if p >= 0.5 else "functional") if variant == "binary" else ELPV_4CLASS[round(p * 3)]
            assert m["label"] == want
        assert res.counts["test"] == 12


@pytest.mark.fast
@pytest.mark.parametrize(("override", "message"), [
    ("train.logger='tensorboard'", "config key 'train.logger' must be one of 'csv', 'mlflow', 'none', got 'tensorboard'"),
    ("phases.scratch.epochs=-1", "config key 'phases.scratch.epochs' must be >= 0, got -1"),
    ("phases.phase3.limit_train_batches=0", "config key 'phases.phase3.limit_train_batches' must be > 0 and <= 1"),
    ("data.size=[4, 4]", "config key 'data.size' must be >= 8, got 4"),
])
def test_training_config_bounds_are_declared_on_the_fields_and_name_the_key(override, message):
    from audit.errors import ConfigError
    from training.config import load_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Path(__file__).parent.parent / "configs" / "fashion_mnist_scratch.toml", overrides=[override])
