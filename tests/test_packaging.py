"""The installed package renders reports: build the wheel, install it (no editable link) into a scratch folder,
and audit from outside the repository; a --templates folder overrides a section."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import builders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("model_audit-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True)
    return tmp / "site"


def audit(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "audit", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_wheel_ships_the_templates_and_renders_outside_the_repo(installed, tmp_path):
    templates = installed / "audit" / "templates"
    assert (templates / "report.html.j2").is_file() and (templates / "sections" / "slices.html.j2").is_file()
    where = subprocess.run([sys.executable, "-c", "import audit; print(audit.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(installed))  # the wheel, not the source checkout
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)  # 10 per class: the evidence check's minimum
    proc = audit(installed, tmp_path, "run", "--model", str(model), "--data", str(data), "--out", "out",
                 "--no-pdf", "--no-latency", "--no-invariance", "--n-boot", "20")
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<section id="metrics">' in html and '<section id="slices">' in html
    assert json.loads((tmp_path / "out" / "verdict.json").read_text())["passed"] is True


def test_templates_folder_overrides_a_section(tmp_path):
    custom = tmp_path / "mine" / "sections"
    custom.mkdir(parents=True)
    (custom / "calibration.html.j2").write_text('<section id="calibration"><p>house style: ECE '
                                                '{{ r.calibration.ece.value | fmt }}</p></section>\n')
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    from audit.cli import main

    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"), "--no-pdf",
                 "--no-latency", "--no-invariance", "--n-boot", "20", "--templates", str(tmp_path / "mine")]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "house style: ECE" in html and "Reliability diagram" not in html
    assert '<section id="metrics">' in html  # the other sections still come from the package
