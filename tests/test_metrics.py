"""Every metric against scikit-learn on the same predictions; CIs contain the estimate and shrink with N."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from audit.checks.metrics import classification_metrics, top_k_correct, weighted_class_counts
from audit.predictions import Predictions

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def random_predictions(n: int, c: int, seed: int, skill: float = 2.0, missing_class: bool = False) -> Predictions:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c - 1 if missing_class else c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return Predictions(labels=tuple(f"c{i}" for i in range(c)), paths=tuple(map(str, range(n))),
                       y_true=y, proba=p.astype(np.float32))


@pytest.mark.parametrize("n,c,seed,missing", [(200, 2, 0, False), (500, 5, 1, False), (300, 10, 2, True),
                                              (50, 4, 3, False), (3000, 1000, 4, True)])
def test_metrics_equal_sklearn(n, c, seed, missing):
    p = random_predictions(n, c, seed, missing_class=missing)
    m = classification_metrics(p, n_boot=50, seed=0, top_k=(3, 5))
    y, yp = p.y_true, p.y_pred
    assert m.accuracy.value == pytest.approx(skm.accuracy_score(y, yp))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": scikit-learn then skips them too
        warnings.simplefilter("ignore", UserWarning)
        assert m.balanced_accuracy.value == pytest.approx(skm.balanced_accuracy_score(y, yp))
    assert m.macro_f1.value == pytest.approx(skm.f1_score(y, yp, average="macro", zero_division=0))
    assert m.weighted_f1.value == pytest.approx(skm.f1_score(y, yp, average="weighted", zero_division=0))
    labels = list(range(c))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, yp, labels=labels, zero_division=0)
    np.testing.assert_allclose([pc.precision.value for pc in m.per_class], prec)
    np.testing.assert_allclose([pc.recall.value for pc in m.per_class], rec)
    np.testing.assert_allclose([pc.f1.value for pc in m.per_class], f1)
    assert [pc.support for pc in m.per_class] == list(sup)
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(y, yp, labels=labels))
    for k, est in m.top_k:
        assert est.value == pytest.approx(skm.top_k_accuracy_score(y, p.proba, k=k, labels=labels))


def test_top_k_counts_ties_like_sklearn():
    proba = np.array([[0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    y = np.array([1, 0])
    assert top_k_correct(y, proba, 1).tolist() == [True, False]
    assert top_k_correct(y, proba, 2).tolist() == [True, False]


def test_every_ci_contains_its_estimate():
    m = classification_metrics(random_predictions(400, 6, 7), n_boot=300, seed=1)
    ests = [m.accuracy, m.balanced_accuracy, m.macro_f1, m.weighted_f1, *[e for _, e in m.top_k]]
    ests += [e for pc in m.per_class for e in (pc.precision, pc.recall, pc.f1)]
    for e in ests:
        assert e.low <= e.value <= e.high, e
        assert e.low < e.high


def test_ci_shrinks_as_n_grows():
    widths = []
    for n in (100, 1000, 10000):
        e = classification_metrics(random_predictions(n, 3, 11, skill=1.0), n_boot=300, seed=0).accuracy
        widths.append(e.high - e.low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]
    # binomial standard error: the 95% width at n = 10,000 is about 4 * sqrt(p(1-p)/n)
    assert widths[2] == pytest.approx(3.92 * np.sqrt(0.25 / 10000), rel=0.35)


def test_same_seed_same_intervals():
    p = random_predictions(300, 4, 5)
    a = classification_metrics(p, n_boot=200, seed=3)
    b = classification_metrics(p, n_boot=200, seed=3)
    assert a.accuracy == b.accuracy and a.per_class == b.per_class


def test_many_classes_use_per_class_counts_not_a_matrix_per_resample():
    """1,000 classes: the bootstrap's memory is O(resamples x classes), the plots stay readable."""
    import tracemalloc

    p = random_predictions(2000, 1000, 5)
    tracemalloc.start()
    m = classification_metrics(p, n_boot=200, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20  # one 1000 x 1000 matrix per resample would need 800 MB per chunk of 100
    assert m.confusion.shape == (1000, 1000) and m.confusion.sum() == 2000
    from audit.checks.metrics import MAX_CLASSES, confusion_heatmap, f1_bars

    worst = sorted(m.per_class, key=lambda pc: pc.f1.value)[:MAX_CLASSES]
    bars = f1_bars(m.per_class).svg()
    assert all(f">{pc.label}<" in bars for pc in worst) and bars.count(">c") == MAX_CLASSES
    heat = confusion_heatmap(m.confusion, p.labels).svg()
    assert heat.count("<rect") < 2 * MAX_CLASSES**2 and f"{MAX_CLASSES} of 1000 classes" in heat


def test_bootstrap_index_memory_is_bounded_and_the_intervals_do_not_depend_on_it(monkeypatch):
    """Resample indices come in steps of at most INDEX_BYTES, and the step size never changes a number."""
    from audit import stats

    n = 5000
    steps = [idx.shape for idx in stats.resample_indices(n, 250, seed=1)]
    assert sum(k for k, _ in steps) == 250 and all(k * n * 8 <= stats.INDEX_BYTES for k, _ in steps)
    p = random_predictions(n, 4, 9)
    before = classification_metrics(p, n_boot=250, seed=1)
    monkeypatch.setattr(stats, "INDEX_BYTES", 8 * n * 7)  # 7 resamples per step instead of 100
    assert [idx.shape[0] for idx in stats.resample_indices(n, 250, seed=1)][:2] == [7, 7]
    after = classification_metrics(p, n_boot=250, seed=1)
    assert after.macro_f1 == before.macro_f1 and after.per_class == before.per_class


@pytest.mark.parametrize("n,c", [(200, 4), (60, 12)])  # C x C within the rows (one pass), and beyond (three)
def test_weighted_class_counts_are_each_weightings_counts(n, c):
    rng = np.random.default_rng(c)
    y, p = rng.integers(0, c, n), rng.integers(0, c, n)
    w = rng.poisson(1.0, (7, n)).astype(float)  # bootstrap multiplicities
    got = weighted_class_counts(y, p, w, c)
    for k in range(len(w)):
        cm = skm.confusion_matrix(y, p, labels=range(c), sample_weight=w[k])
        np.testing.assert_array_equal(got[:, k], [np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)])


@pytest.mark.parametrize("n_boot", [1, 301])
def test_bootstrap_streams_give_the_same_draws_on_threads_or_not(monkeypatch, n_boot):
    """Streams run side by side (threads) or one after the other: the same replicates, in the same order."""
    from audit import stats

    x = np.random.default_rng(3).random(2000)
    seen = []

    def statistic(idx):
        seen.append(idx.shape[0])
        return np.column_stack([x[idx].mean(axis=1), np.median(x[idx], axis=1)])

    monkeypatch.setattr(stats, "STREAMS_APART", 10**12)
    alone = stats.bootstrap_many(statistic, len(x), n_boot=n_boot, seed=4, streams=2)
    monkeypatch.setattr(stats, "STREAMS_APART", 0)
    monkeypatch.setattr(stats, "INDEX_BYTES", 8 * len(x) * 7)  # and in other steps
    apart = stats.bootstrap_many(statistic, len(x), n_boot=n_boot, seed=4, streams=2)
    assert apart == alone and sum(seen) == 2 * (n_boot + 1)  # each run: the point, then n_boot replicates
    if n_boot > 1:
        one = stats.bootstrap_many(statistic, len(x), n_boot=n_boot, seed=4)
        assert one != alone and one[0].value == alone[0].value  # other draws, the same point
        assert abs(one[0].low - alone[0].low) < 0.005 and abs(one[0].high - alone[0].high) < 0.005
