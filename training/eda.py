"""Exploratory data analysis of prepared ImageFolder splits (``training.data.prepare_*``).

``eda`` writes ``OUT/eda.md``, ``OUT/eda.json`` and ``OUT/examples.png``; ``eda_markdown`` is the
EDA section of the training report.

Example::

    prepare_fashion_mnist("data/fashion-mnist")  # training.data
    eda("data/fashion-mnist")
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audit.sources import DataSource
from training.data import SPLITS, decode_sample, read_classes, split_samples


@dataclass(frozen=True)
class EdaResult:
    classes: tuple[str, ...]
    class_counts: dict[str, dict[str, int]]  # split -> class -> n
    resolutions: dict[str, dict[str, int]]  # split -> "WxH" -> n (top 10)
    modes: dict[str, dict[str, int]]  # split -> colour mode as the audit decodes it (L or RGB) -> n
    duplicates_within: dict[str, int]  # split -> images whose pixels repeat another in the split
    duplicates_between: dict[str, int]  # "train/test" -> images of the 2nd split also in the 1st
    attributes: dict[str, dict[str, dict[str, int]]]  # split -> column -> value -> n (small columns)


def eda(root: str | Path, *, examples_per_class: int = 8) -> EdaResult:
    """Class distribution, resolutions, examples per class and exact-duplicate check across splits.

    Writes ``eda.json``, ``eda.md`` and ``examples.png`` into ``root``.
    """
    root = Path(root)
    classes = read_classes(root)
    counts, res, modes, dup_within, hashes = {}, {}, {}, {}, {}
    attributes: dict[str, dict[str, dict[str, int]]] = {}
    examples: dict[str, list[tuple[DataSource, str]]] = {c: [] for c in classes}
    for split in SPLITS:
        d = root / split
        if not d.is_dir():
            continue
        c_counts, r_counts, m_counts = Counter(), Counter(), Counter()
        h: dict[str, int] = Counter()
        source = split_samples(d, classes)  # read and decoded as the audit does
        for sample in source.samples:
            img = decode_sample(source, sample.path, None)
            r_counts[f"{img.width}x{img.height}"] += 1
            m_counts[img.mode] += 1
            h[hashlib.md5(img.tobytes()).hexdigest()] += 1
            c_counts[sample.label] += 1
            if split == "train" and len(examples[sample.label]) < examples_per_class:
                examples[sample.label].append((source, sample.path))
        counts[split] = {c: c_counts[c] for c in classes}
        res[split] = dict(r_counts.most_common(10))
        modes[split] = dict(m_counts)
        dup_within[split] = sum(n - 1 for n in h.values() if n > 1)
        hashes[split] = set(h)
        attributes[split] = _attribute_counts(d / "metadata.csv")
    between = {}
    names = list(hashes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            between[f"{a}/{b}"] = len(hashes[a] & hashes[b])
    result = EdaResult(classes, counts, res, modes, dup_within, between, attributes)
    (root / "eda.json").write_text(json.dumps(asdict(result), indent=2))
    _examples_figure(examples, root / "examples.png")
    (root / "eda.md").write_text(eda_markdown(result))
    return result


def _attribute_counts(meta: Path) -> dict[str, dict[str, int]]:
    if not meta.is_file():
        return {}
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for col in (rows[0].keys() if rows else ()):
        if col in ("path", "label", "source"):
            continue
        c = Counter(r[col] for r in rows)
        if len(c) <= 12:
            out[col] = dict(sorted(c.items()))
    return out


def eda_markdown(r: EdaResult) -> str:
    """The EDA section of the training report."""
    splits = list(r.class_counts)
    lines = ["## Data (EDA)", "", "### Class distribution", "",
             "| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for c in r.classes:
        lines.append(f"| {c} | " + " | ".join(str(r.class_counts[s][c]) for s in splits) + " |")
    lines.append("| **total** | " + " | ".join(str(sum(r.class_counts[s].values())) for s in splits) + " |")
    lines += ["", "### Resolutions and colour modes", ""]
    for s in splits:
        lines.append(f"* {s}: " + ", ".join(f"{k} ({v})" for k, v in r.resolutions[s].items())
                     + "; modes " + ", ".join(f"{k} ({v})" for k, v in r.modes[s].items()))
    lines += ["", "### Exact duplicates (identical decoded pixels)", ""]
    for s, n in r.duplicates_within.items():
        lines.append(f"* within {s}: {n}")
    for k, n in r.duplicates_between.items():
        lines.append(f"* between {k}: {n}")
    for s, cols in r.attributes.items():
        for col, vals in cols.items():
            lines.append(f"* {s} `{col}`: " + ", ".join(f"{k} ({v})" for k, v in vals.items()))
    lines += ["", "### Examples per class (train)", "", "![examples per class](examples.png)", ""]
    return "\n".join(lines)


def _examples_figure(examples: dict[str, list[tuple[DataSource, str]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(examples)
    cols = max(1, max((len(v) for v in examples.values()), default=1))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.05), squeeze=False)
    for r, (cls, paths) in enumerate(examples.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(paths):
                ax.imshow(np.asarray(decode_sample(*paths[c], "L")), cmap="gray")
        axes[r][0].set_title(cls, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
