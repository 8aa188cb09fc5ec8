"""Compute saved by stopping the invariance sweep and the latency run early (confidence sequences).

Side by side on the same audit context, alternating A / B in rounds (``common.alternate``):

* invariance on a seeded sample of up to 1,000 images, with the transforms the audit would run
  (the model card's, else the default set) or ``--transforms all`` (every transform but the
  identity and the vertical flip) at ``--severities``: ``early_stop = true`` (each arm stops once its flip rate's confidence sequence
  excludes the limit) against ``early_stop = false`` (every arm runs the whole sample); images
  re-run and seconds, and whether each arm reaches the same answer against its limit;
* latency, ``requests = 200`` per phase: stopping once the p95's sequence excludes ``max_p95_ms``
  against sending all 200; requests sent and seconds (server start-up included in both).

The model and data: ``--model`` and ``--data`` (an ImageFolder, e.g. the quick start's model with
``data/fashion-mnist/test``, or an ELPV model with its test folder); without them, a synthetic
set built with ``tests/builders.py`` (a colour model on images whose brightness makes some of
them hard), so the script runs anywhere. Writes ``benchmarks/results/early_stopping[_NAME].json``
and ``.md``; the load average is recorded with the results.

    .venv/bin/python benchmarks/early_stopping.py [--model M.onnx --data DIR --name NAME] [--rounds 3] \
        [--transforms all --severities 1,2,3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from common import alternate, machine, ratios, stats, write  # noqa: E402

from audit.checks.invariance import invariance  # noqa: E402
from audit.checks.latency import measure_latency  # noqa: E402


def context(model: Path, data: Path, transforms: str | None, severities: str):
    import builders
    from audit.transforms import TRANSFORMS

    overrides = {"invariance.severities": [int(x) for x in severities.split(",")]}
    if transforms:
        names = [t for t in TRANSFORMS if t not in ("none", "vflip")] if transforms == "all" else transforms.split(",")
        overrides["invariance.transforms"] = names
    return builders.context(model, data, overrides)


def with_invariance(ctx, early_stop: bool):
    inv = dataclasses.replace(ctx.config.invariance, early_stop=early_stop)
    return dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, invariance=inv))


def run_invariance(ctx, early_stop: bool, out: dict) -> float:
    t0 = time.perf_counter()
    res = invariance(with_invariance(ctx, early_stop))
    seconds = time.perf_counter() - t0
    out["result"] = res
    return seconds


def run_latency(ctx, early_stop: bool, out: dict) -> float:
    config = dataclasses.replace(ctx.config.latency, early_stop=early_stop, requests=200)
    t0 = time.perf_counter()
    out["result"] = measure_latency(ctx.model_path, ctx.predictions, ctx.source, config, threads=ctx.config.threads,
                                    card_overrides=ctx.card_overrides, n_boot=200, seed=0)
    return time.perf_counter() - t0


def arms(res) -> list[dict]:
    return [{"arm": f"{r.transform}.{r.severity}", "images": r.n, "budget": r.budget, "flip_rate": r.flip_rate.value,
             "interval": [r.flip_rate.low, r.flip_rate.high], "limit": r.limit,
             "side": "below" if r.flip_rate.high <= r.limit else "above" if r.flip_rate.low > r.limit else "undecided"}
            for r in res.runs]


def measure(ctx, rounds: int) -> dict:
    inv = {True: {}, False: {}}
    lat = {True: {}, False: {}}
    times = alternate({"invariance_stop": lambda: run_invariance(ctx, True, inv[True]),
                       "invariance_full": lambda: run_invariance(ctx, False, inv[False]),
                       "latency_stop": lambda: run_latency(ctx, True, lat[True]),
                       "latency_full": lambda: run_latency(ctx, False, lat[False])}, rounds)
    stop, full = inv[True]["result"], inv[False]["result"]
    agree = [a["side"] == b["side"] or a["side"] == "undecided" or b["side"] == "undecided"
             for a, b in zip(arms(stop), arms(full))]
    lstop, lfull = lat[True]["result"], lat[False]["result"]
    return {
        "images": len(ctx.predictions), "sampled": stop.n_images,
        "invariance": {"images_run_stop": stop.images_run, "images_run_full": full.images_run,
                       "images_saved_share": round(1 - stop.images_run / full.images_run, 3),
                       "seconds_stop": stats(times["invariance_stop"]), "seconds_full": stats(times["invariance_full"]),
                       "time_ratio_stop_over_full": ratios(times["invariance_stop"], times["invariance_full"]),
                       "no_arm_decided_the_other_way": all(agree), "arms_stop": arms(stop), "arms_full": arms(full)},
        "latency": {"requests_stop": lstop.requests, "requests_full": lfull.requests,
                    "requests_saved_share": round(1 - lstop.requests / lfull.requests, 3),
                    "p95_ms_stop": [p.p95.value for p in lstop.phases], "p95_ms_full": [p.p95.value for p in lfull.phases],
                    "seconds_stop": stats(times["latency_stop"]), "seconds_full": stats(times["latency_full"]),
                    "time_ratio_stop_over_full": ratios(times["latency_stop"], times["latency_full"])},
    }


def markdown(name: str, source: str, r: dict, m: dict) -> list[str]:
    inv, lat = r["invariance"], r["latency"]
    return [
        f"# Early stopping with confidence sequences: {name}", "",
        f"{source}: {r['images']} test images, invariance on a sample of {r['sampled']} (transforms: "
        f"{r['transforms']}, severities {r['severities']}); rounds alternate stopping and full runs; load average at "
        f"the end {m['load_average_1min_at_end']:.1f} on {m['cores']} cores.", "",
        "| probe | early stop | full budget | saved | time, stop / full (median of rounds) |", "|---|---|---|---|---|",
        f"| invariance ({len(inv['arms_stop'])} arms) | {inv['images_run_stop']:,} images, "
        f"{inv['seconds_stop']['median_s']} s | {inv['images_run_full']:,} images, {inv['seconds_full']['median_s']} s | "
        f"{100 * inv['images_saved_share']:.0f}% of re-runs | {inv['time_ratio_stop_over_full']['per_round_median']} |",
        f"| latency (2 phases) | {lat['requests_stop']} requests, {lat['seconds_stop']['median_s']} s | "
        f"{lat['requests_full']} requests, {lat['seconds_full']['median_s']} s | "
        f"{100 * lat['requests_saved_share']:.0f}% of requests | {lat['time_ratio_stop_over_full']['per_round_median']} |",
        "", f"No arm decided the other way against its limit: {inv['no_arm_decided_the_other_way']}.", "",
        "| arm | images (stop) | flip rate (stop) | sequence | images (full) | flip rate (full) | Wilson 95% |",
        "|---|---|---|---|---|---|---|",
        *(f"| {a['arm']} | {a['images']} | {a['flip_rate']:.3f} | [{a['interval'][0]:.3f}, {a['interval'][1]:.3f}] | "
          f"{b['images']} | {b['flip_rate']:.3f} | [{b['interval'][0]:.3f}, {b['interval'][1]:.3f}] |"
          for a, b in zip(inv["arms_stop"], inv["arms_full"])),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--name", default="", help="suffix of the results files (e.g. fashion_mnist, elpv_lite0)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--transforms", help="comma-separated, or 'all'; default: what the audit would run")
    p.add_argument("--severities", default="1,3", help="comma-separated severities (default 1,3, as the audit)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if a.model is None:
            import builders

            data = builders.sliced_folder(Path(tmp) / "data", 400, weak="brightness", weak_error=0.3)
            model, source = builders.colour_model(Path(tmp) / "m.onnx", size=28), "synthetic colour set (tests/builders.py)"
        else:
            model, data, source = a.model, a.data, f"`{a.model}` on `{a.data}`"
        r = measure(context(model, data, a.transforms, a.severities), a.rounds)
    m = machine()
    name = "early_stopping" + (f"_{a.name}" if a.name else "")
    r["transforms"], r["severities"] = a.transforms or "the audit's", a.severities
    write(name, {"benchmark": name, "source": source, "rounds": a.rounds, **r, "machine": m},
          markdown(a.name or "synthetic", source, r, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
