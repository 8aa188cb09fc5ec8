"""``python -m training {prepare,fit,export,ablate}``: argument parsing only; one place maps errors to exit codes.

Exit codes: 0 success, 2 a usage/input error (one line, no traceback), 3 an internal error
(traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from audit.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, AuditError
from training.errors import TrainingError

log = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("prepare", help="write train/val/test ImageFolder splits + metadata.csv + EDA")
    pr.add_argument("dataset", choices=["fashion-mnist", "elpv", "imagefolder"])
    pr.add_argument("--out", required=True, help="output folder (e.g. data/fashion-mnist)")
    pr.add_argument("--src", help="imagefolder: the source ImageFolder; fashion-mnist: folder of the .gz files")
    pr.add_argument("--variant", default="binary", choices=["binary", "4class"], help="elpv labels")
    pr.add_argument("--splits", default="train,val,test", help="fashion-mnist: which splits to write")
    pr.add_argument("--limit", type=int, help="at most this many images per split (stratified)")
    pr.add_argument("--test-frac", type=float, default=None, help="test fraction (elpv 0.25, imagefolder 0.2)")
    pr.add_argument("--val-frac", type=float, default=0.1)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--no-eda", action="store_true", help="skip the EDA (eda.md, eda.json, examples.png)")

    for name, text in (("fit", "train per the config, export model.onnx + model.safetensors, report"),
                       ("ablate", "augmentation ablation: none / flip+crop / RandAugment / +MixUp+CutMix")):
        f = sub.add_parser(name, help=text)
        f.add_argument("--config", required=True)
        f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set phases.phase1.epochs=2 (repeatable)")
        f.add_argument("--out", help="output folder (default: export.out from the config)")
        f.add_argument("--weights", help="pretrained weights file (.safetensors or torch state dict)")
        f.add_argument("--allow-download", action="store_true",
                       help="allow the timm/HF hub as a last resort (also needs HF_HUB_OFFLINE=0)")
        f.add_argument("--no-progress", action="store_true")
        if name == "fit":
            f.add_argument("--resume", action="store_true",
                           help="continue a stopped run from the checkpoints in its --out folder (same config)")
        if name == "ablate":
            f.add_argument("--epochs", type=int, default=5)
            f.add_argument("--train-limit", type=int, default=None)
            f.add_argument("--variants", default="none,flip_crop,randaugment,randaugment_mixup_cutmix")

    e = sub.add_parser("export", help="re-export model.onnx from a config + model.safetensors")
    e.add_argument("--config", required=True)
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--checkpoint", required=True, help="model.safetensors written by fit")
    e.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except AuditError as e:  # TrainingError, and config errors raised by audit.settings.build
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # one place turns the unexpected into exit 3
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _config(args):
    from training.config import load_config

    overrides = list(args.set)
    if getattr(args, "weights", None):
        overrides.append(f"model.weights={json.dumps(args.weights)}")
    if getattr(args, "allow_download", False):
        overrides.append("model.allow_download=true")
    if getattr(args, "no_progress", False):
        overrides.append("train.progress_bar=false")
    return load_config(args.config, overrides=overrides)


def _stopped(e: SystemExit, out: Path) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    how, code = ("SIGTERM", 143) if isinstance(e, SIGTERMException) else ("interrupted", 130)
    print(f"stopped ({how}); {out / 'checkpoints'} keeps every finished epoch: rerun the same command with "
          "--resume to continue", file=sys.stderr)
    return code


def _run(args) -> int:
    if args.command == "prepare":
        return _prepare(args)
    if args.command == "fit":
        return _fit(args)
    if args.command == "ablate":
        return _ablate(args)
    if args.command == "export":
        return _export(args)
    raise AssertionError(args.command)


def _prepare(args) -> int:
    from training import data
    from training.eda import eda

    if args.dataset == "fashion-mnist":
        kw = {"source": args.src} if args.src else {}
        res = data.prepare_fashion_mnist(args.out, val_frac=args.val_frac, limit=args.limit, seed=args.seed,
                                         splits=tuple(s for s in args.splits.split(",") if s), **kw)
    elif args.dataset == "elpv":
        res = data.prepare_elpv(args.out, variant=args.variant, test_frac=args.test_frac or 0.25,
                                val_frac=args.val_frac, limit=args.limit, seed=args.seed)
    else:
        if not args.src:
            raise TrainingError("prepare imagefolder needs --src DIR")
        res = data.prepare_imagefolder(args.src, args.out, test_frac=args.test_frac or 0.2,
                                       val_frac=args.val_frac, limit=args.limit, seed=args.seed)
    print(f"wrote {res.root}: " + ", ".join(f"{k} {v}" for k, v in res.counts.items())
          + f" images, {len(res.classes)} classes")
    if not args.no_eda:
        eda(res.root)
        print(f"EDA: {Path(res.root) / 'eda.md'}")
    return 0


def _fit(args) -> int:
    from training.fit import fit

    cfg = _config(args)
    try:
        r = fit(cfg, out_dir=args.out, resume=args.resume)
    except SystemExit as e:  # Lightning turns Ctrl+C and SIGTERM into SystemExit (SIGTERM: status 0)
        return _stopped(e, Path(args.out or cfg.export.out))
    for p in r.phases:
        print(f"{p.name}: {p.epochs} epochs, best val acc {p.best_val_acc:.4f}, {p.train_seconds:.0f}s train"
              + (f" + {p.cache_seconds:.0f}s cache" if p.cached else ""))
    print("val accuracy by test-time views: " + ", ".join(f"{k} {v:.4f}" for k, v in r.val_tta.items()))
    if r.members:
        print("ensemble members' val accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in r.members.items()))
    test = "not evaluated" if r.test_accuracy is None else f"{r.test_accuracy:.4f} (ONNX, n={r.n_test})"
    print(f"test accuracy {test}; parity max abs diff {r.export.max_abs_diff:.1e}; "
          f"wall {r.wall_seconds / 60:.1f} min")
    print(f"wrote {r.export.onnx_path} and {r.out_dir / 'training_report.md'}")
    return 0


def _ablate(args) -> int:
    from training.fit import ablate

    cfg = _config(args)
    out = args.out or str(Path(cfg.export.out) / "ablation")
    runs = ablate(cfg, out_dir=out, epochs=args.epochs, train_limit=args.train_limit,
                  variants=tuple(v for v in args.variants.split(",") if v))
    for r in runs:
        print(f"{r.variant}: best val acc {r.best_val_acc:.4f}")
    print(f"wrote {Path(out) / 'ablation.md'}")
    return 0


def _export(args) -> int:
    from training.export import export_model
    from training.fit import load_data, make_card, prepare_runtime
    from training.data import normalise, read_classes
    from training.module import build_model
    from training.weights import read_state_dict

    cfg = _config(args)
    prepare_runtime(cfg)
    classes = read_classes(cfg.data.root)
    from training.config import with_values

    built = build_model(with_values(cfg, model={"weights": "none"}), len(classes))
    built.net.load_state_dict(read_state_dict(args.checkpoint))
    _, val, _ = load_data(with_values(cfg, data={"val_limit": cfg.export.parity_images}), built.preprocess, classes)
    from training.members import Trained

    card = make_card(cfg, Trained(nets=[built.net], built=built, results=[], train=None, val=val, seeds=(cfg.seed,),
                                  member_best=(), seconds=0.0), classes)
    r = export_model(built.net, card, args.out, parity_inputs=normalise(val.images, built.preprocess),
                     tolerance=cfg.export.parity_tolerance)
    print(f"wrote {r.onnx_path}; parity max abs diff {r.max_abs_diff:.1e} on {r.n_images} images")
    test_dir = Path(cfg.data.root) / "test"
    if test_dir.is_dir():
        from training.data import load_split
        from training.export import onnx_predict

        test = load_split(test_dir, built.preprocess, classes=classes)
        acc = float((onnx_predict(r.onnx_path, normalise(test.images, built.preprocess)).argmax(1)
                     == test.labels).mean())
        print(f"test accuracy {acc:.4f} (ONNX, n={len(test)})")
    return 0
