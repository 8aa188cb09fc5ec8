"""Typed configuration: defaults < config file (audit.toml or [tool.audit] in pyproject) < CLI flags.

The config file has the same shape as these dataclasses::

    # audit.toml
    [audit]
    n_boot = 2000
    [audit.criteria]
    min_accuracy = 0.92
    judge_on = "ci"      # the CI bound, not the point estimate, must meet each threshold

Unknown keys and wrong types are errors that name the key, so a typo never passes silently.
The resolved config is written next to every report (``config.json``).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import ConfigError


@dataclass(frozen=True)
class Criteria:
    """Acceptance thresholds. ``None`` means "use the default rule" or "not judged"."""

    min_accuracy: float | None = None  # None: 0.90 for 2 classes down to 0.75 for 10+, linear between
    fail_on_zero_f1: bool = True  # any class with F1 = 0 fails the audit
    min_class_f1: float | None = None  # every class's F1 must reach this
    max_ece: float | None = None  # expected calibration error, reported but not judged by default
    judge_on: str = "value"  # "value": the point estimate must pass; "ci": the pessimistic CI bound must

    def __post_init__(self) -> None:
        if self.judge_on not in ("value", "ci"):
            raise ConfigError(f"criteria.judge_on must be 'value' or 'ci', got {self.judge_on!r}")
        for name in ("min_accuracy", "min_class_f1", "max_ece"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ConfigError(f"criteria.{name} must be in [0, 1], got {v}")

    def accuracy_threshold(self, n_classes: int) -> float:
        """The capstone's rule: > 0.90 for binary, > 0.75 for 10+ classes, linear in between."""
        if self.min_accuracy is not None:
            return self.min_accuracy
        frac = min(max((n_classes - 2) / 8, 0.0), 1.0)
        return round(0.90 - 0.15 * frac, 4)


def _check_unit(where: str, **values: float | None) -> None:
    for name, v in values.items():
        if v is not None and not 0 <= v <= 1:
            raise ConfigError(f"{where}.{name} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class SlicesConfig:
    """Slices (DESIGN §6.2): metadata columns and binned image properties, BH-corrected."""

    enabled: bool = True
    attributes: tuple[str, ...] | None = None  # metadata columns to slice on; None = all of them
    properties: tuple[str, ...] = ("brightness", "contrast", "sharpness", "ink_coverage", "aspect_ratio",
                                   "resolution")
    bins: int = 4  # quantile bins per property
    metric: str = "accuracy"  # the gap that ranks and is tested: "accuracy" or "macro_f1"
    alpha: float = 0.05  # Benjamini-Hochberg false discovery rate
    min_gap: float = 0.02  # a significant slice must also be this much worse than the rest
    min_size: int = 30  # smaller slices are listed as too small to judge, not tested
    max_levels: int = 50  # columns with more distinct values (ids, file names) are not sliced
    criterion: str = "report"  # "report": name them, never fail; "require": fail if none; "forbid": fail if any

    def __post_init__(self) -> None:
        if self.metric not in ("accuracy", "macro_f1"):
            raise ConfigError(f"slices.metric must be 'accuracy' or 'macro_f1', got {self.metric!r}")
        if self.criterion not in ("report", "require", "forbid"):
            raise ConfigError(f"slices.criterion must be 'report', 'require' or 'forbid', got {self.criterion!r}")
        if self.bins < 2 or self.min_size < 1 or self.max_levels < 2:
            raise ConfigError("slices.bins and slices.max_levels must be >= 2, slices.min_size >= 1")
        _check_unit("slices", alpha=self.alpha, min_gap=self.min_gap)


@dataclass(frozen=True)
class FairnessConfig:
    """Fairness (DESIGN §6.3) over the declared sensitive attributes, through fairlearn."""

    sensitive: tuple[str, ...] = ()  # metadata columns; none declared = no fairness section
    positive_class: str | None = None  # binary models: the positive label (default: the second label)
    min_group_size: int = 30  # smaller groups are reported as too small, left out of the ratios
    min_group_positives: int = 10  # a group needs this many true positives for its TPR to count
    min_disparate_impact: float = 0.8
    max_equal_opportunity_difference: float = 0.1

    def __post_init__(self) -> None:
        if self.min_group_size < 1 or self.min_group_positives < 1:
            raise ConfigError("fairness.min_group_size and fairness.min_group_positives must be >= 1")
        _check_unit("fairness", min_disparate_impact=self.min_disparate_impact,
                    max_equal_opportunity_difference=self.max_equal_opportunity_difference)


@dataclass(frozen=True)
class FlipLimits:
    """Per-transform maximum flip rate; ``None`` falls back to ``invariance.max_flip_rate``."""

    none: float | None = None
    hflip: float | None = None
    vflip: float | None = None
    rotate: float | None = None
    crop: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    blur: float | None = None
    noise: float | None = None
    jpeg: float | None = None

    def __post_init__(self) -> None:
        _check_unit("invariance.max_flip_rate_by", **dataclasses.asdict(self))


@dataclass(frozen=True)
class InvarianceConfig:
    """Label invariance (DESIGN §6.4): re-run the model on transformed copies of test images."""

    enabled: bool = True
    transforms: tuple[str, ...] = ()  # empty: the card's audit.invariances, else the default set
    exclude: tuple[str, ...] = ()  # transforms that are not label-preserving for this data
    severities: tuple[int, ...] = (1, 3)  # of 1 (mild), 2 (moderate), 3 (strong)
    max_images: int = 1000  # a seeded sample of the test images; 0 = all
    max_flip_rate: float = 0.1
    max_flip_rate_by: FlipLimits = field(default_factory=FlipLimits)

    def __post_init__(self) -> None:
        if not self.severities or any(s not in (1, 2, 3) for s in self.severities):
            raise ConfigError(f"invariance.severities must be values among 1, 2, 3, got {list(self.severities)}")
        if self.max_images < 0:
            raise ConfigError(f"invariance.max_images must be >= 0 (0 = all), got {self.max_images}")
        _check_unit("invariance", max_flip_rate=self.max_flip_rate)


@dataclass(frozen=True)
class ParityConfig:
    """Parity (DESIGN §6.5): ONNX Runtime against the PyTorch weights (``--torch-model``)."""

    torch_model: str | None = None  # model.safetensors; None = no parity check
    arch: str | None = None  # timm model name; default: the card's audit.arch
    max_images: int = 2000  # a seeded sample of the test images; 0 = all
    max_abs_diff: float = 1e-4
    min_agreement: float = 1.0

    def __post_init__(self) -> None:
        if self.max_images < 0:
            raise ConfigError(f"parity.max_images must be >= 0 (0 = all), got {self.max_images}")
        _check_unit("parity", min_agreement=self.min_agreement)


@dataclass(frozen=True)
class IntegrityConfig:
    """Integrity (DESIGN §6.7): duplicates in the test set, leakage from ``--train``, imbalance."""

    enabled: bool = True
    train: str | None = None  # the training ImageFolder; None = no leakage check
    near_duplicates: bool = True  # perceptual hash (pHash) in addition to exact byte hashes
    hash_distance: int = 4  # Hamming distance (of 64 bits) at or below which two images are near duplicates
    # pHash alone pairs distinct but similar small images (Fashion-MNIST: thousands of pairs 0-4 bits apart with
    # a mean grey difference of 13/255); a candidate is confirmed only when its 32x32 grey thumbnails differ by at
    # most this much on average (resized or re-encoded copies: under 6/255)
    max_pixel_difference: float = 8.0
    max_leaked: int = 0  # test images with a duplicate in the training data
    max_test_duplicates: int | None = None  # None: reported, not judged

    def __post_init__(self) -> None:
        if not 0 <= self.hash_distance <= 32:
            raise ConfigError(f"integrity.hash_distance must be in [0, 32], got {self.hash_distance}")


@dataclass(frozen=True)
class BaselineConfig:
    """Comparison with an earlier run's verdict.json (``--baseline``)."""

    path: str | None = None
    tolerance: float = 0.01  # a metric may get this much worse (absolute) before it is a regression
    max_regressions: int = 0


@dataclass(frozen=True)
class LatencyConfig:
    """Latency (DESIGN §6.8): the real ``/predict`` server on 127.0.0.1, real base64 requests."""

    enabled: bool = True
    requests: int = 50  # timed requests per phase (sequential, then concurrent)
    concurrency: int = 4  # clients in the concurrent phase; 1 = sequential only
    warmup: int = 3  # untimed requests first (the first session.run allocates)
    max_images: int = 16  # distinct test images the requests cycle through
    max_p95_ms: float = 500.0  # criterion: p95 latency below this, in each phase
    max_prob_diff: float = 1e-4  # criterion: served probabilities equal the audit's within this
    startup_timeout_s: float = 60.0  # the server must answer /health within this
    request_timeout_s: float = 30.0  # a request slower than this counts as an error

    def __post_init__(self) -> None:
        for name in ("requests", "concurrency", "max_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"latency.{name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"latency.warmup must be >= 0, got {self.warmup}")
        for name in ("max_p95_ms", "max_prob_diff", "startup_timeout_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"latency.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class AuditConfig:
    batch_size: int = 64
    workers: int = 0  # decode threads; 0 = one per core (max 8)
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = ORT's default
    n_boot: int = 1000
    seed: int = 0
    top_k: tuple[int, ...] = (3, 5)
    ece_bins: int = 15
    max_file_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64_000_000
    pdf: bool = True
    thumbnails: bool = True  # False: no image of the data is embedded in the report (licences, privacy)
    criteria: Criteria = field(default_factory=Criteria)
    slices: SlicesConfig = field(default_factory=SlicesConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    invariance: InvarianceConfig = field(default_factory=InvarianceConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)
    integrity: IntegrityConfig = field(default_factory=IntegrityConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_boot", "ece_bins", "max_file_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> AuditConfig:
    """Read ``path`` (audit.toml with [audit], or pyproject.toml with [tool.audit]) and apply overrides.

    ``overrides`` uses dotted keys for nested tables: ``{"criteria.min_accuracy": 0.9}``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        raw = doc.get("tool", {}).get("audit") if path.name == "pyproject.toml" else doc.get("audit", doc)
        if raw is None:
            raise ConfigError(f"{path} has no [tool.audit] table")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return build(AuditConfig, raw, "")


def build(cls: type, raw: Any, where: str):
    """Instantiate dataclass ``cls`` from plain TOML values, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        name = f"{where}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {name!r}", hint=f"known keys here: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return build(tp, value, name + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v, name) for v in value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, bool) or tp in (int, str) and type(value) is tp:
        return value
    raise ConfigError(f"config key {name!r} must be {getattr(tp, '__name__', tp)}, got {value!r}")
