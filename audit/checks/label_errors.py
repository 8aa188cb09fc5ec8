"""Suspected label errors in the test set, found by cleanlab on the audit's own probabilities.

cleanlab's confident learning (Northcutt, Jiang & Chuang 2021) estimates, per pair of classes,
how often a given label disagrees with what the model confidently predicts, and flags the images
whose given label is least likely; they are ranked by self-confidence, the probability the model
gives to the given label (lowest first). Nothing is re-implemented here: this module calls
cleanlab, records what it says and adds accuracy with and without the flagged images.

The result is information, never judged by default: a flagged image is a candidate for a
second look, not a confirmed error (see ``CAVEAT``).

Scale. ``method="auto"`` runs ``cleanlab.filter.find_label_issues`` (the full confident-learning
filter, ``prune_by_noise_rate``) while N x C is at most ``MAX_DIRECT_CELLS``, and cleanlab's
batched path ``cleanlab.experimental.label_issues_batched.find_label_issues_batched`` above it.
The batched path reads the probabilities in fixed-size batches (memory bounded by
``batch_size`` x C, so it also works on a memory-mapped array) but flags by low self-confidence,
which finds fewer of the errors; the result records which method ran. Both lists are ranked
by self-confidence. Measured (``benchmarks/label_errors.py``, 100k x 1,000): confident learning
allocates about twice the probabilities on top of them, the batched path about once (cleanlab
2.9 still makes one full-size pass at its end), so ``MAX_DIRECT_CELLS`` bounds the extra memory
of the default path near 800 MB.

As a registered check (``label_errors``, on by default, ``--no-label-errors`` to skip it) it runs
on the Predictions table; ``[audit.label_errors]`` sets the method, the cap and how many suspects
are listed. Its one criterion, the flagged share, is information (``judged = false``).

Example::

    res = find_label_errors(y_true, proba)
    res.n_flagged, res.issues[0].index, res.accuracy_without.value
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from audit.context import AuditContext
from audit.contract import CardPart, CheckSpec
from audit.findings import Finding
from audit.label_issues import cleanlab_module, run_cleanlab
from audit.predictions import Predictions
from audit.power import Sampling
from audit.settings import Section, setting, unit
from audit.side_process import SUPPORTED as side_process_supported
from audit.side_process import SideProcess, side_process
from audit.stats import Estimate, proportion_ci
from audit.text import fmt
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

METHODS = ("auto", "confident_learning", "batched")
MAX_DIRECT_CELLS = 100_000_000  # N x C; 100k images x 1,000 classes (400 MB of float32 probabilities)
BATCH_SIZE = 10_000
CAVEAT = (
    "Suspected, not confirmed: these are the images whose given label the model finds least likely. "
    "In published studies about half of such flagged items are real label errors (51% on average "
    "over ten benchmark test sets, Northcutt, Athalye & Mueller 2021, \"Pervasive Label Errors in "
    "Test Sets Destabilize Machine Learning Benchmarks\"); the rest are hard or ambiguous images "
    "or model mistakes. Review them before relabelling. This check is never judged by default."
)


@dataclass(frozen=True)
class LabelErrorsConfig(Section):
    """``[audit.label_errors]``: suspected label errors, reported for information unless ``judged``."""

    section: ClassVar[str] = "label_errors"
    enabled: bool = True
    method: str = setting("auto", choices=METHODS)
    max_cells: int = setting(MAX_DIRECT_CELLS, ge=1)  # "auto": N x C above this runs the batched path
    batch_size: int = setting(BATCH_SIZE, ge=100)  # rows per batch on the batched path
    max_listed: int = setting(50, ge=0, le=100_000)  # suspects listed in the report and verdict.json
    max_thumbnails: int = setting(24, ge=0, le=1000)  # of the listed suspects, shown as thumbnails
    max_share: float = unit(0.05)  # the limit shown next to the flagged share
    judged: bool = False  # True: a flagged share above max_share fails the audit


@dataclass(frozen=True)
class SuspectedLabelError:
    """One flagged image; ``rank`` 0 is the most suspect."""

    rank: int
    index: int  # row in the inputs (the Predictions table)
    given: int  # the label in the data
    predicted: int  # the model's top-1 class
    self_confidence: float  # probability of the given label: cleanlab's ranking score (lower = more suspect)
    predicted_confidence: float  # probability of the predicted class
    path: str = ""  # the image, when the caller named the rows

    def to_dict(self, labels: Sequence[str] = ()) -> dict[str, Any]:
        names = {"given_label": labels[self.given], "predicted_label": labels[self.predicted]} if labels else {}
        return {"rank": self.rank, "index": self.index, "path": self.path, "given": self.given,
                "predicted": self.predicted, **names, "self_confidence": self.self_confidence,
                "predicted_confidence": self.predicted_confidence}


@dataclass(frozen=True)
class LabelErrorsResult:
    n: int
    n_classes: int
    method: str  # "confident_learning" or "batched": what actually ran
    n_flagged: int
    issues: tuple[SuspectedLabelError, ...]  # ranked; at most max_listed of the n_flagged
    flagged_per_class: tuple[int, ...]  # flagged images per given label
    accuracy: Estimate  # all images (Wilson interval)
    accuracy_without: Estimate  # flagged images left out (Wilson interval)
    notes: tuple[str, ...]  # what cleanlab warned about (e.g. classes too small to flag)
    labels: tuple[str, ...] = ()  # class names, when the caller gave them
    caveat: str = CAVEAT
    judged: bool = False

    @property
    def flagged_fraction(self) -> float:
        return self.n_flagged / self.n if self.n else float("nan")

    @property
    def flagged_share(self) -> Estimate:
        return proportion_ci(self.n_flagged, self.n, level=self.accuracy.level)

    @property
    def flagged_by_class(self) -> tuple[tuple[str, int], ...]:
        """(given label, flagged images) of the classes with any, most first."""
        rows = [(self.label(i), k) for i, k in enumerate(self.flagged_per_class) if k]
        return tuple(sorted(rows, key=lambda x: -x[1]))

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels else str(i)

    def to_dict(self) -> dict[str, Any]:
        per_class = dict(zip(self.labels, self.flagged_per_class)) if self.labels else list(self.flagged_per_class)
        return {
            "n": self.n, "n_classes": self.n_classes, "method": self.method, "n_flagged": self.n_flagged,
            "flagged_share": self.flagged_share.to_dict(),
            "flagged_per_class": per_class, "accuracy": self.accuracy.to_dict(),
            "accuracy_without": self.accuracy_without.to_dict(), "notes": list(self.notes),
            "caveat": self.caveat, "judged": self.judged, "issues": [i.to_dict(self.labels) for i in self.issues],
        }


def check_inputs(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise: ``y_true`` (N,) ints in [0, C), ``proba`` (N, C) finite, rows summing to 1."""
    y = np.asarray(y_true)
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must be a 2-D (N, C) array with C >= 2 classes, got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"y_true must have shape ({p.shape[0]},) to match proba {p.shape}, got {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"y_true must hold class indices in [0, {p.shape[1]}), got dtype {y.dtype}, "
                         f"range [{y.min()}, {y.max()}]")
    # min/max propagate NaN and see inf without N x C temporaries (100k x 1,000 is 400 MB)
    if p.size and not (p.min() >= 0 and p.max() <= 1 + 1e-6 and np.allclose(p.sum(axis=1), 1.0, atol=1e-3)):
        raise ValueError("proba must hold probabilities (finite, >= 0, rows summing to 1); apply a softmax first")
    return y.astype(np.int64, copy=False), p


def find_label_errors(
    y_true,
    proba,
    *,
    method: str = "auto",
    max_cells: int = MAX_DIRECT_CELLS,
    batch_size: int = BATCH_SIZE,
    max_listed: int | None = None,
    level: float = 0.95,
    labels: Sequence[str] = (),
    paths: Sequence[str] = (),
    side: SideProcess | None = None,
) -> LabelErrorsResult:
    """Flag suspected label errors with cleanlab and report accuracy with and without them.

    ``proba`` must be out-of-sample (the audit's test-set predictions are). ``method``: "auto"
    (confident learning while N x C <= ``max_cells``, else batched), "confident_learning" or
    "batched". ``max_listed`` caps the ranked list kept in the result (``n_flagged`` counts all).
    ``labels`` (class names) and ``paths`` (one per row) only name things in the result. cleanlab runs in
    ``side`` when given (``audit.side_process``), else here.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    y, p = check_inputs(y_true, proba)
    n, c = p.shape
    if method == "auto":
        method = "confident_learning" if n * c <= max_cells else "batched"
    if n and y.min() != y.max():
        ranked, notes = run_cleanlab(y, p, method, batch_size, side=side)
    else:  # cleanlab needs two given classes to estimate how often one is mistaken for another
        ranked, notes = np.zeros(0, np.int64), ("fewer than two classes among the given labels: nothing to flag",)
    y_pred = p.argmax(axis=1)
    correct = y_pred == y
    flagged = np.zeros(n, bool)
    flagged[ranked] = True
    listed = ranked if max_listed is None else ranked[:max_listed]
    cols = (listed, y[listed], y_pred[listed], p[listed, y[listed]], p[listed, y_pred[listed]])
    names = [str(paths[i]) for i in listed] if len(paths) else [""] * len(listed)
    issues = tuple(SuspectedLabelError(r, *row, path) for r, (row, path)
                   in enumerate(zip(zip(*(c.tolist() for c in cols)), names)))
    keep = ~flagged
    return LabelErrorsResult(
        n=n, n_classes=c, method=method, n_flagged=int(flagged.sum()), issues=issues,
        flagged_per_class=tuple(np.bincount(y[flagged], minlength=c).tolist()),
        accuracy=proportion_ci(int(correct.sum()), n, level=level),
        accuracy_without=proportion_ci(int(correct[keep].sum()), int(keep.sum()), level=level),
        notes=_named(notes, labels), labels=tuple(labels),
    )


def _named(notes: Sequence[str], labels: Sequence[str]) -> tuple[str, ...]:
    """cleanlab names classes by index ("class: 2"); say the class name instead."""
    if not labels:
        return tuple(notes)
    return tuple(re.sub(r"class: (\d+)", lambda m: f"class {labels[int(m.group(1))]!r}", x) for x in notes)


# --- the registered check ------------------------------------------------------------------------------


# Up to this many images cleanlab runs in the side process. Above it, here: importing it (1.3 s) is then a few
# percent of the run, while the side process's own interpreter (about 75 MB more than the libraries in this
# process) and its copy of the probabilities are not (docs/ARCHITECTURE.md §12; benchmarks/memory_repeats.py).
SIDE_PROCESS_MAX_IMAGES = 250_000


def _prepare(ctx: AuditContext) -> SideProcess | None:
    """Start importing cleanlab (with scikit-learn, scipy and pandas: about 1.3 s of CPU) in the side process
    while the model runs here; ``_run`` then calls cleanlab there. None above ``SIDE_PROCESS_MAX_IMAGES``, and where
    there is no side process (not POSIX): cleanlab then runs here."""
    if len(ctx.source.samples) > SIDE_PROCESS_MAX_IMAGES or not side_process_supported:
        return None
    return side_process(cleanlab_module(ctx.config.label_errors.method))


def _run(ctx: AuditContext) -> LabelErrorsResult:
    cfg, preds = ctx.config.label_errors, ctx.predictions
    res = find_label_errors(preds.y_true, preds.proba, method=cfg.method, max_cells=cfg.max_cells,
                            batch_size=cfg.batch_size, max_listed=cfg.max_listed, labels=preds.labels,
                            paths=preds.paths, side=ctx.prepared.get("label_errors"))
    return dataclasses.replace(res, judged=cfg.judged)


def criteria(res: LabelErrorsResult, config: AuditConfig) -> list[Criterion]:
    """The flagged share against ``max_share``: information unless ``label_errors.judged``."""
    cfg = config.label_errors
    detail = (f"{res.n_flagged} of {res.n} images flagged by cleanlab ({res.method.replace('_', ' ')}); "
              f"accuracy {res.accuracy.value:.3f} with them, {res.accuracy_without.value:.3f} without; "
              "suspected, not confirmed")
    m = Measure("label_errors.flagged_share", "Share of images suspected mislabeled", res.flagged_share, False, detail,
                sampling=Sampling(res.n))
    return [judge(m, cfg.max_share, judged=cfg.judged)]


def findings(res: LabelErrorsResult, config: AuditConfig) -> list[Finding]:
    if not res.n_flagged:
        return []
    top = ", ".join(f"{i.path or i.index} ({res.label(i.given)} → {res.label(i.predicted)})" for i in res.issues[:2])
    text = (f"{res.n_flagged} test image(s) ({100 * res.flagged_fraction:.1f}%) look mislabeled to cleanlab, "
            f"e.g. {top}; accuracy without them would be {res.accuracy_without.value:.3f} instead of "
            f"{res.accuracy.value:.3f}. Suspected, not confirmed: review them.")
    return [Finding("warn" if res.flagged_fraction > config.label_errors.max_share else "info", text,
                    "label_errors", importance=res.flagged_fraction, criterion="label_errors.flagged_share")]


def card(res: LabelErrorsResult, config: AuditConfig | None) -> CardPart:
    if not res.n_flagged:
        return CardPart()
    return CardPart(limitations=(
        f"cleanlab flags {res.n_flagged} of {res.n} test images as possibly mislabeled; accuracy without them "
        f"{fmt(res.accuracy_without.value)} instead of {fmt(res.accuracy.value)}. Suspected, not confirmed: about "
        "half of such flags are real label errors in published studies.",))


def thumbnails(res: LabelErrorsResult, ctx: AuditContext) -> list[tuple]:
    return [(ctx.source, i.path) for i in res.issues[:ctx.config.label_errors.max_thumbnails] if i.path]


SPEC = CheckSpec("label_errors", "suspected label errors", _run, config=LabelErrorsConfig,
                 enabled=lambda c: c.label_errors.enabled, prepare=_prepare, criteria=criteria, thumbnails=thumbnails,
                 findings=findings, card=card, toggle=True)
