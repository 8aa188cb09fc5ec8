"""Classification metrics with bootstrap CIs (DESIGN §6.1).

Everything derives from confusion matrices, which are computed for all bootstrap resamples at
once (``stats.confusion_matrices``), so 1,000 replicates over 10,000 predictions take a
fraction of a second. Conventions follow scikit-learn: precision/recall/F1 of a class with no
predicted/true samples is 0; macro averages run over the classes present in ``y_true`` or
``y_pred``; balanced accuracy is the mean recall over classes present in ``y_true``.

Example::

    m = classification_metrics(preds, n_boot=1000, seed=0)
    m.accuracy.value, m.accuracy.low, m.per_class[0].f1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.checks import CheckSpec
from audit.predictions import Predictions
from audit.stats import Estimate, bootstrap_many, confusion_matrices
from audit.verdict import Criterion, Measure, judge


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

    @property
    def confusion_normalized(self) -> np.ndarray:
        rows = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, rows, out=np.zeros(self.confusion.shape), where=rows > 0)

    @property
    def headline(self) -> tuple[tuple[str, Estimate], ...]:
        """(name, estimate) of the summary metrics, in report order."""
        return (("Accuracy", self.accuracy), ("Balanced accuracy", self.balanced_accuracy),
                ("Macro F1", self.macro_f1), ("Weighted F1", self.weighted_f1),
                *((f"Top-{k} accuracy", e) for k, e in self.top_k))

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy.to_dict(),
            "balanced_accuracy": self.balanced_accuracy.to_dict(),
            "macro_f1": self.macro_f1.to_dict(),
            "weighted_f1": self.weighted_f1.to_dict(),
            **{f"top_{k}_accuracy": e.to_dict() for k, e in self.top_k},
            "per_class": {pc.label: {"support": pc.support, "precision": pc.precision.to_dict(),
                                     "recall": pc.recall.to_dict(), "f1": pc.f1.to_dict()} for pc in self.per_class},
            "confusion": self.confusion.tolist(),
        }


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def summarize_confusion(cm: np.ndarray) -> np.ndarray:
    """Metrics of (k, C, C) confusion matrices as (k, 4 + 3C) columns.

    Columns: accuracy, balanced accuracy, macro F1, weighted F1, then per class precision,
    recall, F1 (C each).
    """
    cm = cm.astype(float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    n = support.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    present = (support > 0) | (predicted > 0)
    in_true = support > 0
    accuracy = _safe_div(tp.sum(axis=1), n)
    balanced = _safe_div((recall * in_true).sum(axis=1), in_true.sum(axis=1))
    macro_f1 = _safe_div((f1 * present).sum(axis=1), present.sum(axis=1))
    weighted_f1 = _safe_div((f1 * support).sum(axis=1), n)
    return np.column_stack([accuracy, balanced, macro_f1, weighted_f1, precision, recall, f1])


def top_k_correct(y_true: np.ndarray, proba: np.ndarray, k: int) -> np.ndarray:
    """Whether the true class is among the k most probable (ties broken by class order)."""
    # rank = number of classes strictly more probable than the true one (scikit-learn counts ties the same way)
    true_p = proba[np.arange(len(y_true)), y_true]
    return (proba > true_p[:, None]).sum(axis=1) < k


def classification_metrics(
    preds: Predictions, *, n_boot: int = 1000, seed: int = 0, top_k: tuple[int, ...] = (1, 3, 5)
) -> MetricsResult:
    """Accuracy, balanced accuracy, macro/weighted F1, per-class P/R/F1 and top-k, each with a CI."""
    c = len(preds.labels)
    y_true, y_pred = preds.y_true, preds.y_pred
    n = len(y_true)
    ks = sorted({k for k in top_k if 1 < k < c})
    top = [top_k_correct(y_true, preds.proba, k) for k in ks]
    cells = y_true * c + y_pred

    def statistic(idx: np.ndarray) -> np.ndarray:  # one pass over each resample for every number
        cm = np.bincount((cells[idx] + (np.arange(len(idx)) * c * c)[:, None]).ravel(), minlength=len(idx) * c * c)
        hits = [np.count_nonzero(t[idx], axis=1) / n for t in top]  # top-k accuracy of each resample
        return np.column_stack([summarize_confusion(cm.reshape(-1, c, c)), *hits])

    ests = bootstrap_many(statistic, n, n_boot=n_boot, seed=seed)
    cm = confusion_matrices(y_true, y_pred, np.arange(n)[None, :], c)[0]
    per_class = tuple(
        ClassMetrics(
            label=preds.labels[i],
            support=int(cm[i].sum()),
            predicted=int(cm[:, i].sum()),
            precision=ests[4 + i],
            recall=ests[4 + c + i],
            f1=ests[4 + 2 * c + i],
        )
        for i in range(c)
    )
    tops = [(k, ests[4 + 3 * c + j]) for j, k in enumerate(ks)]
    return MetricsResult(
        n=n,
        accuracy=ests[0],
        balanced_accuracy=ests[1],
        macro_f1=ests[2],
        weighted_f1=ests[3],
        top_k=tuple(tops),
        per_class=per_class,
        confusion=cm,
    )


def measures(m: MetricsResult) -> list[Measure]:
    """Every comparable number of the metrics, by the id its criterion (if any) uses."""
    out = [Measure("accuracy", f"Accuracy ({len(m.per_class)} classes)", m.accuracy, True),
           Measure("balanced_accuracy", "Balanced accuracy", m.balanced_accuracy, True),
           Measure("macro_f1", "Macro F1", m.macro_f1, True),
           Measure("weighted_f1", "Weighted F1", m.weighted_f1, True)]
    out += [Measure(f"top_{k}_accuracy", f"Top-{k} accuracy", e, True) for k, e in m.top_k]
    out += [Measure(f"class_f1.{pc.label}", f"F1 of class {pc.label}", pc.f1, True) for pc in m.per_class if pc.support]
    return out


def criteria(m: MetricsResult, config) -> list[Criterion]:
    """Accuracy above the class-count rule; no class with F1 = 0; optionally every class's F1 above a minimum."""
    c = config.criteria
    by_id = {x.id: x for x in measures(m)}
    out = [judge(by_id["accuracy"], c.accuracy_threshold(len(m.per_class)), strict=True, judge_on=c.judge_on)]
    judged = [pc for pc in m.per_class if pc.support > 0]
    if c.fail_on_zero_f1:
        zero = [pc.label for pc in judged if pc.zero_f1]
        out.append(judge(Measure.count("no_zero_f1", "Classes with F1 = 0", len(zero),
                                       detail="classes with F1 = 0: " + (", ".join(zero) if zero else "none")), 0))
    if c.min_class_f1 is not None:
        out += [judge(by_id[f"class_f1.{pc.label}"], c.min_class_f1, judge_on=c.judge_on) for pc in judged]
    return out


def _run(preds: Predictions, config) -> MetricsResult:
    return classification_metrics(preds, n_boot=config.n_boot, seed=config.seed, top_k=config.top_k)


SPEC = CheckSpec("metrics", "metrics + bootstrap", _run, criteria=criteria, comparable=measures)
