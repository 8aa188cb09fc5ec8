"""The training report (markdown + PNG curves) and ``results.json``; renderers only read finished results."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from training.config import Config


def plot_curves(curves: dict[str, list[float]], path: Path, *, title: str, ax=None):
    """Val accuracy per epoch, one line per series; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in curves.items():
        if ys:
            ax.plot(range(1, len(ys) + 1), ys, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig = fig or ax.figure
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig


def write_fit_report(result, cfg: Config, data_root: Path) -> Path:
    out = result.out_dir
    payload = asdict(result)
    payload["out_dir"] = str(Path(cfg.export.out))
    payload["export"]["onnx_path"] = "model.onnx"
    payload["export"]["safetensors_path"] = "model.safetensors"
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    plot_curves({p.name: list(p.val_acc) for p in result.phases}, out / "val_curves.png",
                title=f"{cfg.name}: val accuracy per phase")
    if result.test_accuracy is None:
        test = "* test split not evaluated (`export.evaluate_test = false`)"
    else:
        test = (f"* **test accuracy (ONNX Runtime, auditor preprocessing): {result.test_accuracy:.4f}** "
                f"on {result.n_test} images; macro F1 {result.test_macro_f1:.4f}; PyTorch {result.test_accuracy_torch:.4f}")
    tta = ", ".join(result.tta) or "none"
    lines = [f"# Training report: {cfg.name}", "",
             f"* model: `{result.arch}`; weights: {result.weights}",
             f"* data: `{cfg.data.root}` at {cfg.data.size[0]}x{cfg.data.size[1]} {cfg.data.color}",
             f"* val accuracy of the trained network on the whole val split: {result.val_accuracy:.4f}; "
             f"with test-time views: "
             + ", ".join(f"{k} {v:.4f}" for k, v in result.val_tta.items()),
             *([f"* ensemble of {sum('+' not in k for k in result.members)} members; each member's own val "
                f"accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in result.members.items())] if result.members else []),
             f"* test-time augmentation inside the graph: {tta}",
             test,
             f"* export parity: max abs probability difference {result.export.max_abs_diff:.2e} on "
             f"{result.export.n_images} val images, top-1 agreement {result.export.top1_agreement:.3f}",
             f"* end-to-end wall time: {result.wall_seconds / 60:.1f} min ({cfg.train.threads} torch threads"
             + ("; resumed after a stop, time of the kept work)" if result.resumed else ")"),
             f"* config hash `{cfg.digest()}`; resolved config in `config.resolved.json`", "",
             "## Phases", "",
             "| phase | epochs | cached | cache s | train s | train img/s | best val acc | param groups (lr, #params) |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for p in result.phases:
        groups = "; ".join(f"{n} ({lr:g}, {k:,})" for n, lr, k in p.groups)
        lines.append(f"| {p.name} | {p.epochs} | {'yes' if p.cached else 'no'} | {p.cache_seconds:.0f} | "
                     f"{p.train_seconds:.0f} | {p.samples_per_second:.0f} | {p.best_val_acc:.4f} | {groups} |")
    lines += ["", "![val accuracy per phase](val_curves.png)", ""]
    if result.agreement:
        a = result.agreement
        lines += ["## Augmentation label invariance", "",
                  f"On {a['n']} val images the trained model predicts the same class on the augmented and the "
                  f"clean copy for **{a['agreement']:.1%}** of them (clean accuracy {a['clean_accuracy']:.3f}, "
                  f"augmented {a['augmented_accuracy']:.3f}).", ""]
    lines += ["## Model card", "", "```json", json.dumps(result.card, indent=2), "```", ""]
    eda_md = Path(data_root) / "eda.md"
    if eda_md.is_file():
        # The example grid shows dataset images: point to it instead of embedding it, so the report
        # can be committed without the (possibly non-commercial) data.
        grid = (Path(data_root) / "examples.png").as_posix()
        lines += [eda_md.read_text().replace("![examples per class](examples.png)",
                                             f"Example grid: `{grid}` (written by `prepare`, not copied here)."), ""]
    path = out / "training_report.md"
    path.write_text("\n".join(lines))
    return path


def write_ablation_report(runs, cfg: Config, out: Path, *, epochs: int, train_limit, phase: str) -> Path:
    (out / "ablation.json").write_text(json.dumps([asdict(r) for r in runs], indent=2))
    plot_curves({r.variant: list(r.val_acc) for r in runs}, out / "ablation_curves.png",
                title=f"{cfg.name}: augmentation ablation ({phase})")
    lines = [f"## Augmentation ablation: {cfg.name}", "",
             f"`{cfg.model.arch}`, {phase}, {epochs} epochs, "
             f"{'all' if train_limit is None else train_limit} training images, same seed.", "",
             "| variant | switches | best val acc | final val acc | train s |", "|---|---|---:|---:|---:|"]
    for r in runs:
        sw = ", ".join(f"{k}={v}" for k, v in r.augment.items()) or "none"
        lines.append(f"| {r.variant} | {sw} | {r.best_val_acc:.4f} | {r.val_acc[-1]:.4f} | {r.train_seconds:.0f} |")
    lines += ["", "![ablation val accuracy](ablation_curves.png)", ""]
    path = out / "ablation.md"
    path.write_text("\n".join(lines))
    return path
