"""What the second red-team pass needs to build (tests/test_hostile.py holds the cases): blocking files, copied
evidence, edited audits, long names, mount points, EPS bytes, deep folders, odd manifests, and a way to run
the real command line in a process of its own (a hang must fail the test, not stall it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import builders

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--no-pdf", "--no-progress", "--n-boot", "20", "--no-latency", "--no-invariance", "--no-label-errors"]
# An EPS file: Pillow's EPS plugin would hand it to Ghostscript where one is installed.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def cli(*argv: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    """``python -m audit ARGV`` in its own process; a run that outlives ``timeout`` fails the test."""
    return subprocess.run([sys.executable, "-m", "audit", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, **kw)


def run_argv(tmp: Path, data: Path, *extra: str, model: Path | None = None, out: str = "out") -> list[str]:
    model = model or builders.colour_model(tmp / "m.onnx")
    return ["run", "--model", str(model), "--data", str(data), "--out", str(tmp / out), *FAST, *extra]


def data(tmp: Path, name: str = "data", n: int = 10, **kw) -> Path:
    return builders.image_folder(tmp / name, n, **kw)


def skipped(out: Path) -> dict[str, str]:
    return dict(pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False).itertuples(index=False))


def fifo_data(tmp: Path) -> list[str]:
    """A FIFO named like an image in the data and in the --train folder (opening one for reading blocks)."""
    test, train = data(tmp), data(tmp, "train", 3, seed=7)
    os.mkfifo(test / "red" / "fifo.png")
    os.mkfifo(train / "blue" / "fifo.png")
    return run_argv(tmp, test, "--train", str(train))


def copied_classes(tmp: Path) -> Path:
    """Each class is ten copies of one image (the integrity check knows they are duplicates)."""
    root = data(tmp, n=1)
    for cls in builders.COLOURS:
        for i in range(1, 10):
            shutil.copy(root / cls / "000.png", root / cls / f"copy{i}.png")
    return root


def listening_socket() -> socket.socket:
    """A port where something listens and never answers (a typo'd --ray-address, a dashboard port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def audits(root: Path) -> tuple[Path, Path, Path]:
    """(data, good audit, random-ish audit): two real audits of the same images, by two models."""
    from audit.cli import main

    images = data(root, n=12)
    w, b = builders.colour_weights()
    weak = builders.colour_model(root / "weak.onnx", weights=(w[:, ::-1].copy(), b))  # calls colours wrongly
    for name, model in (("good", builders.colour_model(root / "good.onnx")), ("weak", weak)):
        code = main(["run", "--model", str(model), "--data", str(images), "--out", str(root / name), *FAST])
        assert code in (0, 1)
    return images, root / "good", root / "weak"


def edited(audit: Path, tmp: Path, *, keep_digest: bool = True, drop: str | None = None,
           csv_only: bool = False) -> Path:
    """A copy of ``audit`` whose predictions.parquet and predictions.csv claim every image right (and lack
    ``drop``); without ``keep_digest`` its verdict.json is made to look like one written before digests were
    recorded; with ``csv_only`` like a folder of a version that wrote no Parquet."""
    copy = shutil.copytree(audit, tmp / f"edited-{audit.name}")
    verdict = json.loads((copy / "verdict.json").read_text())
    for name in ("predictions.parquet", "predictions.csv"):
        f = copy / name
        rows = pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f, dtype=str, keep_default_na=False)
        rows["predicted"] = rows["label"]
        rows = rows.drop(columns=[drop]) if drop else rows
        rows.to_parquet(f, index=False) if f.suffix == ".parquet" else rows.to_csv(f, index=False)
    if csv_only:
        (copy / "predictions.parquet").unlink()
        verdict["files"].pop("predictions.parquet")
    if not keep_digest:
        verdict.pop("files")
    (copy / "verdict.json").write_text(json.dumps(verdict))
    return copy


def unshare_script(tmp: Path, script: str) -> subprocess.CompletedProcess:
    """``script`` (sh) in a mount namespace of its own, where it may mount tmpfs folders; skips where that is
    not allowed. $PY is this Python, $ROOT the repository."""
    import pytest

    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no unprivileged mount namespaces here (unshare --mount)")
    env = {**os.environ, "PY": sys.executable, "ROOT": str(ROOT), "T": str(tmp)}
    return subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-ec", script], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


def deep_folder(root: Path, depth: int = 20) -> str:
    """A folder under ``root/red`` whose path is longer than PATH_MAX (made one level at a time), with an
    image in it; returns its path relative to ``root``."""
    names = ["d" * 250] * depth
    fd = os.open(root / "red", os.O_RDONLY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            fd, old = os.open(name, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        img = os.open("lost.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(img, (root / "red" / "000.png").read_bytes())
        os.close(img)
    finally:
        os.close(fd)
    return "red/" + "/".join(names)


def parquet(tmp: Path, frame: pd.DataFrame) -> Path:
    data(tmp / "lists", "img")
    path = tmp / "lists" / "test.parquet"
    frame.to_parquet(path)
    return path


def good_rows() -> dict[str, list[str]]:
    rows = [(f"img/{c}/{i:03d}.png", c) for c in builders.COLOURS for i in range(10)]
    return {"path": [p for p, _ in rows], "label": [c for _, c in rows]}


def ctrl_c_as_at_a_terminal() -> None:
    """``preexec_fn`` for a child that a test interrupts: Ctrl-C's default action, as at a terminal (a suite started
    as a background job passes SIGINT on ignored, and the child would never see the test's signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(proc: subprocess.Popen, marker: str, sig: int, timeout: float = 240) -> tuple[int, str, float]:
    """Read the process's stderr until a line holds ``marker``, send ``sig``: (exit code, stderr, seconds it
    took to exit after the signal)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            proc.send_signal(sig)
            t0 = time.monotonic()
            code = proc.wait(timeout=60)
            return code, "".join(lines) + proc.stderr.read(), time.monotonic() - t0
    proc.kill()
    raise AssertionError(f"never saw {marker!r}: {''.join(lines)[-2000:]}")


def ray_agents_started(proc: subprocess.Popen, timeout: float = 240) -> list[int]:
    """The Ray processes descended from ``proc`` once its local Ray's agents (``ray::...``) run (from /proc)."""
    from audit.engines.reaper import ray_descendants

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        found = list(ray_descendants(proc.pid))
        if any(cmdline(p).startswith(b"ray::") for p in found):
            return found
        time.sleep(0.5)
    raise AssertionError("the run's local Ray never started its agents")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def kill_all(pids) -> None:
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)
