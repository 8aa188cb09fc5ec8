"""predictions.csv is written without pandas; the file is byte for byte the one pandas writes."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import builders
from audit import predictions as predictions_module
from audit.predictions import Coded, Predictions

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


@pytest.mark.parametrize("cells_at_once", [4096 * 26, 7 * 20])
def test_write_csv_equals_pandas_to_csv(tmp_path, monkeypatch, cells_at_once):
    monkeypatch.setattr(predictions_module, "CSV_CELLS", cells_at_once)  # 7 rows: many chunks, the last one short
    n = 300
    rng = np.random.default_rng(0)
    site = rng.choice(["a", "b,c", 'say "x"', "", "ü", "line\nbreak"], n).astype(object)
    odd = np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 1e7)
    odd[:3] = [np.inf, 1e-12, 0.0]
    p = builders.predictions(n, c=4, seed=1, attributes={"site": site},
                             properties={"brightness": rng.random(n), "odd": odd})
    p = replace(p, sha256=tuple(f"{i:064x}" for i in range(n)), phash=np.arange(n, dtype=np.uint64) * 2**40)
    paths = list(p.paths)
    paths[:4] = ["a,b.png", 'q"q.png', "cr\rlf\n.png", "plain.png"]  # quoted by the csv module's rule
    p = replace(p, paths=tuple(paths), clusters=np.arange(n) // 3,
                extra={"tag": Coded(rng.integers(0, 3, n).astype(np.int16), ("", "D1", "x,y"))})
    p.write_csv(tmp_path / "ours.csv")
    p.to_frame().to_csv(tmp_path / "pandas.csv", index=False, float_format="%.9g", lineterminator="\r\n")
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    back = Predictions.from_frame(pd.read_csv(tmp_path / "ours.csv", keep_default_na=False, na_values=[""]), p.labels)
    assert back.paths == p.paths and np.array_equal(back.phash, p.phash)
    assert np.allclose(back.proba, p.proba, rtol=1e-8, atol=0)


def test_write_csv_of_no_rows_is_the_header(tmp_path):
    p = builders.predictions(5, c=3)
    empty = Predictions(p.labels, (), np.zeros(0, np.int64), np.zeros((0, 3), np.float32))
    empty.write_csv(tmp_path / "ours.csv")
    empty.to_frame().to_csv(tmp_path / "pandas.csv", index=False, float_format="%.9g", lineterminator="\r\n")
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
