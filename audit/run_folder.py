"""An audit's output folder read back for a comparison, and checked: ``compare`` and ``--baseline`` trust nothing.

A comparison reads a run's ``predictions.parquet`` (every run writes it; ``predictions.csv`` in the folders of
earlier versions). An edited file must not pass for the run's own (a random model's rows edited to look right
would make it "significantly better"), so before the rows are used:

* ``verdict.json`` records the SHA-256 of the files it was written with (``files``, since this release); the
  rows file that does not match it is refused. Verdicts written before carry no digest; their rows are still checked:
* the verdict's own numbers must be there and agree with the rows: as many rows as images processed,
  and the accuracy the rows give equal to the verdict's; a ``files`` entry must hold the digest;
* the ``sha256`` column (each image's bytes, what tells two runs on the same files) must be there.

Anything that does not hold is a ``UsageError`` (exit 2) naming the folder and the file. The images a run
set aside because its model output NaN or Inf are read from its ``skipped.csv``, so that a comparison can
say why those images have no prediction (``explain_set_aside``).

Example::

    run = read_run_folder(Path("reports/lite0"), flag="--candidate")
    run.rows["predicted"], run.verdict["model"]["labels"], run.set_aside
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import UsageError
from audit.sources.base import NON_FINITE

REQUIRED = ("path", "label", "predicted", "sha256")
HINT = "pass an output folder of python -m audit run, unmodified; rerun the audit to get one"


@dataclass(frozen=True)
class RunFolder:
    folder: Path
    verdict: dict[str, Any]
    rows: Any  # pandas DataFrame of the rows file (strings): path, label, predicted, sha256, attr:*
    set_aside: tuple[str, ...]  # images skipped because the model output NaN or Inf for them (skipped.csv)
    digest_checked: bool  # verdict.json recorded the file's SHA-256 and it matched
    rows_file: Path = Path("predictions.csv")  # the file the rows were read from


def rows_file(folder: Path) -> Path | None:
    """An audit folder's per-image rows: ``predictions.parquet`` (every run writes it), else ``predictions.csv``
    (the runs of earlier versions)."""
    for name in ("predictions.parquet", "predictions.csv"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_run_folder(folder: Path, *, flag: str = "--baseline") -> RunFolder:
    """``folder`` (or the folder of a ``verdict.json`` given instead), read and checked (module docstring)."""
    from audit.predictions_file import read_table

    folder = Path(folder)
    if folder.name == "verdict.json":
        folder = folder.parent
    verdict_file, rows = folder / "verdict.json", rows_file(folder)
    for f, what in ((verdict_file, "verdict.json"), (rows, "predictions.parquet or predictions.csv")):
        if f is None or not f.is_file():
            raise UsageError(f"{flag} {folder}: {what} not found there", hint="pass an output folder of "
                                                                               "python -m audit run")
    name = rows.name
    try:
        verdict = json.loads(verdict_file.read_text(encoding="utf-8"))
        if not isinstance(verdict, dict):
            raise ValueError("not a JSON object")
        recorded = lookup(verdict, "files", name, "sha256")
        if "files" in verdict and not isinstance(recorded, str):
            raise UsageError(f"{flag} {folder}: verdict.json's 'files' entry does not record {name}'s "
                             "SHA-256 as an audit writes it", hint=HINT)
        if recorded is not None and file_sha256(rows) != recorded:
            raise UsageError(f"{flag} {folder}: {name} does not match the SHA-256 that verdict.json "
                             "records for it: it was changed after the audit wrote it", hint=HINT)
        table = read_table(rows, lambda c: c in REQUIRED or c.startswith("attr:"))
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise UsageError(f"{flag} {folder}: cannot read its verdict.json and {name} ({e})",
                         hint="pass an output folder of python -m audit run") from None
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        why = " (each image's SHA-256: how a comparison knows both runs read the same files)" \
            if missing == ["sha256"] else ""
        raise UsageError(f"{flag} {folder}: {name} has no {missing[0]!r} column{why}", hint=HINT)
    _check_numbers(verdict, table, f"{flag} {folder}", name)
    return RunFolder(folder, verdict, table, _set_aside(folder / "skipped.csv"), recorded is not None, rows)


def _check_numbers(verdict: dict[str, Any], rows, where: str, name: str = "predictions.csv") -> None:
    """The verdict's own numbers against the rows: the image count and the accuracy (both must be there)."""
    processed = lookup(verdict, "data", "processed")
    accuracy = lookup(verdict, "metrics", "accuracy", "value")
    for key, value, kind in (("data.processed", processed, int), ("metrics.accuracy", accuracy, (int, float))):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UsageError(f"{where}: verdict.json records no {key} to check {name} against", hint=HINT)
    if processed != len(rows):
        raise UsageError(f"{where}: {name} has {len(rows)} rows but verdict.json says {processed} images "
                         "were processed", hint=HINT)
    if len(rows):
        in_rows = float((rows["label"] == rows["predicted"]).mean())
        if not math.isclose(in_rows, accuracy, abs_tol=1e-9):
            raise UsageError(f"{where}: {name} does not agree with verdict.json (accuracy {in_rows:.4f} in "
                             f"the rows, {accuracy:.4f} in the verdict)", hint=HINT)


def lookup(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None where a level is missing or not an object (a verdict.json edited by hand)."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _set_aside(skipped: Path) -> tuple[str, ...]:
    import csv

    try:
        with skipped.open(newline="", encoding="utf-8") as f:
            return tuple(r["path"] for r in csv.DictReader(f) if r.get("reason") == NON_FINITE)
    except (OSError, KeyError, UnicodeDecodeError, csv.Error):
        return ()


def explain_set_aside(candidate, baseline, only_c: Sequence[str], only_b: Sequence[str]) -> None:
    """A ``UsageError`` saying so when the images only one run scored are ones the other set aside for a NaN/Inf
    model output: the same images, but a model that could not score some of them. ``candidate`` and
    ``baseline`` are ``audit.paired.PairedRun``s (``name``, ``set_aside``); ``only_c``/``only_b``: the paths
    only that run scored."""
    parts, explained = [], 0
    for run, other_only in ((baseline, only_c), (candidate, only_b)):
        aside = set(run.set_aside)
        nan = [p for p in other_only if p in aside]
        explained += len(nan)
        if nan:
            parts.append(f"{len(nan)} image(s) have no prediction in {run.name} because its model output NaN or Inf "
                         f"for them (set aside in its skipped.csv{_examples(nan)})")
    if parts:
        rest = len(only_c) + len(only_b) - explained
        raise UsageError("the runs cannot be paired: " + "; ".join(parts)
                         + (f"; {rest} other image(s) are in one run only" if rest else ""),
                         hint="fix the model that outputs NaN or Inf (its export, --mean/--std) and audit it again")


def _examples(paths: Sequence[str], k: int = 3) -> str:
    return f" (e.g. {', '.join(map(str, list(paths)[:k]))})" if len(paths) else ""
