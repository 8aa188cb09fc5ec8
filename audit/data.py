"""The data contract (DESIGN §4): an ImageFolder (plus optional metadata.csv) or a CSV manifest.

``scan`` walks the input once and accounts for every file: each becomes either a ``Sample`` to
run or a ``Skipped`` record with its reason, so ``processed + skipped == found`` always holds.
Decoding failures found later (truncated files) are added to the skipped list by the
inference step, never dropped.

Example::

    ds = scan(Path("test/"), labels=("cat", "dog"))
    len(ds.samples), ds.skipped[:1]
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import DataError

METADATA_FILE = "metadata.csv"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the data root, with forward slashes
    file: Path
    label: str
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """A scanned data source: what will be run, what was skipped, and what was found."""

    root: Path
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...]
    classes: tuple[str, ...]  # every class named by the data, including empty folders
    attribute_names: tuple[str, ...] = ()
    found: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            counts[s.label] = counts.get(s.label, 0) + 1
        return counts


def scan(source: Path, labels: Sequence[str], *, flag: str = "--data") -> Dataset:
    """Scan an ImageFolder directory or a CSV manifest (``path,label,...``) against ``labels``.

    Raises ``DataError`` when nothing can be audited: missing source, no images, or a class
    the model does not know (a typo there would silently mis-score every image of it).
    """
    if not source.exists():
        raise DataError(f"{flag} not found: {source}", hint=f"pass {flag} DIR (an ImageFolder) or a CSV manifest")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{flag} {source} is a file but not a .csv manifest",
                            hint="pass an ImageFolder directory or a CSV with path,label columns")
        ds = _scan_manifest(source)
    else:
        ds = _scan_folder(source)
    _check_labels(ds, labels, source)
    if not ds.samples:
        raise DataError(f"no images to audit in {source} ({ds.found} file(s) found, {len(ds.skipped)} skipped)",
                        hint="expected DIR/<class name>/<image>")
    return ds


def _scan_folder(root: Path) -> Dataset:
    meta, attr_names = _read_metadata(root / METADATA_FILE, root)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    classes: list[str] = []
    found = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0].startswith("."):
            found += len(filenames)
            skipped += [Skipped(_rel(rel_dir / f), "hidden folder") for f in sorted(filenames)]
            continue
        if len(rel_dir.parts) == 1:
            classes.append(rel_dir.parts[0])
        for name in sorted(filenames):
            found += 1
            rel = _rel(rel_dir / name)
            if not rel_dir.parts:
                if name == METADATA_FILE:
                    skipped.append(Skipped(rel, "metadata file (read as attributes)"))
                else:
                    skipped.append(Skipped(rel, "not inside a class folder"))
                continue
            if name.startswith("."):
                skipped.append(Skipped(rel, "hidden file"))
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(rel, f"not an image file extension ({Path(name).suffix or 'none'})"))
                continue
            attrs = meta.pop(rel, {})
            samples.append(Sample(rel, Path(dirpath) / name, rel_dir.parts[0], tuple(attrs.items())))
    notes = ()
    if meta:
        notes = (f"{len(meta)} row(s) of {METADATA_FILE} name no image in the folder (e.g. {next(iter(meta))!r})",)
    return Dataset(root, tuple(samples), tuple(skipped), tuple(classes), attr_names, found, notes)


def _scan_manifest(manifest: Path) -> Dataset:
    root = manifest.parent
    rows, columns = _read_csv(manifest)
    missing = {"path", "label"} - set(columns)
    if missing:
        raise DataError(f"manifest {manifest.name} lacks column(s) {sorted(missing)}",
                        hint="a manifest needs path,label columns (paths relative to the manifest)")
    attr_names = tuple(c for c in columns if c not in ("path", "label"))
    samples, skipped, classes = [], [], []
    for row in rows:
        rel, label = row["path"], row["label"]
        if label not in classes:
            classes.append(label)
        file = root / rel
        if not file.is_file():
            skipped.append(Skipped(rel, "listed in the manifest but not found"))
            continue
        samples.append(Sample(rel, file, label, tuple((a, row[a]) for a in attr_names)))
    return Dataset(root, tuple(samples), tuple(skipped), tuple(classes), attr_names, len(rows))


def _read_metadata(path: Path, root: Path) -> tuple[dict[str, dict[str, str]], tuple[str, ...]]:
    if not path.exists():
        return {}, ()
    rows, columns = _read_csv(path)
    if "path" not in columns:
        raise DataError(f"{METADATA_FILE} has no 'path' column (columns: {columns})",
                        hint="add a path column with image paths relative to the data folder")
    # a label column restates the folder; it is not an attribute to slice by
    attr_names = tuple(c for c in columns if c not in ("path", "label"))
    return {_rel(Path(r["path"])): {a: r[a] for a in attr_names} for r in rows}, attr_names


def _read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{k: (v or "") for k, v in r.items() if k is not None} for r in reader]
            return rows, list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path.name}: {e}", hint="it must be a UTF-8 CSV with a header row") from None


def _check_labels(ds: Dataset, labels: Sequence[str], source: Path) -> None:
    unknown = [c for c in ds.classes if c not in labels]
    if unknown:
        raise DataError(
            f"class {unknown[0]!r} in {source} is not one of the model's labels {list(labels)}",
            hint="rename the folder, or pass --labels in the model's output order",
        )


def _rel(p: Path) -> str:
    return p.as_posix()
