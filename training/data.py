"""Dataset preparation (ImageFolder splits + ``metadata.csv``) and loading for training (EDA: ``training.eda``).

``prepare_*`` write ``OUT/{train,val,test}/<class>/<image>.png`` plus ``OUT/<split>/metadata.csv``
(``path`` relative to the split, ``label``, attribute columns) and ``OUT/classes.txt`` (label order).
``training.eda`` then writes ``OUT/eda.md``, ``OUT/eda.json`` and ``OUT/examples.png``.

``load_split`` lists and reads a split through ``audit.sources`` and decodes and resizes with
``audit.imaging`` (the one decode path, docs/ARCHITECTURE.md §11), so clean training/eval tensors
are byte-for-byte the tensors the auditor feeds the exported model.

Example::

    prepare_fashion_mnist("data/fashion-mnist")
    arr = load_split("data/fashion-mnist/test", Preprocess(size=(28, 28), color="L"))
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from audit.errors import DataError
from audit.imaging import ImageRejected, decode, resize
from audit.preprocess import Preprocess
from audit.sources import DataSource, open_source
from training.errors import TrainingError

SPLITS = ("train", "val", "test")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot")
ELPV_BINARY = ("functional", "defective")
ELPV_4CLASS = ("prob_0.00", "prob_0.33", "prob_0.67", "prob_1.00")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


@dataclass(frozen=True)
class PreparedDataset:
    root: Path
    classes: tuple[str, ...]
    counts: dict[str, int]  # images per split


@dataclass(frozen=True)
class ImageArray:
    """A split held in memory at model-input size: uint8 images (N, H, W, C) and int labels."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    targets: np.ndarray | None = None  # (N, classes) float training targets where they are not the labels

    def train_targets(self) -> np.ndarray:
        """What training fits: the soft targets if the split has them, else the integer labels."""
        return self.labels if self.targets is None else self.targets

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------- prepare


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST/Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def prepare_fashion_mnist(out: str | Path, *, source: str | Path = FASHION_MNIST_DIR, val_frac: float = 0.1,
                          limit: int | None = None, seed: int = 0,
                          splits: Sequence[str] = SPLITS) -> PreparedDataset:
    """Write Fashion-MNIST as ImageFolder splits: train/val from the 60k set, test = the 10k set.

    ``limit`` caps every split (stratified), for tests and quick looks.
    """
    source = Path(source)
    files = {k: source / f"{k}-ubyte.gz" for k in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise TrainingError(f"Fashion-MNIST files not found: {missing[0]}",
                            hint="sudo apt-get install dataset-fashion-mnist, or pass --source DIR")
    x_tr, y_tr = read_idx(files["train-images-idx3"]), read_idx(files["train-labels-idx1"])
    x_te, y_te = read_idx(files["t10k-images-idx3"]), read_idx(files["t10k-labels-idx1"])
    idx_tr, idx_val = _stratified_split(y_tr, val_frac, seed)
    chosen = {"train": (x_tr, y_tr, idx_tr, "train"), "val": (x_tr, y_tr, idx_val, "train"),
              "test": (x_te, y_te, np.arange(len(y_te)), "t10k")}
    out = Path(out)
    counts = {}
    for split in splits:
        x, y, idx, origin = chosen[split]
        idx = _limit(idx, y, limit, seed)
        rows = []
        for i in idx:
            cls = FASHION_MNIST_CLASSES[y[i]]
            rel = f"{cls}/{origin}_{i:05d}.png"
            _save_png(x[i], out / split / rel)
            rows.append({"path": rel, "label": cls, "source": f"{origin}[{i}]"})
        _write_metadata(out / split, rows)
        counts[split] = len(rows)
    (out / "classes.txt").write_text("\n".join(FASHION_MNIST_CLASSES) + "\n")
    return PreparedDataset(out, FASHION_MNIST_CLASSES, counts)


def elpv_source() -> Path:
    """The folder of the installed ``elpv-dataset`` package holding ``labels.csv`` and ``images/``."""
    try:
        import elpv_dataset
    except ImportError:
        raise TrainingError("the ELPV dataset package is not installed",
                            hint="pip install elpv-dataset (images are CC-BY-NC-SA-4.0)") from None
    return Path(elpv_dataset.__file__).parent / "data"


def prepare_elpv(out: str | Path, *, variant: str = "binary", test_frac: float = 0.25, val_frac: float = 0.1,
                 limit: int | None = None, seed: int = 0) -> PreparedDataset:
    """Write ELPV (from the installed package) as ImageFolder splits.

    ``variant="binary"``: ``defective`` when the defect probability >= 0.5, else ``functional``;
    ``variant="4class"``: one class per probability (0, 1/3, 2/3, 1). The test split is a
    stratified ``test_frac`` (25% as in Deitsch et al. 2019), stratified on probability x module
    type, so both variants share the same test images; ``val_frac`` of the rest is validation.
    ``metadata.csv`` carries ``module_type`` (mono/poly) and ``defect_probability``.
    """
    if variant not in ("binary", "4class"):
        raise TrainingError(f"--variant must be 'binary' or '4class', got {variant!r}")
    src = elpv_source()
    rows = []
    with open(src / "labels.csv") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                rows.append((parts[0], float(parts[1]), parts[2]))
    probs = np.array([r[1] for r in rows])
    strata = np.array([f"{p:.2f}-{r[2]}" for p, r in zip(probs, rows)])
    rest, test = _stratified_split(strata, test_frac, seed)
    tr, val = _stratified_split(strata[rest], val_frac, seed)
    parts_idx = {"train": rest[tr], "val": rest[val], "test": test}
    classes = ELPV_BINARY if variant == "binary" else ELPV_4CLASS
    out = Path(out)
    counts = {}
    for split, idx in parts_idx.items():
        idx = _limit(np.sort(idx), strata, limit, seed)
        meta = []
        for i in idx:
            rel_src, p, mtype = rows[i]
            cls = classes[int(p >= 0.5)] if variant == "binary" else classes[int(round(p * 3))]
            rel = f"{cls}/{Path(rel_src).name}"
            (out / split / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel_src, out / split / rel)
            meta.append({"path": rel, "label": cls, "module_type": mtype, "defect_probability": f"{p:.4f}"})
        _write_metadata(out / split, meta)
        counts[split] = len(meta)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    return PreparedDataset(out, classes, counts)


def prepare_imagefolder(src: str | Path, out: str | Path, *, test_frac: float = 0.2, val_frac: float = 0.1,
                        limit: int | None = None, seed: int = 0) -> PreparedDataset:
    """Split one ImageFolder ``SRC/<class>/<image>`` into stratified train/val/test copies.

    Attribute columns of ``SRC/metadata.csv`` (``path`` relative to SRC) are carried over.
    """
    src = Path(src)
    if not src.is_dir():
        raise TrainingError(f"--src {src} is not a folder", hint="pass an ImageFolder: SRC/<class>/<image>")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and p.parent != src)
    if not files:
        raise TrainingError(f"--src {src} has no images in class folders", hint="expected SRC/<class>/<image>")
    attrs: dict[str, dict[str, str]] = {}
    if (src / "metadata.csv").is_file():
        with open(src / "metadata.csv", newline="") as f:
            for row in csv.DictReader(f):
                attrs[row.pop("path")] = {k: v for k, v in row.items() if k != "label"}
    labels = np.array([p.relative_to(src).parts[0] for p in files])
    classes = tuple(sorted(set(labels)))
    rest, test = _stratified_split(labels, test_frac, seed)
    tr, val = _stratified_split(labels[rest], val_frac, seed)
    out = Path(out)
    counts = {}
    for split, idx in {"train": rest[tr], "val": rest[val], "test": test}.items():
        idx = _limit(np.sort(idx), labels, limit, seed)
        meta = []
        for i in idx:
            rel = files[i].relative_to(src).as_posix()
            (out / split / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[i], out / split / rel)
            meta.append({"path": rel, "label": labels[i], **attrs.get(rel, {})})
        _write_metadata(out / split, meta)
        counts[split] = len(meta)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    return PreparedDataset(out, classes, counts)


def _stratified_split(y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    a, b = train_test_split(idx, test_size=frac, random_state=seed, stratify=y)
    return np.sort(a), np.sort(b)


def _limit(idx: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(idx):
        return idx
    # Round-robin over classes in a seeded order keeps a small subset stratified.
    rng = np.random.default_rng(seed)
    by_class: dict = {}
    for i in rng.permutation(idx):
        by_class.setdefault(y[i], []).append(i)
    picked: list[int] = []
    queues = [by_class[k] for k in sorted(by_class)]
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop())
    return np.sort(np.array(picked))


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, compress_level=1)


def _write_metadata(split_dir: Path, rows: list[dict[str, str]]) -> None:
    split_dir.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r)) or ["path", "label"]
    with open(split_dir / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------- load


def read_classes(root: str | Path) -> tuple[str, ...]:
    """Label order: ``root/classes.txt`` if present, else the sorted class folders of the train split."""
    root = Path(root)
    if (root / "classes.txt").is_file():
        return tuple(c for c in (root / "classes.txt").read_text().splitlines() if c)
    for split in SPLITS:
        if (root / split).is_dir():
            return tuple(sorted(p.name for p in (root / split).iterdir() if p.is_dir()))
    raise TrainingError(f"{root} has no train/val/test folders",
                        hint="run `python -m training prepare ...` first")


def load_split(split_dir: str | Path, pre: Preprocess, *, classes: Sequence[str] | None = None,
               limit: int | None = None, seed: int = 0) -> ImageArray:
    """Decode and resize every image of an ImageFolder split exactly as the auditor does: listed and read
    through ``audit.sources``, decoded and resized by ``audit.imaging``."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise TrainingError(f"split folder not found: {split_dir}",
                            hint="run `python -m training prepare ...` or fix data.root")
    classes = tuple(classes) if classes is not None else read_classes(split_dir.parent)
    samples = split_samples(split_dir, classes)
    index = {c: k for k, c in enumerate(classes)}
    y = np.array([index[s.label] for s in samples.samples], dtype=np.int64)
    keep = _limit(np.arange(len(y)), y, limit, seed)
    h, w = pre.size
    images = np.empty((len(keep), h, w, pre.channels), dtype=np.uint8)
    for j, i in enumerate(keep):
        arr = np.asarray(resize(decode_sample(samples, samples.samples[i].path, pre.color), pre), dtype=np.uint8)
        images[j] = arr[:, :, None] if arr.ndim == 2 else arr
    return ImageArray(images, y[keep], classes, tuple(samples.samples[i].path for i in keep))


def soft_targets(split_dir: str | Path, arr: ImageArray, column: str) -> ImageArray:
    """``arr`` with targets (1 - p, p), p read per image from ``column`` of the split's ``metadata.csv``.

    Two classes only; p must lie in [0, 1] and agree with the label (p >= 0.5 exactly for the second class).
    """
    path = Path(split_dir) / "metadata.csv"
    if len(arr.classes) != 2:
        raise TrainingError(f"train.soft_label_column needs two classes, {path.parent} has {len(arr.classes)}")
    if not path.is_file():
        raise TrainingError(f"train.soft_label_column = {column!r} but {path} does not exist",
                            hint="prepare the data with `python -m training prepare`")
    with open(path, newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    try:
        p = np.array([float(rows[q][column]) for q in arr.paths])
    except KeyError as e:
        raise TrainingError(f"{path} has no {column!r} value for {e.args[0]!r}",
                            hint=f"every training image needs a {column} between 0 and 1") from None
    if ((p < 0) | (p > 1)).any() or ((p >= 0.5) != (arr.labels == 1)).any():
        raise TrainingError(f"{path}: {column} must lie in [0, 1] and be >= 0.5 exactly for class {arr.classes[1]!r}")
    return dataclasses.replace(arr, targets=np.stack([1 - p, p], axis=1).astype(np.float32))


def split_samples(split_dir: Path, classes: Sequence[str]) -> DataSource:
    """The split as the audit sees it (``audit.sources``), its samples in label order, then by path."""
    try:
        src = open_source(split_dir, tuple(classes), flag="data.root split")
    except DataError as e:
        raise TrainingError(e.message, hint=f"expected {split_dir}/<class>/<image> with classes {list(classes)}") from None
    index = {c: k for k, c in enumerate(classes)}
    return dataclasses.replace(src, samples=tuple(sorted(src.samples, key=lambda s: (index[s.label], s.path))))


def decode_sample(source: DataSource, path: str, color: str | None):
    """One image of ``source``, read and decoded as the audit does (``audit.imaging.decode``)."""
    try:
        img, _ = decode(source.open(path), color)
    except (ImageRejected, OSError) as e:
        raise TrainingError(f"cannot read {source.uri(path)}: {getattr(e, 'reason', e)}",
                            hint="remove or replace the file, then run again") from None
    return img


def normalise(images: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), the same arithmetic as ``audit.imaging.to_tensor``."""
    arr = images.astype(np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
