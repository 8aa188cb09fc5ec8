"""The model contract: card in ONNX metadata, sidecar and flag overrides, and graph quirks handled."""

import json

import numpy as np
import pytest

import builders
from audit.config import load_config
from audit.errors import ModelError
from audit.model import ModelCard, OnnxClassifier, Preprocess, read_metadata, write_card
from audit.pipeline import run_audit

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

# core checks only: the optional analyses have their own tests
FAST = load_config(None, {"n_boot": 20, "pdf": False, "latency.enabled": False, "invariance.enabled": False})



def proba_of(model, data, **kw):
    return run_audit(model, data, FAST, progress=False, **kw).predictions


def test_card_round_trips_through_onnx_metadata(tmp_path):
    path = builders.colour_model(tmp_path / "m.onnx", card=False)
    card = ModelCard(labels=("a", "b", "<script>"), arch="resnet18", invariances=("hflip", "blur"),
                     preprocess=Preprocess(size=(16, 16), mean=(0.1, 0.2, 0.3), std=(0.5,), interpolation="bicubic",
                                           resize="shorter_side_then_center_crop", crop_pct=0.875),
                     provenance={"dataset": "x", "date": "2026-01-01"})
    write_card(path, card)
    assert ModelCard.from_dict(read_metadata(path)) == card
    assert OnnxClassifier.load(path).card == card


def test_model_without_metadata_needs_labels(tmp_path, colour_data):
    path = builders.colour_model(tmp_path / "m.onnx", card=False)
    with pytest.raises(ModelError, match="no audit.labels metadata.*--labels"):
        OnnxClassifier.load(path)


def test_flags_and_sidecar_replace_missing_metadata(tmp_path, colour_model, colour_data):
    ref = proba_of(colour_model, colour_data)
    bare = builders.colour_model(tmp_path / "bare.onnx", card=False)
    over = {"labels": ["red", "green", "blue"], "preprocess": {"mean": [0.5], "std": [0.25]}}
    by_flags = proba_of(bare, colour_data, card_overrides=over)  # size comes from the graph
    np.testing.assert_allclose(by_flags.proba, ref.proba, atol=1e-6)

    (tmp_path / "bare.json").write_text(json.dumps(over))
    by_sidecar = proba_of(bare, colour_data)
    np.testing.assert_allclose(by_sidecar.proba, ref.proba, atol=1e-6)


@pytest.mark.parametrize("variant", [
    dict(layout="NHWC"),
    dict(batch=1),
    dict(softmax=True),
    dict(layout="NHWC", batch=1, softmax=True),
])
def test_graph_variants_give_the_same_predictions(tmp_path, colour_model, colour_data, variant):
    ref = proba_of(colour_model, colour_data)
    other = builders.colour_model(tmp_path / "v.onnx", **variant)
    got = proba_of(other, colour_data)
    np.testing.assert_allclose(got.proba, ref.proba, atol=1e-6)
    assert got.paths == ref.paths


def test_graph_variants_without_card_are_detected(tmp_path, colour_model, colour_data):
    """NHWC layout, batch 1 and a final Softmax are read off the graph when there is no card."""
    ref = proba_of(colour_model, colour_data)
    bare = builders.colour_model(tmp_path / "v.onnx", layout="NHWC", batch=1, softmax=True, card=False)
    clf = OnnxClassifier.load(bare, overrides={"labels": ["red", "green", "blue"],
                                               "preprocess": {"mean": [0.5], "std": [0.25]}})
    assert (clf.card.preprocess.layout, clf.graph.fixed_batch, clf.card.output) == ("NHWC", 1, "probabilities")
    got = proba_of(bare, colour_data, card_overrides={"labels": ["red", "green", "blue"],
                                                      "preprocess": {"mean": [0.5], "std": [0.25]}})
    np.testing.assert_allclose(got.proba, ref.proba, atol=1e-6)


def test_card_that_contradicts_the_graph_is_an_error(tmp_path):
    path = builders.colour_model(tmp_path / "m.onnx", size=16, batch="N", card=False)
    with pytest.raises(ModelError, match=r"input size \[32, 32\].*graph expects \[16, 16\]"):
        OnnxClassifier.load(path, overrides={"labels": ["r", "g", "b"], "preprocess": {"size": [32, 32]}})
    with pytest.raises(ModelError, match="card lists 4 labels"):
        clf = OnnxClassifier.load(path, overrides={"labels": ["r", "g", "b", "x"]})
        clf.predict_proba(np.zeros((1, 3, 16, 16), np.float32))


@pytest.mark.parametrize("bad,match", [
    (dict(size=(0, 4)), "size"),
    (dict(size=(4, 4), std=(0.0,)), r"card key .audit.preprocess.std. must be > 0"),
    (dict(size=(4, 4), mean=(0.1, 0.2)), r"card key .audit.preprocess.mean. needs 1 or 3 values"),
    (dict(size=(4, 4), interpolation="cubic"), "interpolation"),
    (dict(size=(4, 4), color="L", mean=(0.1, 0.2, 0.3)), "3 values but color is L"),
])
def test_preprocess_validation_names_the_field(bad, match):
    with pytest.raises(ModelError, match=match):
        Preprocess(**bad)
