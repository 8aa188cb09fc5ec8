"""The checks run side by side, a thread per core (``audit.pipeline.run_side_by_side``): the same audit as one check
at a time, the first failure in registry order raised, and a check marked ``alone`` run by itself after the others."""

import threading
import time

import pytest

import builders
from audit import pipeline
from audit.checks import CHECKS
from audit.config import load_config
from audit.contract import CheckSpec
from audit.imaging import cpu_count
from audit.pipeline import run_audit
from audit.render.json import verdict_dict
from audit.verdict import Measure

pytestmark = pytest.mark.fast

SETTINGS = {"n_boot": 40, "latency.enabled": False, "invariance.enabled": False, "pdf": False}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("side_by_side")
    return builders.colour_model(root / "model.onnx"), builders.image_folder(root / "data", 12, confusers=2)


def _comparable(result) -> dict:
    d = verdict_dict(result)
    for volatile in ("run", "created"):  # timings and the clock
        d.pop(volatile)
    return d


def test_side_by_side_is_the_same_audit_as_one_check_at_a_time(inputs, monkeypatch):
    model, data = inputs
    config = load_config(None, SETTINGS)
    together = run_audit(model, data, config, progress=False)
    monkeypatch.setattr(pipeline, "cpu_count", lambda: 1)
    one_by_one = run_audit(model, data, config, progress=False)
    assert _comparable(together) == _comparable(one_by_one)
    checks = [s.title for s in CHECKS if s.enabled(config)]
    assert [t.name for t in together.timings if t.name in checks] == checks  # in registry order, both ways
    assert [t.name for t in one_by_one.timings if t.name in checks] == checks


def _recording(name: str, log: list, seconds: float = 0.3, fail: bool = False, alone: bool = False) -> CheckSpec:
    def run(ctx):
        start = time.monotonic()
        time.sleep(seconds)
        log.append((name, start, time.monotonic(), threading.current_thread().name, [m.id for m in ctx.measures]))
        if fail:
            raise RuntimeError(f"{name} failed")
        return name

    measure = Measure.count(f"{name}.n", name, 1, higher_is_better=True, detail="")
    return CheckSpec(name, name, run, comparable=lambda res, config: [measure], alone=alone)


def test_an_alone_check_runs_by_itself_after_the_others_with_their_measures(inputs):
    model, data = inputs
    log: list = []
    registry = (_recording("first", log), _recording("last", log, alone=True), _recording("second", log))
    result = run_audit(model, data, load_config(None, SETTINGS), progress=False, checks=registry)
    seen = {name: (start, end, thread, measures) for name, start, end, thread, measures in log}
    assert seen["last"][0] >= max(seen["first"][1], seen["second"][1])  # started once both had ended
    assert seen["last"][2] == "MainThread" and seen["first"][2] != "MainThread"
    assert seen["last"][3] == ["first.n"]  # the measures of the checks before it in the registry
    assert [s.name for s in registry] == list(result.results)  # results in registry order
    if cpu_count() >= 2:  # the two others overlapped
        assert seen["second"][0] < seen["first"][1] and seen["first"][0] < seen["second"][1]


def test_the_first_failing_check_in_registry_order_is_raised(inputs):
    """The later check fails first; the error raised is the earlier one's, as when they ran one at a time."""
    model, data = inputs
    log: list = []
    registry = (_recording("slow", log, seconds=0.5, fail=True), _recording("quick", log, seconds=0.0, fail=True))
    with pytest.raises(RuntimeError, match="slow failed"):
        run_audit(model, data, load_config(None, SETTINGS), progress=False, checks=registry)
