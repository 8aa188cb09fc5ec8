"""Near-duplicate search and confirmation: ``audit.duplicates`` vs the all-pairs floor, side by side.

* Search: ``near_pairs`` (multi-index) vs the blocked all-pairs XOR + popcount search (the method the
  integrity check used before), in one process, runs alternating, on real pHashes of Fashion-MNIST
  (train + val = 60,000, test = 10,000 PNGs): 10k within, 50k within, 10k test vs 60k training, at
  the default 4 bits and at 8. Both must return the same pairs; the script stops if they do not.
* Confirmation: ``pair_distances`` over every candidate pair from a disk-backed ``ThumbnailStore``
  vs the old path (decode both files again, compare 32x32 grey in a Python loop) on a subset.
* Thumbnail cost in the inference pass: ``colour_thumbnail`` vs ``phash_input`` per image.
* Rule quality: precision and recall of pHash candidate + colour confirmation vs the old grey rule
  on 20 sets of ``tests/builders.colour_lookalike_split`` (copies vs colour look-alikes), and the
  pairs each rule confirms among the Fashion-MNIST candidates (grey: the two must agree).

Hashes and thumbnails of the PNGs are cached in the system temp folder. Writes
``benchmarks/results/near_duplicates.json`` and ``.md``.

    .venv/bin/python benchmarks/near_duplicates.py [--data data/fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import builders  # noqa: E402

from audit import imaging  # noqa: E402
from audit.duplicates import (  # noqa: E402
    DEFAULT_MAX_COLOUR_DISTANCE, THUMBNAIL_BYTES, ThumbnailStore, colour_thumbnail, near_pairs, pair_distances,
)

CACHE = Path(tempfile.gettempdir()) / "near_duplicates_cache"
OLD_GREY = 8.0  # the old rule: mean grey difference of the 32x32 pHash inputs


def all_pairs(a: np.ndarray, b: np.ndarray | None, d: int, block: int = 256) -> np.ndarray:
    """The floor: XOR a block of rows against every column, count bits, keep <= d (i < j within one set)."""
    other = a if b is None else b
    out = []
    for start in range(0, len(a), block):
        dist = np.bitwise_count(a[start:start + block, None] ^ other[None, :])
        i, j = np.nonzero(dist <= d)
        keep = (i + start < j) if b is None else slice(None)
        out.append(np.column_stack([i[keep] + start, j[keep], dist[i[keep], j[keep]]]))
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)


def fashion_mnist(root: Path):
    """(paths, pHashes, thumbnails) of train + val then test PNGs, cached after the first run."""
    CACHE.mkdir(exist_ok=True)
    files = [sorted((root / split).rglob("*.png")) for split in ("train", "val", "test")]
    files = files[0] + files[1] + files[2]
    names = ("paths.txt", "phash.npy", "thumbs.npy")
    if all((CACHE / n).exists() for n in names) and len((CACHE / names[0]).read_text().split("\n")) == len(files):
        return files, np.load(CACHE / names[1]), np.load(CACHE / names[2])
    hashes, thumbs = np.zeros(len(files), np.uint64), np.zeros((len(files), THUMBNAIL_BYTES), np.uint8)
    for start in range(0, len(files), 1000):
        pixels, batch = [], files[start:start + 1000]
        for k, f in enumerate(batch):
            img, _ = imaging.decode(f.read_bytes(), "RGB")
            pixels.append(imaging.phash_input(img))
            thumbs[start + k] = colour_thumbnail(img, phash_pixels=pixels[-1])
        hashes[start:start + len(batch)] = imaging.batch_phash(np.stack(pixels))
        print(f"hashed {start + len(batch):,} / {len(files):,}", flush=True)
    (CACHE / names[0]).write_text("\n".join(str(f.relative_to(root)) for f in files))
    np.save(CACHE / names[1], hashes)
    np.save(CACHE / names[2], thumbs)
    return files, hashes, thumbs


def side_by_side(ours, floor, runs: int = 3):
    """Alternate the two, ``runs`` each; best and median seconds, and the last results."""
    t_ours, t_floor = [], []
    for _ in range(runs):
        for fn, times in ((ours, t_ours), (floor, t_floor)):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            if fn is ours:
                got = out
            else:
                want = out
    return {"ours_best_s": min(t_ours), "ours_median_s": float(np.median(t_ours)),
            "floor_best_s": min(t_floor), "floor_median_s": float(np.median(t_floor)),
            "speedup_best": min(t_floor) / min(t_ours)}, got, want


def search_rows(h: np.ndarray, n_train: int) -> list[dict]:
    test, train = h[n_train:], h[:n_train]
    cases = [("10k within", h[n_train:n_train + 10_000], None, 4), ("50k within", h[:50_000], None, 4),
             ("10k vs 60k", test, train, 4), ("10k within", h[n_train:n_train + 10_000], None, 8),
             ("10k vs 60k", test, train, 8)]
    rows = []
    for name, a, b, d in cases:
        timing, got, want = side_by_side(lambda: near_pairs(a, b, d), lambda: all_pairs(a, b, d))
        same = set(zip(got.i.tolist(), got.j.tolist(), got.distance.tolist())) == set(map(tuple, want.tolist()))
        if not same or len(got) != len(want):
            raise SystemExit(f"{name} at {d} bits: near_pairs found {len(got)} pairs, all-pairs {len(want)}")
        rows.append({"case": name, "max_distance": d, "n_a": len(a), "n_b": len(b) if b is not None else len(a),
                     "pairs": len(got), "same_pairs_as_all_pairs": same, **timing})
        print(rows[-1], flush=True)
    return rows


def confirmation(files, h, thumbs, n_train: int) -> dict:
    """Confirm every 10k-vs-60k candidate from disk stores; the old decode-again loop on a subset."""
    cand = near_pairs(h[n_train:], h[:n_train], 4)
    with ThumbnailStore() as test_store, ThumbnailStore() as train_store:
        t0 = time.perf_counter()
        for store, part in ((train_store, thumbs[:n_train]), (test_store, thumbs[n_train:])):
            for start in range(0, len(part), 64):  # batches of 64, as the inference pass appends them
                store.append(part[start:start + 64])
        t_append = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = pair_distances(test_store, train_store, cand.i, cand.j, limit=DEFAULT_MAX_COLOUR_DISTANCE)
        t_store = time.perf_counter() - t0
    t0 = time.perf_counter()
    pair_distances(thumbs[n_train:], thumbs[:n_train], cand.i, cand.j, limit=DEFAULT_MAX_COLOUR_DISTANCE)
    t_memory = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = pair_distances(thumbs[n_train:], thumbs[:n_train], cand.i, cand.j)
    t_full = time.perf_counter() - t0
    sub = np.arange(min(3000, len(cand)))
    t0 = time.perf_counter()
    old = old_confirmation([files[n_train + i] for i in cand.i[sub]], [files[j] for j in cand.j[sub]])
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new_sub = pair_distances(thumbs[n_train:], thumbs[:n_train], cand.i[sub], cand.j[sub])
    t_new = time.perf_counter() - t0
    grey = np.abs(thumbs[n_train:][cand.i, :1024].astype(np.float32) - thumbs[cand.j, :1024]).mean(axis=1)
    return {"candidates": len(cand), "store_append_s": t_append, "store_bytes": len(thumbs) * THUMBNAIL_BYTES,
            "confirm_all_from_store_s": t_store, "confirm_all_in_memory_s": t_memory, "confirm_all_no_limit_s": t_full,
            "limit_same_decisions": bool(((full <= DEFAULT_MAX_COLOUR_DISTANCE) == (dist <= DEFAULT_MAX_COLOUR_DISTANCE)).all()),
            "subset": len(sub), "old_decode_loop_subset_s": t_old, "new_subset_s": t_new,
            "old_vs_new_subset": t_old / t_new, "old_grey_equals_luma": bool(np.allclose(old, grey[sub], atol=1e-3)),
            "fm_confirmed_new": int((dist <= DEFAULT_MAX_COLOUR_DISTANCE).sum()),
            "fm_confirmed_old": int((grey <= OLD_GREY).sum()),
            "fm_same_decisions": bool(((dist <= DEFAULT_MAX_COLOUR_DISTANCE) == (grey <= OLD_GREY)).all()),
            "new_subset_equals_store": bool(np.array_equal(new_sub, dist[sub]))}


def old_confirmation(files_a, files_b) -> np.ndarray:
    """The old path: decode each file again (once, cached), 32x32 grey mean difference per pair in a loop."""
    cache: dict = {}

    def grey(f):
        if f not in cache:
            cache[f] = imaging.phash_input(imaging.decode(f.read_bytes(), "L")[0]).astype(np.float32)
        return cache[f]

    return np.array([float(np.abs(grey(a) - grey(b)).mean()) for a, b in zip(files_a, files_b)])


def thumbnail_cost(files, n: int = 2000) -> dict:
    """Per image: colour_thumbnail (given the pHash input) vs phash_input, on 28 px PNGs and 300 px pictures."""
    out = {}
    for name, imgs in (("fashion_mnist_28px", [imaging.decode(f.read_bytes(), "RGB")[0] for f in files[:n]]),
                       ("pattern_300px", [builders.pattern_image(k, size=300) for k in range(n // 4)])):
        t0 = time.perf_counter()
        pixels = [imaging.phash_input(im) for im in imgs]
        t_phash = time.perf_counter() - t0
        t0 = time.perf_counter()
        for im, px in zip(imgs, pixels):
            colour_thumbnail(im, phash_pixels=px)
        t_thumb = time.perf_counter() - t0
        out[name] = {"images": len(imgs), "phash_input_us": t_phash / len(imgs) * 1e6,
                     "colour_thumbnail_us": t_thumb / len(imgs) * 1e6}
    return out


def rule_quality(seeds=range(100, 120)) -> dict:
    """Precision and recall of candidate (pHash <= d) + confirmation, new colour rule vs old grey rule."""
    counts = {(d, rule): [0, 0] for d in (4, 6, 8) for rule in ("new", "old")}  # [real, false] confirmations
    n_copies, n_looks, kinds, copy_d, look_d = 0, 0, {}, [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            train, test, copies, lookalikes = builders.colour_lookalike_split(Path(tmp), seed=seed)
            (trp, trh, trt), (tep, teh, tet) = load_set(train), load_set(test)
        truth = {(tep.index(a), trp.index(b)) for a, b in copies.items()}
        n_copies, n_looks = n_copies + len(truth), n_looks + len(lookalikes)
        for d in (4, 6, 8):
            cand = near_pairs(teh, trh, d)
            new = pair_distances(tet, trt, cand.i, cand.j) <= DEFAULT_MAX_COLOUR_DISTANCE
            old = np.abs(tet[cand.i, :1024].astype(np.float32) - trt[cand.j, :1024]).mean(axis=1) <= OLD_GREY
            real = np.array([(i, j) in truth for i, j in zip(cand.i.tolist(), cand.j.tolist())], bool)
            for rule, ok in (("new", new), ("old", old)):
                counts[d, rule][0] += int((ok & real).sum())
                counts[d, rule][1] += int((ok & ~real).sum())
        i, j = (np.array(v) for v in zip(*[(tep.index(a), trp.index(b)) for a, b in copies.items()]))
        dist, bits = pair_distances(tet, trt, i, j), np.bitwise_count(teh[i] ^ trh[j])
        copy_d += dist.tolist()
        for name, ok in zip(copies, (bits <= 4) & (dist <= DEFAULT_MAX_COLOUR_DISTANCE)):
            kind = builders.COPY_KINDS[int(name.split("copy_")[1][:3]) % len(builders.COPY_KINDS)]
            kinds.setdefault(kind, [0, 0])
            kinds[kind] = [kinds[kind][0] + int(ok), kinds[kind][1] + 1]
        i, j = (np.array(v) for v in zip(*[(tep.index(a), trp.index(b)) for a, b in lookalikes.items()]))
        look_d += pair_distances(tet, trt, i, j).tolist()
    rows = [{"max_distance": d, "rule": rule, "confirmed_copies": tp, "false_pairs": fp, "copies": n_copies,
             "precision": tp / max(tp + fp, 1), "recall": tp / n_copies} for (d, rule), (tp, fp) in counts.items()]
    copy_d, look_d = np.array(copy_d), np.array(look_d)
    return {"sets": len(seeds), "copies": n_copies, "lookalikes": n_looks, "rows": rows,
            "recall_by_copy_kind_at_4": {k: v[0] / v[1] for k, v in kinds.items()},
            "copy_distance": {"max": float(copy_d.max()), "p99": float(np.percentile(copy_d, 99)),
                              "within_threshold": float((copy_d <= DEFAULT_MAX_COLOUR_DISTANCE).mean())},
            "lookalike_distance": {"min": float(look_d.min()), "p1": float(np.percentile(look_d, 1)),
                                   "within_threshold": float((look_d <= DEFAULT_MAX_COLOUR_DISTANCE).mean())}}


def load_set(folder: Path):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    imgs = [imaging.decode(f.read_bytes(), "RGB")[0] for f in files]
    pixels = np.stack([imaging.phash_input(im) for im in imgs])
    thumbs = np.stack([colour_thumbnail(im, phash_pixels=px) for im, px in zip(imgs, pixels)])
    return [str(f.relative_to(folder)) for f in files], imaging.batch_phash(pixels), thumbs


def markdown(res: dict) -> str:
    m, c, q = res["machine"], res["confirmation"], res["rule_quality"]
    md = ["# Near-duplicates: multi-index search and colour confirmation", "",
          f"{m['cpus']} CPU(s), Python {m['python']}, numpy {m['numpy']}; 1-min load average {m['load_start']:.1f} at the "
          f"start, {m['load_end']:.1f} at the end (the machine is shared). Runs alternate, 3 of each. "
          f"Command: `.venv/bin/python benchmarks/near_duplicates.py{res.get('args', '')}`.", "",
          "## Search: `near_pairs` vs the all-pairs floor, real pHashes of Fashion-MNIST PNGs", "",
          "| case | bits | hashes | pairs | same pairs | near_pairs s (median) | all-pairs s (median) | speed-up |",
          "|---|---|---|---|---|---|---|---|"]
    for r in res["search"]:
        md.append(f"| {r['case']} | {r['max_distance']} | {r['n_a']:,} x {r['n_b']:,} | {r['pairs']:,} | "
                  f"{'yes' if r['same_pairs_as_all_pairs'] else '**no**'} | {r['ours_best_s']:.3f} ({r['ours_median_s']:.3f}) | "
                  f"{r['floor_best_s']:.2f} ({r['floor_median_s']:.2f}) | {r['speedup_best']:.0f}x |")
    md += ["", "## Confirmation of every candidate (10k test vs 60k training, 4 bits)", "",
           f"* {c['candidates']:,} candidate pairs; thumbnails {THUMBNAIL_BYTES:,} bytes an image, "
           f"{c['store_bytes'] / 2**20:.0f} MiB on disk for 70,000 (appended in batches of 64 in {c['store_append_s']:.2f} s).",
           f"* `pair_distances(..., limit={DEFAULT_MAX_COLOUR_DISTANCE})` over all of them: {c['confirm_all_from_store_s']:.2f} s "
           f"reading the disk stores, {c['confirm_all_in_memory_s']:.2f} s from arrays in memory; without the limit "
           f"(the chroma part of every pair, distances exact above the limit too) {c['confirm_all_no_limit_s']:.2f} s; "
           f"same decisions: {'yes' if c['limit_same_decisions'] else '**no**'}.",
           f"* The old path (decode both files again, grey difference in a Python loop) on {c['subset']:,} of them: "
           f"{c['old_decode_loop_subset_s']:.2f} s vs {c['new_subset_s']:.3f} s: {c['old_vs_new_subset']:.0f}x.",
           f"* Grey pictures are judged on grey alone: the new rule confirms {c['fm_confirmed_new']} pairs, the old one "
           f"{c['fm_confirmed_old']} (same decisions on every pair: {'yes' if c['fm_same_decisions'] else '**no**'}).", "",
           "## Thumbnail cost in the inference pass (per image; RGB pictures: a grey one skips the colour part)", "",
           "| pictures | phash_input µs | colour_thumbnail µs (given the pHash input) | ratio |", "|---|---|---|---|"]
    for name, t in res["thumbnail_cost"].items():
        md.append(f"| {name} ({t['images']:,}) | {t['phash_input_us']:.0f} | {t['colour_thumbnail_us']:.0f} | "
                  f"{t['colour_thumbnail_us'] / t['phash_input_us']:.2f} |")
    md += ["", f"## Rule quality: {q['sets']} sets of `colour_lookalike_split` ({q['copies']} copies, "
           f"{q['lookalikes']} colour look-alikes)", "",
           "| pHash bits | rule | confirmed copies | false pairs | precision | recall |", "|---|---|---|---|---|---|"]
    for r in q["rows"]:
        md.append(f"| {r['max_distance']} | {'colour (new)' if r['rule'] == 'new' else 'grey (old)'} | "
                  f"{r['confirmed_copies']} | {r['false_pairs']} | {r['precision']:.3f} | {r['recall']:.3f} |")
    cd, ld = q["copy_distance"], q["lookalike_distance"]
    md += ["", f"Confirmation distance (threshold {DEFAULT_MAX_COLOUR_DISTANCE}): copies max {cd['max']:.1f}, p99 "
           f"{cd['p99']:.1f} ({cd['within_threshold']:.1%} within); look-alikes min {ld['min']:.1f}, p1 {ld['p1']:.1f} "
           f"({ld['within_threshold']:.1%} within). Recall at 4 bits by kind of copy: "
           + ", ".join(f"{k} {v:.2f}" for k, v in q["recall_by_copy_kind_at_4"].items())
           + " (the misses are crops whose pHash moved more than 4 bits).", ""]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST ImageFolder splits")
    ap.add_argument("--name", default="near_duplicates", help="results/<name>.json and .md")
    args = ap.parse_args()
    res: dict = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                             "cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                             "load_start": os.getloadavg()[0]}, "args": "".join(f" {a}" for a in sys.argv[1:])}
    files, h, thumbs = fashion_mnist(args.data)
    n_train = len(files) - len(list((args.data / "test").rglob("*.png")))
    res["search"] = search_rows(h, n_train)
    res["confirmation"] = confirmation(files, h, thumbs, n_train)
    res["thumbnail_cost"] = thumbnail_cost(files)
    res["rule_quality"] = rule_quality()
    res["machine"]["load_end"] = os.getloadavg()[0]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
