"""What the speed benchmarks share: the model and data they locate or build, alternating runs, results files.

The model is the Fashion-MNIST scratch CNN of the quick start, ``models/fashion_mnist_scratch/model.onnx``.
When it is missing it is built with the documented commands (a few minutes on two cores)::

    .venv/bin/python -m training prepare fashion-mnist --out data/fashion-mnist
    .venv/bin/python -m training fit --config configs/fashion_mnist_scratch.toml

Timings alternate A and B in one process (A, B, A, B, ...) so that load from other work on the
machine hits both alike; results report the median and the spread of each.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = ROOT / "models/fashion_mnist_scratch/model.onnx"
DATA = ROOT / "data/fashion-mnist"
RESULTS = HERE / "results"

# A user's Python caches bytecode, so the children measured here do too. Under PYTHONDONTWRITEBYTECODE (set in some
# shells and CI images) every child would compile from source each of the tool's modules whose cache is missing or
# stale: about 50 modules and 85 ms of CPU per audit start-up, which no user pays twice.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
compileall.compile_dir(ROOT / "audit", quiet=1)
compileall.compile_dir(HERE, maxlevels=0, quiet=1)


def _python(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True)


def fashion_mnist_test() -> Path:
    """The 10,000-image Fashion-MNIST test split, prepared if missing."""
    if not (DATA / "test").is_dir():
        _python("-m", "training", "prepare", "fashion-mnist", "--out", str(DATA))
    return DATA / "test"


def fashion_mnist_model(model: Path | None = None) -> Path:
    """``model`` if given, else the quick start's scratch CNN, trained if missing."""
    if model is not None:
        return model
    if not MODEL.is_file():
        fashion_mnist_test()
        print(f"no model at {MODEL}: training the scratch CNN (configs/fashion_mnist_scratch.toml)", flush=True)
        _python("-m", "training", "fit", "--config", "configs/fashion_mnist_scratch.toml")
    return MODEL


def linked_copies(src: Path, copies: int, dst: Path) -> Path:
    """An ImageFolder of ``copies`` x the images of ``src``, hard-linked under new names (no bytes copied)."""
    for f in sorted(src.rglob("*.png")):
        rel = f.relative_to(src)
        (dst / rel.parent).mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            target = dst / rel.parent / f"{rel.stem}_{i}{rel.suffix}"
            if not target.exists():
                os.link(f, target)
    return dst


def alternate(runs: dict[str, Callable[[], object]], repeats: int, loads: list[float] | None = None) -> dict[str, list]:
    """Call every run once per round, in order, ``repeats`` rounds; each returns its seconds (or wall, CPU).
    ``loads``, when given, gets the 1-minute load average at the end of each round."""
    out: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            out[name].append(run())
        if loads is not None:
            loads.append(round(os.getloadavg()[0], 2))
    return out


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the rounds were, as a share of the median."""
    return round((max(values) - min(values)) / statistics.median(values), 3) if values else float("nan")


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def timed_cpu(fn: Callable[[], object]) -> Callable[[], tuple[float, float]]:
    """Wall and process CPU seconds (all threads of this process) of one call."""
    def run() -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        return time.perf_counter() - t0, time.process_time() - c0

    return run


def child_cpu() -> float:
    """User + system seconds of every finished child process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def stats(seconds: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "runs_s": [round(s, 3) for s in seconds]}


def ratios(a: list[float], b: list[float]) -> dict[str, float]:
    """a / b per round (the rounds alternate, so each pair saw similar load), and the ratio of medians."""
    per_round = [x / y for x, y in zip(a, b)]
    return {"of_medians": round(statistics.median(a) / statistics.median(b), 3),
            "per_round_median": round(statistics.median(per_round), 3),
            "per_round_min": round(min(per_round), 3), "per_round_max": round(max(per_round), 3)}


def today() -> str:
    import datetime as dt

    return dt.date.today().isoformat()


def machine() -> dict[str, object]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_average_1min_at_end": load, "date": today()}


def write(name: str, result: dict, markdown: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))


def wait_with_peaks(p: subprocess.Popen, every_s: float = 0.05) -> dict[str, float]:
    """Wait for ``p`` (setting its return code); the peak RSS (MiB) of it and of the processes it started (the
    audit's side process; in a full audit also the PDF worker and the latency check's server): ``audit`` (its
    own), ``side`` (its children's, added), ``sum`` (the two: an upper bound on what they held at once) and
    ``at_once`` (the largest sum of current RSS seen in one sample). A process's own peak is the kernel's
    high-water mark (VmHWM), read every ``every_s`` while it runs; ``wait4`` then gives the largest of the
    whole tree exactly, and goes to the process whose sampled peak is nearest below it (a child that grew after
    the last sample, as the side process can when it makes the model card at the end, is not taken for the
    audit). Linux only."""
    hwm: dict[int, float] = {}
    at_once, children, scanned = 0.0, set(), 0.0
    while True:
        done, status, usage = os.wait4(p.pid, os.WNOHANG)
        if done:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.perf_counter() - scanned > 0.5:  # children start early and stay: look for them now and then
            children |= _children(p.pid)
            scanned = time.perf_counter()
        now = 0.0
        for pid in (p.pid, *children):
            got = _status_mib(pid, ("VmHWM", "VmRSS"))
            if got:
                hwm[pid] = max(hwm.get(pid, 0.0), got["VmHWM"])
                now += got["VmRSS"]
        at_once = max(at_once, now)
        time.sleep(every_s)
    tree = usage.ru_maxrss / 1024
    below = [pid for pid, v in hwm.items() if v <= tree + 1]
    if below:  # the tree's peak is that process's own, reached after (or at) its last sample
        owner = max(below, key=lambda pid: hwm[pid])
        hwm[owner] = max(hwm[owner], tree)
    kids = [v for k, v in hwm.items() if k != p.pid]
    audit = hwm.get(p.pid, tree)
    return {"audit": round(audit, 1), "side": round(sum(kids), 1), "sum": round(audit + sum(kids), 1),
            "at_once": round(at_once, 1)}


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _status_mib(pid: int, keys: tuple[str, ...]) -> dict[str, float]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in lines) if k in keys}
