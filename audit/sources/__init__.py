"""The data-source seam (docs/ARCHITECTURE.md §6): what to audit, and the only place that opens an image file.

A ``DataSource`` (``audit.sources.base``) lists ``Sample`` records (a path that identifies the image,
its label and its attributes), the files it ``skipped`` with a reason, and opens a sample's bytes.
Three scanners build one: an ImageFolder (``DIR/<class>/<image>`` plus an optional
``metadata.csv``, ``folder.py``), a CSV manifest and a Parquet manifest (``path,label,<attributes>``;
relative paths resolve against the manifest's folder, ``manifest.py``). Every file found is
accounted for: ``len(samples) + len(skipped) == found``; decoding failures found later are added
by the engine, never dropped.

Example::

    src = open_source(Path("test/"), labels=("cat", "dog"))
    data = src.open(src.samples[0].path, imaging.Limits())
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from audit.errors import DataError
from audit.sources.base import DUPLICATE, NON_FINITE, NOT_DATA, DataSource, Sample, SampleTable, Skipped
from audit.sources.folder import OUTSIDE_CLASS, scan_folder, skip_reason
from audit.sources.manifest import scan_manifest

__all__ = ["DUPLICATE", "NON_FINITE", "NOT_DATA", "DataSource", "Sample", "SampleTable", "Skipped", "open_source"]


def open_source(location: Path, labels: Sequence[str], *, flag: str = "--data",
                data_root: Path | None = None, labels_optional: bool = False) -> DataSource:
    """Scan an ImageFolder directory, a CSV manifest or a Parquet manifest against ``labels``.

    A manifest may only name files inside its own folder, or inside ``data_root`` when given
    (``--data-root``): a path that leads elsewhere (``../../x``, ``/etc/shadow``) is refused
    before any file is opened.

    Raises ``DataError`` when nothing can be audited: missing source, no images, a path outside
    the allowed folders, or a class the model does not know (a typo there would silently
    mis-score every image of it).

    ``labels_optional`` (a reference set): a folder of images without class folders, or a manifest
    without a ``label`` column, gives samples whose label is ``""``.
    """
    if not location.exists():
        raise DataError(f"{flag} not found: {location}",
                        hint=f"pass {flag} DIR (an ImageFolder) or a .csv/.parquet manifest")
    if location.is_file():
        if location.suffix.lower() not in (".csv", ".parquet"):
            raise DataError(f"{flag} {location} is a file but not a .csv or .parquet manifest",
                            hint="pass an ImageFolder directory or a manifest with path,label columns")
        src = scan_manifest(location, flag, data_root, labels_optional=labels_optional)
    else:
        src = scan_folder(location, flag)
        if labels_optional and not src.samples:
            src = unlabelled(src)
    _check_labels(src, labels, flag)
    if not src.samples:
        reasons = collections.Counter(s.reason for s in src.skipped).most_common(2)
        why = "".join(f"; {n} {r}" for r, n in reasons)
        layout = "DIR/<image> or DIR/<class name>/<image>" if labels_optional else "DIR/<class name>/<image>"
        raise DataError(f"{flag} {location}: no usable image in the {src.kind} ({src.found} file(s) found, "
                        f"{len(src.skipped)} skipped{why})",
                        hint=f"expected {layout}" if src.kind == "ImageFolder" else
                        "a manifest's paths are relative to its own folder")
    return src


def unlabelled(src: DataSource) -> DataSource:
    """A folder whose images lie directly in it (no class folders): each one a sample with no label.

    The loose files are judged as a class folder's would be (hidden files and other extensions stay
    skipped, with that reason); what the scan skipped for other reasons (a FIFO, an unreadable
    folder) stays skipped: every file found is still accounted for.
    """
    samples, skipped = [], []
    for s in src.skipped:
        why = skip_reason(s.path) if s.reason == OUTSIDE_CLASS and "/" not in s.path else s.reason
        if why is None:
            samples.append(Sample(s.path, ""))
        else:
            skipped.append(s if why == s.reason else Skipped(s.path, why))
    return replace(src, samples=tuple(sorted(samples, key=lambda x: x.path)), skipped=tuple(skipped), classes=())


def _check_labels(src: DataSource, labels: Sequence[str], flag: str) -> None:
    unknown = [c for c in src.classes if c not in labels]
    if unknown:
        raise DataError(f"class {unknown[0]!r} in {flag} {src.description} is not one of the model's labels "
                        f"{list(labels)}", hint="rename the folder, or pass --labels in the model's output order")
