"""Typed settings with their bounds declared once, next to each field: the one way the project bounds a value.

A settings record is a frozen dataclass whose fields are declared with ``setting(default, ge=...,
le=..., choices=...)``; ``violation`` checks a value against a field's bounds (and that a number
field holds a number). ``build`` turns a TOML table into such a dataclass: unknown keys, wrong
types and values out of bounds are errors that name the dotted key and what is allowed, so a typo
or a negative worker count never passes silently. A ``Section`` checks itself the same way when
built in Python; each kind of settings names its keys its own way in the error (``refuse``): the
audit's config keys, the server's options with their flags, the model card's keys.

Example::

    @dataclass(frozen=True)
    class Slices(Section):
        section: ClassVar[str] = "slices"
        bins: int = setting(4, ge=2)

    build(Slices, {"bins": 1}, "slices.")   # ConfigError: config key 'slices.bins' must be >= 2, got 1
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from audit.errors import AuditError, ConfigError

_BOUNDS = ("ge", "gt", "le", "lt")


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: Iterable[Any] | None = None,
            factory: Any = dataclasses.MISSING, flag: str | None = None) -> Any:
    """A dataclass field with its bounds; tuples are checked item by item. ``flag``: the command-line
    flag that sets it, for the error message of settings that come from flags."""
    meta: dict[str, Any] = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if flag is not None:
        meta["flag"] = flag
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def unit(default: float) -> Any:
    """A share or probability: a float in [0, 1]."""
    return setting(default, ge=0.0, le=1.0)


@dataclass(frozen=True)
class Section:
    """Base of the settings records that check themselves: each field's declared bounds, after construction."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        prefix = f"{self.section}." if self.section else ""
        for f in dataclasses.fields(self):
            bad = violation(f, getattr(self, f.name))
            if bad is not None:
                raise self.refuse(prefix + f.name, f, *bad)

    @classmethod
    def refuse(cls, name: str, f: dataclasses.Field, what: str, value: Any) -> AuditError:
        """The error for a value out of bounds (``what``: "must be >= 2"); subclasses name their keys their way."""
        return ConfigError(f"config key {name!r} {what}, got {value!r}")


def check_bounds(f: dataclasses.Field, value: Any, name: str) -> None:
    """Raise ``ConfigError`` naming config key ``name`` when ``value`` breaks the bounds declared on field ``f``."""
    bad = violation(f, value)
    if bad is not None:
        raise Section.refuse(name, f, *bad)


def violation(f: dataclasses.Field, value: Any) -> tuple[str, Any] | None:
    """What is wrong with ``value`` for field ``f`` ("must be ...", the offending item), or None."""
    meta = f.metadata
    if not meta or value is None:
        return None
    kind = _number_kind(f)
    for v in value if isinstance(value, tuple) else (value,):
        if "choices" in meta and v not in meta["choices"]:
            return f"must be one of {', '.join(repr(c) for c in meta['choices'])}", v
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if kind == "int" and not (number and isinstance(v, int)):
            return "must be an integer", v
        if kind == "float" and not number:
            return "must be a number", v
        if number and isinstance(v, float) and not math.isfinite(v):
            return "must be a finite number", v
        if number and not all(_OPS[op](v, meta[op]) for op in _BOUNDS if op in meta):
            return f"must be {range_text(meta)}", v
    return None


def _number_kind(f: dataclasses.Field) -> str | None:
    """"int" or "float" when the field holds numbers (``int``, ``float | None``, ``tuple[int, ...]``)."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    t = t.replace(" | None", "").replace("Optional[", "").strip()
    if t.startswith("tuple["):
        t = t[len("tuple["):].split(",")[0].strip(" ]")
    return t if t in ("int", "float") else None


_OPS = {"ge": lambda a, b: a >= b, "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "lt": lambda a, b: a < b}
_RANGE = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def range_text(meta: Mapping[str, Any]) -> str:
    """``>= 0 and <= 256``: the declared bounds of a field."""
    return " and ".join(f"{_RANGE[op]} {_number(meta[op])}" for op in _BOUNDS if op in meta)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key = "a.b"``, creating tables on the way."""
    node = raw
    *parents, leaf = key.split(".")
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {p!r} is a value, not a table, so {key!r} cannot be set")
        node = child
    node[leaf] = value


def read_toml(path, table: str | None = None) -> dict[str, Any]:
    """The TOML document at ``path`` (or its ``table``, dotted), as plain values."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    for part in (table.split(".") if table else ()):
        doc = doc.get(part)
        if not isinstance(doc, dict):
            raise ConfigError(f"{path} has no [{table}] table")
    return doc


def build(cls: type, raw: Any, where: str = ""):
    """Instantiate dataclass ``cls`` from plain TOML values, checking keys, types and bounds."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {where.rstrip('.') or 'config'!r} must be a table, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        name = f"{where}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {name!r}", hint=f"known keys here: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, name)
        bad = violation(fields[key], kwargs[key])
        if bad is not None:  # a Section names the error its own way, as when it is built in Python
            raise getattr(cls, "refuse", Section.refuse)(name, fields[key], *bad)
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
