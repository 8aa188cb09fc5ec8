"""``python -m audit compare``: two finished audits of the same images, compared image by image.

``compare_folders`` reads two output folders of ``python -m audit run`` (their ``predictions.csv``
and ``verdict.json``), pairs them (``audit.paired``), judges "candidate not worse by more than the
margin" exactly as the ``paired`` check does during a run (pass, fail or inconclusive, decided on the
interval by ``audit.verdict.decide``; ``on_inconclusive`` maps the last for the exit code), ranks the
findings, and captures thumbnails of the images only one model gets right from the audited data,
when it can still be read and neither audit ran with ``thumbnails = false`` (licences, privacy).
``audit.render.comparison`` writes the report.

Example::

    rep = compare_folders(Path("reports/lite0"), Path("reports/baseline"), margin=0.01, alpha=0.05)
    rep.passed, rep.paired.difference
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from audit import findings
from audit.checks import paired
from audit.errors import AuditError
from audit.paired import PairedComparison, compare_runs, load_run
from audit.result import ComparedData, ComparisonReport
from audit.verdict import decide


def compare_folders(candidate: Path, baseline: Path, *, margin: float = 0.01, alpha: float = 0.05,
                    data: Path | None = None, thumbnails: bool = True, max_thumbnails: int = 12,
                    on_inconclusive: str = "inconclusive") -> ComparisonReport:
    """Compare the audits in two output folders (see the module docstring).

    Raises ``UsageError`` when a folder is not an audit's output or the runs are not on the same data.
    """
    res = compare_runs(load_run(candidate, flag="--candidate"), load_run(baseline, flag="--baseline"),
                       margin=margin, alpha=alpha, examples=max_thumbnails)
    (crit,) = decide(paired.criteria(res, None), "interval")
    ranked = findings.rank(findings.failing([crit], "paired"), paired.findings(res, None))
    source, thumbs, notes = "", {}, []
    if thumbnails and not _without_thumbnails(candidate, baseline):
        source, thumbs, notes = _thumbnails(res, candidate, data)
    elif thumbnails:
        notes = ["no thumbnails: an audit being compared ran with thumbnails = false"]
    notes += _same_model(candidate, baseline, res)
    return ComparisonReport(
        str(candidate), str(baseline), res, crit, ranked, ComparedData(source), thumbs, tuple(notes),
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), on_inconclusive=on_inconclusive,
    )


def _folder(path: Path) -> Path:
    return path.parent if path.name == "verdict.json" else path


def default_out(candidate: Path, baseline: Path) -> Path:
    """reports/<candidate folder>-vs-<baseline folder>/, the names ``load_run`` gives the runs."""
    return Path("reports") / f"{_folder(candidate).resolve().name}-vs-{_folder(baseline).resolve().name}"


def _same_model(candidate: Path, baseline: Path, res: PairedComparison) -> list[str]:
    """A note when both sides are one audit, or audits of one model file: no difference is the expected answer,
    and an inconclusive (or failed) comparison then says only that the test set is too small for this margin."""
    if _folder(candidate).resolve() == _folder(baseline).resolve():
        what = "the candidate and the baseline are the same audit"
    else:
        digests = {_model_sha256(f) for f in (candidate, baseline)}
        if len(digests) != 1 or None in digests:
            return []
        what = "the candidate and the baseline audit the same model file (same SHA-256)"
    ni = res.non_inferiority
    if ni.passed:
        return [f"{what}; compare two different models"]
    return [f"{what}, so no difference is expected; the {ni.status} result says only that {res.n} images "
            f"cannot show a loss below {ni.margin:g} at alpha {ni.alpha:g} (upper bound {ni.upper_bound:.3f}): "
            "compare two different models, and use more images or a wider --margin"]


def _model_sha256(folder: Path) -> str | None:
    try:
        return json.loads((_folder(folder) / "verdict.json").read_text(encoding="utf-8"))["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _data_source(folder: Path) -> str | None:
    try:
        source = json.loads((_folder(folder) / "verdict.json").read_text(encoding="utf-8"))["data"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return source if isinstance(source, str) and source else None


def _without_thumbnails(*folders: Path) -> bool:
    """Whether an audit ran with ``thumbnails = false`` (its config.json says so): its data stays out."""
    for f in folders:
        try:
            if json.loads((_folder(f) / "config.json").read_text(encoding="utf-8")).get("thumbnails") is False:
                return True
        except (OSError, ValueError):
            continue
    return False


def _thumbnails(res: PairedComparison, candidate: Path,
                data: Path | None) -> tuple[str, dict[tuple[str, str], str], list[str]]:
    """Thumbnails of the images only one model gets right, read through the audited data source.

    ``data`` given: its errors are the user's to fix. Not given: the source the candidate's
    verdict names is tried, and a note says when it cannot be read.
    """
    from audit.imaging import ImageRejected
    from audit.sources import open_source
    from audit.thumbnails import thumbnail_uri

    explicit = data is not None
    if not explicit:
        named = _data_source(candidate)
        if named is None:
            return "", {}, ["no thumbnails: the candidate's verdict.json names no data source (data.source); "
                            "pass --data DIR"]
        data = Path(named)
    try:
        src = open_source(data, res.labels, flag="--data")
    except AuditError as e:
        if explicit:
            raise
        return "", {}, [f"no thumbnails: the audited data cannot be read here ({e.message}); pass --data DIR"]
    out = {}
    for p in (*res.candidate_examples, *res.baseline_examples):
        try:
            uri = thumbnail_uri(src.open(p))
        except (ImageRejected, OSError):
            uri = None
        if uri:
            out[(src.description, p)] = uri
    return src.description, out, []
