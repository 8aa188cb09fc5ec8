"""SIGTERM (what CI cancellation sends) during the latency check: the run stops like on Ctrl-C, the `audit serve`
child is stopped, its temporary folder is removed, and the previous outputs stay complete."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import builders
from audit.cli import main

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def port_of(pid: int) -> int:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(args[args.index(b"--port") + 1])


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_sigterm_during_the_latency_check_stops_the_server_and_keeps_the_outputs(tmp_path):
    model = builders.colour_model(tmp_path / "m.onnx")
    data = builders.image_folder(tmp_path / "data", 10)
    out = tmp_path / "out"
    common = ["--model", str(model), "--data", str(data), "--out", str(out), "--no-pdf", "--no-progress",
              "--n-boot", "20", "--no-invariance"]
    assert main(["run", *common, "--no-latency"]) == 0
    before = snapshot(out)
    # A latency check that would take many minutes: the signal arrives while requests are being sent.
    (tmp_path / "audit.toml").write_text("[audit.latency]\nrequests = 1000000\nwarmup = 0\nearly_stop = false\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    with (tmp_path / "run.log").open("w+") as log:
        code, server, text = _run_and_terminate(common, tmp_path / "audit.toml", env, log, tmp)
    assert code == 143, text[-2000:]
    assert "terminated (SIGTERM)" in text and "Traceback" not in text
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server), "the audit serve child outlived the run"
    assert not list(tmp.glob("audit-serve-*")), "the server's temporary folder was left behind"
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.audit-")]


def _run_and_terminate(common, config, env, log, tmp) -> tuple[int, int, str]:
    """Start the run, wait until its server answers /health, SIGTERM the run: (exit code, server pid, output)."""
    proc = subprocess.Popen([sys.executable, "-m", "audit", "run", *common, "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        server = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            kids = [k for k in children(proc.pid) if b"serve" in cmdline(k)]
            if kids and healthy(port_of(kids[0])):
                server = kids[0]
                break
            time.sleep(0.2)
        assert server is not None, f"the server never came up: {log.seek(0) or log.read()[-2000:]}"
        assert list(tmp.glob("audit-serve-*")), "the server's temporary folder is where TMPDIR says"
        time.sleep(1.0)  # requests are flowing
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    return code, server, log.read()


class Interrupted(Exception):
    pass


def test_an_interrupted_concurrent_phase_stops_its_clients(tmp_path):
    """The concurrent clients are threads: an interrupt in the main thread must not wait for a million requests."""
    from audit.loadgen import request_body, running_server, send_requests

    model = builders.colour_model(tmp_path / "m.onnx")
    body = request_body((builders.image_folder(tmp_path / "d", 1) / "red" / "000.png").read_bytes())

    def interrupt(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with running_server(model) as server:
            timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            t0 = time.monotonic()
            with pytest.raises(Interrupted):
                send_requests(server.url, [body], 1_000_000, concurrency=4)
            assert time.monotonic() - t0 < 60  # a bound on a hang, not a speed claim: a million requests take hours
    finally:
        signal.signal(signal.SIGUSR1, previous)
