"""The check registry: every registered check, once enabled, reaches verdict.json, the HTML report, its CLI
flags and (when it has comparable measures) the baseline comparison. One real audit with every check on."""

import json

import pytest

import builders
from audit.checks import CHECKS
from audit.contract import CheckSpec
from audit.cli import build_parser, main


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A timm model (parity), a training folder with leaks (integrity), a sensitive column (fairness),
    the latency server, and a second run against the first one's verdict (baseline)."""
    root = tmp_path_factory.mktemp("registry")
    model, weights = builders.timm_export(root / "model")
    train, test, _ = builders.leaky_split(root / "data", n_per_class=25)  # slices of >= 30 images
    (test / "metadata.csv").write_text("path,site\n" + "".join(
        f"{p.relative_to(test).as_posix()},{'ab'[i % 2]}\n" for i, p in enumerate(sorted(test.rglob("*.*")))
        if p.suffix in (".png", ".jpg")))
    args = ["run", "--model", str(model), "--data", str(test), "--no-pdf", "--no-progress", "--n-boot", "50",
            "--sensitive", "site", "--torch-model", str(weights), "--train", str(train), "--min-accuracy", "0"]
    first, second = root / "first", root / "second"
    assert main([*args, "--out", str(first)]) in (0, 1)
    assert main([*args, "--out", str(second), "--baseline", str(first / "verdict.json")]) in (0, 1)
    verdict = json.loads((second / "verdict.json").read_text())
    return verdict, (second / "report.html").read_text()


NO_HOOK = CheckSpec("none", "none", run=print)  # every hook at its default


@pytest.mark.parametrize("spec", CHECKS, ids=[s.name for s in CHECKS])
def test_every_check_reaches_verdict_report_and_baseline(spec, audited):
    verdict, html = audited
    assert spec.name in verdict, f"{spec.name} missing from verdict.json"
    assert f'<section id="{spec.name}">' in html, f"{spec.name} missing from report.html"
    compared = {c for c in verdict["comparable"]}
    baseline = verdict["baseline"]
    if spec.comparable is not NO_HOOK.comparable:
        own = [k for k in compared if k.split(".")[0] in (spec.name, *_unprefixed(spec))]
        assert own, f"{spec.name} has comparable measures but none is in verdict.json"
        assert baseline["compared"] >= len(compared) and not baseline["only_in_current"]


def _unprefixed(spec) -> tuple[str, ...]:
    """Measure ids of the metrics and calibration checks carry no check prefix (``accuracy``, ``ece``)."""
    return {"metrics": ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "class_f1"),
            "calibration": ("ece", "brier")}.get(spec.name, ())


@pytest.mark.parametrize("spec", CHECKS, ids=[s.name for s in CHECKS])
def test_every_check_option_and_toggle_is_a_flag(spec):
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    flags = {f for a in run._actions for f in a.option_strings}
    assert {o.flag for o in spec.options} <= flags
    if spec.toggle:
        assert {spec.flag, spec.flag.replace("--", "--no-", 1)} <= flags


def test_check_names_and_ids_are_unique():
    names = [s.name for s in CHECKS]
    assert len(set(names)) == len(names) and names[-1] == "baseline"
