"""Manifest sources: a CSV or Parquet table with ``path`` and ``label`` columns and any attributes.

Relative paths resolve against the manifest's folder. A listed file that does not exist is
skipped with its reason; every row is accounted for.
"""

from __future__ import annotations

from pathlib import Path

from audit.errors import DataError
from audit.sources import DataSource, Sample, Skipped
from audit.sources.folder import read_csv


def scan_manifest(manifest: Path, flag: str = "--data") -> DataSource:
    """Rows of ``manifest`` (.csv or .parquet) as samples; missing files are skipped."""
    parquet = manifest.suffix.lower() == ".parquet"
    rows, columns = read_parquet(manifest) if parquet else read_csv(manifest)
    missing = {"path", "label"} - set(columns)
    if missing:
        raise DataError(f"manifest {manifest.name} lacks column(s) {sorted(missing)}",
                        hint="a manifest needs path,label columns (paths relative to the manifest)")
    root = manifest.parent
    attr_names = tuple(c for c in columns if c not in ("path", "label"))
    samples, skipped, classes = [], [], {}
    for row in rows:
        rel, label = row["path"], row["label"]
        classes.setdefault(label, None)
        if not (root / rel).is_file():
            skipped.append(Skipped(rel, "listed in the manifest but not found"))
            continue
        samples.append(Sample(rel, label, tuple((a, row[a]) for a in attr_names)))
    kind = "Parquet manifest" if parquet else "CSV manifest"
    return DataSource(kind, str(manifest), root, tuple(samples), tuple(skipped), tuple(classes), attr_names,
                      len(rows))


def read_parquet(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a Parquet manifest as strings (nulls are empty), like ``read_csv``."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read {path.name} as Parquet: {str(e).splitlines()[0]}",
                        hint="write it with pandas.DataFrame.to_parquet or pyarrow") from None
    columns = table.column_names
    data = {c: ["" if v is None else str(v) for v in table.column(c).to_pylist()] for c in columns}
    return [{c: data[c][i] for c in columns} for i in range(table.num_rows)], columns
