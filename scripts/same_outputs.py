"""Are two audit output folders the same audit? Compares verdict.json and predictions.csv.

Ignored: when and with which version the run was made, and timings (the latency section and the
values of its criteria, which are measured, not computed). A schema-v1 verdict's comparable keys
are read under today's measure ids (``metrics.accuracy`` -> ``accuracy``). Numbers must agree to a
relative 1e-9 (the last bits of a p-value may differ between two formulas of the same normal tail).

    python scripts/same_outputs.py reports/before/ reports/after/
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from audit.checks.baseline import v1_key

IGNORED = {"created", "tool_version", "schema", "latency"}


def normalise(v: dict) -> dict:
    v = {k: x for k, x in v.items() if k not in IGNORED}
    rename = v1_key if v.get("comparable") and any(k.startswith("metrics.") for k in v["comparable"]) else str
    v["comparable"] = {rename(k): x for k, x in v.get("comparable", {}).items()}
    v["criteria"] = {c["id"]: ({"id": c["id"]} if c["id"].startswith("latency.") else c) for c in v["criteria"]}
    return v


def differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9):
            return []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    a = p.parse_args(argv)
    va, vb = (normalise(json.loads((d / "verdict.json").read_text())) for d in (a.old, a.new))
    diffs = differences(va, vb, "verdict")
    pa, pb = (pd.read_csv(d / "predictions.csv", keep_default_na=False) for d in (a.old, a.new))
    if list(pa.columns) != list(pb.columns) or not pa.equals(pb):
        diffs.append(f"predictions.csv differs ({len(pa)} vs {len(pb)} rows)")
    for d in diffs[:40]:
        print(d)
    print(f"{'SAME' if not diffs else 'DIFFERENT'}: {a.old} vs {a.new} "
          f"({len(va['criteria'])} criteria, {len(pa)} predictions, {len(diffs)} difference(s))")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
