"""fairlearn's per-group rates from counts, in this process or in the side process (docs/ARCHITECTURE.md §4.3, §12).

fairlearn brings scikit-learn, scipy and pandas: about 1.3 s of CPU to import, under the interpreter lock
while the other checks run beside the fairness check. The side process (``audit.side_process``) imports them
for cleanlab anyway, so where there is one the check sends it its counts (a few thousand numbers at most) and
gets plain arrays back. This module imports only numpy, so the side process loads nothing more of the audit.
The check itself is ``audit.checks.fairness``.
"""

from __future__ import annotations

import functools

import numpy as np


def fairlearn_rates(cells: tuple[np.ndarray, ...], tables: tuple[np.ndarray, ...], targets: list[int], groups: int,
                    *, side=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """fairlearn's accuracy per group (G,) and, per target class one-vs-rest, its selection rate, TPR and FPR per
    group, (T, G) each, by ``MetricFrame`` on counts as sample weights.

    ``cells``: (group, true class, predicted class, count) of each (group, true, predicted) cell;
    ``tables``: (target, group, true 0/1, predicted 0/1, count) of each group's 2 x 2 table per target class.
    In the side process ``side`` when given, else here."""
    if side is not None:
        return side.call(fairlearn_rates, cells, tables, targets, groups)
    import pandas as pd
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    group, y_true, y_pred, count = cells
    acc = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=group,
                      sample_params={"sample_weight": count}).by_group
    target, t_group, true01, pred01, weight = tables
    rates = {"selection_rate": selection_rate,
             "tpr": functools.partial(true_positive_rate, pos_label=1),
             "fpr": functools.partial(false_positive_rate, pos_label=1)}
    by = MetricFrame(metrics=rates, y_true=true01, y_pred=pred01, sample_params={m: {"sample_weight": weight}
                                                                                 for m in rates},
                     sensitive_features=pd.DataFrame({"target": target, "group": t_group})).by_group
    every = by.reindex(pd.MultiIndex.from_product([targets, range(groups)], names=["target", "group"]))
    return (acc.reindex(range(groups)).to_numpy(float),
            {m: every[m].to_numpy(float).reshape(len(targets), groups) for m in rates})
