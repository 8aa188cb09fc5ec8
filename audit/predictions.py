"""The Predictions table (docs/ARCHITECTURE.md §2): one row per processed image, what most checks read.

It is written out next to every report (``predictions.csv``), so anyone can recompute any number;
``Predictions.from_frame`` reads it back.

Example::

    (preds.y_pred == preds.y_true).mean()  # accuracy: argmax of each probability row vs the label
    preds.to_frame().to_csv("predictions.csv", index=False)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.rowstore import RowStore

MISSING = "(missing)"  # the slice/group name of an empty attribute value


@dataclass(frozen=True)
class Predictions:
    """One row per processed image: the only thing the checks read (docs/ARCHITECTURE.md §2)."""

    labels: tuple[str, ...]
    paths: Sequence[str]  # audit.packed.Strings from an inference pass (no object per path)
    y_true: np.ndarray  # (N,) int, index into labels
    proba: np.ndarray  # (N, C) float32
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) str
    properties: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float
    sha256: Sequence[str] = ()  # of each file's bytes (exact duplicates); HexDigests from an inference pass
    # 64-bit perceptual hashes: an array, or from an inference pass a StoredColumn on disk (read where used)
    phash: Any = field(default_factory=lambda: np.zeros(0, np.uint64))
    # colour thumbnails of the originals, one row per image, on disk (audit.duplicates.ThumbnailStore); None
    # when the table was not made by an inference pass that captured them (e.g. read back from a CSV)
    thumbnails: Any = field(default=None, compare=False, repr=False)
    # the model's penultimate features, one float16 row per image on disk (audit.features.FeatureStore); None
    # when not asked for, when the model has none, or when the table was read back from a file
    features: Any = field(default=None, compare=False, repr=False)
    # duplicate cluster id per row (exact and confirmed near duplicates, ``audit.clusters``); None when no two
    # images are duplicates or they were not looked for: then every image is independent evidence
    clusters: np.ndarray | None = field(default=None, compare=False, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict)  # per-image columns the checks add (arrays or Coded)
    # the inference pass's rows as streamed to a temporary Parquet file (audit.predictions_file.PredictionStream);
    # None when the table was not made by an inference pass that streamed them
    stream: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.y_true.shape != (n,) or self.proba.shape != (n, len(self.labels)):
            raise ValueError(f"inconsistent Predictions: {n} paths, y_true {self.y_true.shape}, "
                             f"proba {self.proba.shape}, {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def y_pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.proba.max(axis=1)

    def columns(self, rows: slice = slice(None)) -> dict[str, list | np.ndarray]:
        """Every column needed to recompute every number, in file order (``to_frame``, ``write_csv``), of the
        ``rows`` asked for (all by default; the writers ask for a few thousand at a time)."""
        cols = row_columns(self.labels, self.paths[rows], self.y_true[rows], self.proba[rows],
                           {k: v[rows] for k, v in self.attributes.items()},
                           {k: v[rows] for k, v in self.properties.items()}, self.sha256[rows], self.phash[rows])
        probabilities = {k: cols.pop(k) for k in [k for k in cols if k.startswith("p:")]}
        if self.clusters is not None:
            cols["cluster"] = self.clusters[rows]
        cols.update({k: v[rows] for k, v in self.extra.items()})
        cols.update(probabilities)
        return cols

    def to_frame(self):
        """A pandas DataFrame of ``columns()``."""
        import pandas as pd

        return pd.DataFrame(self.columns())

    def write_csv(self, path) -> None:
        """``columns()`` as CSV, floats with 9 significant digits (float32 probabilities exactly): the file
        pandas' ``to_frame().to_csv(path, index=False, float_format="%.9g", lineterminator="\\r\\n")``
        writes, without importing pandas. CRLF rows (RFC 4180): a name holding ``\\r``, ``\\n``, ``,`` or
        ``"`` is quoted and reads back with pandas and the ``csv`` module.

        The ``csv`` module's rows, byte for byte (tested), at half its cost: each chunk of rows is one ``%``
        of a row template repeated, so the floats are formatted in C, not one call a cell."""
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            rows_at_once = max(1, CSV_CELLS // (len(self.labels) + 16))  # about CSV_CELLS cells at a time
            for lo in range(0, max(len(self.paths), 1), rows_at_once):
                cols = self.columns(slice(lo, lo + rows_at_once))
                if lo == 0:
                    csv.writer(f, lineterminator="\r\n").writerow(cols)
                cells = [_csv_column(v) for v in cols.values()]
                rows = len(cells[0][1]) if cells else 0
                if rows:
                    template = ",".join(conversion for conversion, _ in cells) + "\r\n"
                    f.write(template * rows % tuple(itertools.chain.from_iterable(zip(*(v for _, v in cells)))))

    @classmethod
    def from_frame(cls, df, labels: Sequence[str]) -> Predictions:
        """Rebuild from ``to_frame()`` output (e.g. a predictions.csv read back)."""
        index = {lab: i for i, lab in enumerate(labels)}
        return cls(
            labels=tuple(labels),
            paths=tuple(df["path"].astype(str)),
            y_true=np.array([index[str(v)] for v in df["label"]], dtype=np.int64),
            proba=df[[f"p:{lab}" for lab in labels]].to_numpy(np.float32),
            attributes={c[5:]: df[c].astype(str).to_numpy() for c in df.columns if c.startswith("attr:")},
            properties={c[5:]: df[c].to_numpy(float) for c in df.columns if c.startswith("prop:")},
            sha256=tuple(df["sha256"].astype(str)) if "sha256" in df else (),
            phash=np.array([int(h, 16) for h in df["phash"].astype(str)], np.uint64) if "phash" in df
            else np.zeros(0, np.uint64),
            clusters=df["cluster"].to_numpy(np.int64) if "cluster" in df else None,
        )


def row_columns(labels: Sequence[str], paths: Sequence[str], y_true: np.ndarray, proba: np.ndarray,
                attributes: Mapping[str, Any], properties: Mapping[str, np.ndarray], sha256: Sequence[str],
                phash: np.ndarray) -> dict[str, list | np.ndarray]:
    """The columns inference knows, in file order (the cluster and the checks' columns go before ``p:*``).
    A row of an unlabelled image (``y_true`` -1, a reference set) has an empty label."""
    y_pred = proba.argmax(axis=1)
    cols: dict[str, list | np.ndarray] = {
        "path": list(paths),
        "label": [labels[i] if i >= 0 else "" for i in y_true.tolist()],
        "predicted": [labels[i] for i in y_pred.tolist()],
        "correct": y_true == y_pred,
        "confidence": proba.max(axis=1) if len(proba) else np.zeros(0, proba.dtype),
    }
    cols.update({f"attr:{k}": v for k, v in attributes.items()})
    cols.update({f"prop:{k}": v for k, v in properties.items()})
    if len(sha256):
        cols["sha256"] = list(sha256)
        cols["phash"] = [f"{h:016x}" for h in phash.tolist()]
    cols.update({f"p:{lab}": proba[:, i] for i, lab in enumerate(labels)})
    return cols


class HexDigests(Sequence[str]):
    """SHA-256 digests, 32 bytes an image where a tuple of hex strings took 121, read as hex strings. The bytes
    are an (N, 32) uint8 array in memory or rows of a ``RowStore`` on disk (an inference pass writes them
    there: 16 MB fewer held at 500k images).

    >>> d = HexDigests.of(["00" * 32, "ff" * 32])
    >>> len(d), d[1][:4], list(d[:1]) == ["00" * 32]
    (2, 'ffff', True)
    """

    __slots__ = ("_rows", "_lo", "_n")
    BLOCK = 4096  # digests turned into text at once when iterating

    def __init__(self, rows, lo: int = 0, n: int | None = None) -> None:
        if not isinstance(rows, RowStore):
            rows = np.ascontiguousarray(rows, np.uint8).reshape(-1, 32)
        self._rows, self._lo = rows, lo
        self._n = len(rows) - lo if n is None else n

    @classmethod
    def of(cls, hexes: Sequence[str], chunk: int = 65_536) -> HexDigests:
        """From 64-character hex strings (one ``bytes.fromhex`` per chunk)."""
        parts = [np.frombuffer(bytes.fromhex("".join(hexes[lo:lo + chunk])), np.uint8)
                 for lo in range(0, len(hexes), chunk)]
        return cls(np.concatenate(parts) if parts else np.zeros(0, np.uint8))

    def __len__(self) -> int:
        return self._n

    def block(self, lo: int, hi: int) -> np.ndarray:
        """(hi - lo, 32) uint8: the digests of rows ``lo`` to ``hi`` (one read from disk)."""
        lo, hi = self._lo + lo, self._lo + min(hi, self._n)
        return self._rows.read_range(lo, hi) if isinstance(self._rows, RowStore) else self._rows[lo:hi]

    def take(self, rows) -> np.ndarray:
        """(len(rows), 32) uint8: the digests of ``rows`` (row numbers, any order)."""
        rows = self._lo + np.asarray(rows, np.int64)
        return self._rows.read(rows) if isinstance(self._rows, RowStore) else self._rows[rows]

    @property
    def raw(self) -> np.ndarray:
        """(N, 32) uint8, every digest in memory."""
        return self.block(0, self._n)

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(self._n)
            if step != 1:
                return HexDigests(self.take(np.arange(lo, hi, step)))
            return HexDigests(self._rows, self._lo + lo, max(hi - lo, 0))
        if not -self._n <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} digests")
        return self.block(i % self._n, i % self._n + 1).tobytes().hex()

    def __iter__(self):
        for lo in range(0, self._n, self.BLOCK):
            text = self.block(lo, lo + self.BLOCK).tobytes().hex()
            yield from (text[k:k + 64] for k in range(0, len(text), 64))

    def __eq__(self, other) -> bool:
        if isinstance(other, HexDigests):
            return np.array_equal(self.raw, other.raw)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # mutable array inside, like a list

    def __repr__(self) -> str:
        return f"HexDigests({len(self)} SHA-256 digests)"


class Coded(Sequence[str]):
    """A column of a few distinct strings as small integer codes into ``names``: two bytes a row where an object
    array of ``str`` took eight. A slice or index array reads back as an object array, like the column it replaces.

    >>> c = Coded(np.array([0, 2, 1, 0], np.int16), ("", "D1", "D2"))
    >>> c[1], c[1:3].tolist(), len(c), np.asarray(c).tolist()
    ('D2', ['D2', 'D1'], 4, ['', 'D2', 'D1', ''])
    """

    __slots__ = ("codes", "names")

    def __init__(self, codes: np.ndarray, names: Sequence[str]) -> None:
        self.codes, self.names = np.asarray(codes), tuple(names)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return self.names[self.codes[i]]
        return np.asarray(self.names, object)[self.codes[i]]

    def __iter__(self):
        names = self.names
        return (names[c] for c in self.codes.tolist())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"Coded({len(self)} rows, names={self.names!r})"


# cells formatted at once (4,096 rows of 10 classes and 16 other columns): 1,000 classes x 10,000 rows at once took
# 600 MB of strings, and 4,096 rows of 1,000 classes a chunk raised the peak by 327 MB
CSV_CELLS = 4096 * 26


CSV_SPECIAL = (",", '"', "\r", "\n")  # a cell holding one is quoted, its quotes doubled (the csv module's minimal)


def _csv_column(values) -> tuple[str, list]:
    """(its conversion in the row template, its values) of one column: floats as ``%.9g`` (a NaN an empty cell:
    then the column is formatted here), numbers and flags as ``str`` would, text quoted where the csv module
    quotes it."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        if np.isnan(values).any():
            return "%s", ["" if x != x else "%.9g" % x for x in values.tolist()]
        return "%.9g", values.tolist()
    if isinstance(values, np.ndarray) and values.dtype.kind in "biu":
        return "%s", values.tolist()
    text = [str(x) for x in (values.tolist() if isinstance(values, np.ndarray) else values)]
    joined = "\0".join(text)  # one scan of the column for the usual case: nothing to quote
    if any(c in joined for c in CSV_SPECIAL):
        text = ['"' + v.replace('"', '""') + '"' if any(c in v for c in CSV_SPECIAL) else v for v in text]
    return "%s", text
