"""The Ray engine on a real local Ray (two CPUs): the local engine's verdict, rows and skipped files.

No mocks: ``ray.init(num_cpus=2)`` starts real raylet, object store and worker processes; the
actors run ONNX Runtime on real PNG files. The two-node cluster is in test_engine_ray_cluster.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import builders
import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")  # the dev extra installs it

from audit.config import load_config  # noqa: E402
from audit.engines import LocalEngine, make_engine  # noqa: E402
from audit.engines.ray import RayEngine, pool_size  # noqa: E402
from audit.errors import UsageError  # noqa: E402
from audit.model import OnnxClassifier  # noqa: E402
from audit.pipeline import run_audit  # noqa: E402
from audit.predictions_file import write_parquet  # noqa: E402
from audit.render.json import verdict_dict  # noqa: E402
from audit.sources import open_source  # noqa: E402

LABELS = tuple(builders.COLOURS)
# invariance through two transforms, one severity each: every probe re-runs through the engine
CONFIG = {"n_boot": 200, "latency.enabled": False, "invariance.transforms": ["hflip", "brightness"],
          "invariance.severities": [2]}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def with_broken_files(root: Path) -> Path:
    """Files the engines must skip with a reason: empty, truncated, not an image."""
    (root / "red" / "empty.png").write_bytes(b"")
    good = (root / "red" / "000.png").read_bytes()
    (root / "green" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "blue" / "text.png").write_text("not an image")
    return root


def audit_both(model: Path, data: Path, ray_engine: RayEngine):
    config = load_config(None, CONFIG)
    local = run_audit(model, data, config, engine=make_engine(config, progress=False), progress=False)
    remote = run_audit(model, data, config, engine=ray_engine, progress=False)
    return local, remote


def assert_same_audit(local, remote) -> None:
    """Equal verdicts, rows in the same order, the same skipped files with the same reasons."""
    a, b = verdict_dict(local), verdict_dict(remote)
    for d in (a, b):
        d.pop("created"), d.pop("run")  # when it ran, and each stage's seconds and memory: not results
    # PyTorch on an actor runs with the actor's CPU share as its thread count, so its float sums may be
    # ordered differently: the parity differences agree to 1e-7, not bit for bit (ONNX Runtime's do).
    for key in ("max_abs_diff", "mean_abs_diff"):
        if key in a.get("parity", {}):
            assert a["parity"].pop(key) == pytest.approx(b["parity"].pop(key), abs=1e-7)
    assert a == b
    assert local.data == remote.data  # found, processed, skipped (path + reason), class counts
    pa, pb = local.predictions.to_frame(), remote.predictions.to_frame()
    assert list(pa["path"]) == list(pb["path"])
    assert pa.equals(pb)  # probabilities, properties and hashes, bit for bit
    rows = range(len(local.predictions))
    assert np.array_equal(local.predictions.thumbnails.read(rows), remote.predictions.thumbnails.read(rows))
    if local.predictions.features is not None or remote.predictions.features is not None:
        assert np.array_equal(local.predictions.features.read(rows), remote.predictions.features.read(rows))


def test_ray_gives_the_local_verdict_on_one_node(local_ray, tmp_path):
    data = with_broken_files(builders.sliced_folder(tmp_path / "data", 40, weak="site"))
    model = builders.colour_model(tmp_path / "m.onnx")
    engine = RayEngine(batch_size=16, progress=False)
    local, remote = audit_both(model, data, engine)
    assert_same_audit(local, remote)
    assert remote.engine == "ray" and local.engine == "local"
    files = []
    for name, r in (("local", local), ("ray", remote)):  # both streamed their rows; the same predictions.parquet
        assert r.predictions.stream.rows == len(r.predictions)
        write_parquet(r.predictions, tmp_path / f"{name}.parquet")
        files.append(pq.read_table(tmp_path / f"{name}.parquet"))
    assert files[0].equals(files[1]) and files[0].num_rows == 120
    reasons = {s.path: s.reason for s in remote.data.skipped}
    assert reasons["red/empty.png"] == "empty file (0 bytes)"
    assert reasons["green/truncated.png"] == "truncated image"
    assert reasons["blue/text.png"] == "not an image (unrecognised format)"
    assert remote.data.accounted and remote.data.processed == 120
    # the main pass and one re-run per invariance transform went through Ray, two actors each
    assert len(engine.runs) == 3 and {r.actors for r in engine.runs} == {2}
    assert engine.runs[0].images == 123 and sum(n for _, n in engine.runs[0].rows_per_node) == 123


def test_ray_and_local_discover_the_same_slices(local_ray, shape_model, tmp_path):
    model, data, groups = shape_model
    config = load_config(None, {**CONFIG, "invariance.enabled": False, "label_errors.enabled": False})
    local = run_audit(model, data, config, engine=make_engine(config, progress=False), progress=False)
    remote = run_audit(model, data, config, engine=RayEngine(batch_size=48), progress=False)
    assert local.discovered_slices.confirmed  # the pose the model never saw
    assert_same_audit(local, remote)
    assert np.array_equal(local.discovered_slices.membership, remote.discovered_slices.membership)


def test_ray_and_local_measure_the_same_shift_against_the_training_split(local_ray, shape_model, tmp_path):
    model, data, _ = shape_model
    config = load_config(None, {**CONFIG, "invariance.enabled": False, "label_errors.enabled": False,
                                "integrity.train": str(data.parent / "train")})
    local = run_audit(model, data, config, engine=make_engine(config, progress=False), progress=False)
    remote = run_audit(model, data, config, engine=RayEngine(batch_size=48), progress=False)
    assert local.shift.significant and local.integrity.n_train == 1200
    assert_same_audit(local, remote)  # verdicts, the novelty column and the reference pass's hashes
    ref = range(len(local.shift.novelty))
    assert np.array_equal(local.shift.novelty[ref], remote.shift.novelty[ref])


def test_parity_runs_pytorch_on_the_actors_and_gives_the_local_result(local_ray, tmp_path):
    """A convolutional timm model (greyscale, 32 px); parity re-runs its PyTorch weights through the engine."""
    data = with_broken_files(builders.image_folder(tmp_path / "data", 25, confusers=3))
    onnx_path, weights = builders.timm_export(tmp_path / "timm", size=32, color="L")
    config = load_config(None, {**CONFIG, "batch_size": 16, "parity.torch_model": str(weights)})
    local = run_audit(onnx_path, data, config, engine=make_engine(config, progress=False), progress=False)
    engine = RayEngine(batch_size=16, progress=False)
    remote = run_audit(onnx_path, data, config, engine=engine, progress=False)
    assert_same_audit(local, remote)
    assert remote.parity is not None and remote.parity.n == 75
    assert len(engine.runs) == 4  # main pass, parity, two invariance transforms


def test_rows_do_not_depend_on_batching(local_ray, tmp_path):
    """ONNX Runtime gives the same rows whatever the batch size (7 on Ray, 64 locally)."""
    data = builders.image_folder(tmp_path / "data", 25, confusers=3)
    clf = OnnxClassifier.load(builders.timm_export(tmp_path / "timm", size=32)[0])
    src = open_source(data, clf.labels)
    lp, lr = LocalEngine(batch_size=64, progress=False).predict(clf, src)
    rp, rr = RayEngine(batch_size=7, progress=False).predict(clf, src)
    assert lp.to_frame().equals(rp.to_frame()) and lr == rr == []


def test_a_block_of_only_undecodable_images_changes_nothing_else(local_ray, tmp_path):
    """The first block holds nothing but broken files: the other blocks still carry hashes and thumbnails."""
    data = with_broken_files(builders.image_folder(tmp_path / "data", 6))
    clf = OnnxClassifier.load(builders.colour_model(tmp_path / "m.onnx"))
    src = open_source(data, clf.labels)
    broken = {"red/empty.png", "green/truncated.png", "blue/text.png"}
    order = [s for s in src.samples if s.path in broken] + [s for s in src.samples if s.path not in broken]
    lp, lr = LocalEngine(batch_size=3, progress=False).predict(clf, src, samples=order)
    rp, rr = RayEngine(batch_size=3, progress=False).predict(clf, src, samples=order)
    assert len(rp.sha256) == len(rp.paths) == len(order) - 3 and lp.to_frame().equals(rp.to_frame())
    assert sorted((s.path, s.reason) for s in lr) == sorted((s.path, s.reason) for s in rr)
    assert {s.path for s in rr} == broken
    rows = range(len(rp.paths))
    assert np.array_equal(lp.thumbnails.read(rows), rp.thumbnails.read(rows))


def test_a_lost_actor_is_replaced_and_every_image_is_accounted_for(local_ray, tmp_path):
    """SIGKILL one actor while it holds a batch: Ray restarts it, its batch runs again, nothing is lost."""
    data = with_broken_files(builders.image_folder(tmp_path / "data", 40))
    model = OnnxClassifier.load(builders.colour_model(tmp_path / "m.onnx"))
    src = open_source(data, model.labels)
    marks = tmp_path / "marks"
    marks.mkdir()
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_actor, args=(marks, killed), daemon=True)
    killer.start()
    try:
        preds, rejected = RayEngine(batch_size=8, progress=False).predict(model, src, transform=_pause_once(marks),
                                                                          capture=False)
    finally:
        (marks / "killed").write_text("")
        killer.join()
    assert killed, "no actor announced itself"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that process is gone for good
    assert len(preds) + len(rejected) + len(src.skipped) == src.found
    assert len(set(preds.paths)) == len(preds) == 120 and len(rejected) == 3
    expected, _ = LocalEngine(progress=False).predict(model, src, transform=_pause_once(marks), capture=False)
    assert expected.to_frame().equals(preds.to_frame())


def _kill_first_actor(marks: Path, killed: list[int]) -> None:
    while not (marks / "killed").exists():
        pids = [int(p.name) for p in marks.iterdir() if p.name.isdigit()]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            (marks / "killed").write_text("")
            return
        time.sleep(0.05)


def _pause_once(marks: Path):
    """An identity transform whose first call in each process announces the pid, then waits for the kill."""

    class PauseOnce:  # defined here so that Ray pickles it by value: workers cannot import this test module
        def __init__(self, folder: str) -> None:
            self.folder = folder

        def __call__(self, img):
            mark, done = Path(self.folder, str(os.getpid())), Path(self.folder, "killed")
            if not done.exists() and not mark.exists():
                mark.write_text("")
                while not done.exists():
                    time.sleep(0.05)
            return img

    return PauseOnce(str(marks))


def test_pool_leaves_one_cpu_to_rays_own_tasks():
    assert pool_size(2) == (2, 0.5)
    assert pool_size(16) == (16, 15 / 16)
    assert pool_size(16, actors=4) == (4, 15 / 4)
    assert pool_size(1) == (1, 0.1)  # at least a sliver; nothing else needs the CPU then
    with pytest.raises(UsageError, match="the Ray cluster has no CPUs"):
        pool_size(0)


def test_engine_comes_from_the_config():
    cfg = load_config(None, {"engine.name": "ray", "engine.ray_address": "auto", "batch_size": 32})
    engine = make_engine(cfg)
    assert isinstance(engine, RayEngine) and engine.address == "auto" and engine.batch_size == 32
    assert make_engine(load_config(None, {})).name == "local"


def test_an_unreachable_cluster_is_a_clear_error_without_waiting():
    """Ray itself waits minutes for a head that is not there; the engine checks the port first."""
    from audit.engines.ray_cluster import _check_reachable

    with pytest.raises(UsageError, match=r"--ray-address '127.0.0.1:1': cannot connect to a Ray cluster "
                                         r"\(Connection refused\) \(start one with `ray start --head`"):
        _check_reachable("127.0.0.1:1")
    _check_reachable("auto")  # not a HOST:PORT: left to Ray


def test_source_sent_to_workers_carries_no_sample_list(tmp_path):
    from audit.engines.ray import _portable

    src = open_source(builders.image_folder(tmp_path / "data", 3), LABELS)
    light = _portable(src)
    assert light == replace(src, samples=(), skipped=()) and len(src.samples) == 9
    assert light.open(src.samples[0].path) == src.open(src.samples[0].path)
