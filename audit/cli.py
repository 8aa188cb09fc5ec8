"""Command line: argument parsing, and the one place that maps outcomes to exit codes (docs/ARCHITECTURE.md §9).

Exit codes: 0 every criterion passes · 1 a criterion failed · 2 usage or input error (one line,
no traceback) · 3 internal error (traceback with --debug) · 4 inconclusive: no criterion failed but
the test set cannot decide one (``--on-inconclusive fail|pass`` maps it to 1 or 0).
"""

from __future__ import annotations

import argparse
import json
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audit import __version__
from audit.checks import CHECKS
from audit.errors import (EXIT_BY_OUTCOME, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PASS, EXIT_TERMINATED, EXIT_USAGE,
                          AuditError, ConfigError, Terminated, UsageError)
from audit.model import model_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other user mistake
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m audit", description="Audit an ONNX image classifier against acceptance criteria.")
    p.add_argument("--version", action="version", version=f"audit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _run_parser(sub)
    _compare_parser(sub)
    _serve_parser(sub)
    return p


def _run_parser(sub) -> None:
    run = sub.add_parser("run", help="audit a model on a data folder and write the report")
    run.add_argument("--model", required=True, type=Path, help="the .onnx model file")
    run.add_argument("--data", required=True, type=Path,
                     help="ImageFolder DIR/<class>/<image> (optional DIR/metadata.csv), or a path,label manifest "
                          "(.csv or .parquet)")
    run.add_argument("--out", type=Path, help="output folder (default: reports/<model name>/)")
    run.add_argument("--config", type=Path, help="audit.toml ([audit] table) or pyproject.toml ([tool.audit])")
    run.add_argument("--templates", type=Path, help="a folder of report templates searched before the packaged ones "
                                                    "(templates are code: use only templates you trust)")
    _add_card_args(run)
    opts = run.add_argument_group("run options (override the config file)")
    for flag, (key, kind, text) in RUN_FLAGS.items():
        if kind is bool:
            opts.add_argument(flag, action="store_true", help=text)
        else:
            opts.add_argument(flag, type=kind, help=text)
    opts.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    ana = run.add_argument_group("checks (override the config file)")
    for spec in CHECKS:
        for o in spec.options:
            ana.add_argument(o.flag, metavar=o.metavar, help=o.help, dest=_dest(o.key))
        if spec.toggle:
            ana.add_argument(spec.flag, action=argparse.BooleanOptionalAction, dest=_dest(f"{spec.name}.enabled"),
                             help=f"the {spec.name} check (default: on; see [audit.{spec.name}])")
    run.add_argument("--debug", action="store_true", help="show tracebacks")

# flag -> (config key, type, help); store_true flags (type bool) set the key to False ("--no-pdf" -> pdf = false)
RUN_FLAGS: dict[str, tuple[str, type, str]] = {
    "--seed": ("seed", int, "random seed of every resample and sample (default 0)"),
    "--n-boot": ("n_boot", int, "bootstrap resamples per CI (default 1000)"),
    "--batch-size": ("batch_size", int, "images per model call (default 0: 64, up to 256 for a small input)"),
    "--workers": ("workers", int, "decode threads (default: one per core)"),
    "--engine": ("engine.name", str, "where inference runs: local (threads, default) or ray (Ray Data; "
                                     'pip install "model-audit[ray]")'),
    "--ray-address": ("engine.ray_address", str,
                      "with --engine ray: join this Ray cluster (auto, or the HOST:6379 that `ray start --head` "
                      "prints) instead of starting a local Ray"),
    "--min-accuracy": ("criteria.min_accuracy", float, "override the accuracy threshold"),
    "--judge-on": ("criteria.judge_on", str, "interval (default): pass or fail when the whole 95%% CI is on one side "
                                             "of the threshold, inconclusive (exit 4) when it holds it; value: the "
                                             "point estimate decides"),
    "--on-inconclusive": ("criteria.on_inconclusive", str, "exit 1 (fail) or 0 (pass) instead of 4 when the test set "
                                                           "cannot decide a criterion"),
    "--data-root": ("data_root", str, "a folder a manifest's paths may point into besides the manifest's own folder"),
    "--no-pdf": ("pdf", bool, "skip report.pdf"),
    "--csv-rows": ("csv_rows", int, "write predictions.csv only up to this many images (default 100000); "
                                    "predictions.parquet always has every row"),
    "--no-thumbnails": ("thumbnails", bool,
                        "embed no image of the data in the report (for data whose licence forbids copies)"),
}


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def _compare_parser(sub) -> None:
    cmp = sub.add_parser("compare", help="compare two audits of the same images, image by image (paired); "
                                         "exit 0 when the candidate is not worse by more than the margin, 1 when it is, "
                                         "4 when the images cannot tell")
    cmp.add_argument("--candidate", required=True, type=Path, help="output folder of the new model's audit run")
    cmp.add_argument("--baseline", required=True, type=Path, help="output folder of the old model's audit run")
    cmp.add_argument("--out", type=Path, help="output folder (default: reports/<candidate>-vs-<baseline>/)")
    cmp.add_argument("--margin", type=float, default=0.01,
                     help="accuracy the candidate may lose and still pass (default 0.01)")
    cmp.add_argument("--alpha", type=float, default=0.05, help="one-sided level of that test (default 0.05)")
    cmp.add_argument("--on-inconclusive", default="inconclusive", metavar="fail|pass",
                     help="exit 1 (fail) or 0 (pass) instead of 4 when the images cannot decide it")
    cmp.add_argument("--data", type=Path, help="the audited data, for thumbnails (default: the folder the "
                                               "candidate's verdict.json names, when it can be read)")
    cmp.add_argument("--no-thumbnails", action="store_true", help="embed no image of the data in the report")
    cmp.add_argument("--templates", type=Path, help="a folder of report templates searched before the packaged ones "
                                                    "(templates are code: use only templates you trust)")
    cmp.add_argument("--debug", action="store_true", help="show tracebacks")


def _serve_parser(sub) -> None:
    srv = sub.add_parser("serve", help="serve a model over HTTP: POST /predict, GET /health, GET /model, /docs")
    srv.add_argument("--model", required=True, type=Path, help="the .onnx model file")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    srv.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: ORT's)")
    srv.add_argument("--card", type=Path, help="a model.json-style card file (flags below override it)")
    _add_card_args(srv)
    lim = srv.add_argument_group("request limits")
    lim.add_argument("--max-request-bytes", type=int, help="largest JSON body accepted (default 16 MiB)")
    lim.add_argument("--max-pixels", type=int, help="largest image, width x height (default 64,000,000, as the audit)")
    lim.add_argument("--formats", help="allowed image formats, comma-separated, from the audit's allow-list "
                                       "(default PNG,JPEG,WEBP,BMP,GIF,TIFF,PPM)")
    lim.add_argument("--pixel-budget", type=int,
                     help="decoded pixels of all requests in flight together; bounds memory (default: --max-pixels)")
    lim.add_argument("--queue-timeout", type=float, help="seconds a request may wait for the pixel budget before 503 "
                                                         "(default 10)")
    lim.add_argument("--read-timeout", type=float, help="seconds a request may take to arrive whole, else 408 "
                                                        "(default 30)")
    lim.add_argument("--max-connections", type=int,
                     help="open connections; past it the one waiting longest for its client is closed "
                          "(default: the open-file limit - 64)")
    sch = srv.add_argument_group("scheduling")
    sch.add_argument("--max-batch", type=int,
                     help="group up to N concurrent requests into one model call (default 1: off)")
    sch.add_argument("--max-wait-ms", type=float, help="how long a batch waits for requests still decoding (default 2)")
    sch.add_argument("--inline-below-ms", type=float,
                     help="run requests measured to cost less than this on the event loop, not a thread (default 2)")
    sch.add_argument("--http", default="auto", help="uvicorn HTTP parser: auto, httptools or h11 (default auto)")
    sch.add_argument("--loop", default="auto", help="event loop: auto, uvloop or asyncio (default auto)")
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    srv.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    srv.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_card_args(parser: argparse.ArgumentParser) -> None:
    card = parser.add_argument_group("model card overrides (for models without audit.* metadata)")
    card.add_argument("--labels", help="comma-separated class names in output order")
    card.add_argument("--size", help="input size: S or H,W")
    card.add_argument("--mean", help="normalisation mean: one value or one per channel, comma-separated")
    card.add_argument("--std", help="normalisation std: one value or one per channel, comma-separated")
    card.add_argument("--color", choices=["RGB", "L"], help="input colour mode")
    card.add_argument("--resize", choices=["resize", "shorter_side_then_center_crop"])
    card.add_argument("--output-kind", dest="output", choices=["logits", "probabilities"],
                      help="what the model outputs (default: from the card or the graph)")
    card.add_argument("--features-output", dest="features", metavar="NAME",
                      help="the graph tensor holding the model's features (the input of its final classifier layer), "
                           "where the audit cannot find it")


def _floats(flag: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def card_overrides(a: argparse.Namespace) -> dict[str, Any]:
    size = _floats("--size", a.size)
    if size is not None:
        if len(size) not in (1, 2) or any(s <= 0 or s != int(s) for s in size):
            raise UsageError(f"--size expects S or H,W (positive integers), got {a.size!r}")
        size = [int(s) for s in size] * (2 if len(size) == 1 else 1)
    pre = {"size": size, "mean": _floats("--mean", a.mean), "std": _floats("--std", a.std),
           "color": a.color, "resize": a.resize}
    labels = [x.strip() for x in a.labels.split(",")] if a.labels else None
    return {"labels": labels, "output": a.output, "features": a.features,
            "preprocess": {k: v for k, v in pre.items() if v is not None}}


def default_out(model: Path) -> Path:
    """reports/<model name>/, where a generic file name (model.onnx) takes its folder's name."""
    return Path("reports") / model_name(model)


def config_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys set by the command line (unset flags are None and left out by the loader)."""
    out: dict[str, Any] = {}
    for flag, (key, kind, _) in RUN_FLAGS.items():
        value = getattr(a, flag.lstrip("-").replace("-", "_"))
        out[key] = (False if value else None) if kind is bool else value
    for spec in CHECKS:
        for o in spec.options:
            value = getattr(a, _dest(o.key))
            try:
                out[o.key] = o.parse(value) if (o.parse and value is not None) else value
            except ValueError:
                raise UsageError(f"{o.flag} expects {o.metavar or 'a value'}, got {value!r}") from None
        if spec.toggle:
            out[f"{spec.name}.enabled"] = getattr(a, _dest(f"{spec.name}.enabled"))
    return out


def _load_config(a: argparse.Namespace):
    """The config file plus the flags; a flag's bad value is reported with the flag in front of the key."""
    from audit.config import load_config

    overrides = config_overrides(a)
    try:
        return load_config(a.config, overrides)
    except ConfigError:
        flags = {key: flag for flag, (key, _, _) in RUN_FLAGS.items()}
        flags.update({o.key: o.flag for spec in CHECKS for o in spec.options})
        for key, value in overrides.items():
            if key in flags and value is not None and not isinstance(value, bool):
                try:
                    load_config(None, {key: value})
                except ConfigError as own:
                    raise ConfigError(f"{flags[key]} {value or repr(value)}: {own.message}", hint=own.hint) from None
        raise


def cmd_run(a: argparse.Namespace) -> int:
    from audit.pipeline import run_audit
    from audit.render.markdown import headline
    from audit.render.outputs import check_out, check_templates, write_outputs
    from audit.render.pdf import PdfWorker
    from audit.text import describe

    config = _load_config(a)
    out = a.out or default_out(a.model)
    check_templates(a.templates)
    check_out(out, a.data)  # before the first image is decoded
    pdf = PdfWorker() if config.pdf else None  # weasyprint loads in its own process while the audit runs
    try:
        result = run_audit(a.model, a.data, config, card_overrides=card_overrides(a),
                           progress=False if a.no_progress else None)
        write_outputs(result, out, pdf=pdf or False, templates=a.templates)
    finally:
        if pdf is not None:
            pdf.close()
    for c in result.verdict.criteria:
        print("  " + paint(describe(c), c.status if c.judged else "info"))
    d = result.data
    v = result.verdict
    meta = f" (attributes from {d.metadata})" if d.metadata else ""
    undecided = f", {len(v.undecided)} inconclusive" if v.undecided else ""
    print(f"{paint(headline(v), v.outcome)}: {len(v.judged) - len(v.failed) - len(v.undecided)}/{len(v.judged)} "
          f"criteria pass{undecided} ({len(v.criteria) - len(v.judged)} reported only) · {d.processed} images, "
          f"{len(d.skipped)} skipped of {d.found} found{meta} · report: {out / 'report.html'}")
    return EXIT_BY_OUTCOME[v.gate]


_COLOURS = {"pass": "32", "fail": "31", "inconclusive": "35"}  # ANSI green, red, magenta


def paint(text: str, status: str) -> str:
    """``text`` in its status's colour on a terminal (never in a log file, nor with NO_COLOR set)."""
    if status not in _COLOURS or not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    return f"\033[{_COLOURS[status]}m{text}\033[0m"


def cmd_compare(a: argparse.Namespace) -> int:
    from audit.comparison import compare_folders, default_out
    from audit.render.comparison import check_comparison_out, write_comparison
    from audit.render.outputs import check_templates
    from audit.text import fmt_ci

    if a.on_inconclusive not in ("inconclusive", "fail", "pass"):
        raise UsageError(f"--on-inconclusive must be fail or pass, got {a.on_inconclusive!r}")
    out = a.out or default_out(a.candidate, a.baseline)
    check_templates(a.templates)
    target = check_comparison_out(out, a.candidate, a.baseline)  # before the runs are read
    rep = compare_folders(a.candidate, a.baseline, margin=a.margin, alpha=a.alpha, data=a.data,
                          thumbnails=not a.no_thumbnails, on_inconclusive=a.on_inconclusive)
    write_comparison(rep, out, a.templates, target=target)
    for f in rep.findings:
        print(f"  {f.severity}: {f.text}")
    for note in rep.notes:
        print(f"  note: {note}")
    c = rep.criterion
    print(f"{paint(rep.headline, c.status)}: {c.title}: {c.value:+.4f} {fmt_ci(c.low, c.high, 4)}, must be {c.op} "
          f"{c.threshold:g} · report: {out / 'comparison.html'}")
    return EXIT_BY_OUTCOME[rep.gate]


def cmd_serve(a: argparse.Namespace) -> int:
    from audit.serve import Scheduling, ServeLimits, serve

    limits = {"max_request_bytes": a.max_request_bytes, "max_pixels": a.max_pixels,
              "formats": tuple(a.formats.split(",")) if a.formats is not None else None,
              "pixel_budget": a.pixel_budget, "queue_timeout_s": a.queue_timeout, "read_timeout_s": a.read_timeout,
              "max_connections": a.max_connections}
    scheduling = {"max_batch": a.max_batch, "max_wait_ms": a.max_wait_ms, "inline_below_ms": a.inline_below_ms}
    serve(a.model, host=a.host, port=a.port, threads=a.threads,
          limits=ServeLimits(**{k: v for k, v in limits.items() if v is not None}),
          scheduling=Scheduling(**{k: v for k, v in scheduling.items() if v is not None}),
          card_overrides=_with_card_file(a.card, card_overrides(a)),
          log_level=a.log_level, access_log=not a.no_access_log, http=a.http, loop=a.loop)
    return EXIT_PASS


def _with_card_file(path: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """A ``--card`` JSON file (model.json keys) under the card flags, which win."""
    if path is None:
        return flags

    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--card {path}: cannot read it as JSON ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("preprocess", {}), dict):
        raise UsageError(f"--card {path} must be a JSON object like model.json (labels, preprocess, ...)")
    return {**d, **{k: v for k, v in flags.items() if v is not None},
            "preprocess": {**d.get("preprocess", {}), **flags["preprocess"]}}


COMMANDS = {"run": cmd_run, "compare": cmd_compare, "serve": cmd_serve}


_SIGNALLED: set[int] = set()  # signals this process has received (and turned into an exception)


@contextlib.contextmanager
def _sigterm_as_interrupt(enabled: bool) -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main thread, so a run cleans up as on Ctrl-C:
    the latency server is stopped, temporary folders are removed, the previous outputs stay as they were.
    (``serve`` keeps uvicorn's own handling.)"""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        _SIGNALLED.add(signal.SIGTERM)  # Ray's C++ layer turns any exception raised in a wait into KeyboardInterrupt
        raise Terminated()

    _SIGNALLED.discard(signal.SIGTERM)  # main() may run more than once in a process (tests)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    debug = getattr(a, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _sigterm_as_interrupt(a.command in ("run", "compare")):
            return COMMANDS[a.command](a)
    except AuditError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated) or signal.SIGTERM in _SIGNALLED:
            print("terminated (SIGTERM)", file=sys.stderr)
            return EXIT_TERMINATED
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # an internal error: ours to fix, so say so and keep the details
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback and report it)",
              file=sys.stderr)
        return EXIT_INTERNAL
