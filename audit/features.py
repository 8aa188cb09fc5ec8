"""The model's features on disk and reduced: what feature checks read, never an engine (docs/ARCHITECTURE.md §14).

The engines return the model's penultimate features (found in the graph by ``audit.graph.locate``)
from the same ``session.run`` as the probabilities. They are streamed to disk as float16
(``FeatureStore``) as batches arrive, for every engine, and reduced by a PCA fitted on a bounded
sample (``reducer``) before any analysis reads them, so memory never holds N x D floats.

Example::

    store = FeatureStore(dim=1280); store.append(batch_features)
    red = reducer(store, rows=np.arange(len(store)), dims=32, seed=0)
    z = red.apply(store, np.arange(len(store)))   # (N, <= 32) float32
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from audit.rowstore import RowStore

SAMPLE_ROWS = 20_000  # the reduction is fitted on at most this many rows
MAX_COMPONENTS = 128


def pooled(features: np.ndarray) -> np.ndarray:
    """(N, D) features from the tensor ORT returns: spatial maps (N, D, H, W) are averaged over H and W."""
    f = np.asarray(features)
    if f.ndim == 4:
        f = f.mean(axis=(2, 3))
    return f.reshape(len(f), -1)


class FeatureStore:
    """float16 feature rows in an anonymous temporary file, appended as batches arrive (one row per image)."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self._rows = RowStore((self.dim * 2,), what="model features")  # float16 rows as bytes

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, features: np.ndarray) -> range:
        f = np.ascontiguousarray(pooled(features), dtype=np.float16)
        if f.shape[1] != self.dim:
            raise ValueError(f"feature rows have {f.shape[1]} values, the store holds {self.dim}")
        return self._rows.append(f.view(np.uint8))

    def read(self, rows, dtype=np.float32) -> np.ndarray:
        """Rows as float32 (len(rows), dim), or ``dtype``."""
        return self._rows.read(rows).view(np.float16).astype(dtype)

    def chunks(self, rows=None, size: int = 8192) -> Iterator[np.ndarray]:
        """float32 rows in order, ``size`` at a time (all rows when ``rows`` is None)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        for lo in range(0, len(rows), size):
            yield self.read(rows[lo : lo + size])

    def close(self) -> None:
        self._rows.close()


@dataclass(frozen=True)
class Reducer:
    """Centre, project onto principal axes and scale to unit variance: features -> (N, k) float32."""

    mean: np.ndarray
    components: np.ndarray  # (k, D)
    scale: np.ndarray  # (k,) standard deviation along each axis
    explained: float  # share of the variance the k axes keep
    fitted_on: int  # rows in the fitting sample

    @property
    def dims(self) -> int:
        return len(self.scale)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (((x - self.mean) @ self.components.T) / self.scale).astype(np.float32)

    def apply(self, store: FeatureStore, rows) -> np.ndarray:
        """The reduced features of ``rows`` of ``store``, read in chunks into one array."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), self.dims), np.float32)
        lo = 0
        for c in store.chunks(rows):
            out[lo:lo + len(c)] = self.transform(c)
            lo += len(c)
        return out


class Reduced:
    """The reduced features of every row of a store, computed from the store when rows are read: ``z[rows]``
    (an index array or a slice) is (len(rows), k) float32, and N x k floats are never held at once."""

    def __init__(self, store: FeatureStore, red: Reducer) -> None:
        self.store, self.reducer = store, red

    def __len__(self) -> int:
        return len(self.store)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.store), self.reducer.dims

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(len(self.store))[rows]  # a slice, a mask or row numbers: row numbers
        return self.reducer.apply(self.store, rows)


def reducer(store: FeatureStore, rows, *, dims: int = MAX_COMPONENTS, variance: float = 0.95,
            sample: int = SAMPLE_ROWS, seed: int = 0) -> Reducer:
    """``fit_reducer`` on at most ``sample`` of ``rows`` of ``store`` (seeded)."""
    rows = np.asarray(rows)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    # read as the float64 the fit works in: no float32 copy beside it (10 MB for 20,000 rows of 128 features)
    return fit_reducer(store.read(rows, np.float64), dims=dims, variance=variance, seed=seed)


def fit_reducer(x: np.ndarray, *, dims: int = MAX_COMPONENTS, variance: float = 0.95, seed: int = 0) -> Reducer:
    """PCA of the rows ``x``, keeping the fewest axes (up to ``dims``) that explain ``variance`` of them;
    axes with no variance are dropped."""
    x = np.asarray(x, np.float64)
    k = max(1, min(dims, x.shape[1], len(x) - 1))
    fit = pca_covariance if x.shape[1] <= COVARIANCE_DIMS else pca_randomized
    mean, axes, spread, share = fit(x, k, seed)
    ratio = np.cumsum(share)
    keep = int(np.searchsorted(ratio, variance) + 1) if len(ratio) else 0
    keep = max(1, min(keep, int((spread > 1e-12 * max(spread[0], 1e-30)).sum())))
    return Reducer(mean.astype(np.float32), axes[:keep].astype(np.float32),
                   np.sqrt(spread[:keep]).astype(np.float32) + np.float32(1e-12),
                   float(ratio[keep - 1]) if len(ratio) else 0.0, len(x))


COVARIANCE_DIMS = 512  # up to this many features the covariance route (one n x D^2 product) is the fastest


def pca_covariance(x: np.ndarray, k: int, seed: int = 0):
    """The first ``k`` principal axes of ``x`` from the eigenvectors of its covariance: the mean, the axes (k, D),
    their variances and shares of the total. scikit-learn's ``PCA(svd_solver="covariance_eigh")`` step for step
    (signs included; tests/test_discovered_slices.py compares them) without importing it and scipy (0.8 s of a 10k-image
    run, docs/ARCHITECTURE.md §12)."""
    n = len(x)
    mean = x.mean(axis=0)
    cov = x.T @ x
    cov -= n * mean[:, None] * mean[None, :]
    cov /= n - 1
    values, vectors = np.linalg.eigh(cov)
    values, axes = np.maximum(values[::-1], 0.0), vectors[:, ::-1].T
    biggest = np.abs(axes).argmax(axis=1)  # each axis points the way of its largest entry (sklearn's svd_flip)
    axes *= np.sign(axes[np.arange(len(axes)), biggest])[:, None]
    return mean, axes[:k], values[:k], values[:k] / values.sum()


def pca_randomized(x: np.ndarray, k: int, seed: int = 0):
    """``pca_covariance``'s result by scikit-learn's randomized SVD (past a few hundred features)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(x)
    return pca.mean_, pca.components_, pca.explained_variance_, pca.explained_variance_ratio_
