"""Paired comparison of two models on the same images: is the candidate really better?

Both models saw the same test images, so their errors are paired: an image is right for both,
for one of them, or for neither. Comparing two accuracies as if they were independent samples
wastes that pairing (the intervals are wider than they need be) and a tolerance on point
estimates ignores noise altogether. Here:

* the accuracy difference (candidate - baseline) gets Newcombe's paired square-and-add interval
  (``audit.stats.paired_difference_ci``);
* McNemar's exact test asks whether the discordant images (right for one model only) split
  evenly (``audit.stats.mcnemar_exact``);
* "candidate not worse by more than ``margin``" is a non-inferiority question with three
  answers, read off the (1 - 2 alpha) paired interval of the accuracy the candidate loses
  (baseline - candidate): **pass** when its upper bound is below ``margin`` (the one-sided
  alpha-level test that the loss is under the margin), **fail** when its lower bound is at or
  above it, **inconclusive** when the margin lies inside it;
* "negative flips", the images the baseline gets right and the candidate gets wrong, are
  counted with a Wilson interval of their share: what a release gate cares most about;
* per class, how many images each model alone gets right; per slice of every attribute, the
  accuracy change with its interval and McNemar p-value, Benjamini–Hochberg corrected.

Runs that are not on the same data are refused with a ``UsageError``: other image sets,
the same path with other bytes (SHA-256), other true labels or other class names.

``load_run`` reads an audit's output folder (``predictions.parquet``, or ``predictions.csv`` of earlier
versions, for the per-image rows; the class names from ``verdict.json``); ``python -m audit compare`` and the ``paired`` check use it.

Example::

    cand = PairedRun("lite0", labels, paths, y_true, y_pred_a, sha256=shas)
    base = PairedRun("baseline", labels, paths, y_true, y_pred_b, sha256=shas)
    cmp = compare_runs(cand, base, margin=0.01, alpha=0.05)
    cmp.difference.value, cmp.mcnemar_p, cmp.non_inferiority.passed
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import UsageError
from audit.predictions import MISSING
from audit.run_folder import explain_set_aside, lookup, read_run_folder, rows_file  # noqa: F401 (rows_file: checks.paired)
from audit.stats import Estimate, benjamini_hochberg, mcnemar_exact, paired_difference_ci, proportion_ci

MAX_LEVELS = 50  # like slices.max_levels: a column with more distinct values is an id, not a slice


@dataclass(frozen=True)
class PairedRun:
    """One model's per-image results: what an audit writes to its predictions file."""

    name: str
    labels: tuple[str, ...]  # class names; y_true / y_pred index into them
    paths: Sequence[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    sha256: Sequence[str] = ()  # of each image's bytes; empty when the run did not hash
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) values
    set_aside: Sequence[str] = ()  # images not scored because the model output NaN or Inf for them


def load_run(folder: Path, *, name: str | None = None, flag: str = "--baseline") -> PairedRun:
    """The per-image results of an audit output folder (its ``verdict.json`` may be named instead), checked
    against the digest and the numbers its ``verdict.json`` records (``audit.run_folder``)."""
    run = read_run_folder(folder, flag=flag)
    df, labels = run.rows, lookup(run.verdict, "model", "labels")
    labels = labels if isinstance(labels, list) and all(isinstance(x, str) for x in labels) else []
    unknown = sorted((set(df["label"]) | set(df["predicted"])) - set(labels))
    if unknown or not labels:
        what = "verdict.json names no labels" if not labels else f"label {unknown[0]!r} is not in verdict.json's labels"
        raise UsageError(f"{flag} {run.folder}: {run.rows_file.name} does not match an audit's output ({what})",
                         hint="pass an output folder of python -m audit run, unmodified")
    index = {lab: i for i, lab in enumerate(labels)}
    return PairedRun(name or run.folder.resolve().name, tuple(labels), df["path"].tolist(),
                     df["label"].map(index).to_numpy(np.int64), df["predicted"].map(index).to_numpy(np.int64),
                     sha256=df["sha256"].tolist(),
                     attributes={c[5:]: df[c].to_numpy(object) for c in df if c.startswith("attr:")},
                     set_aside=run.set_aside)


def run_of(preds, name: str, set_aside: Sequence[str] = ()) -> PairedRun:
    """A ``PairedRun`` of an audit's ``Predictions`` table (``set_aside``: paths of NaN/Inf outputs)."""
    return PairedRun(name, tuple(preds.labels), preds.paths, preds.y_true, preds.y_pred, preds.sha256,
                     dict(preds.attributes), tuple(set_aside))


@dataclass(frozen=True)
class PairedTable:
    """The 2x2 table of paired outcomes."""

    both_right: int
    candidate_only: int  # right for the candidate, wrong for the baseline
    baseline_only: int
    both_wrong: int

    def array(self) -> np.ndarray:
        """``[[both_right, candidate_only], [baseline_only, both_wrong]]``: rows candidate right/wrong."""
        return np.array([[self.both_right, self.candidate_only], [self.baseline_only, self.both_wrong]])


@dataclass(frozen=True)
class ClassChange:
    label: str
    n: int
    candidate_only: int  # images of this class only the candidate gets right
    baseline_only: int


@dataclass(frozen=True)
class SliceChange:
    attribute: str
    level: str
    n: int
    candidate: Estimate  # accuracy on the slice (Wilson)
    baseline: Estimate
    difference: Estimate  # candidate - baseline (Newcombe, paired)
    p_value: float  # McNemar exact on the slice
    q_value: float  # Benjamini–Hochberg over every slice of every attribute


@dataclass(frozen=True)
class NonInferiority:
    """Candidate not worse by more than the margin, judged on the (1 - 2 alpha) interval of the loss."""

    margin: float
    alpha: float
    upper_bound: float  # one-sided (1 - alpha) upper bound of baseline - candidate accuracy
    lower_bound: float  # one-sided (1 - alpha) lower bound of the same
    status: str  # "pass": upper bound < margin; "fail": lower bound >= margin; else "inconclusive"

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def loss(self) -> Estimate:
        """Baseline - candidate accuracy with its (1 - 2 alpha) interval."""
        return Estimate(math.nan, self.lower_bound, self.upper_bound, 1 - 2 * self.alpha)

    @classmethod
    def of(cls, interval: Estimate, margin: float, alpha: float) -> NonInferiority:
        """From the (1 - 2 alpha) interval of candidate - baseline accuracy."""
        upper, lower = -interval.low, -interval.high
        status = "pass" if upper < margin else "fail" if lower >= margin else "inconclusive"
        return cls(margin, alpha, upper, lower, status)


@dataclass(frozen=True)
class PairedComparison:
    candidate: str
    baseline: str
    n: int
    labels: tuple[str, ...]
    hashes_checked: bool  # both runs carried SHA-256 per image and they matched
    candidate_accuracy: Estimate
    baseline_accuracy: Estimate
    difference: Estimate  # candidate - baseline accuracy, paired interval
    table: PairedTable
    mcnemar_p: float
    per_class: tuple[ClassChange, ...]
    slices: tuple[SliceChange, ...]
    non_inferiority: NonInferiority
    candidate_only_paths: tuple[str, ...]  # images only the candidate gets right, in candidate order
    baseline_only_paths: tuple[str, ...]
    unsliced: tuple[tuple[str, int], ...] = ()  # (attribute, distinct values) of columns too varied to slice
    candidate_examples: tuple[str, ...] = ()  # a few of candidate_only_paths, taken in turn from each class
    baseline_examples: tuple[str, ...] = ()  # a few negative flips, taken in turn from each class
    negative_flips: Estimate = Estimate(math.nan, math.nan, math.nan)  # share right for the baseline only (Wilson)

    @property
    def discordant(self) -> float:
        """Share of the images exactly one model gets right."""
        return (self.table.candidate_only + self.table.baseline_only) / self.n if self.n else math.nan

    @property
    def direction(self) -> str:
        """What the paired interval says: significantly better, significantly worse, or neither."""
        d = self.difference
        return ("significantly better" if d.low > 0 else "significantly worse" if d.high < 0
                else "not significantly different")

    def to_dict(self) -> dict[str, Any]:
        t, ni = self.table, self.non_inferiority
        return {
            "candidate": self.candidate, "baseline": self.baseline, "n": self.n,
            "hashes_checked": self.hashes_checked, "direction": self.direction,
            "candidate_accuracy": self.candidate_accuracy.to_dict(),
            "baseline_accuracy": self.baseline_accuracy.to_dict(),
            "difference": self.difference.to_dict(),
            "table": {"both_right": t.both_right, "candidate_only": t.candidate_only,
                      "baseline_only": t.baseline_only, "both_wrong": t.both_wrong},
            "mcnemar_p": self.mcnemar_p,
            "non_inferiority": {"margin": ni.margin, "alpha": ni.alpha, "upper_bound": ni.upper_bound,
                                "lower_bound": ni.lower_bound, "status": ni.status, "passed": ni.passed},
            "negative_flips": {"count": t.baseline_only, "share": self.negative_flips.to_dict()},
            "discordant_share": self.discordant,
            "per_class": [vars(c) for c in self.per_class],
            "slices": [{"attribute": s.attribute, "level": s.level, "n": s.n, "candidate": s.candidate.to_dict(),
                        "baseline": s.baseline.to_dict(), "difference": s.difference.to_dict(),
                        "p_value": s.p_value, "q_value": s.q_value} for s in self.slices],
            "candidate_only_paths": list(self.candidate_only_paths),
            "baseline_only_paths": list(self.baseline_only_paths),
            "unsliced": {name: k for name, k in self.unsliced},
        }


def compare_runs(
    candidate: PairedRun, baseline: PairedRun, *, margin: float = 0.01, alpha: float = 0.05, level: float = 0.95,
    max_levels: int = MAX_LEVELS, examples: int = 12,
) -> PairedComparison:
    """Pair two runs by path and compare them (see the module docstring).

    Attributes with more than ``max_levels`` distinct values (ids, file names) are not sliced, as
    in the slices check; ``examples`` images only one model gets right are picked per side, in turn
    from each class, for thumbnails. Raises ``UsageError`` when the runs are not on the same data.
    """
    if not 0 <= margin < 1:
        raise UsageError(f"margin must be in [0, 1) (an accuracy difference), got {margin}")
    if not 0 < alpha < 0.5:
        raise UsageError(f"alpha must be in (0, 0.5), got {alpha}")
    order, hashed = pair_runs(candidate, baseline)
    y = np.asarray(candidate.y_true)
    right_c = np.asarray(candidate.y_pred) == y
    right_b = _remap(baseline, candidate.labels, np.asarray(baseline.y_pred)[order]) == y
    table = _table(right_c, right_b)
    one_sided = paired_difference_ci(table.array(), level=1 - 2 * alpha)
    paths = np.asarray(candidate.paths, dtype=object)
    slices, unsliced = _slices(_aligned_attributes(candidate, baseline, order), right_c, right_b, level, max_levels)
    return PairedComparison(
        candidate=candidate.name, baseline=baseline.name, n=len(y), labels=tuple(candidate.labels),
        hashes_checked=hashed,
        candidate_accuracy=proportion_ci(int(right_c.sum()), len(y), level=level),
        baseline_accuracy=proportion_ci(int(right_b.sum()), len(y), level=level),
        difference=paired_difference_ci(table.array(), level=level),
        table=table,
        mcnemar_p=mcnemar_exact(table.candidate_only, table.baseline_only),
        per_class=_per_class(y, right_c, right_b, candidate.labels),
        slices=slices,
        non_inferiority=NonInferiority.of(one_sided, margin, alpha),
        candidate_only_paths=tuple(paths[right_c & ~right_b].tolist()),
        baseline_only_paths=tuple(paths[right_b & ~right_c].tolist()),
        unsliced=unsliced,
        candidate_examples=_spread(paths[right_c & ~right_b], y[right_c & ~right_b], examples),
        baseline_examples=_spread(paths[right_b & ~right_c], y[right_b & ~right_c], examples),
        negative_flips=proportion_ci(table.baseline_only, len(y), level=level),
    )


def pair_runs(candidate: PairedRun, baseline: PairedRun) -> tuple[np.ndarray, bool]:
    """Row ``order`` such that ``baseline[order]`` lines up with ``candidate``, and whether hashes were compared."""
    for run in (candidate, baseline):
        _check_run(run)
    if set(candidate.labels) != set(baseline.labels):
        only_c = sorted(set(candidate.labels) - set(baseline.labels))
        only_b = sorted(set(baseline.labels) - set(candidate.labels))
        raise UsageError(f"the runs have different classes: only in {candidate.name} {only_c}, only in "
                         f"{baseline.name} {only_b}", hint="compare models trained on the same classes")
    index = {p: i for i, p in enumerate(baseline.paths)}
    missing = [p for p in candidate.paths if p not in index]
    extra = len(baseline.paths) - (len(candidate.paths) - len(missing))
    if missing or extra:
        cand = set(candidate.paths)
        only_b = [p for p in baseline.paths if p not in cand]
        explain_set_aside(candidate, baseline, missing, only_b)
        raise UsageError(
            f"the runs are on different images: {len(missing)} only in {candidate.name}{_examples(missing)}, "
            f"{extra} only in {baseline.name}{_examples(only_b)}",
            hint="audit both models on the same --data")
    order = np.array([index[p] for p in candidate.paths], dtype=np.int64)
    hashed = bool(len(candidate.sha256) and len(baseline.sha256))
    if hashed:
        other = np.asarray(baseline.sha256, dtype=object)[order]
        diff = [p for p, a, b in zip(candidate.paths, candidate.sha256, other) if a != b]
        if diff:
            raise UsageError(f"{len(diff)} image(s) have the same path but different content (sha256){_examples(diff)}",
                             hint="the data changed between the runs; audit both models on the same files")
    y_b = _remap(baseline, candidate.labels, np.asarray(baseline.y_true)[order])
    diff = [p for p, a, b in zip(candidate.paths, np.asarray(candidate.y_true), y_b) if a != b]
    if diff:
        raise UsageError(f"{len(diff)} image(s) have different true labels in the two runs{_examples(diff)}",
                         hint="audit both models on the same labelled data")
    return order, hashed


def _check_run(run: PairedRun) -> None:
    n = len(run.paths)
    if n == 0:
        raise UsageError(f"run {run.name!r} has no images", hint="compare two audits that processed images")
    shapes = {"y_true": np.shape(run.y_true), "y_pred": np.shape(run.y_pred),
              **{f"attribute {k!r}": np.shape(v) for k, v in run.attributes.items()}}
    if len(run.sha256):
        shapes["sha256"] = (len(run.sha256),)
    bad = {k: s for k, s in shapes.items() if s != (n,)}
    if bad:
        raise ValueError(f"run {run.name!r}: every per-image column must have shape ({n},) like paths, got {bad}")
    for k in ("y_true", "y_pred"):
        v = np.asarray(getattr(run, k))
        if not np.issubdtype(v.dtype, np.integer) or v.min() < 0 or v.max() >= len(run.labels):
            raise ValueError(f"run {run.name!r}: {k} must hold class indices in [0, {len(run.labels)}), "
                             f"got dtype {v.dtype}, range [{v.min()}, {v.max()}]")
    if len(set(run.paths)) != n:
        dup = [p for p, k in zip(*np.unique(np.asarray(run.paths, dtype=str), return_counts=True)) if k > 1]
        raise UsageError(f"run {run.name!r} lists {len(dup)} path(s) more than once{_examples(dup)}",
                         hint="each image must appear once in a predictions file")


def _remap(run: PairedRun, labels: Sequence[str], y: np.ndarray) -> np.ndarray:
    """``run``'s class indices re-expressed in ``labels`` order (the class sets are equal)."""
    if tuple(run.labels) == tuple(labels):
        return y
    to = {lab: i for i, lab in enumerate(labels)}
    return np.array([to[lab] for lab in run.labels], dtype=np.int64)[y]


def _examples(paths: Sequence[str], k: int = 3) -> str:
    return f" (e.g. {', '.join(map(str, list(paths)[:k]))})" if len(paths) else ""


def _spread(paths: np.ndarray, y: np.ndarray, k: int) -> tuple[str, ...]:
    """Up to ``k`` of ``paths``, taken in turn from each class, so every class with such images shows."""
    by_class = [paths[y == c].tolist() for c in np.unique(y)]
    out: list[str] = []
    for i in range(max(map(len, by_class), default=0)):
        out += [p[i] for p in by_class if i < len(p)]
        if len(out) >= k:
            break
    return tuple(out[:k])


def _table(right_c: np.ndarray, right_b: np.ndarray) -> PairedTable:
    return PairedTable(int((right_c & right_b).sum()), int((right_c & ~right_b).sum()),
                       int((~right_c & right_b).sum()), int((~right_c & ~right_b).sum()))


def _per_class(y: np.ndarray, right_c: np.ndarray, right_b: np.ndarray, labels: Sequence[str]) -> tuple[ClassChange, ...]:
    c = len(labels)
    n = np.bincount(y, minlength=c)
    only_c = np.bincount(y[right_c & ~right_b], minlength=c)
    only_b = np.bincount(y[right_b & ~right_c], minlength=c)
    return tuple(ClassChange(str(labels[i]), int(n[i]), int(only_c[i]), int(only_b[i])) for i in range(c))


def _aligned_attributes(candidate: PairedRun, baseline: PairedRun, order: np.ndarray) -> dict[str, np.ndarray]:
    """Attribute columns of either run in candidate order; a column both carry must agree."""
    out = {k: _as_str(v) for k, v in candidate.attributes.items()}
    for k, v in baseline.attributes.items():
        v = _as_str(v)[order]
        if k in out and not np.array_equal(out[k], v):
            bad = np.asarray(candidate.paths, dtype=object)[out[k] != v].tolist()
            raise UsageError(f"attribute {k!r} differs between the runs for {len(bad)} image(s){_examples(bad)}",
                             hint="audit both models with the same metadata")
        out.setdefault(k, v)
    return out


def _as_str(values) -> np.ndarray:
    v = np.asarray(values, dtype=object)
    return np.array([MISSING if x is None or x != x or x == "" else str(x) for x in v.tolist()], dtype=object)


def _slices(attributes: Mapping[str, np.ndarray], right_c: np.ndarray, right_b: np.ndarray, level: float,
            max_levels: int) -> tuple[tuple[SliceChange, ...], tuple[tuple[str, int], ...]]:
    rows, unsliced = [], []
    for name in sorted(attributes):
        values = attributes[name]
        levels, codes = np.unique(values.astype(str), return_inverse=True)
        if len(levels) > max_levels:
            unsliced.append((name, len(levels)))
            continue
        for i, lev in enumerate(levels.tolist()):
            m = codes == i
            t = _table(right_c[m], right_b[m])
            rows.append((name, lev, int(m.sum()), int(right_c[m].sum()), int(right_b[m].sum()), t))
    p = [mcnemar_exact(t.candidate_only, t.baseline_only) for *_, t in rows]
    q = benjamini_hochberg(np.array(p)) if p else []
    return tuple(
        SliceChange(name, lev, n, proportion_ci(kc, n, level=level), proportion_ci(kb, n, level=level),
                    paired_difference_ci(t.array(), level=level), pv, float(qv))
        for (name, lev, n, kc, kb, t), pv, qv in zip(rows, p, q)
    ), tuple(unsliced)
