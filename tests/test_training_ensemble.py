"""Quarter-turn views, ensembles averaged inside the one ONNX graph, and pilots reused as ensemble members."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from training_helpers import needs_fmnist, tiny_config, tiny_fmnist

from audit.model import ModelCard, OnnxClassifier, Preprocess
from training.config import D4_VIEWS, allowed_views, load_config
from training.errors import TrainingError
from training.export import export_model, view
from training.fit import fit
from training.scratch import ScratchCNN

LABELS = ("a", "b", "c")
NUMPY_VIEWS = {  # the same symmetries of the square, written with numpy on (N, C, H, W)
    "hflip": lambda a: a[..., ::-1], "vflip": lambda a: a[..., ::-1, :], "hvflip": lambda a: a[..., ::-1, ::-1],
    "rot90": lambda a: np.rot90(a, 1, (2, 3)), "rot270": lambda a: np.rot90(a, -1, (2, 3)),
    "transpose": lambda a: a.transpose(0, 1, 3, 2), "antitranspose": lambda a: a[..., ::-1, ::-1].transpose(0, 1, 3, 2),
}


def _x(n=6, size=32, channels=1, seed=0):
    return np.random.default_rng(seed).standard_normal((n, channels, size, size)).astype(np.float32)


def test_the_views_are_the_eight_symmetries_of_the_square():
    x = _x(2, 5)
    seen = {x.tobytes()}
    for name in D4_VIEWS:
        got = view(torch.from_numpy(x), name).numpy()
        np.testing.assert_array_equal(got, np.ascontiguousarray(NUMPY_VIEWS[name](x)))
        seen.add(np.ascontiguousarray(got).tobytes())
    assert len(seen) == 8  # the identity and 7 distinct views


def test_allowed_views_follow_the_declared_invariances():
    assert allowed_views(("hflip",)) == ("hflip",)
    assert allowed_views(("hflip", "vflip")) == ("hflip", "vflip", "hvflip")
    assert allowed_views(("rot90",)) == ("hvflip", "rot90", "rot270")  # two quarter turns are a half turn
    assert set(allowed_views(("hflip", "vflip", "rot90"))) == set(allowed_views(("hflip", "rot90"))) == set(D4_VIEWS)


def test_quarter_turn_configs_are_checked():
    base = {"model": {"arch": "scratch_cnn"}, "phases": {"scratch": {"epochs": 1}}, "data": {"size": [32, 32]}}
    cfg = load_config(raw={**base, "augment": {"hflip": True, "rot90": True}, "export": {"tta": list(D4_VIEWS)}})
    assert cfg.export.tta == D4_VIEWS
    with pytest.raises(TrainingError, match="export.tta lists 'transpose' but .* lack 'rot90'"):
        load_config(raw={**base, "augment": {"hflip": True}, "export": {"tta": ["transpose"]}})
    with pytest.raises(TrainingError, match="quarter turns need a square input"):
        load_config(raw={**base, "data": {"size": [32, 48]}, "augment": {"rot90": True}})
    with pytest.raises(TrainingError, match="ensemble.seeds lists a seed twice"):
        load_config(raw={**base, "ensemble": {"seeds": [1, 1]}})


def test_training_digest_ignores_the_name_the_export_the_ensemble_and_the_runtime_knobs():
    base = {"model": {"arch": "scratch_cnn"}, "phases": {"scratch": {"epochs": 1}}}
    a = load_config(raw=base)
    b = load_config(raw={**base, "name": "other", "export": {"evaluate_test": False, "out": "x"},
                         "ensemble": {"seeds": [0, 1]}, "train": {"threads": 1, "progress_bar": False}})
    assert a.training_digest() == b.training_digest() and a.digest() != b.digest()
    assert load_config(raw={**base, "seed": 1}).training_digest() != a.training_digest()
    assert load_config(raw={**base, "train": {"batch_size": 16}}).training_digest() != a.training_digest()


def _card(pre, **prov):
    return ModelCard(labels=LABELS, preprocess=pre, output="probabilities", arch="tf_efficientnet_lite0",
                     invariances=("hflip", "vflip", "rot90"), provenance=prov)


def test_ensemble_with_all_eight_views_is_one_graph_with_the_first_members_features(tmp_path):
    timm = pytest.importorskip("timm")
    pre = Preprocess(size=(32, 32), color="L", mean=(0.5,), std=(0.5,))
    torch.manual_seed(0)
    nets = [timm.create_model("tf_efficientnet_lite0", num_classes=3, in_chans=1).eval() for _ in range(2)]
    x = _x()
    card = _card(pre, tta=list(D4_VIEWS), ensemble=[{"seed": 0}, {"seed": 1}])
    res = export_model(nets, card, tmp_path, parity_inputs=x, tta=D4_VIEWS)
    assert res.max_abs_diff <= 1e-4 and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.safetensors"]
    with torch.no_grad():
        manual = np.mean([torch.softmax(n(torch.from_numpy(np.ascontiguousarray(f(x)))), 1).numpy()
                          for n in nets for f in [lambda a: a, *NUMPY_VIEWS.values()]], axis=0)
        first = nets[0].forward_head(nets[0].forward_features(torch.from_numpy(x)), pre_logits=True).numpy()
    clf = OnnxClassifier.load(res.onnx_path)
    probs, feats = clf.predict(x, with_features=True)
    np.testing.assert_allclose(probs, manual, atol=1e-5, rtol=0)
    assert clf.card.features == res.features and clf.features.name == res.features
    np.testing.assert_allclose(feats, first, atol=1e-4, rtol=1e-4)  # one row per image: member 0, untransformed
    assert clf.predict_proba(x[:1]).shape == (1, 3)
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert {k.split(".")[1] for k in weights} == {"0", "1"} and all(k.startswith("members.") for k in weights)


def test_an_ensemble_card_must_count_its_members(tmp_path):
    from training.errors import ExportError

    pre = Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
    nets = [ScratchCNN(1, 3, (28, 28)) for _ in range(2)]
    with pytest.raises(ExportError, match=r"1 member\(s\)\) does not describe the graph \(tta \[\], 2 member"):
        export_model(nets, _card(pre), tmp_path, parity_inputs=_x(4, 28))


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    return tiny_fmnist(tmp_path_factory.mktemp("fm"), limit=40)


@needs_fmnist
def test_a_single_run_serves_as_the_ensemble_member_of_its_seed(fm, tmp_path):
    from test_training_resume import CountEpochs

    kw = dict(phases={"scratch": {"epochs": 2, "lr": 3e-3}}, augment={"hflip": True}, export={"tta": ["hflip"]})
    pilot = fit(tiny_config(fm, tmp_path / "pilot", seed=1, **kw))
    out = tmp_path / "ens"
    shutil.copytree(tmp_path / "pilot", out / "members" / "seed1")
    counter = CountEpochs()
    ens = fit(tiny_config(fm, out, name="ens", ensemble={"seeds": [0, 1]}, **kw), resume=True, callbacks=(counter,))
    assert counter.epochs == [2]  # seed 0 trained, seed 1 taken from the pilot
    alone = fit(tiny_config(fm, tmp_path / "seed0", seed=0, **kw))
    members = load_file(str(out / "model.safetensors"))
    for i, run in enumerate((alone, pilot)):  # each member has exactly the weights of its single run
        single = load_file(str(run.out_dir / "model.safetensors"))
        assert all(np.array_equal(members[f"members.{i}.{k}"], v) for k, v in single.items())
    assert set(ens.members) == {"seed0", "seed1", "seed0+views", "seed1+views"}
    assert ens.members["seed1"] == pytest.approx(pilot.val_accuracy)
    card = OnnxClassifier.load(out / "model.onnx").card
    assert card.output == "probabilities" and [m["seed"] for m in card.provenance["ensemble"]] == [0, 1]
    assert card.features and [p for p in card.provenance["phases"]] == ["seed0/scratch", "seed1/scratch"]
    probs = np.load(out / "val_probs.npz")
    assert {"seed0__none", "seed1__hflip", "y", "paths"} <= set(probs.files)
    assert json.loads((out / "results.json").read_text())["members"] == ens.members
