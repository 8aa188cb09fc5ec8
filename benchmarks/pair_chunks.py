"""Near-duplicate confirmation, ``pair_distances`` from a disk-backed ``ThumbnailStore``: time and traced peak
memory by ``chunk`` (pairs of thumbnails compared at once), alternating rounds in one process.

The store holds random thumbnails (the timing of a comparison does not depend on the pixels) and the pairs are
random rows, the worst case for reading them back. Every chunk size must return the same distances.

    .venv/bin/python benchmarks/pair_chunks.py [--rows 50000] [--pairs 1000000] [--chunks 2048,8192] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tracemalloc

import numpy as np

import common
from audit.colour_match import THUMBNAIL_BYTES, ThumbnailStore, pair_distances


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--chunks", default="2048,8192")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    rng = np.random.default_rng(0)
    with ThumbnailStore() as store:
        for lo in range(0, args.rows, 10_000):
            store.append(rng.integers(0, 256, (min(10_000, args.rows - lo), THUMBNAIL_BYTES), dtype=np.uint8))
        i = rng.integers(0, args.rows, args.pairs).astype(np.int32)
        j = rng.integers(0, args.rows, args.pairs).astype(np.int32)
        first = {c: pair_distances(store, store, i, j, chunk=c) for c in chunks}
        if any(not np.array_equal(first[chunks[0]], d) for d in first.values()):
            raise SystemExit("the chunk sizes disagree")
        peaks = {}
        for c in chunks:
            tracemalloc.start()
            pair_distances(store, store, i, j, chunk=c)
            peaks[c] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        loads: list[float] = []
        runs = common.alternate({c: common.timed(lambda c=c: pair_distances(store, store, i, j, chunk=c))
                                 for c in chunks}, args.repeats, loads)
    result = {"rows": args.rows, "pairs": args.pairs, "loads": loads, **common.machine(),
              "chunks": {str(c): {**common.stats(runs[c]), "spread": common.spread(runs[c]),
                                  "traced_peak_mib": round(peaks[c], 1)} for c in chunks}}
    base = chunks[-1]
    md = [f"# Near-duplicate confirmation by chunk ({args.pairs:,} random pairs among {args.rows:,} thumbnails)", "",
          f"| chunk (pairs) | median s | spread | ÷ chunk {base:,} | traced peak (MiB) |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {c:,} | {np.median(runs[c]):.2f} | {common.spread(runs[c]):.0%} | "
           f"{common.ratios(runs[c], runs[base])['per_round_median']:.2f}× | {peaks[c]:.1f} |" for c in chunks]
    md += ["", f"{args.repeats} alternating rounds; load average (1 min) after each: {loads}. "
           f"{result['date']}, {result['cores']} cores.", "",
           f"Command: `.venv/bin/python benchmarks/pair_chunks.py --rows {args.rows} --pairs {args.pairs} "
           f"--chunks {args.chunks} --repeats {args.repeats}`"]
    common.write("pair_chunks", result, md)


if __name__ == "__main__":
    main()
