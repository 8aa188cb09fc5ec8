"""The data-source seam (DESIGN §4): what to audit, and the only place that opens an image file.

A ``DataSource`` lists ``Sample`` records (a path that identifies the image, its label and its
attributes), the files it ``skipped`` with a reason, and opens a sample's bytes. Three
scanners build one: an ImageFolder (``DIR/<class>/<image>`` plus an optional ``metadata.csv``),
a CSV manifest and a Parquet manifest (``path,label,<attributes>``; relative paths resolve
against the manifest's folder). Every file found is accounted for: ``len(samples) +
len(skipped) == found``; decoding failures found later are added by the engine, never dropped.

Example::

    src = open_source(Path("test/"), labels=("cat", "dog"))
    data = src.open(src.samples[0].path, imaging.Limits())
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audit import imaging
from audit.errors import DataError

MISSING = "(missing)"  # the slice/group name of an empty attribute value
DUPLICATE = "duplicate row: this image is listed earlier (counted once)"
NON_FINITE = "model output is NaN or Inf (not scored)"
# Skipped files that were never candidate images: they do not count against the processed share.
NOT_DATA = frozenset({"metadata file (read as attributes)", "hidden file", "hidden folder", DUPLICATE})


@dataclass(frozen=True)
class Sample:
    path: str  # identifies the image: relative to the source root, with forward slashes
    label: str
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
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
    found: int = 0
    notes: tuple[str, ...] = field(default=())

    def uri(self, path: str) -> str:
        """Where the image lives (an absolute file path here; a URI for remote sources)."""
        return str(self.root / path)

    def open(self, path: str, limits: imaging.Limits = imaging.Limits()) -> bytes:
        """The image file's bytes, refusing empty and oversized files before reading them.

        Raises ``imaging.ImageRejected`` (with a reason for the report) or ``OSError``.
        """
        with open(os.path.join(self.root, path), "rb") as f:  # one open, then its size: no pathlib per image
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise imaging.ImageRejected("empty file (0 bytes)")
            if size > limits.max_bytes:
                raise imaging.ImageRejected(f"file too large ({size:,} bytes > {limits.max_bytes:,})")
            return f.read()

    @property
    def candidates(self) -> int:
        """Files found that could be test images: all but the metadata file, hidden files and duplicate rows."""
        return self.found - sum(1 for s in self.skipped if s.reason in NOT_DATA)

    @property
    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            counts[s.label] = counts.get(s.label, 0) + 1
        return counts


def open_source(location: Path, labels: Sequence[str], *, flag: str = "--data",
                data_root: Path | None = None) -> DataSource:
    """Scan an ImageFolder directory, a CSV manifest or a Parquet manifest against ``labels``.

    A manifest may only name files inside its own folder, or inside ``data_root`` when given
    (``--data-root``): a path that leads elsewhere (``../../x``, ``/etc/shadow``) is refused
    before any file is opened.

    Raises ``DataError`` when nothing can be audited: missing source, no images, a path outside
    the allowed folders, or a class the model does not know (a typo there would silently
    mis-score every image of it).
    """
    from audit.sources.folder import scan_folder
    from audit.sources.manifest import scan_manifest

    if not location.exists():
        raise DataError(f"{flag} not found: {location}",
                        hint=f"pass {flag} DIR (an ImageFolder) or a .csv/.parquet manifest")
    if location.is_file():
        if location.suffix.lower() not in (".csv", ".parquet"):
            raise DataError(f"{flag} {location} is a file but not a .csv or .parquet manifest",
                            hint="pass an ImageFolder directory or a manifest with path,label columns")
        src = scan_manifest(location, flag, data_root)
    else:
        src = scan_folder(location, flag)
    _check_labels(src, labels, flag)
    if not src.samples:
        raise DataError(f"no images to audit in {location} ({src.found} file(s) found, {len(src.skipped)} skipped)",
                        hint="expected DIR/<class name>/<image>")
    return src


def _check_labels(src: DataSource, labels: Sequence[str], flag: str) -> None:
    unknown = [c for c in src.classes if c not in labels]
    if unknown:
        raise DataError(f"class {unknown[0]!r} in {flag} {src.description} is not one of the model's labels "
                        f"{list(labels)}", hint="rename the folder, or pass --labels in the model's output order")
