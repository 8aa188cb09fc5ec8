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
    criteria: Criteria = field(default_factory=Criteria)

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
