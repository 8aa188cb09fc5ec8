"""predictions.parquet: the per-image table, streamed to disk as the engine produces it (docs/ARCHITECTURE.md §9).

Every engine hands its batches to ``audit.engines.batch.Collector``, which appends each one's columns
(those of ``Predictions.columns`` that inference knows: path, labels, confidence, attributes, image
properties, hashes, probabilities) to a ``PredictionStream``: an Arrow table of at most ``ROW_GROUP``
rows in memory, then a row group of a temporary Parquet file. ``write_parquet`` writes the output
file from those row groups, one at a time, with the columns the checks add after inference (the
duplicate ``cluster``, ``discovered_slice``, ``novelty``, ...) put in beside them, so the file has the
columns of ``predictions.csv`` in the same order, and memory holds one row group whatever N is.

``read_table`` reads either file back (``compare`` and ``--baseline``).

Example::

    stream = PredictionStream(); stream.append(columns_of_a_batch); stream.close()
    write_parquet(preds, Path("out/predictions.parquet"))
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audit.predictions import Coded

ROW_GROUP = 16_384  # rows per row group, in the stream and in the output file (65,536 held 40 MB more at 150k rows)


def _arrays(columns: Mapping[str, Any]):
    """Arrow arrays of ``{name: values}``, built from buffers: ``pa.array`` looks for pandas first, and importing
    it costs 0.2 s of a run that otherwise never needs it (docs/ARCHITECTURE.md §12)."""
    out = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
            out[name] = _numbers(values)
        else:  # strings: paths, labels, hashes, attributes, slice names
            out[name] = _strings(values.tolist() if isinstance(values, np.ndarray) else values)
    return out


def _numbers(values: np.ndarray):
    import pyarrow as pa

    v = np.ascontiguousarray(values)
    if v.dtype == np.bool_:  # Arrow packs booleans one bit each
        return pa.Array.from_buffers(pa.bool_(), len(v), [None, pa.py_buffer(np.packbits(v, bitorder="little"))])
    return pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), len(v), [None, pa.py_buffer(v)])


def _strings(values):
    """A string column (None: null) from its UTF-8 bytes and their int32 end offsets."""
    import pyarrow as pa

    data = [b"" if v is None else str(v).encode() for v in values]
    ends = np.zeros(len(data) + 1, np.int64)
    np.cumsum([len(b) for b in data], out=ends[1:])
    if ends[-1] > np.iinfo(np.int32).max:  # one row group's column; Arrow's string type has int32 offsets
        raise ValueError(f"{ends[-1]:,} bytes of text in one column of one row group: over Arrow's 2 GiB")
    valid = np.fromiter((v is not None for v in values), bool, len(data))
    mask = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    buffers = [mask, pa.py_buffer(ends.astype(np.int32)), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.string(), len(data), buffers, null_count=len(data) - int(valid.sum()))


def _joined(parts: list) -> Any:
    """One column's values from several batches: arrays concatenated, sequences chained."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return [v for p in parts for v in (p.tolist() if isinstance(p, np.ndarray) else p)]


class PredictionStream:
    """The inference pass's columns in a temporary Parquet file, appended batch by batch as they arrive."""

    def __init__(self, *, dir: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="audit-predictions-", suffix=".parquet", dir=dir)
        os.close(fd)
        self._remove = weakref.finalize(self, _unlink, self.path)
        self._writer = None
        self._pending: list = []
        self._held = 0
        self.rows = 0
        self.closed = False

    def append(self, columns: Mapping[str, Any]) -> None:
        """One batch: ``{column: values}``, every batch with the same columns. Held as given and turned into
        Arrow a row group at a time: one conversion per column per ``ROW_GROUP`` rows, not per batch."""
        n = len(next(iter(columns.values()))) if columns else 0
        self._pending.append(columns)
        self._held += n
        self.rows += n
        if self._held >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.Table.from_pydict(_arrays({k: _joined([c[k] for c in self._pending]) for k in self._pending[0]}))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP)
        self._pending, self._held = [], 0
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed row groups otherwise

    def close(self) -> None:
        """Write what is held and the file's footer; the stream can then be read."""
        if self.closed:
            return
        self._flush()
        if self._writer is not None:
            self._writer.close()
        self.closed = True

    def tables(self) -> Iterator:
        """The rows in order, one row group at a time, as Arrow tables."""
        import pyarrow.parquet as pq

        self.close()
        if not self.rows:
            return
        f = pq.ParquetFile(self.path)
        for i in range(f.num_row_groups):  # iter_batches read ahead: 60 MB more at 100k rows (measured)
            yield f.read_row_group(i, use_threads=False)

    def discard(self) -> None:
        self.close()
        self._remove()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_parquet(preds, path: Path) -> None:
    """``preds`` as Parquet: the inference pass's streamed rows when it kept them, else its in-memory columns,
    ``ROW_GROUP`` rows at a time, with the cluster and the checks' columns put in before the probabilities."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    late = _late_columns(preds)
    writer = None
    try:
        lo = 0
        for table in _base_tables(preds):
            hi = lo + table.num_rows
            table = _with_late(table, {k: v[lo:hi] for k, v in late.items()})
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
            pa.default_memory_pool().release_unused()
            lo = hi
        if writer is None:  # no rows: an empty file with the columns
            empty = pa.Table.from_pydict(_arrays({k: v[:0] for k, v in preds.columns().items()}))
            pq.write_table(empty, str(path))
    finally:
        if writer is not None:
            writer.close()


def _late_columns(preds) -> dict[str, np.ndarray]:
    """The columns known only after inference, by name: the duplicate cluster and the checks' own."""
    late = {} if preds.clusters is None else {"cluster": np.asarray(preds.clusters)}
    late.update({k: v if isinstance(v, Coded) else np.asarray(v) for k, v in preds.extra.items()})
    return late


def _base_tables(preds) -> Iterator:
    stream = getattr(preds, "stream", None)
    if stream is not None and stream.rows == len(preds):
        yield from stream.tables()
        return
    import pyarrow as pa

    for lo in range(0, len(preds), ROW_GROUP):  # the columns of one row group at a time
        cols = preds.columns(slice(lo, lo + ROW_GROUP))
        yield pa.Table.from_pydict(_arrays({k: v for k, v in cols.items() if k != "cluster" and k not in preds.extra}))


def _with_late(table, late: Mapping[str, np.ndarray]):
    """``table`` with the late columns inserted before the first probability column (``p:<label>``)."""
    names = table.column_names
    at = next((i for i, n in enumerate(names) if n.startswith("p:")), len(names))
    for offset, (name, arr) in enumerate(_arrays(late).items()):
        table = table.add_column(at + offset, name, arr)
    return table


def read_table(path: Path, columns=None):
    """``predictions.parquet`` or ``predictions.csv`` as a pandas DataFrame of strings (the columns named, or
    all): the two files read alike."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        names = [n for n in schema.names if columns is None or (columns(n) if callable(columns) else n in columns)]
        df = pq.read_table(path, columns=names).to_pandas()
        return df.astype(str).where(df.notna(), "")
    return pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns)
