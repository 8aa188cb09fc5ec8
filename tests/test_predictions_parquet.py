"""predictions.parquet: always written, streamed from the inference pass, the same rows and columns as
predictions.csv (checks' columns included); above csv_rows the CSV is left out and the report says so; compare
and --baseline read either file."""

from __future__ import annotations

import json

import builders
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from audit.cli import main
from audit.engines import LocalEngine
from audit.model import OnnxClassifier
from audit.predictions_file import ROW_GROUP, PredictionStream, read_table, write_parquet
from audit.sources import open_source

pytestmark = pytest.mark.fast
FAST = ["--n-boot", "50", "--no-progress", "--no-latency", "--no-invariance", "--no-label-errors", "--no-pdf",
        "--on-inconclusive", "pass"]


def audit(tmp_path, data, out_name: str = "out", *extra: str):
    model = builders.colour_model(tmp_path / "m.onnx")
    out = tmp_path / out_name
    code = main(["run", "--model", str(model), "--data", str(data), "--out", str(out), *FAST, *extra])
    assert code in (0, 1)
    return out


def test_the_parquet_file_has_the_csvs_rows_and_columns(tmp_path):
    data = builders.sliced_folder(tmp_path / "data", 30, weak="site")
    for i in range(4):  # copies: the cluster column is in both files
        (data / "red" / f"copy{i}.png").write_bytes((data / "red" / f"{i:03d}.png").read_bytes())
    out = audit(tmp_path, data)
    csv = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    text = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    par = pd.read_parquet(out / "predictions.parquet")
    assert list(par.columns) == list(csv.columns) and "cluster" in par and "discovered_slice" in par
    assert len(par) == len(csv) == 94
    for col in csv:
        if par[col].dtype.kind in "fiu":
            # the CSV has 9 significant digits: float32 values exactly, float64 ones to 1e-8
            assert np.allclose(par[col].to_numpy(float), csv[col].to_numpy(float), rtol=1e-8, atol=0,
                               equal_nan=True), col
        else:
            assert par[col].astype(str).tolist() == text[col].tolist(), col
    assert json.loads((out / ".audit-outputs.json").read_text())["files"].count("predictions.parquet") == 1


def test_above_csv_rows_only_parquet_is_written_and_the_report_says_so(tmp_path):
    data = builders.image_folder(tmp_path / "data", 12)
    out = audit(tmp_path, data, "out", "--csv-rows", "10")
    assert not (out / "predictions.csv").exists()
    assert pq.read_metadata(out / "predictions.parquet").num_rows == 36
    html = (out / "report.html").read_text()
    assert "<code>predictions.csv</code> is not written above <code>csv_rows</code> = 10 images" in html


def test_compare_and_baseline_read_parquet_or_csv(tmp_path):
    data = builders.image_folder(tmp_path / "data", 12)
    a, b = audit(tmp_path, data, "a"), audit(tmp_path, data, "b")
    (a / "predictions.csv").unlink()  # a new run read from Parquet only
    (b / "predictions.parquet").unlink()  # a run of an earlier version: CSV only
    assert main(["compare", "--candidate", str(a), "--baseline", str(b), "--out", str(tmp_path / "cmp"),
                 "--margin", "0.2"]) in (0, 4)
    cmp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert cmp["comparison"]["n"] == 36 and cmp["comparison"]["hashes_checked"]
    c = audit(tmp_path, data, "c", "--baseline", str(a / "verdict.json"))
    verdict = json.loads((c / "verdict.json").read_text())
    assert verdict["paired"]["n"] == 36
    assert read_table(a / "predictions.parquet")["path"].tolist() == read_table(b / "predictions.csv")["path"].tolist()


def test_the_engine_streams_rows_as_batches_arrive(tmp_path):
    model = OnnxClassifier.load(builders.colour_model(tmp_path / "m.onnx"))
    source = open_source(builders.image_folder(tmp_path / "data", 40), model.labels)
    preds, _ = LocalEngine(batch_size=16, progress=False).predict(model, source)
    assert preds.stream.rows == len(preds) == 120
    write_parquet(preds, tmp_path / "p.parquet")
    assert pd.read_parquet(tmp_path / "p.parquet")["path"].tolist() == list(preds.paths)
    probe, _ = LocalEngine(progress=False).predict(model, source, capture=False)
    assert probe.stream is None  # re-runs (probes) stream nothing


def test_a_stream_keeps_one_row_group_in_memory_and_reads_back_in_order(tmp_path):
    stream = PredictionStream(dir=str(tmp_path))
    n = ROW_GROUP * 2 + 5
    step = ROW_GROUP // 8
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        stream.append({"path": [f"{i}.png" for i in range(lo, hi)], "x": np.arange(lo, hi, dtype=np.float32)})
        assert stream._held < ROW_GROUP
    back = pd.concat([t.to_pandas() for t in stream.tables()])
    assert back["x"].tolist() == list(range(n)) and pq.ParquetFile(stream.path).num_row_groups == 3
    stream.discard()
    assert not (tmp_path / stream.path).exists()


@pytest.mark.parametrize("values", [
    np.array([3, -1, 2**40], np.int64), np.array([1, 255], np.uint8), np.array([0.5, np.nan, -np.inf], np.float32),
    np.arange(10.0)[::3], np.array([True, False] * 9 + [True]), np.zeros(0, np.int16),
    ["a.png", None, "dossier/éte 夏.png", ""], np.array(["x", "yz"]), [None, None], []])
def test_columns_built_from_buffers_equal_pyarrows_own_conversion(values):
    import pyarrow as pa

    from audit.predictions_file import _arrays

    got = _arrays({"c": values})["c"]
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        want = pa.array(values)
    else:
        want = pa.array([None if v is None else str(v) for v in list(values)], pa.string())
    got.validate(full=True)
    assert got.type == want.type and got.null_count == want.null_count
    if got.type.equals(pa.float32()):  # NaN equals NaN here
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    else:
        assert got.to_pylist() == want.to_pylist()


def test_streaming_and_writing_predictions_never_import_pandas(tmp_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from audit.predictions_file import PredictionStream\n"
            f"s = PredictionStream(dir={str(tmp_path)!r})\n"
            "for lo in range(0, 40000, 1000):\n"
            "    s.append({'path': [f'{i}.png' for i in range(lo, lo + 1000)], 'y': np.arange(lo, lo + 1000),\n"
            "              'ok': np.arange(1000) % 3 == 0, 'p': np.ones(1000, np.float32)})\n"
            "rows = sum(t.num_rows for t in s.tables())\n"
            "print(rows, 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["40000", "False"]
