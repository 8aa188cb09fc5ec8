"""The data contract: every file accounted for, hostile files skipped with a reason, never a crash."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import builders
from audit import imaging
from audit.config import load_config
from audit.errors import DataError
from audit.pipeline import run_audit
from audit.sources import open_source

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

LABELS = ("red", "green", "blue")

# core checks only: the optional analyses have their own tests
FAST = load_config(None, {"n_boot": 20, "pdf": False, "latency.enabled": False, "invariance.enabled": False})


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, and no pixel data (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


@pytest.fixture
def hostile(tmp_path):
    root = builders.image_folder(tmp_path / "data", 4)
    red = builders.colour_image("red")
    (root / "red" / "zero.png").write_bytes(b"")
    red.save(root / "red" / "full.jpg", quality=90)
    jpeg = (root / "red" / "full.jpg").read_bytes()
    (root / "red" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "red" / "text.png").write_text("this is not an image")
    Image.fromarray((np.ones((24, 24)) * 40000).astype(np.uint16)).save(root / "green" / "sixteen.png")
    builders.colour_image("green").convert("CMYK").save(root / "green" / "cmyk.jpg")
    rgba = builders.colour_image("blue").convert("RGBA")
    rgba.save(root / "blue" / "rgba.png")
    (root / "blue" / "bomb.png").write_bytes(png_header_only(20000, 20000))
    builders.colour_image("blue").save(root / "blue" / "façade ünï 1.png")
    (root / "blue" / "notes.txt").write_text("a stray file")
    (root / "stray.png").write_bytes(b"")
    return root


def test_every_file_is_accounted_for(hostile):
    r = run_audit(builders.colour_model(hostile.parent / "m.onnx"), hostile, FAST, progress=False)
    d = r.data
    found = sum(1 for p in hostile.rglob("*") if p.is_file())
    assert d.found == found and d.processed + len(d.skipped) == found and d.accounted
    reasons = {s.path: s.reason for s in d.skipped}
    assert reasons["red/zero.png"] == "empty file (0 bytes)"
    assert reasons["red/truncated.jpg"] == "truncated image"
    assert reasons["red/text.png"] == "not an image (unrecognised format)"
    assert "decompression bomb" in reasons["blue/bomb.png"]
    assert reasons["blue/notes.txt"].startswith("not an image file extension")
    assert reasons["stray.png"] == "not inside a class folder"
    assert len(reasons) == 6
    processed = set(r.predictions.paths)
    assert {"green/sixteen.png", "green/cmyk.jpg", "blue/rgba.png", "blue/façade ünï 1.png", "red/full.jpg"} <= processed
    pred = dict(zip(r.predictions.paths, (LABELS[i] for i in r.predictions.y_pred)))
    assert pred["green/cmyk.jpg"] == "green" and pred["blue/rgba.png"] == "blue" and pred["red/full.jpg"] == "red"


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from audit.imaging import decode

    path = tmp_path / "a.png"
    Image.fromarray((np.ones((8, 8)) * 32768).astype(np.uint16)).save(path)
    img, size = decode(path.read_bytes(), "L")
    assert size == (8, 8) and np.asarray(img).mean() == pytest.approx(128, abs=1)


def test_empty_class_folder_is_reported(tmp_path):
    root = builders.image_folder(tmp_path / "d", 5, classes=("red", "green"))
    (root / "blue").mkdir()
    r = run_audit(builders.colour_model(tmp_path / "m.onnx"), root, FAST, progress=False)
    assert dict(r.data.class_counts)["blue"] == 0
    assert any("no usable image: blue" in n for n in r.data.notes)


def test_unknown_class_folder_is_an_error(tmp_path):
    root = builders.image_folder(tmp_path / "d", 2, classes=("red", "green"))
    (root / "purple").mkdir()
    builders.colour_image("red").save(root / "purple" / "x.png")
    with pytest.raises(DataError, match="class 'purple' .* not one of the model's labels"):
        open_source(root, LABELS)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no usable image in the"):
        open_source(tmp_path / "d", LABELS)


def test_metadata_and_manifest(tmp_path):
    root = builders.image_folder(tmp_path / "d", 4, metadata=True)
    ds = open_source(root, LABELS)
    assert ds.attribute_names == ("site",)
    assert dict(ds.samples[0].attributes)["site"] in ("a", "b")
    manifest = root / "list.csv"
    manifest.write_text("path,label,lighting\nred/000.png,red,dim\nblue/001.png,blue,bright\nmissing.png,red,dim\n")
    ds = open_source(manifest, LABELS)
    assert [s.label for s in ds.samples] == ["red", "blue"]
    assert ds.attribute_names == ("lighting",) and ds.found == 3
    assert ds.skipped[0].reason == "listed in the manifest but not found"


def test_parquet_manifest_audits_to_the_same_verdict_as_the_folder(tmp_path):
    """The same images through an ImageFolder (+ metadata.csv) and through a Parquet manifest with relative paths."""
    import pandas as pd

    from audit.render.json import verdict_dict

    root = builders.image_folder(tmp_path / "d", 12, metadata=True, confusers=2)
    model = builders.colour_model(tmp_path / "m.onnx")
    config = load_config(None, {"n_boot": 100, "latency.enabled": False})
    a = verdict_dict(run_audit(model, root, config, progress=False))
    folder = open_source(root, LABELS)
    rows = [{"path": s.path, "label": s.label, **dict(s.attributes)} for s in folder.samples]
    manifest = root / "manifest.parquet"  # beside the class folders: the same relative paths
    pd.DataFrame(rows).to_parquet(manifest)
    src = open_source(manifest, LABELS)
    assert src.kind == "Parquet manifest" and src.found == len(folder.samples) and not src.skipped
    b = verdict_dict(run_audit(model, manifest, config, progress=False))
    for d in (a, b):
        d.pop("created"), d.pop("run")  # when it ran, and each stage's seconds and memory: not results
        d.pop("data"), d.pop("evidence")  # accounting: the folder also counts its metadata.csv
    assert a == b


def test_a_broken_parquet_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read m.parquet as Parquet"):
        open_source(tmp_path / "m.parquet", LABELS)


def test_entries_that_are_not_regular_files_are_skipped_with_their_kind(tmp_path):
    import os
    import socket

    root = builders.image_folder(tmp_path / "data", 2)
    os.mkfifo(root / "red" / "pipe.png")
    os.symlink(root / "nowhere.png", root / "red" / "broken.png")
    os.symlink(root / "blue", root / "green" / "linked")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "blue" / "sock.png"))
        src = open_source(root, builders.COLOURS)
    reasons = {s.path: s.reason for s in src.skipped}
    assert reasons == {"red/pipe.png": "not a regular file (FIFO)", "red/broken.png": "broken symbolic link",
                       "green/linked": "symbolic link to a folder (not followed)",
                       "blue/sock.png": "not a regular file (socket)"}
    assert src.found == 6 + 4 and len(src.samples) == 6
    with pytest.raises(imaging.ImageRejected, match=r"not a regular file \(FIFO\)"):
        src.open("red/pipe.png")  # never blocks, even when asked directly
