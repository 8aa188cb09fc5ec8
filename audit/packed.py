"""Strings packed into one buffer: the image paths of a million-image run without a Python object per path.

A tuple of a million paths holds a million ``str`` objects (49 bytes of header each, plus the
characters and the tuple's pointer); ``Strings`` holds one UTF-8 buffer and an array of end
offsets, about the characters plus 4 bytes a path. Items are decoded when read. Paths made by
``os.scandir`` may carry undecodable bytes as lone surrogates; ``surrogatepass`` keeps them, so
every ``str`` comes back exactly as it went in.

Example::

    paths = Strings.of(["a/1.png", "b/2.png"])
    paths[1], list(paths[:1]), len(paths)   # ('b/2.png', ['a/1.png'], 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

_CODEC = ("utf-8", "surrogatepass")


def index_dtype(n: int) -> type[np.signedinteger]:
    """The integer type for row numbers of ``n`` rows: int32 below 2**31 (half the memory), else int64.

    >>> index_dtype(10), index_dtype(2**31)
    (<class 'numpy.int32'>, <class 'numpy.int64'>)
    """
    return np.int32 if n < 2**31 else np.int64


class Strings(Sequence[str]):
    """An immutable sequence of ``str`` held as one UTF-8 buffer plus end offsets (int32 below 2 GiB of text).

    >>> s = Strings.of(["x", "", "\\udcff.png"])
    >>> len(s), s[2] == "\\udcff.png", s[1:].tolist(), s == ["x", "", "\\udcff.png"]
    (3, True, ['', '\\udcff.png'], True)
    """

    __slots__ = ("_blob", "_ends")
    CHUNK = 65_536  # strings encoded at once when packing

    def __init__(self, blob: bytes = b"", ends: np.ndarray | None = None) -> None:
        self._blob = blob
        self._ends = np.asarray(() if ends is None else ends, index_dtype(len(blob)))

    @classmethod
    def of(cls, items: Iterable[str]) -> Strings:
        """Pack ``items`` (any iterable of ``str``; another ``Strings`` is returned as it is)."""
        if isinstance(items, Strings):
            return items
        builder = StringsBuilder()
        for s in items:
            builder.append(s)
        return builder.build()

    def __len__(self) -> int:
        return len(self._ends)

    def _start(self, i: int) -> int:
        return int(self._ends[i - 1]) if i else 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return self.take(np.arange(lo, hi, step))
            hi = max(lo, hi)
            first = self._start(lo) if lo < len(self) else len(self._blob)
            last = int(self._ends[hi - 1]) if hi > lo else first
            return Strings(self._blob[first:last], self._ends[lo:hi] - first)
        if isinstance(i, np.ndarray) or (isinstance(i, list) and not isinstance(i, str)):
            return self.take(i)
        n = len(self)
        i = int(i)
        if i < -n or i >= n:
            raise IndexError(f"index {i} out of range for {n} strings")
        i %= n
        return self._blob[self._start(i):int(self._ends[i])].decode(*_CODEC)

    def take(self, rows) -> Strings:
        """The strings at ``rows`` (row numbers or a boolean mask), packed."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64, copy=False)
        return Strings.of(self[int(r)] for r in rows)

    def __iter__(self) -> Iterator[str]:
        blob, start = self._blob, 0
        for end in self._ends.tolist():
            yield blob[start:end].decode(*_CODEC)
            start = end

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other) -> bool:
        if isinstance(other, Strings):
            return self._blob == other._blob and np.array_equal(self._ends, other._ends)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # a sequence compared by value, like a list

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"Strings([{head}{', ...' if len(self) > 3 else ''}], {len(self)} strings)"

    def __reduce__(self):
        return Strings, (self._blob, self._ends)

    @property
    def nbytes(self) -> int:
        return len(self._blob) + self._ends.nbytes


class StringsBuilder:
    """Appends strings to a ``Strings``, a batch (``extend``) or one at a time (``append``, encoded ``Strings.CHUNK``
    at once): one encoded buffer per batch, joined once by ``build``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._lengths: list[np.ndarray] = []
        self._pending: list[str] = []

    def append(self, item: str) -> None:
        self._pending.append(item)
        if len(self._pending) >= Strings.CHUNK:
            self._flush()

    def extend(self, items: Sequence[str]) -> None:
        self._flush()
        if not len(items):
            return
        encoded = [s.encode(*_CODEC) for s in items]
        self._lengths.append(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        self._parts.append(b"".join(encoded))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self.extend(pending)

    def build(self) -> Strings:
        self._flush()
        if not self._parts:
            return Strings()
        blob, ends = b"".join(self._parts), np.cumsum(np.concatenate(self._lengths))
        self._parts, self._lengths = [], []
        return Strings(blob, ends)
