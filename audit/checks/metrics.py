"""Classification metrics with confidence intervals (docs/ARCHITECTURE.md §4.3).

Proportions get a Wilson score interval: accuracy (correct / images), top-k accuracy, and per
class precision (true positives / predicted) and recall (true positives / support). Unlike the
percentile bootstrap, it does not collapse to a point on a small or perfect sample: 12 of 12
correct is [0.76, 1], not [1, 1]. Duplicated test images (exact copies and confirmed near
duplicates, ``Predictions.clusters``) are not independent evidence: each proportion's interval
is computed on its effective sample size (``audit.clusters``). The numbers that are not one
proportion (balanced accuracy, macro and weighted F1, per-class F1) keep the percentile
bootstrap, resampling whole duplicate clusters within each true class (the test set's class
make-up is fixed by design).

The bootstrap works on per-class counts (true positives, support, predicted: O(classes) per
resample, all resamples of a chunk in three weighted ``bincount`` calls), never on a classes x
classes matrix per resample, so 1,000 replicates stay cheap at 1,000 classes. Conventions follow
scikit-learn: precision/recall/F1 of a class with no predicted/true samples is 0 (its interval is
undefined); macro averages run over the classes present in ``y_true`` or ``y_pred``; balanced
accuracy is the mean recall over classes present in ``y_true``.

Example::

    m = classification_metrics(preds, n_boot=1000, seed=0)
    m.accuracy.value, m.accuracy.low, m.per_class[0].f1, m.n_eff
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from audit.clusters import bootstrap_weighted, clustered_proportion, grouped_proportions
from audit.context import AuditContext
from audit.contract import CardPart, CheckSpec
from audit.findings import Finding
from audit.power import Sampling
from audit.predictions import Predictions
from audit.stats import Estimate, proportion_ci
from audit.svg import ACCENT, BAD, Bar, Canvas, ci_bounds, heatmap, intervals, short_label
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

MAX_CLASSES = 40  # per-class charts show at most this many classes (the worst); names beyond that are unreadable


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    support: int
    predicted: int
    precision: Estimate
    recall: Estimate
    f1: Estimate

    @property
    def zero_f1(self) -> bool:
        """A class with test images that the model never gets right (what ``no_zero_f1`` counts)."""
        return self.support > 0 and self.f1.value == 0


@dataclass(frozen=True)
class MetricsResult:
    n: int
    accuracy: Estimate
    balanced_accuracy: Estimate
    macro_f1: Estimate
    weighted_f1: Estimate
    top_k: tuple[tuple[int, Estimate], ...]
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray  # (C, C) counts, rows = true label
    top_k_not_computed: tuple[int, ...] = ()  # configured k that are not below the number of classes
    n_eff: float = float("nan")  # effective images behind the accuracy (duplicates count once per cluster)
    clusters: int = 0  # duplicate clusters (images without a duplicate are their own)

    @property
    def headline(self) -> tuple[tuple[str, Estimate], ...]:
        """(name, estimate) of the summary metrics, in report order."""
        return (("Accuracy", self.accuracy), ("Balanced accuracy", self.balanced_accuracy),
                ("Macro F1", self.macro_f1), ("Weighted F1", self.weighted_f1),
                *((f"Top-{k} accuracy", e) for k, e in self.top_k))

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "n_eff": round(self.n_eff, 1),
            "clusters": self.clusters,
            "accuracy": self.accuracy.to_dict(),
            "balanced_accuracy": self.balanced_accuracy.to_dict(),
            "macro_f1": self.macro_f1.to_dict(),
            "weighted_f1": self.weighted_f1.to_dict(),
            **{f"top_{k}_accuracy": e.to_dict() for k, e in self.top_k},
            "top_k_not_computed": list(self.top_k_not_computed),
            "per_class": {pc.label: {"support": pc.support, "precision": pc.precision.to_dict(),
                                     "recall": pc.recall.to_dict(), "f1": pc.f1.to_dict()} for pc in self.per_class},
            "confusion": self.confusion.tolist(),
        }


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def class_counts(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class counts of the k resamples in ``idx``: (3, k, C) true positives, support, predicted."""
    k = idx.shape[0]
    offset = (np.arange(k) * n_classes)[:, None]
    yt, yp = y_true[idx], y_pred[idx]
    size = k * n_classes
    support = np.bincount((yt + offset).ravel(), minlength=size)
    predicted = np.bincount((yp + offset).ravel(), minlength=size)
    tp = np.bincount((yt + offset).ravel(), weights=(yt == yp).ravel(), minlength=size)
    return np.stack([tp, support, predicted]).reshape(3, k, n_classes).astype(float)


def summarize_counts(counts: np.ndarray) -> np.ndarray:
    """Metrics of per-class counts (3, k, C) as (k, 3 + C) columns.

    Columns: balanced accuracy, macro F1, weighted F1, then per class F1 (C).
    """
    tp, support, predicted = counts
    n = support.sum(axis=1)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    present = (support > 0) | (predicted > 0)
    in_true = support > 0
    balanced = _safe_div((recall * in_true).sum(axis=1), in_true.sum(axis=1))
    macro_f1 = _safe_div((f1 * present).sum(axis=1), present.sum(axis=1))
    weighted_f1 = _safe_div((f1 * support).sum(axis=1), n)
    return np.column_stack([balanced, macro_f1, weighted_f1, f1])


def weighted_class_counts(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class counts (3, k, C) of k weightings ``w`` (k, N) of the rows: true positives, support, predicted.

    While C x C cells are no more than the rows, one weighted confusion matrix per weighting (one pass over
    the rows, not three) gives all three; with more classes, three per-class passes (no k x C x C array)."""
    k, c = w.shape[0], n_classes
    if c * c <= w.shape[1]:
        at = ((y_true * c + y_pred)[None, :] + (np.arange(k) * (c * c))[:, None]).ravel()
        m = np.bincount(at, weights=w.ravel(), minlength=k * c * c).reshape(k, c, c)
        return np.stack([np.diagonal(m, axis1=1, axis2=2), m.sum(axis=2), m.sum(axis=1)])
    offset = (np.arange(k) * n_classes)[:, None]
    size = k * n_classes
    wt = w.ravel()
    true_at = (y_true[None, :] + offset).ravel()
    support = np.bincount(true_at, weights=wt, minlength=size)
    predicted = np.bincount((y_pred[None, :] + offset).ravel(), weights=wt, minlength=size)
    tp = np.bincount(true_at, weights=(w * (y_true == y_pred)[None, :]).ravel(), minlength=size)
    return np.stack([tp, support, predicted]).reshape(3, k, n_classes)


def _share(k: int, n: int) -> Estimate:
    """A proportion with its Wilson interval; scikit-learn's 0 (and no interval) when ``n`` is 0."""
    return proportion_ci(k, n) if n else Estimate(0.0, float("nan"), float("nan"))


def _shares(success: np.ndarray, groups: np.ndarray, n_groups: int, ids: np.ndarray | None) -> list[Estimate]:
    """Per group: the share of ``success`` (Wilson on the effective size with clusters), 0 for an empty group."""
    if ids is None:
        k = np.bincount(groups, weights=success, minlength=n_groups).astype(int)
        n = np.bincount(groups, minlength=n_groups)
        return [_share(int(a), int(b)) for a, b in zip(k, n)]
    return [e if n_eff else _share(0, 0) for e, n_eff in grouped_proportions(success, groups, n_groups, ids)]


def top_k_correct(y_true: np.ndarray, proba: np.ndarray, k: int) -> np.ndarray:
    """Whether the true class is among the k most probable (ties broken by class order)."""
    # rank = number of classes strictly more probable than the true one (scikit-learn counts ties the same way)
    true_p = proba[np.arange(len(y_true)), y_true]
    return (proba > true_p[:, None]).sum(axis=1) < k


def classification_metrics(
    preds: Predictions, *, n_boot: int = 1000, seed: int = 0, top_k: tuple[int, ...] = (1, 3, 5)
) -> MetricsResult:
    """Accuracy, balanced accuracy, macro/weighted F1, per-class P/R/F1 and top-k, each with a CI.

    Top-k accuracies are computed for ``1 < k < classes``; larger k are listed in ``top_k_not_computed``.
    """
    c = len(preds.labels)
    y_true, y_pred = preds.y_true, preds.y_pred
    n, ids = len(y_true), preds.clusters
    # the counts read rows only through their (true, predicted) cell: groups of interchangeable clusters
    ests = bootstrap_weighted(lambda rows, w: summarize_counts(weighted_class_counts(y_true[rows], y_pred[rows], w, c)),
                              y_true, ids, keys=y_true.astype(np.int64) * c + y_pred, n_boot=n_boot, seed=seed)
    cm = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    right = y_true == y_pred
    recall, precision = _shares(right, y_true, c, ids), _shares(right, y_pred, c, ids)
    per_class = tuple(
        ClassMetrics(label=preds.labels[i], support=int(support[i]), predicted=int(predicted[i]),
                     precision=precision[i], recall=recall[i], f1=ests[3 + i])
        for i in range(c)
    )
    tops = []
    for k in sorted({k for k in top_k if 1 < k < c}):
        tops.append((k, clustered_proportion(top_k_correct(y_true, preds.proba, k), ids)[0]))
    accuracy, n_eff = clustered_proportion(right, ids) if n else (_share(0, 0), 0.0)
    return MetricsResult(
        n=n,
        accuracy=accuracy,
        balanced_accuracy=ests[0],
        macro_f1=ests[1],
        weighted_f1=ests[2],
        top_k=tuple(tops),
        per_class=per_class,
        confusion=cm,
        top_k_not_computed=tuple(sorted({k for k in top_k if k >= c})),
        n_eff=n_eff,
        clusters=n if ids is None else len(np.unique(ids)),
    )


def measures(m: MetricsResult, config: AuditConfig | None = None) -> list[Measure]:
    """Every comparable number of the metrics, by the id its criterion (if any) uses."""
    sampling = Sampling(m.n, m.n_eff)
    out = [Measure("accuracy", f"Accuracy ({len(m.per_class)} classes)", m.accuracy, True, sampling=sampling),
           Measure("balanced_accuracy", "Balanced accuracy", m.balanced_accuracy, True),
           Measure("macro_f1", "Macro F1", m.macro_f1, True),
           Measure("weighted_f1", "Weighted F1", m.weighted_f1, True)]
    out += [Measure(f"top_{k}_accuracy", f"Top-{k} accuracy", e, True, sampling=sampling) for k, e in m.top_k]
    out += [Measure(f"class_f1.{pc.label}", f"F1 of class {pc.label}", pc.f1, True) for pc in m.per_class if pc.support]
    return out


def criteria(m: MetricsResult, config: AuditConfig) -> list[Criterion]:
    """Accuracy above the class-count rule; no class with F1 = 0; optionally every class's F1 above a minimum."""
    c = config.criteria
    by_id = {x.id: x for x in measures(m)}
    out = [judge(by_id["accuracy"], c.accuracy_threshold(len(m.per_class)), strict=True)]
    judged = [pc for pc in m.per_class if pc.support > 0]
    if c.fail_on_zero_f1:
        zero = [pc.label for pc in judged if pc.zero_f1]
        out.append(judge(Measure.count("no_zero_f1", "Classes with F1 = 0", len(zero),
                                       detail="classes with F1 = 0: " + (", ".join(zero) if zero else "none")), 0))
    if c.min_class_f1 is not None:
        out += [judge(by_id[f"class_f1.{pc.label}"], c.min_class_f1) for pc in judged]
    return out


def findings(m: MetricsResult, config: AuditConfig | None) -> list[Finding]:
    """The weakest class (lowest F1) and what it is most often mistaken for."""
    present = [i for i, pc in enumerate(m.per_class) if pc.support > 0]
    if len(present) < 2:
        return []
    i = min(present, key=lambda j: m.per_class[j].f1.value)
    weak = m.per_class[i]
    wrong = m.confusion[i].copy()
    wrong[i] = 0
    j = int(wrong.argmax())
    mistaken = (f"; most often mistaken for {m.per_class[j].label} ({int(wrong[j])} of its {weak.support} images)"
                if wrong[j] else "")
    f1 = weak.f1
    text = (f"Weakest class: {weak.label}, F1 {f1.value:.3f} [{f1.low:.3f}, {f1.high:.3f}] against a macro F1 of "
            f"{m.macro_f1.value:.3f}{mistaken}.")
    return [Finding("info", text, "metrics", importance=m.macro_f1.value - f1.value, criterion=f"class_f1.{weak.label}")]


def summary(m: MetricsResult, config: AuditConfig | None) -> list[Measure]:
    """summary.md's closing line: the averages over classes (accuracy is a criterion already)."""
    return measures(m)[1:3]


def card(m: MetricsResult, config: AuditConfig | None) -> CardPart:
    """model_card.md: every metric with its CI (per-class F1 included)."""
    return CardPart(measures=tuple(measures(m)))


def charts(m: MetricsResult, config: AuditConfig) -> dict[str, Canvas]:
    labels = [pc.label for pc in m.per_class]
    return {"f1_bars": f1_bars(m.per_class, config.criteria.min_class_f1),
            "confusion": confusion_heatmap(m.confusion, labels)}


def confusion_heatmap(confusion: np.ndarray, labels: Sequence[str]) -> Canvas:
    """Row-normalised confusion matrix; cells show the share of the true class (and the count).

    Beyond ``MAX_CLASSES`` classes it shows the ``MAX_CLASSES`` classes with the most errors (as true
    or predicted class), still normalised by each true class's full count.
    """
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    keep = np.arange(len(labels))
    note = ""
    if len(labels) > MAX_CLASSES:
        errors = confusion.sum(axis=0) + confusion.sum(axis=1) - 2 * np.diagonal(confusion)
        keep = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES])
        note = f" ({MAX_CLASSES} of {len(labels)} classes: those with the most errors)"
    sub, counts = norm[np.ix_(keep, keep)], confusion[np.ix_(keep, keep)]
    texts = [[f"{sub[i, j]:.2f}\n{counts[i, j]}" if counts[i, j] and len(keep) <= 20 else ""
              for j in range(len(keep))] for i in range(len(keep))]
    return heatmap(sub.tolist(), texts, [short_label(labels[k]) for k in keep], xlabel="predicted" + note,
                   ylabel="true", scale_label="share of true class")


def f1_bars(per_class: Sequence[ClassMetrics], threshold: float | None = None) -> Canvas:
    """Per-class F1 with 95% CI error bars, worst class first (the ``MAX_CLASSES`` worst)."""
    items = sorted(per_class, key=lambda pc: pc.f1.value)[:MAX_CLASSES]
    bars = []
    for pc in items:
        v, lo, hi = ci_bounds(pc.f1)
        bars.append([Bar(v, lo, hi, BAD if (v == 0 or (threshold is not None and v < threshold)) else ACCENT)])
    lines = [(threshold, BAD, True)] if threshold is not None else []
    return intervals([short_label(pc.label) for pc in items], bars, lo=0, hi=1, xlabel="F1 (95% CI)", lines=lines)


def _run(ctx: AuditContext) -> MetricsResult:
    c = ctx.config
    return classification_metrics(ctx.predictions, n_boot=c.n_boot, seed=c.seed, top_k=c.top_k)


SPEC = CheckSpec("metrics", "metrics + bootstrap", _run, criteria=criteria, comparable=measures, findings=findings,
                 summary=summary, card=card, charts=charts)
