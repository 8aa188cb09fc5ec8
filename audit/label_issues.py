"""cleanlab's call, in this process or in the side process (docs/ARCHITECTURE.md §12).

This module imports only numpy, so the side process that runs it loads nothing of the audit but this and
cleanlab. The check itself is ``audit.checks.label_errors``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def cleanlab_module(method: str) -> str:
    """The cleanlab module a method imports ("auto": the confident-learning one; it brings most of the rest)."""
    return "cleanlab.experimental.label_issues_batched" if method == "batched" else "cleanlab.filter"


def run_cleanlab(y: np.ndarray, p: np.ndarray, method: str, batch_size: int, *, side=None):
    """``cleanlab_here`` in the side process ``side`` (``audit.side_process.SideProcess``), or here without one.
    The labels and probabilities travel as two .npy files in a temporary folder, not through the pipe: no pickled
    copy of them in either process, and the batched path reads its file a batch at a time."""
    if side is None:
        return cleanlab_here(y, p, method, batch_size)
    with tempfile.TemporaryDirectory(prefix="audit-cleanlab-") as folder:
        np.save(Path(folder) / "y.npy", y)
        np.save(Path(folder) / "p.npy", p)
        return side.call(cleanlab_saved, folder, method, batch_size)


def cleanlab_saved(folder: str, method: str, batch_size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """``cleanlab_here`` on the arrays ``run_cleanlab`` saved in ``folder``."""
    y = np.load(Path(folder) / "y.npy")
    p = np.load(Path(folder) / "p.npy", mmap_mode="r" if method == "batched" else None)
    return cleanlab_here(y, p, method, batch_size)


def cleanlab_here(y: np.ndarray, p: np.ndarray, method: str, batch_size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Indices of the flagged rows, most suspect first, and cleanlab's warnings as notes, from this process."""
    # n_jobs=1: no worker processes forked from an audit that holds ONNX Runtime threads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "confident_learning":
            from cleanlab.filter import find_label_issues

            try:
                ranked = find_label_issues(y, p, filter_by="prune_by_noise_rate",
                                           return_indices_ranked_by="self_confidence", n_jobs=1)
            finally:  # with n_jobs=1 it leaves a copy of the probabilities, split by class, in module globals
                _drop_globals("cleanlab.filter", ("pred_probs_by_class", "prune_count_matrix_cols"))
        else:
            from cleanlab.experimental.label_issues_batched import find_label_issues_batched

            found = find_label_issues_batched(y, p, batch_size=batch_size, n_jobs=1, verbose=False)
            # it returns row order; rank as cleanlab.rank.order_label_issues(rank_by="self_confidence") does
            ranked = found[np.argsort(p[found, y[found]])]
    notes = []
    for w in caught:
        if issubclass(w.category, UserWarning):
            notes.append(str(w.message))
        else:  # deprecations and the like are for developers, not the report
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return np.asarray(ranked, dtype=np.int64), tuple(dict.fromkeys(notes))


def _drop_globals(module: str, names: Sequence[str]) -> None:
    """Free what a module left in its globals after a call (it only reads them inside the call)."""
    mod = sys.modules.get(module)
    for name in names:
        if mod is not None and hasattr(mod, name):
            setattr(mod, name, None)
