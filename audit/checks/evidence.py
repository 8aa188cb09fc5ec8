"""Evidence: is there enough of it for the other criteria to mean anything?

A verdict is only as good as the data under it. Three criteria, judged by default:

* **images per label**: every label of the model has at least ``min_images_per_label`` *distinct*
  processed test images (by SHA-256: ten copies of one image are one image). Default 10: with 10
  images of a class all classified correctly, the 95% Wilson lower bound of its recall is 0.72
  (with 5 it is 0.57, with 1 it is 0.21), so fewer images say almost nothing about that class; 10
  is also the fairness check's minimum of positives per group.
  A model audited on a subset of its classes sets it to 0 (``--min-images-per-label 0``).
* **processed share**: processed images / candidate files >= ``min_processed_share`` (default 0.9).
  Candidates are the files found minus hidden files and duplicate manifest
  rows; empty, undecodable, missing or non-finite-output files count against it.
* **copies**: at most ``max_copy_share`` (default 0.01) of the processed images repeat the bytes of
  another one; each copy counts its image again in every number (a class of 10 copies of one image
  would score 1.000 [0.72, 1.00]). Near duplicates are the integrity check's, reported there.
* **finite outputs**: at most ``max_non_finite`` (default 0) images for which the model output NaN
  or Inf. Such rows are never scored (the engine sets them aside as skipped); this criterion
  names them.

The baseline's own evidence criterion (at least one number compared) lives in ``baseline``.

Example::

    res = evidence(ctx)
    res.short_labels   # (("c9", 0), ...) labels below the minimum
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from audit.context import AuditContext
from audit.contract import CheckSpec, Option
from audit.duplicate_sets import Digests
from audit.settings import Section, setting, unit
from audit.sources.base import NON_FINITE, NOT_DATA
from audit.stats import Estimate
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

SHOWN = 8  # labels or files named in a criterion's detail


@dataclass(frozen=True)
class EvidenceConfig(Section):
    """Evidence criteria: enough images per label, most files usable, finite model outputs."""

    section: ClassVar[str] = "evidence"
    min_images_per_label: int = setting(10, ge=0)  # every model label needs this many processed test images
    min_processed_share: float = unit(0.9)  # processed images / candidate files
    max_copy_share: float = unit(0.01)  # processed images whose bytes repeat an earlier processed image's
    max_non_finite: int = setting(0, ge=0)  # images whose model output is NaN or Inf


@dataclass(frozen=True)
class EvidenceResult:
    min_images_per_label: int
    label_counts: tuple[tuple[str, int], ...]  # distinct processed images per model label, in label order
    found: int
    candidates: int  # found minus hidden files and duplicate rows
    processed: int
    skip_reasons: tuple[tuple[str, int], ...]  # (reason, files) of skipped candidates, most frequent first
    non_finite: tuple[str, ...]  # paths of images whose model output was NaN or Inf
    copies: int = 0  # processed images whose bytes repeat an earlier processed image's (SHA-256)
    copied: tuple[str, ...] = ()  # a few of them, for the detail
    image_counts: tuple[tuple[str, int], ...] = ()  # processed images per model label, copies included

    @property
    def short_labels(self) -> tuple[tuple[str, int], ...]:
        return tuple((lab, n) for lab, n in self.label_counts if n < self.min_images_per_label)

    @property
    def copy_share(self) -> float:
        return self.copies / self.processed if self.processed else float("nan")

    @property
    def processed_share(self) -> float:
        return self.processed / self.candidates if self.candidates else float("nan")

    def to_dict(self) -> dict:
        return {"min_images_per_label": self.min_images_per_label, "short_labels": dict(self.short_labels),
                "found": self.found, "candidates": self.candidates, "processed": self.processed,
                "skip_reasons": dict(self.skip_reasons), "non_finite": list(self.non_finite),
                "copies": self.copies, "image_counts": dict(self.image_counts)}


def evidence(ctx: AuditContext) -> EvidenceResult:
    """Coverage of the model's labels and of the files found, from the inference pass."""
    preds, source = ctx.predictions, ctx.source
    counts = np.bincount(preds.y_true, minlength=len(preds.labels))
    copied = _copies(ctx)
    distinct = np.bincount(preds.y_true[~copied], minlength=len(preds.labels))
    skipped = [s for s in (*source.skipped, *ctx.rejected) if s.reason not in NOT_DATA]
    return EvidenceResult(
        min_images_per_label=ctx.config.evidence.min_images_per_label,
        label_counts=tuple((lab, int(n)) for lab, n in zip(preds.labels, distinct)),
        found=source.found, candidates=source.candidates, processed=len(preds),
        skip_reasons=tuple(collections.Counter(s.reason for s in skipped).most_common()),
        non_finite=tuple(s.path for s in ctx.rejected if s.reason == NON_FINITE),
        copies=int(copied.sum()), copied=tuple(preds.paths[i] for i in np.flatnonzero(copied)[:SHOWN]),
        image_counts=tuple((lab, int(n)) for lab, n in zip(preds.labels, counts)),
    )


def _copies(ctx: AuditContext) -> np.ndarray:
    """(N,) bool: the rows whose bytes (SHA-256) repeat an earlier row's; none when the pass took no hashes. The
    groups are the pipeline's duplicate groups when it found them (no second sort of every digest)."""
    preds = ctx.predictions
    copied = np.zeros(len(preds), bool)
    if len(preds.sha256) != len(preds):
        return copied
    groups = ctx.test_pairs.copies_a if ctx.test_pairs is not None else Digests.of(preds.sha256).copies()
    copied[groups.rows] = True
    copied[groups.leaders()] = False  # the first of each group (its rows are in row order) is the original
    return copied


def criteria(res: EvidenceResult, config: AuditConfig) -> list[Criterion]:
    c = config.evidence
    short = res.short_labels
    fewest = min((n for _, n in res.label_counts), default=0)
    images = dict(res.image_counts)
    listed = ", ".join(f"{lab} ({n}" + (f" distinct of {images[lab]}" if images.get(lab, n) != n else "") + ")"
                       for lab, n in short[:SHOWN]) + (f", and {len(short) - SHOWN} more" if len(short) > SHOWN else "")
    detail = (f"{len(short)} of {len(res.label_counts)} labels below {c.min_images_per_label}: {listed} "
              f"(add test images, or lower evidence.min_images_per_label)" if short else
              f"every one of the {len(res.label_counts)} labels has at least {c.min_images_per_label}")
    per_label = Measure.count("evidence.images_per_label", "Fewest distinct test images of a model label", fewest,
                              higher_is_better=True, detail=detail)
    reasons = "; ".join(f"{n} {r}" for r, n in res.skip_reasons[:3])
    share = Measure("evidence.processed_share", "Share of the files found that were processed",
                    Estimate(res.processed_share, float("nan"), float("nan")), True,
                    f"{res.processed} of {res.candidates} candidate files"
                    + (f"; skipped: {reasons}" if reasons else ""))
    bad = res.non_finite
    files = ", ".join(bad[:SHOWN]) + (f", and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
    finite = Measure.count("evidence.non_finite", "Images with NaN or Inf model outputs (not scored)", len(bad),
                           detail=f"{len(bad)} image(s): {files}" if bad else "every output is finite")
    copies = Measure("evidence.copy_share", "Share of the test images that copy another test image's bytes",
                     Estimate(res.copy_share, float("nan"), float("nan")), False,
                     f"{res.copies} of {res.processed} images repeat an earlier image byte for byte (e.g. "
                     f"{', '.join(res.copied[:3])}): remove the copies, or raise evidence.max_copy_share"
                     if res.copies else "no two test images have the same bytes")
    return [judge(per_label, c.min_images_per_label), judge(share, c.min_processed_share),
            judge(copies, c.max_copy_share), judge(finite, c.max_non_finite)]


SPEC = CheckSpec(
    "evidence", "evidence", evidence, config=EvidenceConfig, criteria=criteria,
    options=(Option("--min-images-per-label", "evidence.min_images_per_label",
                    "test images every model label needs (default 10; 0 accepts labels without images)", "N", int),),
)
