"""The records of the data-source seam (docs/ARCHITECTURE.md §6): a sample, a skipped file, and the source that opens them.

The scanners (``folder.py``, ``manifest.py``) build a ``DataSource``; ``audit.sources.open_source``
picks the scanner. Nothing else opens an image file: engines, probes and thumbnails all read
through ``DataSource.open``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from audit import imaging

DUPLICATE = "duplicate row: this image is listed earlier (counted once)"
NON_FINITE = "model output is NaN or Inf (not scored)"
# Skipped files that were never candidate images: they do not count against the processed share.
NOT_DATA = frozenset({"hidden file", "hidden folder", DUPLICATE})


@dataclass(frozen=True, slots=True)  # slots: a million samples take 56 bytes each, not 160
class Sample:
    path: str  # identifies the image: relative to the source root, with forward slashes
    label: str
    attributes: tuple[tuple[str, str], ...] = ()


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
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...]
    classes: tuple[str, ...]  # every class named by the data, including empty folders
    attribute_names: tuple[str, ...] = ()
    found: int = 0  # files that could be images (a folder's metadata file is not one)
    notes: tuple[str, ...] = field(default=())
    metadata: str = ""  # the attribute file read besides the images ("metadata.csv"), if any

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
        with open(fd, "rb") as f:  # one open, then its type and size: no pathlib per image
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise imaging.ImageRejected(f"not a regular file ({file_kind(st.st_mode)})")
            if st.st_size == 0:
                raise imaging.ImageRejected("empty file (0 bytes)")
            if st.st_size > limits.max_bytes:
                raise imaging.ImageRejected(f"file too large ({st.st_size:,} bytes > {limits.max_bytes:,})")
            return f.read()

    @property
    def candidates(self) -> int:
        """Files found that could be test images: all but hidden files and duplicate rows."""
        return self.found - sum(1 for s in self.skipped if s.reason in NOT_DATA)

    @property
    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            counts[s.label] = counts.get(s.label, 0) + 1
        return counts


def file_kind(mode: int) -> str:
    """What a non-regular file is, for a skip reason."""
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return kind
    return "special file"
