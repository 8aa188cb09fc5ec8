"""An append-only store of fixed-size rows on disk (thumbnails, model features): memory stays flat in N."""

from __future__ import annotations

import errno
import os
import tempfile
import weakref

import numpy as np

from audit.errors import UsageError


class RowStore:
    """Append-only fixed-size uint8 rows in an anonymous temporary file, so memory does not grow with N.

    ``append`` writes with ``os.pwrite`` (one writer at a time); ``read`` uses ``os.pread``,
    nearby rows in one read. The file is gone once the store is closed or collected.

    >>> with RowStore((1536,)) as store:
    ...     store.append(np.zeros((3, 1536), np.uint8)), store.read([2, 0]).shape
    (range(0, 3), (2, 1536))
    """

    GAP, RUN = 64, 8192  # rows: wanted rows this close share a read; no read spans more rows
    READ_BYTES = 1 << 20  # nor more bytes (8,192 rows of thumbnails would be one 12 MB buffer)

    def __init__(self, shape: tuple[int, ...], *, dir: str | None = None, what: str = "rows") -> None:
        self.shape, self.row_bytes, self._n, self.what = tuple(shape), int(np.prod(shape)), 0, what
        self._file = tempfile.TemporaryFile(dir=dir)
        self._close = weakref.finalize(self, self._file.close)  # closed with the store, even if never closed

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._n * self.row_bytes

    def append(self, batch: np.ndarray) -> range:
        """Write a batch (B, *shape) of uint8 after the last row; returns the rows it took."""
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.shape[1:] != self.shape:
            raise ValueError(f"batch must be uint8 of shape (rows, {', '.join(map(str, self.shape))}), "
                             f"got {batch.dtype} {batch.shape}; pass stacked colour_thumbnail() outputs")
        data, offset = memoryview(np.ascontiguousarray(batch).reshape(-1)), self.nbytes
        while data:
            try:
                written = os.pwrite(self._file.fileno(), data, offset)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    raise
                raise UsageError(f"cannot store {self.what} in {tempfile.gettempdir()}: {e.strerror}",
                                 hint="free some space there or point TMPDIR at a larger disk") from None
            data, offset = data[written:], offset + written
        start, self._n = self._n, self._n + len(batch)
        return range(start, self._n)

    def read(self, rows) -> np.ndarray:
        """The rows at ``rows`` (any order, repeats allowed), shape (len(rows), *shape)."""
        rows = np.asarray(rows, np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= self._n):
            raise IndexError(f"rows must be in [0, {self._n}) (rows stored), got {rows.min()}..{rows.max()}")
        wanted, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(wanted), self.row_bytes), np.uint8)
        run = max(1, min(self.RUN, self.READ_BYTES // self.row_bytes))
        breaks = np.flatnonzero((np.diff(wanted) > self.GAP) | (np.diff(wanted // run) != 0)) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(wanted)]) if len(wanted) else ():
            first, count = int(wanted[lo]), int(wanted[hi - 1] - wanted[lo]) + 1
            buf = os.pread(self._file.fileno(), count * self.row_bytes, first * self.row_bytes)
            out[lo:hi] = np.frombuffer(buf, np.uint8).reshape(count, self.row_bytes)[wanted[lo:hi] - first]
        if len(wanted) < len(rows) or not np.array_equal(wanted, rows):  # repeats or out of order: gather
            out = out[inverse]
        return out.reshape(len(rows), *self.shape)

    def read_range(self, lo: int, hi: int) -> np.ndarray:
        """The rows ``lo`` to ``hi`` (exclusive) in one read, shape (hi - lo, *shape), a writable array."""
        if not 0 <= lo <= hi <= self._n:
            raise IndexError(f"rows must be in [0, {self._n}] (rows stored), got {lo}..{hi}")
        out = np.empty((hi - lo, *self.shape), np.uint8)
        view, offset = memoryview(out.reshape(-1)), lo * self.row_bytes
        while view:  # straight into the array (no bytes object in between); a short read continues
            got = os.preadv(self._file.fileno(), [view], offset)
            if got == 0:
                raise OSError(f"{self.what}: the store ended {len(view)} bytes early")
            view, offset = view[got:], offset + got
        return out

    def close(self) -> None:
        self._close()

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc) -> None:
        self._close()


class StoredColumn:
    """A 1-D numeric column kept in a ``RowStore`` (one item a row) and read where it is used: ``column[rows]``
    (a slice, a mask or row numbers) and ``np.asarray(column)`` give arrays; nothing stays in memory.

    >>> with RowStore((8,)) as store:
    ...     _ = store.append(np.arange(5, dtype=np.uint64).view(np.uint8).reshape(-1, 8))
    ...     col = StoredColumn(store, np.uint64)
    ...     len(col), col[1:3].tolist(), col[[4, 0]].tolist(), int(col[-1]), np.asarray(col).dtype
    (5, [1, 2], [4, 0], 4, dtype('uint64'))
    """

    __slots__ = ("store", "dtype")

    def __init__(self, store: RowStore, dtype) -> None:
        self.store, self.dtype = store, np.dtype(dtype)
        if store.row_bytes != self.dtype.itemsize:
            raise ValueError(f"a {self.dtype} column needs rows of {self.dtype.itemsize} bytes, "
                             f"got {store.row_bytes}")

    def __len__(self) -> int:
        return len(self.store)

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            lo, hi, step = rows.indices(len(self))
            if step == 1:
                return self.store.read_range(lo, max(lo, hi)).view(self.dtype).ravel()
            rows = np.arange(lo, hi, step)
        if isinstance(rows, (int, np.integer)):
            return self[np.array([rows])][0]
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows)
        return self.store.read(rows).view(self.dtype).ravel()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"StoredColumn({len(self)} x {self.dtype})"
