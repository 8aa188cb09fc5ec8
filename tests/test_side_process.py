"""The side process (audit.side_process): cleanlab imported and run there, not in the audit's own process, with
the same result; its failures reach the caller; a dead one is replaced."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import builders
from audit.side_process import SideProcess, SideProcessError, loaded, side_process

pytestmark = pytest.mark.fast


def test_a_call_returns_the_result_and_the_side_process_peak_memory():
    side = side_process()
    assert side.call(np.add, np.arange(3), 2).tolist() == [2, 3, 4]
    assert side.peak_rss_mib is None or side.peak_rss_mib > 10
    assert side_process() is side  # one per interpreter


def test_an_exception_in_the_side_process_is_raised_here_with_its_traceback():
    with pytest.raises(ValueError, match="invalid literal") as info:
        side_process().call(int, "not a number")
    assert any("in the side process" in n for n in info.value.__notes__)


def test_a_failed_import_at_start_is_raised_by_the_call_that_needs_it():
    import importlib

    side = SideProcess(["audit_no_such_module"])
    try:
        with pytest.raises(ModuleNotFoundError):
            side.call(importlib.import_module, "audit_no_such_module")
        assert side.call(abs, -3) == 3  # and it still serves
    finally:
        side.stop()


def test_a_killed_side_process_is_named_and_replaced():
    side = side_process()
    side.call(abs, -3)
    side._process.kill()
    side._process.wait()
    with pytest.raises(SideProcessError, match="ended"):
        side.call(abs, -3)
    again = side_process()
    assert again is not side and again.call(abs, -3) == 3


@pytest.mark.parametrize("method", ["confident_learning", "batched"])
def test_cleanlab_in_the_side_process_flags_what_it_flags_here(method):
    from audit.checks.label_errors import find_label_errors

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    p = rng.dirichlet(np.ones(4) * 0.4, 600).astype(np.float32)
    p[np.arange(600), y] += 1.0  # mostly right, confidently
    p /= p.sum(1, keepdims=True)
    y[:30] = (y[:30] + 1) % 4  # 30 given labels the model confidently disagrees with
    here = find_label_errors(y, p, method=method, batch_size=200)
    there = find_label_errors(y, p, method=method, batch_size=200, side=side_process())
    assert here.n_flagged > 0 and here == there


def test_an_audit_imports_cleanlab_fairlearn_scikit_learn_scipy_and_pandas_only_in_the_side_process(tmp_path):
    data = builders.sliced_folder(tmp_path / "data", 40, weak="site")
    model = builders.colour_model(tmp_path / "model.onnx")
    code = ("import sys\n"
            "from audit.cli import main\n"
            f"code = main(['run', '--model', {str(model)!r}, '--data', {str(data)!r}, '--out', {str(tmp_path / 'o')!r},"
            " '--n-boot', '30', '--no-progress', '--no-latency', '--no-invariance', '--no-pdf',"
            " '--sensitive', 'camera'])\n"
            "from audit.side_process import loaded, running\n"
            "names = ('cleanlab', 'fairlearn', 'sklearn', 'scipy', 'pandas')\n"
            "print(code, *(n in sys.modules for n in names), *(running().call(loaded, n) for n in names))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    code, *found = done.stdout.split()[-11:]
    assert code.isdigit() and found == ["False"] * 5 + ["True"] * 5, done.stdout + done.stderr
    assert "fairness" in (tmp_path / "o" / "verdict.json").read_text(encoding="utf-8")


def test_a_run_starts_the_side_process_early_and_stops_it_when_no_check_claims_it(tmp_path):
    """``python -m audit run`` starts it before the CLI's imports (audit/__main__.py); a run whose checks do not
    ask for it (label errors off in the config) stops it, a run whose label-errors check does keeps that one."""
    from audit import side_process as sp
    from audit.config import load_config
    from audit.pipeline import run_audit

    data = builders.image_folder(tmp_path / "data", 8, confusers=1)
    model = builders.colour_model(tmp_path / "model.onnx")
    for argv in (["compare", "a", "b"], ["run", "--model", "m.onnx", "--no-label-errors"], ["serve"]):
        if sp.running():
            sp.running().stop()
        sp.start_early(argv)
        assert sp.running() is None, argv
    sp.start_early(["run", "--model", "m.onnx"])
    early = sp.running()
    assert early is not None and early.call(loaded, "cleanlab.filter")
    config = {"n_boot": 30, "latency.enabled": False, "invariance.enabled": False}
    run_audit(model, data, load_config(None, config), progress=False)
    assert sp.running() is early  # the label-errors check took it
    sp.start_early(["run"])
    run_audit(model, data, load_config(None, {**config, "label_errors.enabled": False}), progress=False)
    assert sp.running() is None and not early.alive


def test_the_model_card_made_in_the_side_process_is_the_one_made_here(tmp_path):
    from audit.config import load_config
    from audit.pipeline import run_audit
    from audit.render.model_card import card_fields, model_card_text
    from audit.render.outputs import write_outputs

    data = builders.image_folder(tmp_path / "data", 8, confusers=1)
    model = builders.colour_model(tmp_path / "model.onnx")
    result = run_audit(model, data, load_config(None, {"n_boot": 30, "latency.enabled": False,
                                                       "invariance.enabled": False}), progress=False)
    fields = card_fields(result)
    there = side_process().call(model_card_text, fields)
    assert there == model_card_text(fields) and "model-index" in there
    write_outputs(result, tmp_path / "o", pdf=False)  # with the side process running: the card comes from there
    assert (tmp_path / "o" / "model_card.md").read_text(encoding="utf-8") == there


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """multiprocessing's spawn would import the caller's script again in the side process (and fail there)."""
    script = tmp_path / "script.py"
    script.write_text("from audit.side_process import side_process\n"
                      "print('ran', flush=True)\n"
                      "print(side_process().call(abs, -2), flush=True)\n"
                      "print(side_process().call(print, 'a stray print'), flush=True)\n"
                      "print(side_process()._process.pid)\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    *lines, pid = done.stdout.splitlines()
    assert (done.returncode, lines) == (0, ["ran", "2", "None"]), done.stderr
    assert "a stray print" in done.stderr  # the side process's prints go to stderr, not among the caller's output
    for _ in range(50):  # and it is gone with the interpreter that started it
        if gone(pid):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the side process {pid} outlived its interpreter")


def gone(pid: str) -> bool:
    """No such process, or one that has exited and waits to be reaped (Linux's /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_ctrl_c_is_left_to_the_caller():
    import signal

    side = SideProcess()
    try:
        assert side.call(abs, -1) == 1
        side._process.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the whole process group
        time.sleep(0.2)
        assert side.call(abs, -2) == 2  # still serving: the caller decides when it stops
    finally:
        side.stop()
    assert not side.alive


def test_in_background_hands_back_the_result_or_the_exception():
    from audit.threads import in_background

    assert in_background(lambda a, b: a + b, 2, 3).result(timeout=10) == 5
    with pytest.raises(ZeroDivisionError):
        in_background(lambda: 1 / 0).result(timeout=10)
