"""Manifest sources: a CSV or Parquet table with ``path`` and ``label`` columns and any attributes.

Relative paths resolve against the manifest's folder. A listed file that does not exist is
skipped with its reason; every row is accounted for. Two policies keep a manifest honest:

* **paths stay inside the data**: a path must lead into the manifest's folder, or into the
  folder named by ``--data-root`` (config ``data_root``); ``../../x`` or ``/etc/shadow`` is refused
  before any file is opened. The check is on the normalised path; a symbolic link placed inside
  the allowed folder is followed (putting it there is the data owner's decision);
* **each image once**: a row that repeats an earlier row's image with the same label and
  attributes is skipped as a duplicate (counted once, and said in a note); one that repeats it
  with different values is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from audit.errors import DataError
from audit.sources.base import DUPLICATE, DataSource, Sample, Skipped, file_kind
from audit.sources.folder import read_csv, unique_rows


def scan_manifest(manifest: Path, flag: str = "--data", data_root: Path | None = None, *,
                  labels_optional: bool = False) -> DataSource:
    """Rows of ``manifest`` (.csv or .parquet) as samples; missing files and repeated rows are skipped.
    With ``labels_optional``, a manifest without a ``label`` column lists unlabelled images."""
    parquet = manifest.suffix.lower() == ".parquet"
    rows, columns = read_parquet(manifest) if parquet else read_csv(manifest)
    if labels_optional and "label" not in columns:
        rows, columns = [{**r, "label": ""} for r in rows], [*columns, "label"]
    missing = {"path", "label"} - set(columns)
    if missing:
        raise DataError(f"manifest {manifest.name} lacks column(s) {sorted(missing)}",
                        hint="a manifest needs path,label columns (paths relative to the manifest)")
    _check_cells(rows, manifest.name, first_row=1 if parquet else 2,
                 columns=("path",) if labels_optional else ("path", "label"))
    root = manifest.parent
    allowed = AllowedPaths(root, data_root, f"{flag} {manifest}")
    unique, repeated = unique_rows(rows, lambda r: allowed.sample_path(r["path"]), manifest.name,
                                   first_row=1 if parquet else 2)
    attr_names = tuple(c for c in columns if c not in ("path", "label"))
    samples, skipped, classes = [], [], {}
    for path, _, row in unique:
        if row["label"] or not labels_optional:  # an empty label: an unlabelled reference image, else an error
            classes.setdefault(row["label"], None)
        why = _file_problem(root, path)
        if why:
            skipped.append(Skipped(path, why))
            continue
        samples.append(Sample(path, row["label"], tuple((a, row[a]) for a in attr_names)))
    skipped += [Skipped(path, DUPLICATE) for path, _ in repeated]
    notes = (f"{len(repeated)} duplicate row(s) of {manifest.name} list an image listed earlier; each image is "
             f"counted once (e.g. {repeated[0][0]!r})",) if repeated else ()
    kind = "Parquet manifest" if parquet else "CSV manifest"
    return DataSource(kind, str(manifest), root, tuple(samples), tuple(skipped), tuple(classes), attr_names,
                      len(rows), notes)


def _check_cells(rows: list[dict[str, str]], name: str, first_row: int,
                 columns: tuple[str, ...] = ("path", "label")) -> None:
    """Every row needs a path and a label (a path only, for a reference set whose labels are optional): an
    empty or null cell is refused, naming the rows."""
    for col in columns:
        bad = [i for i, r in enumerate(rows, start=first_row) if not r[col].strip()]
        if bad:
            rows_text = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise DataError(f"manifest {name}: column {col!r} is empty or null in {len(bad)} row(s) (row {rows_text})",
                            hint=f"give every row a {col}, or drop the rows without one")


def _file_problem(root: Path, path: str) -> str | None:
    """Why a listed path cannot be an image file (None when it is a regular file); never opens it."""
    try:
        st = os.stat(os.path.join(root, path))
    except (FileNotFoundError, NotADirectoryError):
        return "listed in the manifest but not found"
    except OSError as e:  # a name over 255 bytes, a path too long, a folder we may not enter
        return f"listed in the manifest but cannot be read ({e.strerror or e})"
    return None if stat.S_ISREG(st.st_mode) else f"not a regular file ({file_kind(st.st_mode)})"


class AllowedPaths:
    """Where a manifest may point: its own folder, plus ``data_root`` when given."""

    def __init__(self, root: Path, data_root: Path | None, where: str) -> None:
        self.root = os.path.abspath(root)
        self.allowed = [self.root] + ([os.path.abspath(data_root)] if data_root is not None else [])
        self.where = where

    def sample_path(self, text: str) -> str:
        """The normalised path of a manifest entry: relative to the manifest's folder when inside it,
        else absolute (inside ``data_root``). Raises ``DataError`` for a path outside both."""
        full = os.path.normpath(os.path.join(self.root, text))
        if not any(full == a or full.startswith(a.rstrip(os.sep) + os.sep) for a in self.allowed):
            roots = " or ".join(self.allowed)
            raise DataError(f"{self.where} lists {text!r}, which is outside {roots}",
                            hint="paths must stay inside the manifest's folder; to allow another folder, pass "
                                 "--data-root DIR (config key data_root)")
        if full == self.root or full.startswith(self.root.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(full, self.root)).as_posix()
        return full


def read_parquet(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a Parquet manifest as strings (nulls are empty), like ``read_csv``; ``path`` must hold text and
    ``label`` text or integers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read {path.name} as Parquet: {str(e).splitlines()[0]}",
                        hint="write it with pandas.DataFrame.to_parquet or pyarrow") from None
    columns = table.column_names
    for col, integers in (("path", False), ("label", True)):
        kind = table.schema.field(col).type if col in columns else None
        if pa.types.is_dictionary(kind):
            kind = kind.value_type  # a pandas categorical column
        if kind is not None and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                                     or (integers and pa.types.is_integer(kind))):
            what = "file paths relative to the manifest, as text" if col == "path" else "class names (text)"
            raise DataError(f"manifest {path.name}: column {col!r} holds {kind} values, not {what}",
                            hint=f"write the {col} column as strings (df[{col!r}] = df[{col!r}].astype(str))")
    data = {c: ["" if v is None else str(v) for v in table.column(c).to_pylist()] for c in columns}
    return [{c: data[c][i] for c in columns} for i in range(table.num_rows)], columns
