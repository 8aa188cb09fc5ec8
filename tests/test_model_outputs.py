"""The model's outputs are not trusted blindly: NaN/Inf rows are never scored and fail their own criterion,
fp16 models work, and every model card key is validated with bounds at load, naming the key."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import builders
from audit.cli import main
from audit.errors import ModelError
from audit.model import OnnxClassifier

FAST = ["--no-pdf", "--no-progress", "--n-boot", "50", "--no-latency", "--no-invariance"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_nan_outputs_are_not_scored_and_fail_their_own_criterion(tmp_path):
    """Green and blue images get NaN logits: without the check they were scored as class 0 (red)."""
    model = builders.nan_model(tmp_path / "nan.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    out = tmp_path / "out"
    # pytest turns warnings into errors: a numpy RuntimeWarning here would end the run as exit 3
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST,
                 "--min-images-per-label", "0"])
    v = json.loads((out / "verdict.json").read_text())
    bad = next(c for c in v["criteria"] if c["id"] == "evidence.non_finite")
    assert code == 1 and not v["passed"] and not bad["passed"] and bad["value"] == 20
    assert "20 image(s): blue/000.png" in bad["detail"] and "and 12 more" in bad["detail"]
    df = pd.read_csv(out / "predictions.csv")
    assert len(df) == 10 and set(df["label"]) == {"red"} and df["correct"].all()
    skipped = pd.read_csv(out / "skipped.csv")
    assert (skipped["reason"] == "model output is NaN or Inf (not scored)").sum() == 20
    assert v["metrics"]["accuracy"]["value"] == 1.0 and v["data"]["processed"] == 10


@pytest.mark.parametrize("inf", [False, True], ids=["nan", "inf"])
def test_a_model_that_only_outputs_nan_or_inf_is_exit_2_with_one_line(tmp_path, inf):
    model = builders.nan_model(tmp_path / "bad.onnx", everywhere=True, inf=inf)
    data = builders.image_folder(tmp_path / "data", 2)
    proc = run_cli("run", "--model", model, "--data", data, "--out", tmp_path / "out", *FAST)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the model output NaN or Inf for every one of the 6 image")
    assert "Warning" not in proc.stderr and not (tmp_path / "out").exists()


def test_fp16_model_is_cast_at_the_boundary(tmp_path, colour_model):
    half = builders.fp16_model(tmp_path / "half.onnx")
    clf, ref = OnnxClassifier.load(half), OnnxClassifier.load(colour_model)
    batch = np.random.default_rng(0).normal(size=(5, 3, 16, 16)).astype(np.float32)
    got = clf.predict_proba(batch)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref.predict_proba(batch), atol=2e-3)
    data = builders.image_folder(tmp_path / "data", 10)
    assert main(["run", "--model", str(half), "--data", str(data), "--out", str(tmp_path / "out"), *FAST]) == 0


def test_a_non_float_input_is_refused_at_load(tmp_path):
    import onnx

    path = builders.fp16_model(tmp_path / "m.onnx")
    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    m.graph.node[0].attribute[0].i = onnx.TensorProto.FLOAT
    onnx.save(m, str(path))
    with pytest.raises(ModelError, match=r"model input 'input' has type tensor\(uint8\)"):
        OnnxClassifier.load(path)


@pytest.mark.parametrize("key,value,match", [
    ("preprocess", '{"size": [20000, 20000]}', r"card key 'audit.preprocess.size' must be .*<= 4096.*\[20000, 20000\]"),
    ("preprocess", '[16, 16]', r"card key 'audit.preprocess' must be an object"),
    ("preprocess", '{"size": "28"}', r"card key 'audit.preprocess.size' must be .*got '28'"),
    ("preprocess", '{"size": [16, 16], "mean": "0.5"}', r"card key 'audit.preprocess.mean' must be"),
    ("preprocess", '{"size": [16, 16], "crop_pct": 5}', r"card key 'audit.preprocess.crop_pct' must be"),
    ("preprocess", '{"size": [16, 16], "sise": 3}', r"card key 'audit.preprocess' must be an object with keys from .*got \"unknown key\(s\) \['sise'\]"),
    ("invariances", "5", r"card key 'audit.invariances' must be a list of transform names, got 5"),
    ("invariances", '"hflip"', r"card key 'audit.invariances' must be a list"),
    ("labels", '"abcdefghij"', r"card key 'audit.labels' must be a list of class names .*got 'abcdefghij'"),
    ("labels", '["a", null, "c"]', r"card key 'audit.labels' must be a list of class names"),
    ("output", '"logit"', r"card key 'audit.output' must be one of"),
    ("arch", "5", r"card key 'audit.arch' must be a string"),
    ("provenance", '"x"', r"card key 'audit.provenance' must be an object"),
])
def test_card_values_are_validated_at_load_naming_the_key(tmp_path, key, value, match):
    path = builders.dynamic_size(builders.colour_model(tmp_path / "m.onnx"))
    builders.set_metadata(path, **{key: value})
    with pytest.raises(ModelError, match=match):
        OnnxClassifier.load(path)


def test_a_square_size_may_be_one_integer(tmp_path):
    path = builders.dynamic_size(builders.colour_model(tmp_path / "m.onnx"))
    builders.set_metadata(path, preprocess='{"size": 16, "mean": [0.5], "std": [0.25]}')
    assert OnnxClassifier.load(path).card.preprocess.size == (16, 16)


def test_a_bad_card_is_exit_2_naming_the_key(tmp_path):
    path = builders.dynamic_size(builders.colour_model(tmp_path / "m.onnx"))
    builders.set_metadata(path, preprocess='{"size": [20000, 20000]}')
    data = builders.image_folder(tmp_path / "data", 2)
    proc = run_cli("run", "--model", path, "--data", data, "--out", tmp_path / "out", *FAST)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "'audit.preprocess.size'" in lines[0], proc.stderr
