"""The second red-team pass (issue 24), continued from test_hostile.py: the cases that need a mount namespace,
the server, Ray's processes or a tree deeper than PATH_MAX. Each runs the real command line or the real
server in a process of its own; builders are in hostile_cases.py."""

import json
import re
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing

import pytest

import builders
import hostile_cases as hc
from audit.loadgen import connect, request, request_body, running_server

OUTPUTS_OK = """
import json, os, sys
out = sys.argv[1]
names = json.load(open(os.path.join(out, ".audit-outputs.json")))["files"]
assert set(names) <= set(os.listdir(out)) and "verdict.json" in names, os.listdir(out)
assert not [n for n in os.listdir(out) if n.startswith(".") and n != ".audit-outputs.json"], os.listdir(out)
print("complete", json.load(open(os.path.join(out, "verdict.json")))["passed"])
"""


def test_crash_out_a_mount_point_gets_its_contents_swapped(tmp_path):
    """A CI or Docker volume: the folder cannot be replaced, so the files in it are; the user's file stays."""
    hc.data(tmp_path, "good")
    hc.data(tmp_path, "bad", confusers=5)
    builders.colour_model(tmp_path / "m.onnx")
    (tmp_path / "check.py").write_text(OUTPUTS_OK)
    run = ('"$PY" -m audit run --model "$T/m.onnx" --out "$T/vol" --no-pdf --no-progress --n-boot 20 --no-latency '
           '--no-invariance --no-label-errors')
    proc = hc.unshare_script(tmp_path, f"""mkdir "$T/vol"; mount -t tmpfs vol "$T/vol"
        {run} --data "$T/good" >/dev/null; echo mine > "$T/vol/notes.txt"
        {run} --data "$T/bad" >/dev/null || test $? = 1
        mountpoint -q "$T/vol" && "$PY" "$T/check.py" "$T/vol" && cat "$T/vol/notes.txt" """)
    assert proc.returncode == 0 and "complete False\nmine" in proc.stdout, proc.stderr[-3000:]


def test_crash_a_writable_out_inside_a_read_only_parent_is_written(tmp_path):
    builders.colour_model(tmp_path / "m.onnx")
    hc.data(tmp_path)
    (tmp_path / "check.py").write_text(OUTPUTS_OK)
    proc = hc.unshare_script(tmp_path, """mkdir "$T/ro"; mount -t tmpfs ro "$T/ro"; mkdir "$T/ro/out"
        mount -t tmpfs out "$T/ro/out"; mount -o remount,ro "$T/ro"; ! touch "$T/ro/x" 2>/dev/null
        "$PY" -m audit run --model "$T/m.onnx" --data "$T/data" --out "$T/ro/out" --no-pdf --no-progress \
            --no-latency --no-invariance --no-label-errors
        "$PY" "$T/check.py" "$T/ro/out" """)
    assert proc.returncode == 0 and "complete True" in proc.stdout, proc.stderr[-3000:]


def test_crash_an_out_name_of_250_bytes_is_written(tmp_path):
    proc = hc.cli(*hc.run_argv(tmp_path, hc.data(tmp_path), out="o" * 250))
    assert proc.returncode == 0 and (tmp_path / ("o" * 250) / "verdict.json").is_file(), proc.stderr[-2000:]
    proc = hc.cli(*hc.run_argv(tmp_path, hc.data(tmp_path), out="o" * 256))
    assert proc.returncode == 2 and "is 256 bytes, more than the 255" in proc.stderr, proc.stderr


def test_crash_serve_starts_at_the_edges_of_its_limits_and_refuses_what_it_must(tmp_path):
    """Legal limits below the start-up probe (--max-pixels 500, a 200-byte body) and a 2,048 px card; EPS
    bytes get 415 from the same allow-list the audit uses."""
    model = builders.set_metadata(builders.dynamic_size(builders.colour_model(tmp_path / "m.onnx")),
                                  preprocess='{"size": [2048, 2048], "mean": [0.5], "std": [0.25]}')
    tiny = (hc.data(tmp_path, n=1) / "red" / "000.png")
    builders.colour_image("red", size=2).save(tiny)
    with running_server(model, extra_args=["--max-pixels", "500", "--max-request-bytes", "300"]) as server, \
            closing(connect(server.url)) as conn:
        assert request(conn, "GET", "/health")[0] == 200
        status, body = request(conn, "POST", "/predict", request_body(tiny.read_bytes()))
        assert status == 200 and json.loads(body)["class"] == "red", body
        assert request(conn, "POST", "/predict", request_body(hc.EPS))[0] == 415
        assert request(conn, "POST", "/predict", request_body(b"x" * 400))[0] == 413


def test_crash_a_4096_px_card_decodes_in_batches_that_fit_memory(tmp_path):
    """At 64 images a batch this model input alone is 12.9 GB; batches are cut to a 256 MiB budget."""
    model = builders.set_metadata(builders.dynamic_size(builders.colour_model(tmp_path / "m.onnx")),
                                  preprocess='{"size": [4096, 4096], "mean": [0.5], "std": [0.25]}')
    argv = hc.run_argv(tmp_path, hc.data(tmp_path, n=3), "--min-images-per-label", "0", model=model)  # 9 images
    with subprocess.Popen([sys.executable, "-m", "audit", *argv], cwd=hc.ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as proc:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode()
    assert proc.returncode in (0, 1, 4), err[-2000:]  # a verdict (pass, fail, inconclusive): not killed, no crash
    # one unbatched batch would be 12.9 GB; the rest of the peak is the process itself (ONNX Runtime, and
    # cleanlab with scikit-learn and pandas imported beside inference) and a few 200 MB decoded images
    assert usage.ru_maxrss * 1024 < 2.0e9, f"peak RSS {usage.ru_maxrss / 1e6:.2f} GB"


def test_crash_a_manifest_path_component_over_255_bytes_is_a_skipped_row(tmp_path):
    rows = hc.good_rows()
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"path": rows["path"] + ["img/red/" + "x" * 300 + ".png"], "label": rows["label"] + ["red"]})
    (tmp_path / "lists").mkdir()
    hc.data(tmp_path / "lists", "img")
    frame.to_csv(tmp_path / "lists" / "test.csv", index=False)
    proc = hc.cli(*hc.run_argv(tmp_path, tmp_path / "lists" / "test.csv"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert hc.skipped(tmp_path / "out")["img/red/" + "x" * 300 + ".png"] == \
        "listed in the manifest but cannot be read (File name too long)"


@pytest.fixture(scope="module")
def two_audits(tmp_path_factory):
    return hc.audits(tmp_path_factory.mktemp("audits"))


def test_crash_compare_without_data_source_and_with_a_full_disk(tmp_path, two_audits):
    _, good, weak = two_audits
    cand = shutil.copytree(weak, tmp_path / "weak")
    verdict = json.loads((cand / "verdict.json").read_text())
    del verdict["data"]["source"]
    (cand / "verdict.json").write_text(json.dumps(verdict))
    argv = ["compare", "--candidate", str(cand), "--baseline", str(good), "--out", str(tmp_path / "c")]
    proc = hc.cli(*argv)
    assert proc.returncode == 1 and "note: no thumbnails: the candidate's verdict.json names no data source" \
        in proc.stdout, proc.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    limit = len(before["comparison.json"]) // 2  # RLIMIT_FSIZE fails a write as a full disk does (EFBIG)
    proc = hc.cli(*argv, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 2 and f"cannot write the outputs into {tmp_path / 'c'}: File too large" in proc.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if ".audit-" in p.name] == []


def test_unclear_compare_of_an_audit_with_itself_says_so(tmp_path, two_audits):
    _, good, _ = two_audits
    proc = hc.cli("compare", "--candidate", str(good), "--baseline", str(good), "--out", str(tmp_path / "c"))
    # the loss's interval holds the margin: inconclusive (exit 4) since issue 19, and the note says why
    assert proc.returncode == 4 and "note: the candidate and the baseline are the same audit, so no difference " \
        "is expected; the inconclusive result says only that 36 images cannot show a loss below 0.01" in proc.stdout, \
        proc.stdout


def test_untrusted_eps_bytes_named_png_are_refused_by_the_audit(tmp_path):
    data = hc.data(tmp_path)
    (data / "red" / "evil.png").write_bytes(hc.EPS)
    proc = hc.cli(*hc.run_argv(tmp_path, data))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert hc.skipped(tmp_path / "out")["red/evil.png"].startswith("image format EPS is not allowed (allowed: PNG,")


def _reference_run(tmp_path, reference, *extra):
    """An audit of good data against ``reference``: the verdict's reference counts and the report's examples."""
    proc = hc.cli(*hc.run_argv(tmp_path, hc.data(tmp_path), "--reference", str(reference), *extra), timeout=120)
    assert proc.returncode in (0, 1, 4), proc.stderr[-3000:]  # a verdict: neither a hang nor an error
    v = json.loads((tmp_path / "out" / "verdict.json").read_text())
    return v["shift"]["reference"], (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize("layout", ["class folders", "flat folder", "manifest"])
def test_hang_a_fifo_in_the_reference_is_skipped_with_its_reason(tmp_path, layout):
    """The reference (--reference) goes through the same scan and the same engine as the test data: a FIFO
    named like an image never reaches open(), whether the reference has class folders, none, or is a
    manifest without labels; EPS bytes named .png meet the same format allow-list."""
    ref = hc.data(tmp_path, "ref", n=3, seed=5)
    if layout == "flat folder":
        for f in sorted(ref.glob("*/*.png")):
            f.rename(ref / f"{f.parent.name}_{f.name}")
    where = ref if layout == "flat folder" else ref / "red"
    os.mkfifo(where / "fifo.png")
    (where / "evil.png").write_bytes(hc.EPS)
    target = ref
    if layout == "manifest":
        rel = sorted(p.relative_to(tmp_path).as_posix() for p in ref.rglob("*.png"))
        target = tmp_path / "ref.csv"
        target.write_text("path\n" + "".join(f"{r}\n" for r in rel))
    got, html = _reference_run(tmp_path, target)
    assert got["found"] == 11 and got["processed"] == 9 and got["skipped"] == 2, got
    prefix = {"class folders": "red/", "flat folder": "", "manifest": "ref/red/"}[layout]
    assert f"<code>{prefix}fifo.png</code>: not a regular file (FIFO)" in html
    assert f"<code>{prefix}evil.png</code>: image format EPS is not allowed" in html


def _unusable(tmp_path):
    """A training folder where every file is skipped at decode: one undecodable, one EPS named .png."""
    bad = tmp_path / "bad" / "red"
    bad.mkdir(parents=True)
    (bad / "a.png").write_text("not an image")
    (bad / "b.png").write_bytes(hc.EPS)
    return bad.parent


@pytest.mark.parametrize("how", ["--train (also the reference)", "--train beside another --reference"])
def test_silent_pass_a_train_or_reference_with_no_usable_image_measures_nothing_and_passes_nothing(tmp_path, how):
    """Every --train file skipped at decode: leakage compared the test set with nothing, and the shift gate
    (max_domain_auc) measured nothing. Both fail, saying why, instead of passing on no evidence; the shift
    section names the skipped reference, not a model without features."""
    bad = _unusable(tmp_path)
    cfg = tmp_path / "gate.toml"
    cfg.write_text("[audit.shift]\nmax_domain_auc = 0.9\n")
    extra = ["--train", str(bad), "--config", str(cfg)]
    if how.endswith("--reference"):
        extra += ["--reference", str(hc.data(tmp_path, "ref", n=3, seed=5))]
    proc = hc.cli(*hc.run_argv(tmp_path, hc.data(tmp_path), *extra), timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    v = json.loads((tmp_path / "out" / "verdict.json").read_text())
    crit = {c["id"]: c for c in v["criteria"]}
    leak = crit["integrity.leakage"]
    assert not leak["passed"] and leak["value"] is None
    assert leak["detail"].startswith("not measured: none of the 2 training image(s) could be read (e.g. red/")
    assert v["integrity"]["n_train_unreadable"] == 2
    html = (tmp_path / "out" / "report.html").read_text()
    assert "2 of the 2 training image(s) could not be read and were not compared: leakage was not measured" in html
    shift = crit["shift.domain_auc"]
    if how.endswith("--reference"):
        assert shift["value"] is not None and v["shift"]["reference"]["processed"] == 9
    else:
        assert not shift["passed"] and shift["value"] is None
        assert shift["detail"].startswith("not measured: the reference has 0 usable image(s) (2 of its 2 file(s) "
                                          "skipped; e.g. red/a.png: not an image"), shift["detail"]
        assert "the model gave no features" not in v["shift"]["skipped"]


def test_lost_accounting_a_folder_too_deep_to_list_is_a_skipped_entry(tmp_path):
    data = hc.data(tmp_path)
    deep = hc.deep_folder(data)
    try:
        proc = hc.cli(*hc.run_argv(tmp_path, data))
        assert proc.returncode == 0, proc.stderr[-2000:]
        v = json.loads((tmp_path / "out" / "verdict.json").read_text())
        reasons = hc.skipped(tmp_path / "out")
        assert v["data"]["found"] == 31 and v["data"]["processed"] == 30
        assert [r for p, r in reasons.items() if p.startswith(deep[:300])] == \
            ["folder cannot be read (File name too long)"]
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _ray_run(tmp_path):
    tmp_path.mkdir()
    argv = [a for a in hc.run_argv(tmp_path, hc.data(tmp_path, n=40), "--engine", "ray") if a != "--no-progress"]
    return subprocess.Popen([sys.executable, "-m", "audit", *argv], cwd=hc.ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads processes from /proc")
def test_ray_sigterm_exits_143_and_sigkill_leaves_no_ray_process(tmp_path):
    """ray.init replaces the SIGTERM handler (exit 15 and a stack dump); a killed run left Ray's agents behind."""
    pytest.importorskip("ray")
    with _ray_run(tmp_path / "a") as proc:
        code, err, _ = hc.interrupt_when(proc, "inference: ", signal.SIGTERM)
    assert code == 143 and err.strip().endswith("terminated (SIGTERM)") and "Traceback" not in err, err[-3000:]
    with _ray_run(tmp_path / "b") as proc:
        ours = hc.ray_agents_started(proc)
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while hc.alive(ours) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = hc.alive(ours)
    names = {pid: hc.cmdline(pid)[:80] for pid in left}
    hc.kill_all(left)  # the test's own leftovers, never another session's
    assert ours and not left, f"Ray processes outlived the killed run: {names}"


@pytest.mark.parametrize("extra, message", [
    (["--reference", "{empty}"], r"^error: --reference .*empty: no usable image in the ImageFolder .*"
                                 r"\(expected DIR/<image> or DIR/<class name>/<image>\)$"),
    (["--reference", "{ref}", "--no-shift"], r"^error: config shift.reference \(--reference\) is "
                                             r"only read by the shift check, which is off \(--no-shift\)"),
    (["--reference="], r"^error: --reference '': config shift.reference \(--reference\) is empty"),
])
def test_unclear_message_a_reference_the_run_cannot_use_is_named_with_its_option(tmp_path, extra, message):
    """An empty reference folder, a reference beside --no-shift (silently ignored before) and an empty path:
    exit 2, one line that names --reference and says what to fix."""
    (tmp_path / "empty").mkdir()
    ref = hc.data(tmp_path, "ref", n=3, seed=5)
    extra = [a.format(empty=tmp_path / "empty", ref=ref) for a in extra]
    proc = hc.cli(*hc.run_argv(tmp_path, hc.data(tmp_path), *extra), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.match(message, lines[0]), lines[0]
