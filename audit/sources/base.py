"""The records of the data-source seam (docs/ARCHITECTURE.md §6): a sample, a skipped file, and the source that opens them.

The scanners (``folder.py``, ``manifest.py``) build a ``DataSource``; ``audit.sources.open_source``
picks the scanner. Nothing else opens an image file: engines, probes and thumbnails all read
through ``DataSource.open``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit import imaging
from audit.packed import Strings, StringsBuilder

DUPLICATE = "duplicate row: this image is listed earlier (counted once)"
NON_FINITE = "model output is NaN or Inf (not scored)"
# Skipped files that were never candidate images: they do not count against the processed share.
NOT_DATA = frozenset({"hidden file", "hidden folder", DUPLICATE})


@dataclass(frozen=True, slots=True)  # slots: a million samples take 56 bytes each, not 160
class Sample:
    path: str  # identifies the image: relative to the source root, with forward slashes
    label: str
    attributes: tuple[tuple[str, str], ...] = ()


class SampleTable(Sequence[Sample]):
    """The samples of a source, packed: the paths in one buffer (``audit.packed.Strings``), each label as a small
    integer code, the attributes only when some sample has any. A ``Sample`` is made when one is read, so a
    million samples take about the characters of their paths plus 12 bytes each, not 200 (measured in
    docs/ARCHITECTURE.md §12).

    >>> t = SampleTable.of([Sample("a/1.png", "a"), Sample("b/2.png", "b", (("site", "x"),))])
    >>> t[1], len(t[:1]), t.paths[0]
    (Sample(path='b/2.png', label='b', attributes=(('site', 'x'),)), 1, 'a/1.png')
    """

    def __init__(self, paths: Strings, label_names: tuple[str, ...], codes: np.ndarray,
                 attributes: tuple[tuple[tuple[str, str], ...], ...] | None = None) -> None:
        self.paths, self.label_names, self.codes, self.attributes = paths, label_names, codes, attributes

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> SampleTable:
        if isinstance(samples, SampleTable):
            return samples
        b = SampleTableBuilder()
        for s in samples:
            b.add(s.path, s.label, s.attributes)
        return b.build()

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return SampleTable(self.paths[i], self.label_names, self.codes[i],
                               None if self.attributes is None else self.attributes[i])
        i = range(len(self))[i]
        return Sample(self.paths[i], self.label_names[self.codes[i]], self.attributes[i] if self.attributes else ())

    def __iter__(self) -> Iterator[Sample]:
        names, attrs = self.label_names, self.attributes
        for i, (path, code) in enumerate(zip(self.paths, self.codes.tolist())):
            yield Sample(path, names[code], attrs[i] if attrs else ())

    def __eq__(self, other) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"SampleTable({len(self)} samples)"


class SampleTableBuilder:
    """Collects samples one at a time (``add``) into a ``SampleTable``."""

    def __init__(self) -> None:
        self._paths = StringsBuilder()
        self._names: dict[str, int] = {}
        self._codes: list[int] = []
        self._attrs: list[tuple[tuple[str, str], ...]] = []
        self._any_attrs = False

    def add(self, path: str, label: str, attributes: tuple[tuple[str, str], ...] = ()) -> None:
        self._paths.append(path)
        self._codes.append(self._names.setdefault(label, len(self._names)))
        self._attrs.append(attributes)
        self._any_attrs = self._any_attrs or bool(attributes)

    def build(self) -> SampleTable:
        codes = np.asarray(self._codes, np.int32)
        attrs = tuple(self._attrs) if self._any_attrs else None
        return SampleTable(self._paths.build(), tuple(self._names), codes, attrs)


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class DataSource:
    """A scanned source: what will be run, what was skipped, and how to read an image's bytes."""

    kind: str  # "ImageFolder", "CSV manifest" or "Parquet manifest"
    description: str  # what the user passed (--data)
    root: Path  # relative sample paths resolve against it
    samples: Sequence[Sample]  # a SampleTable (any sequence given is packed into one)
    skipped: tuple[Skipped, ...]
    classes: tuple[str, ...]  # every class named by the data, including empty folders
    attribute_names: tuple[str, ...] = ()
    found: int = 0  # files that could be images (a folder's metadata file is not one)
    notes: tuple[str, ...] = field(default=())
    metadata: str = ""  # the attribute file read besides the images ("metadata.csv"), if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", SampleTable.of(self.samples))

    def uri(self, path: str) -> str:
        """Where the image lives (an absolute file path here; a URI for remote sources)."""
        return str(self.root / path)

    def open(self, path: str, limits: imaging.Limits = imaging.Limits()) -> bytes:
        """The image file's bytes, refusing empty, oversized and non-regular files before reading them.

        The file is opened without blocking and its type checked first: a FIFO or a device named like an
        image would otherwise block the read forever. Raises ``imaging.ImageRejected`` (with a reason for the
        report) or ``OSError``.
        """
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(os.path.join(self.root, path), flags)
        try:  # one open, then its type and size: no pathlib and no file object per image
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise imaging.ImageRejected(f"not a regular file ({file_kind(st.st_mode)})")
            if st.st_size == 0:
                raise imaging.ImageRejected("empty file (0 bytes)")
            if st.st_size > limits.max_bytes:
                raise imaging.ImageRejected(f"file too large ({st.st_size:,} bytes > {limits.max_bytes:,})")
            return read_all(fd, st.st_size)
        finally:
            os.close(fd)

    @property
    def candidates(self) -> int:
        """Files found that could be test images: all but hidden files and duplicate rows."""
        return self.found - sum(1 for s in self.skipped if s.reason in NOT_DATA)

    @property
    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        t = self.samples
        for name, n in zip(t.label_names, np.bincount(t.codes, minlength=len(t.label_names)).tolist()):
            counts[name] = counts.get(name, 0) + n
        return counts


def read_all(fd: int, size: int) -> bytes:
    """Everything left in the file ``fd`` whose size ``fstat`` gave as ``size``: one read when it still has that
    size (half the cost of a file object's ``read()`` for a small image), reads to the end when it has not."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    parts = [data]
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for a skip reason."""
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return kind
    return "special file"
