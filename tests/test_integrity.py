"""Integrity: planted exact, resized and re-encoded duplicates between train and test are found; distinct
pictures are not; duplicates inside the test set and class imbalance are reported."""

from dataclasses import replace

import imagehash
import numpy as np
import pytest
from PIL import Image

import builders
from audit import imaging
from audit.checks.integrity import IntegrityConfig, criteria, findings, integrity
from audit.config import AuditConfig
from audit.duplicates import near_pairs

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)

LABELS = tuple(builders.COLOURS)


def context(folder, **overrides):
    """The test side's hashes come from the inference pass, as in a real audit."""
    model = builders.colour_model(folder.parent / "hash-model.onnx")
    return builders.context(model, folder, {f"integrity.{k}": v for k, v in overrides.items()})


@pytest.mark.parametrize("seed", range(3))
def test_batched_phash_is_imagehash_phash(seed):
    rng = np.random.default_rng(seed)
    half = rng.integers(0, 256, (32, 16)).astype(np.uint8)
    imgs = [builders.pattern_image(seed * 10 + i) for i in range(5)]
    imgs += [Image.new("RGB", (40, 30), "white"), Image.new("L", (20 + seed, 20), 17 * seed),  # flat
             Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1), "L"),  # mirror-symmetric: exact ties
             Image.fromarray(((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8), "L"),
             Image.fromarray(rng.integers(0, 256, (28, 28)).astype(np.uint8), "L")]
    got = imaging.batch_phash(np.stack([imaging.phash_input(im) for im in imgs]))
    want = [int(str(imagehash.phash(im)), 16) for im in imgs]
    assert got.tolist() == want


def test_the_inference_pass_hashes_each_image_as_imagehash_and_thumbnails_it_as_colour_thumbnail(tmp_path):
    """Small images get their pHash input resized with their batch (audit.resample), large ones by Pillow one at a
    time: a batch mixing sizes, modes and both paths gives every image the per-image reference's bytes."""
    from audit.colour_match import colour_thumbnail
    from audit.engines.batch import decode_batch
    from audit.preprocess import Preprocess
    from audit.sources.folder import scan_folder

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (28, 28)).astype(np.uint8), "L") for _ in range(3)]
    imgs += [builders.pattern_image(i).resize((40, 30)) for i in range(3)]  # RGB, resized as a batch
    imgs += [builders.pattern_image(7).resize((300, 220)),  # large: Pillow, one image at a time
             Image.new("RGB", (32, 32), (9, 200, 30)),  # already 32 x 32
             Image.fromarray(rng.integers(0, 256, (17, 61, 3)).astype(np.uint8), "RGB")]
    (tmp_path / "a").mkdir()
    for i, im in enumerate(imgs):
        im.save(tmp_path / "a" / f"{i}.png")
    source = scan_folder(tmp_path)
    pre = Preprocess(size=(8, 8), color="RGB", mean=(0.5,) * 3, std=(0.5,) * 3)
    batch = decode_batch(source, source.samples, pre, imaging.Limits())
    by_name = {s.path: int(s.path[2:-4]) for s in batch.samples}
    assert len(by_name) == len(imgs) and not batch.rejected
    for k, s in enumerate(batch.samples):
        im = imgs[by_name[s.path]]
        assert int(batch.phash[k]) == int(str(imagehash.phash(im)), 16), s.path
        np.testing.assert_array_equal(batch.thumbnails[k], colour_thumbnail(im), err_msg=s.path)


def test_planted_train_test_duplicates_are_found(tmp_path):
    train, test, planted = builders.leaky_split(tmp_path)
    res = integrity(context(test, train=str(train)))
    leaked = {p.a: p for p in res.leak_pairs}
    assert set(leaked) == set(planted), leaked
    assert leaked["red/exact.png"].kind == "exact" and leaked["red/exact.png"].distance == 0
    assert leaked["red/resized.png"].kind == "near" and leaked["green/jpeg.jpg"].kind == "near"
    assert all(p.b == "red/000.png" for p in leaked.values())
    assert not leaked["green/jpeg.jpg"].same_label and leaked["red/exact.png"].same_label
    assert res.leaked == 3 and res.n_train == 30
    (c,) = criteria(res, AuditConfig())
    assert c.id == "integrity.leakage" and not c.passed and c.value == 3
    (leak, dup) = findings(res, None)  # the findings block: leakage (restating this criterion), then test duplicates
    assert (leak.severity, leak.criterion, leak.section) == ("warn", "integrity.leakage", "integrity")
    assert leak.text.startswith("3 test image(s) also appear in the training data")
    assert dup.criterion == "integrity.test_duplicates" and dup.text.startswith(f"{res.n_test_duplicates} test images have")


def test_unreadable_training_files_are_counted_and_none_read_measures_nothing(tmp_path):
    """Training files that cannot be decoded are not compared: the count says so, and when none could be read
    the leakage criterion fails as not measured instead of passing on no comparison."""
    train, test, _ = builders.leaky_split(tmp_path)
    (train / "red" / "broken.png").write_text("not an image")
    res = integrity(context(test, train=str(train)))
    assert res.n_train == 31 and res.unreadable == ("red/broken.png",)
    assert res.to_dict()["n_train_unreadable"] == 1
    (c,) = criteria(res, AuditConfig())
    assert c.value == 3 and "with 30 training images" in c.detail
    assert "1 training image(s) could not be read and were not compared (e.g. red/broken.png)" in c.detail
    none_read = replace(res, unreadable=tuple(f"red/{i}.png" for i in range(31)), leak_pairs=(), n_leak_pairs=0,
                        leaked=0)
    (c,) = criteria(none_read, AuditConfig())
    assert c.status == "fail" and c.value is None
    assert c.detail == "not measured: none of the 31 training image(s) could be read (e.g. red/0.png)"


def test_duplicates_inside_test_and_imbalance(tmp_path):
    _, test, _ = builders.leaky_split(tmp_path)
    res = integrity(context(test, max_test_duplicates=0))
    pairs = {(p.a, p.b, p.kind) for p in res.test_pairs}
    assert ("blue/000.png", "blue/copy.png", "exact") in pairs
    assert res.n_train is None and res.leaked == 0
    assert dict(res.class_counts) == {"red": 12, "green": 11, "blue": 11}
    assert res.imbalance_ratio == 12 / 11
    crit = criteria(res, AuditConfig(integrity=IntegrityConfig(max_test_duplicates=0)))
    assert [c.id for c in crit] == ["integrity.test_duplicates"] and not crit[0].passed
    assert criteria(res, AuditConfig()) == []  # no --train, test duplicates not judged by default


def test_no_false_duplicates_among_distinct_pictures(tmp_path):
    for i in range(40):
        (tmp_path / "red").mkdir(exist_ok=True)
        builders.pattern_image(500 + i).save(tmp_path / "red" / f"{i}.png")
    res = integrity(context(tmp_path))
    assert res.n_test_pairs == 0


def test_hash_candidates_need_matching_pixels(tmp_path):
    """Same pHash is not enough: a picture with strong texture added keeps its hash but is not a copy."""
    base = builders.pattern_image(7)
    arr = np.asarray(base).astype(float)
    stripes = (np.indices(arr.shape[:2]).sum(axis=0) // 4 % 2 * 60 - 30)[:, :, None]  # 8 px diagonal stripes, +-30
    textured = Image.fromarray(np.clip(arr + stripes, 0, 255).astype(np.uint8))
    (tmp_path / "red").mkdir()
    base.save(tmp_path / "red" / "a.png")
    textured.save(tmp_path / "red" / "b.png")
    base.resize((40, 40), Image.Resampling.BILINEAR).save(tmp_path / "red" / "c.png")
    ctx = context(tmp_path)
    preds = ctx.predictions
    i = {p: k for k, p in enumerate(preds.paths)}
    cand = near_pairs(preds.phash, None, 4)
    candidates = set(zip(cand.i.tolist(), cand.j.tolist()))
    assert (i["red/a.png"], i["red/b.png"]) in candidates  # the hash alone would call it a duplicate
    res = integrity(ctx)
    assert {(p.a, p.b) for p in res.test_pairs} == {("red/a.png", "red/c.png")}


def test_colour_look_alikes_are_not_leaks_but_copies_are(tmp_path):
    """Through the audit itself (thumbnails from the inference pass): a recoloured look-alike shares the pHash of
    its original but is not confirmed; planted copies are (seed 0: 16 of 24, the rest are crops whose pHash moved
    more than 4 bits); every confirmed pair is a real copy and its distance is reported."""
    train, test, copies, lookalikes = builders.colour_lookalike_split(tmp_path / "set")
    res = integrity(context(test, train=str(train)))
    found = {p.a: p for p in res.leak_pairs}
    assert set(found) <= set(copies), "a look-alike or an unrelated picture was called a leak"
    assert not set(found) & set(lookalikes)
    assert all(found[a].b == copies[a] for a in found)
    assert len(found) / len(copies) >= 0.6
    assert all(0 <= p.confirmation <= IntegrityConfig().max_colour_distance for p in found.values())


def test_duplicate_pairs_are_a_compact_grid_of_at_most_one_pdf_page(tmp_path):
    """45 exact pairs: 40 laid out as a grid (on one page of the PDF), the rest counted."""
    import re
    import shutil

    from pypdf import PdfReader

    from audit.cli import main

    data = builders.image_folder(tmp_path / "data", 15)
    for p in sorted(data.rglob("*.png")):
        shutil.copyfile(p, p.with_name(p.stem + "_copy.png"))
    out = tmp_path / "out"
    main(["run", "--model", str(builders.colour_model(tmp_path / "m.onnx")), "--data", str(data), "--out", str(out),
          "--n-boot", "20", "--no-progress", "--no-latency", "--no-invariance", "--no-label-errors"])
    html = (out / "report.html").read_text()
    assert html.count('<figure class="pair') == 40 and "5 more pair(s) in <code>verdict.json</code>" in html
    pages = [page.extract_text() for page in PdfReader(out / "report.pdf").pages]
    first = [i for i, t in enumerate(pages) if re.search(r"(^|\s)1\. exact", t)]
    last = [i for i, t in enumerate(pages) if re.search(r"(^|\s)40\. exact", t)]
    assert first and first == last, f"the grid spans pages {first} to {last}"
