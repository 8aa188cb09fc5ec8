"""The README's performance table in one command (issue 22 §1): ``python -m benchmarks``.

Runs every benchmark behind a README row, one after another, each as its own child process with the
arguments below; each one alternates our path and its floor in rounds and writes ``benchmarks/results/<name>``
(JSON + markdown, with its spread and the load average). Then writes ``benchmarks/results/table.md``: per
benchmark its command, its minutes and the load average before and after, and the total time.

    .venv/bin/python -m benchmarks                  # the table (8.7 minutes on 2026-12-07)
    .venv/bin/python -m benchmarks --scale          # and the scale rows: memory on repeats, a million images
                                                    # (15.7 minutes in all)
    .venv/bin/python -m benchmarks --only audit_vs_floor,fixed_costs
    .venv/bin/python -m benchmarks --list           # what would run, and its budget
    .venv/bin/python -m benchmarks --suffix 2026_12_07   # results/<name>_2026_12_07: a second day's run
                                                         # beside the files the README cites

The minutes are budgets for an idle two-core machine, about twice what each took on 2026-12-07 with the model
and the data already built (the first run builds them: the quick start's model, the 100k copies, the 500k
synthetic images); the table states what each took. The README shows each figure from two days and
whether the second reproduced the first within 15%.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    script: str
    args: tuple[str, ...] = ()
    minutes: float = 5  # budget on an idle two-core machine
    name: str = ""  # results/<name>.json and .md (default: the script's name)
    name_flag: str = "--name"  # the script's option for it

    def results(self, suffix: str = "") -> str:
        return (self.name or self.script) + (f"_{suffix}" if suffix else "")

    def arguments(self, suffix: str = "") -> list[str]:
        named = [self.name_flag, self.results(suffix)] if self.name or suffix else []
        return [*self.args, *named]

    def command(self, suffix: str = "") -> list[str]:
        return [sys.executable, str(HERE / f"{self.script}.py"), *self.arguments(suffix)]

    def shown(self, suffix: str = "") -> str:
        return " ".join([".venv/bin/python", f"benchmarks/{self.script}.py", *self.arguments(suffix)])


TABLE = (
    Bench("audit_vs_floor", ("--sizes", "10000,100000", "--repeats", "5"), 7),
    Bench("fixed_costs", ("--repeats", "5"), 1),
    Bench("inference_vs_floor", ("--repeats", "3"), 2),
    Bench("memory_vs_n", (), 2),
    Bench("near_duplicates", (), 2),
    Bench("quickstart_vs_revision", ("--repeats", "3"), 2),
    Bench("serve_latency", ("--only", "quickstart"), 1, "serve_latency_quickstart", "--out"),
    Bench("serve_throughput", ("--only", "colour224"), 1, "serve_throughput_colour224", "--out"),  # the README's row
)
SCALE = (
    Bench("memory_repeats", (), 9),
    Bench("million", (), 5),
)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", action="store_true", help="also the scale rows (about 7 minutes more)")
    ap.add_argument("--only", help="comma-separated script names")
    ap.add_argument("--list", action="store_true", help="print what would run and its budget, run nothing")
    ap.add_argument("--suffix", default="", help="write results/<name>_<suffix> (and table_<suffix>.md) instead of "
                    "the files of the run the README cites")
    a = ap.parse_args(argv)
    benches = [*TABLE, *(SCALE if a.scale else ())]
    if a.only:
        wanted = set(a.only.split(","))
        benches = [b for b in (*TABLE, *SCALE) if b.script in wanted]
        if missing := wanted - {b.script for b in benches}:
            ap.error(f"no benchmark named {', '.join(sorted(missing))}")
    if a.list:
        for b in benches:
            print(f"{b.minutes:4.0f} min  {b.shown(a.suffix)}")
        print(f"{sum(b.minutes for b in benches):4.0f} min  in all")
        return 0
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    rows, t_all = [], time.perf_counter()
    for b in benches:
        print(f"== {b.shown(a.suffix)} (budget {b.minutes:.0f} min)", flush=True)
        before, t0 = load(), time.perf_counter()
        code = subprocess.run(b.command(a.suffix), cwd=HERE.parent, env=env).returncode
        rows.append((b, code, (time.perf_counter() - t0) / 60, before, load()))
    total = (time.perf_counter() - t_all) / 60
    md = ["# The performance table, one run", "",
          "| benchmark | command | exit | minutes (budget) | load average before → after | results |",
          "|---|---|---|---|---|---|"]
    for b, code, minutes, before, after in rows:
        md.append(f"| {b.script} | `{b.shown(a.suffix)}` | {code} | {minutes:.1f} ({b.minutes:.0f}) "
                  f"| {before:.1f} → {after:.1f} | [{b.results(a.suffix)}.md]({b.results(a.suffix)}.md) |")
    md += ["", f"{total:.1f} minutes in all on {os.cpu_count()} cores ({time.strftime('%Y-%m-%d')}). Each results "
           "file states its rounds, their spread and the load. Command: `.venv/bin/python -m benchmarks "
           + " ".join(sys.argv[1:] if argv is None else argv) + "`", ""]
    table = f"table_{a.suffix}" if a.suffix else "table"
    (HERE / "results" / f"{table}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return max((code for _, code, *_ in rows), default=0)


if __name__ == "__main__":
    sys.exit(main())
