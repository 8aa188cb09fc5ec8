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

from collections.abc import Sequence
from pathlib import Path

from audit.errors import DataError
from audit.sources.base import DUPLICATE, NON_FINITE, NOT_DATA, DataSource, Sample, Skipped
from audit.sources.folder import scan_folder
from audit.sources.manifest import scan_manifest

__all__ = ["DUPLICATE", "NON_FINITE", "NOT_DATA", "DataSource", "Sample", "Skipped", "open_source"]


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
