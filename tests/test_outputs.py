"""Outputs are never mixed, stale or half-written: each run's artefacts are staged beside --out and swapped in
whole; --out is checked before the first image is decoded; every CSV written parses back."""

import contextlib
import csv
import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import builders
from audit.cli import main

FAST = ["--no-progress", "--n-boot", "30", "--no-latency", "--no-invariance"]
OUTPUTS = ("report.html", "verdict.json", "predictions.csv", "junit.xml", "summary.md", "config.json", "skipped.csv")


def audit(model, data, out, *extra) -> int:
    return main(["run", "--model", str(model), "--data", str(data), "--out", str(out), "--no-pdf", *FAST, *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """Staging folders of the audit left beside --out."""
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.audit-")]


@pytest.fixture
def setup(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    out = tmp_path / "reports" / "m"
    assert audit(model, data, out) == 0
    return model, data, out


def test_a_failing_renderer_leaves_the_previous_outputs_complete(setup, tmp_path, capsys):
    """A broken --templates report is rendered after verdict.json: the old run must stay whole, not half replaced."""
    model, data, out = setup
    before = snapshot(out)
    other = builders.image_folder(tmp_path / "other", 10, confusers=5)  # a different (failing) run
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "report.html.j2").write_text("{{ r.no_such_thing.at_all }}")
    code = audit(model, other, out, "--templates", str(tmp_path / "tpl"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot render the report with --templates")
    assert snapshot(out) == before and not leftovers(out)


def test_no_pdf_removes_the_previous_pdf_and_only_the_tools_own_files(setup):
    model, data, out = setup
    assert main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST]) == 0
    assert (out / "report.pdf").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "keep").mkdir()
    (out / "keep" / "a.txt").write_text("also mine")
    assert audit(model, data, out) == 0
    assert not (out / "report.pdf").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "keep" / "a.txt").read_text() == "also mine"
    assert all((out / name).is_file() for name in OUTPUTS) and not leftovers(out)


def test_a_full_disk_leaves_the_previous_outputs_intact(setup, tmp_path):
    """The file size limit makes a write fail the way a full disk does (EFBIG instead of ENOSPC)."""
    model, data, out = setup
    before = snapshot(out)
    limit = max(len(before["verdict.json"]), len(before["predictions.csv"])) // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "audit", "run", "--model", str(model), "--data", str(data),
                           "--out", str(out), "--no-pdf", *FAST], capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    # The first write past the limit is the thumbnail store's (a temporary file) or an output's.
    assert lines[0].startswith(("error: cannot store image thumbnails in", f"error: cannot write the outputs into {out}"))
    assert "File too large" in lines[0]
    assert snapshot(out) == before and not leftovers(out)


@pytest.mark.parametrize("case", ["file", "inside data", "equal to data", "contains data", "current folder",
                                  "foreign summary"])
def test_a_bad_out_is_exit_2_before_any_image_is_decoded(tmp_path, case, capsys, monkeypatch):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "work" / "data", 10)
    out = {"file": tmp_path / "out.txt", "inside data": data / "reports", "equal to data": data,
           "contains data": tmp_path / "work", "current folder": tmp_path / "here",
           "foreign summary": tmp_path / "mine"}[case]
    if case == "file":
        out.write_text("a file")
    if case == "current folder":
        (out / "sub").mkdir(parents=True)
        monkeypatch.chdir(out / "sub")
    if case == "foreign summary":
        out.mkdir()
        (out / "summary.md").write_text("my own notes")
    (data / "purple").mkdir()  # a data error too: --out must be the one reported, it is checked first
    builders.colour_image("red").save(data / "purple" / "p.png")
    before = snapshot(tmp_path / "work")
    assert audit(model, data, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {out}"), err
    assert snapshot(tmp_path / "work") == before
    if case == "foreign summary":
        assert (out / "summary.md").read_text() == "my own notes"


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nobody may write into: chmod for a normal user, a read-only tmpfs for root (which chmod does not stop)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "audit-test", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only folder")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_parent_is_exit_2_before_the_audit(tmp_path, capsys):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    with read_only_folder(tmp_path / "ro") as ro:
        assert audit(model, data, ro / "reports") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {tmp_path / 'ro' / 'reports'}: cannot create"), err


HOSTILE_NAMES = ["carriage\rreturn", "new\nline", "comma,name", 'quote"name', "ünïcødé ✓", "mixed \r\n,\"ä"]


def test_every_csv_written_round_trips_through_pandas_and_csv(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    names = []
    for i, name in enumerate(HOSTILE_NAMES):
        builders.colour_image("red", seed=100 + i).save(data / "red" / f"{name}.png")
        (data / "green" / f"{name}.png").write_bytes(b"")  # skipped: its name goes to skipped.csv
        names += [f"red/{name}.png"]
    with (data / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "site"])
        w.writerows([(p.relative_to(data).as_posix(), HOSTILE_NAMES[i % len(HOSTILE_NAMES)])
                     for i, p in enumerate(sorted(data.rglob("*.png")))])
    out = tmp_path / "out"
    assert audit(model, data, out, "--min-images-per-label", "0", "--sensitive", "site") in (0, 1)
    written = sorted(out.glob("*.csv"))
    assert {p.name for p in written} >= {"predictions.csv", "skipped.csv"}
    meta = pd.read_csv(data / "metadata.csv", keep_default_na=False)
    site = dict(zip(meta["path"], meta["site"]))
    for path in written:
        text = path.read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        assert len(frame) == len(rows) - 1 and list(frame.columns) == rows[0], path.name
        assert all(len(r) == len(rows[0]) for r in rows), path.name
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False, dtype=str)
    assert len(preds) == 30 + len(names) and set(names) <= set(preds["path"])
    assert all(preds.loc[preds["path"] == p, "attr:site"].item() == site[p] for p in names)
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False, dtype=str)
    assert {f"green/{n}.png" for n in HOSTILE_NAMES} <= set(skipped["path"])


def test_an_out_that_is_a_link_to_a_folder_stays_a_link(setup, tmp_path):
    model, data, out = setup
    link = tmp_path / "latest"
    link.symlink_to(out, target_is_directory=True)
    assert audit(model, data, link) == 0
    assert link.is_symlink() and (link / "verdict.json").is_file() and not leftovers(out)


def test_each_stage_has_its_seconds_and_peak_memory_in_verdict_json_and_the_run_table(setup):
    import json

    _, _, out = setup
    stages = json.loads((out / "verdict.json").read_text())["run"]["stages"]
    names = [s["stage"] for s in stages]
    assert names[:3] == ["load + scan", "inference", "duplicate clusters"] and "suspected label errors" in names
    assert all(s["seconds"] >= 0 for s in stages)
    peaks = [s["peak_rss_mib"] for s in stages]
    assert peaks == sorted(peaks) and peaks[0] > 10  # a peak so far: never falls, and a Python process is > 10 MiB
    html = (out / "report.html").read_text()
    assert html.count("peak memory") == len(stages)
