"""Ends the processes of a local Ray when the audit that started it dies without cleaning up (SIGKILL, OOM killer).

An audit that exits normally, or on Ctrl-C or SIGTERM, shuts its local Ray down itself. A killed one cannot:
the GCS and the raylet die with it (Ray ties them to their parent), but the raylet's agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive it for about a minute, waiting on the dead GCS.
This watchdog runs as a script of the standard library only (``python reaper.py PID``, started by
``audit.engines.ray`` in a session of its own, so a signal to the audit's process group does not reach
it). It notes the Ray processes descended from PID ten times a second and, when its stdin (a pipe the audit
holds) reaches end of file, kills the ones still running. Linux only: it reads ``/proc``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(stat.parent.name)] = (int(fields[1]), fields[19])  # ppid, starttime (fields 4 and 22 of stat)
    return out


def _is_ray(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmd.startswith(b"ray::") or b"/ray/" in cmd


def ray_descendants(root: int) -> dict[int, str]:
    """pid -> start time of the Ray processes descended from ``root``."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for kid in children.get(todo.pop(), ()):
            todo.append(kid)
            if _is_ray(kid):
                found[kid] = procs[kid][1]
    return found


def watch(root: int, interval: float = 0.1) -> None:
    """Note ``root``'s Ray descendants until stdin closes, then kill those still running (same pid, same start).

    A scan every ``interval`` seconds (reading /proc takes a few milliseconds); at the end, the Ray
    descendants of every process noted that still runs are added, for agents started since the last scan.
    """
    seen: dict[int, str] = {}
    while True:
        seen.update(ray_descendants(root))
        ready, _, _ = select.select([sys.stdin], [], [], interval)
        if ready and not os.read(sys.stdin.fileno(), 1):
            break
    for pid in list(seen):
        seen.update(ray_descendants(pid))
    alive = _processes()
    for pid, start in seen.items():
        if pid in alive and alive[pid][1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
