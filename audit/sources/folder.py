"""ImageFolder sources: ``DIR/<class name>/<image>`` plus an optional ``DIR/metadata.csv``.

``metadata.csv`` has a ``path`` column (relative to DIR) and any attribute columns (``site``,
``lighting``, ...); a ``label`` column restates the folder and is not an attribute. It is read
as attributes and named as the source's ``metadata``, not counted among the files found. Every
other file under DIR is accounted for: hidden files and folders, files outside a class folder
and unknown extensions are skipped with their reason.
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path

from audit.errors import DataError
from audit.sources.base import DataSource, SampleTableBuilder, Skipped, file_kind

METADATA_FILE = "metadata.csv"
OUTSIDE_CLASS = "not inside a class folder"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def scan_folder(root: Path, flag: str = "--data") -> DataSource:
    """Walk ``root`` once: every file becomes a ``Sample`` or a ``Skipped`` record.

    A folder that cannot be listed (permissions, a path too long) and an entry that is not a regular file
    (a FIFO, a socket, a device, a broken link: opening one could block forever) are skipped entries
    with their reason, never silently missing from the files found.
    """
    meta, attr_names, notes = read_metadata(root / METADATA_FILE)
    samples = SampleTableBuilder()  # packed as scanned: no object per image (a million images: docs/ARCHITECTURE.md §12)
    skipped: list[Skipped] = []
    classes: list[str] = []
    found = 0
    for rel_dir, filenames, others in _walk(root):
        if not rel_dir.parts and METADATA_FILE in filenames:
            filenames = [f for f in filenames if f != METADATA_FILE]  # attributes, not an image: not "found"
        found += len(filenames) + len(others)
        prefix = f"{rel_dir.as_posix()}/" if rel_dir.parts else ""  # strings, not a Path per file (10k files)
        skipped += [Skipped(prefix + name if name else rel_dir.as_posix(), why) for name, why in others]
        if rel_dir.parts and rel_dir.parts[0].startswith("."):
            skipped += [Skipped(prefix + f, "hidden folder") for f in sorted(filenames)]
            continue
        if len(rel_dir.parts) == 1:
            classes.append(rel_dir.parts[0])
        for name in sorted(filenames):
            rel = prefix + name
            why = _skip_reason(rel_dir, name)
            if why:
                skipped.append(Skipped(rel, why))
            else:
                samples.add(rel, rel_dir.parts[0], tuple(meta.pop(rel, {}).items()))
    if meta:
        notes += (f"{len(meta)} row(s) of {METADATA_FILE} name no image in the folder (e.g. {next(iter(meta))!r})",)
    return DataSource("ImageFolder", str(root), root, samples.build(), tuple(skipped), tuple(classes), attr_names,
                      found, notes, metadata=METADATA_FILE if (root / METADATA_FILE).is_file() else "")


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[tuple[str, str]]]]:
    """Like ``os.walk`` (top-down, sorted, symbolic links to folders not followed), yielding each folder's
    regular files and, with a reason, every other entry: what cannot be listed or is not a regular file."""
    stack = [Path()]
    while stack:
        rel = stack.pop()
        files, others, dirs = [], [], []
        try:
            with os.scandir(root / rel) as it:
                entries = list(it)
        except OSError as e:
            if not rel.parts:
                raise DataError(f"cannot list the folder {root} ({e.strerror or e})",
                                hint="check its permissions, or pass another folder") from None
            yield rel, [], [("", f"folder cannot be read ({e.strerror or e})")]  # the folder is the entry
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(entry.name)
                elif entry.is_file():
                    files.append(entry.name)
                else:
                    others.append((entry.name, _other_reason(entry)))
            except OSError as e:
                others.append((entry.name, f"cannot be read ({e.strerror or e})"))
        yield rel, files, others
        stack += [rel / d for d in sorted(dirs, reverse=True)]


def _other_reason(entry: os.DirEntry) -> str:
    if entry.is_symlink():
        return "symbolic link to a folder (not followed)" if entry.is_dir() else "broken symbolic link"
    return f"not a regular file ({file_kind(entry.stat(follow_symlinks=False).st_mode)})"


def _skip_reason(rel_dir: Path, name: str) -> str | None:
    return OUTSIDE_CLASS if not rel_dir.parts else skip_reason(name)


def skip_reason(name: str) -> str | None:
    """Why a regular file in a class folder is not an image to audit (None when it is one)."""
    if name.startswith("."):
        return "hidden file"
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""  # Path(name).suffix, without a Path per file
    if suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file extension ({suffix or 'none'})"
    return None


def read_metadata(path: Path) -> tuple[dict[str, dict[str, str]], tuple[str, ...], tuple[str, ...]]:
    """``metadata.csv`` as {relative path: {attribute: value}}, the attribute names and notes.

    Repeated rows of one path are merged when identical (and said in a note); a path listed
    twice with different values is an error, never "the last row wins".
    """
    if not path.exists():
        return {}, (), ()
    if not path.is_file():
        raise DataError(f"{path} is not a file", hint=f"{METADATA_FILE} must be a CSV file with a path column")
    rows, columns = read_csv(path)
    if "path" not in columns:
        raise DataError(f"{METADATA_FILE} has no 'path' column (columns: {columns})",
                        hint="add a path column with image paths relative to the data folder")
    attr_names = tuple(c for c in columns if c not in ("path", "label"))
    unique, repeated = unique_rows(rows, lambda r: posixpath.normpath(Path(r["path"]).as_posix()), METADATA_FILE)
    meta = {key: {a: r[a] for a in attr_names} for key, _, r in unique}
    notes = (f"{len(repeated)} duplicate row(s) of {METADATA_FILE} repeat an earlier row of the same image and were "
             f"merged (e.g. {repeated[0][0]!r})",) if repeated else ()
    return meta, attr_names, notes


def unique_rows(rows: list[dict[str, str]], key: Callable[[dict[str, str]], str], name: str,
                first_row: int = 2) -> tuple[list[tuple[str, int, dict]], list[tuple[str, int]]]:
    """(key, row number, row) of each key's first row, and (key, row number) of identical repeats.

    A repeat whose other values differ raises ``DataError`` naming both rows (numbered from
    ``first_row``: 2 in a CSV, whose header is row 1).
    """
    first: dict[str, tuple[int, dict]] = {}
    unique, repeated = [], []
    for i, row in enumerate(rows, start=first_row):
        k = key(row)
        if k not in first:
            first[k] = (i, row)
            unique.append((k, i, row))
            continue
        j, prev = first[k]
        if {c: v for c, v in prev.items() if c != "path"} != {c: v for c, v in row.items() if c != "path"}:
            raise DataError(f"{name} lists {k!r} twice with different values (rows {j} and {i})",
                            hint="keep one row per image")
        repeated.append((k, i))
    return unique, repeated


def read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a UTF-8 CSV with a header, as strings (missing cells are empty)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{k: (v or "") for k, v in r.items() if k is not None} for r in reader]
            return rows, list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path.name}: {e}", hint="it must be a UTF-8 CSV with a header row") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}", hint="it must be a readable CSV file") from None
