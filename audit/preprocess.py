"""How an image becomes the model's input tensor: one record, its bounds declared on its fields.

``Preprocess`` is part of the model card (docs/ARCHITECTURE.md §7). Its bounds are declared with
``audit.settings.setting`` like every setting (§8), so the card's checks (``audit.card_schema``)
and a ``Preprocess`` built in Python refuse the same values, naming the card key.

Example::

    Preprocess(size=(28, 28), color="L", mean=(0.5,), std=(0.5,))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from audit.errors import AuditError, ModelError
from audit.settings import Section, setting

MAX_SIDE = 4096  # per side of the model input; 4096 x 4096 x 3 float32 is already 200 MB per image
RESIZE_MODES = ("resize", "shorter_side_then_center_crop")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
COLORS = ("RGB", "L")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocess(Section):
    """How an image becomes the model's input tensor (the same in the audit and the server)."""

    size: tuple[int, int] = setting(ge=1, le=MAX_SIDE)
    resize: str = setting("resize", choices=RESIZE_MODES)
    crop_pct: float = setting(1.0, gt=0, le=1)
    interpolation: str = setting("bilinear", choices=INTERPOLATIONS)
    mean: tuple[float, ...] = setting((0.0,))
    std: tuple[float, ...] = setting((1.0,), gt=0)
    color: str = setting("RGB", choices=COLORS)
    layout: str = setting("NCHW", choices=LAYOUTS)

    def __post_init__(self) -> None:
        channels = 1 if self.color == "L" else 3
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", _per_channel("mean", self.mean, channels))
        object.__setattr__(self, "std", _per_channel("std", self.std, channels))
        if len(self.size) != 2:
            raise ModelError(f"card key 'audit.preprocess.size' must be [H, W], got {list(self.size)}")
        super().__post_init__()

    @classmethod
    def refuse(cls, name: str, f: dataclasses.Field, what: str, value: Any) -> AuditError:
        return ModelError(f"card key 'audit.preprocess.{name}' {what}, got {value!r}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "L" else 3


FIELDS = {f.name: f for f in dataclasses.fields(Preprocess)}  # the declared bounds, for the card's own checks


def _per_channel(name: str, values: float | tuple[float, ...], channels: int) -> tuple[float, ...]:
    vals = (values,) if isinstance(values, (int, float)) else tuple(values)
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) == 3 and channels == 1:
        raise ModelError(f"card key 'audit.preprocess.{name}' has 3 values but color is L (1 channel)")
    if len(vals) != channels:
        raise ModelError(f"card key 'audit.preprocess.{name}' needs 1 or {channels} values, got {len(vals)}")
    return tuple(float(v) for v in vals)
