"""Augmentation: albumentations (flip, quarter turn, crop/scale, affine, colour) + RandAugment + erasing per sample,
MixUp / CutMix per batch; each switchable from ``[augment]`` in the config.

Per-sample transforms work on uint8 HWC arrays already at the model-input size (see
``training.data.load_split``), so with every switch off a training sample is exactly the
tensor the auditor builds. ``augmentation_agreement`` checks that augmented samples keep their
label: the trained model should predict the same class on an augmented image as on the clean one.

Example::

    aug = SampleAugment(cfg.augment, size=(64, 64), seed=0)
    x = aug(image_uint8_hwc)            # uint8 HWC, same shape
    mix = BatchMix(cfg.augment, num_classes=10)
    xb, yb = mix(xb, yb)                # yb becomes (N, C) soft targets
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audit.model import Preprocess
from training.config import AugmentConfig
from training.data import normalise


class SampleAugment:
    """uint8 HWC -> uint8 HWC: albumentations geometry/colour, then RandAugment (N, M)."""

    def __init__(self, cfg: AugmentConfig, size: tuple[int, int], *, seed: int = 0) -> None:
        import albumentations as A

        h, w = size
        ops = []
        if cfg.crop_scale:
            ops.append(A.RandomResizedCrop(size=(h, w), scale=tuple(cfg.crop_scale), ratio=(0.8, 1.25), p=1.0))
        if cfg.hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        if cfg.vflip:
            ops.append(A.VerticalFlip(p=0.5))
        if cfg.rot90:  # 0, 1, 2 or 3 quarter turns; with both flips every symmetry of the square is equally likely
            ops.append(A.RandomRotate90(p=1.0))
        if cfg.affine_degrees or cfg.affine_translate:
            ops.append(A.Affine(rotate=(-cfg.affine_degrees, cfg.affine_degrees),
                                translate_percent=(-cfg.affine_translate, cfg.affine_translate), p=0.5))
        if cfg.color:
            ops.append(A.RandomBrightnessContrast(brightness_limit=cfg.color, contrast_limit=cfg.color, p=0.5))
        self.album = A.Compose(ops, seed=seed) if ops else None
        self.randaugment = None
        if cfg.randaugment:
            from torchvision.transforms import v2

            self.randaugment = v2.RandAugment(num_ops=cfg.randaugment_n, magnitude=cfg.randaugment_m)
        self.active = bool(ops) or self.randaugment is not None

    def reseed(self, seed: int) -> None:
        """Restart the albumentations RNG (torch's, used by RandAugment, is the caller's)."""
        if self.album is not None:
            self.album.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.album is not None:
            image = self.album(image=image)["image"]
        if self.randaugment is not None:
            t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            image = self.randaugment(t).permute(1, 2, 0).numpy()
        return image


class Erasing:
    """Random erasing on a normalised CHW tensor (erased pixels become 0 = the dataset mean)."""

    def __init__(self, p: float) -> None:
        from torchvision.transforms import v2

        self.op = v2.RandomErasing(p=p, scale=(0.02, 0.2), value=0.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class AugmentedDataset(torch.utils.data.Dataset):
    """In-memory uint8 images -> (normalised float CHW tensor, label), optionally augmented.

    ``labels`` may be (N, classes) soft targets: each sample then carries its float row.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, pre: Preprocess,
                 augment: SampleAugment | None = None, erasing: float = 0.0) -> None:
        self.images, self.labels, self.pre = images, labels, pre
        self.augment = augment if augment is not None and augment.active else None
        self.erasing = Erasing(erasing) if erasing > 0 else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.augment is not None:
            img = self.augment(img)
        x = torch.from_numpy(normalise(img[None], self.pre)[0])
        if self.erasing is not None:
            x = self.erasing(x)
        y = self.labels[i]
        return x, (torch.from_numpy(y) if np.ndim(y) else int(y))


class BatchMix:
    """MixUp (alpha) and/or CutMix (alpha) on a batch, one of them per batch; labels become soft."""

    def __init__(self, cfg: AugmentConfig, num_classes: int) -> None:
        from torchvision.transforms import v2

        ops = []
        if cfg.mixup_alpha > 0:
            ops.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
        self.mixup_only = ops[0] if ops else None
        if cfg.cutmix_alpha > 0:
            ops.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
        self.op = v2.RandomChoice(ops) if len(ops) > 1 else (ops[0] if ops else None)

    @property
    def active(self) -> bool:
        return self.op is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim == 2:  # pooled features: CutMix has no spatial extent, MixUp only
            if self.mixup_only is None:
                return x, y
            x4, y = self.mixup_only(x[:, :, None, None], y)
            return x4[:, :, 0, 0], y
        return self.op(x, y)


@dataclass(frozen=True)
class AgreementResult:
    """Prediction agreement between clean and augmented copies of the same images."""

    n: int
    agreement: float  # fraction where the predicted class is unchanged
    clean_accuracy: float
    augmented_accuracy: float


def augmentation_agreement(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
                           augment: SampleAugment, pre: Preprocess, *, batch_size: int = 256) -> AgreementResult:
    """Label-invariance check: ``predict`` (float NCHW -> class ids) on clean vs augmented images."""
    clean, aug = [], []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        clean.append(predict(normalise(batch, pre)))
        aug.append(predict(normalise(np.stack([augment(im) for im in batch]), pre)))
    c, a = np.concatenate(clean), np.concatenate(aug)
    return AgreementResult(len(c), float((c == a).mean()), float((c == labels).mean()), float((a == labels).mean()))
