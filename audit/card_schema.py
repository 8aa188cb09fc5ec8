"""Model card values checked before use (docs/ARCHITECTURE.md §7): every key, its type and its bounds.

The bounds of the preprocessing are those declared on ``audit.preprocess.Preprocess``; this module
adds what JSON can get wrong on top (types, shapes, unknown keys). A card arrives as JSON from the ONNX metadata, a sidecar ``model.json`` or command-line flags.
A wrong type must never be misread (the size ``"28"`` as ``[2, 8]``, a label string as ten
one-letter labels), and a size must not ask for gigabytes per image. ``check_card`` raises
``ModelError`` naming the key as it is written in the ONNX metadata (``audit.preprocess.size``;
in a ``model.json`` the same key without the ``audit.`` prefix).

Example::

    check_card({"labels": "abc", "preprocess": {"size": [16, 16]}}, "m.onnx")
    # ModelError: m.onnx: card key 'audit.labels' must be a list of class names, got 'abc'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from audit.errors import ModelError
from audit.preprocess import FIELDS
from audit.settings import range_text, violation

MAX_LABELS = 100_000
OUTPUTS = ("logits", "probabilities")
PREPROCESS_KEYS = tuple(FIELDS)
CHOICES = ("resize", "interpolation", "color", "layout")
HINT = ("fix the card (audit.model.write_card or the model.json sidecar), or override it with "
        "--labels/--size/--mean/--std")


def check_card(d: Mapping[str, Any], source: str) -> None:
    """Raise ``ModelError`` for the first card value of a wrong type or out of bounds."""
    def fail(key: str, expected: str, value: Any) -> None:
        raise ModelError(f"{source}: card key 'audit.{key}' must be {expected}, got {value!r}", hint=HINT)

    labels = d.get("labels")
    if not isinstance(labels, (list, tuple)) or not all(_is_label(x) for x in labels):
        fail("labels", "a list of class names (non-empty strings)", labels)
    if not 2 <= len(labels) <= MAX_LABELS:
        fail("labels", f"a list of 2 to {MAX_LABELS:,} class names", f"{len(labels)} name(s)")
    if not isinstance(d.get("output", "logits"), str) or d.get("output", "logits") not in OUTPUTS:
        fail("output", f"one of {list(OUTPUTS)}", d.get("output"))
    if d.get("arch") is not None and not isinstance(d["arch"], str):
        fail("arch", "a string (a timm model name)", d["arch"])
    inv = d.get("invariances", [])
    if not isinstance(inv, (list, tuple)) or not all(isinstance(x, str) for x in inv):
        fail("invariances", "a list of transform names", inv)
    if d.get("features") is not None and not (isinstance(d["features"], str) and d["features"]):
        fail("features", "the name of a tensor of the graph (the input of the final classifier layer)", d["features"])
    if not isinstance(d.get("provenance", {}), Mapping):
        fail("provenance", "an object", d.get("provenance"))
    _check_preprocess(d.get("preprocess"), fail)


def check_preprocess_is_object(d: Mapping[str, Any], source: str) -> None:
    """Before card sources are merged: ``preprocess``, when present, must be an object."""
    pre = d.get("preprocess")
    if pre is not None and not isinstance(pre, Mapping):
        raise ModelError(f"{source}: card key 'audit.preprocess' must be an object with at least 'size', got {pre!r}",
                         hint=HINT)


def _check_preprocess(pre: Any, fail) -> None:
    if not isinstance(pre, Mapping):
        fail("preprocess", "an object with at least 'size'", pre)
    unknown = sorted(set(pre) - set(PREPROCESS_KEYS))
    if unknown:
        fail("preprocess", f"an object with keys from {list(PREPROCESS_KEYS)}", f"unknown key(s) {unknown}")
    size = pre.get("size")
    sides = [size] if _is_int(size) else size
    if not isinstance(sides, (list, tuple)) or len(sides) not in (1, 2) or not all(_is_int(s) for s in sides) or \
            violation(FIELDS["size"], tuple(sides)):
        fail("preprocess.size", f"[H, W] (or one side) with integers {_bounds('size')}", size)
    for key in CHOICES:
        if key in pre and violation(FIELDS[key], pre[key]):
            fail(f"preprocess.{key}", f"one of {list(FIELDS[key].metadata['choices'])}", pre[key])
    crop = pre.get("crop_pct", 1.0)
    if not _is_number(crop) or violation(FIELDS["crop_pct"], float(crop)):
        fail("preprocess.crop_pct", f"a number {_bounds('crop_pct')}", crop)
    for key in ("mean", "std"):
        value = pre.get(key, [1.0])
        values = [value] if _is_number(value) else value
        bounds = f" {_bounds(key)}" if _bounds(key) else ""
        if not isinstance(values, (list, tuple)) or len(values) not in (1, 3) or not all(
                _is_number(v) for v in values) or violation(FIELDS[key], tuple(float(v) for v in values)):
            fail(f"preprocess.{key}", f"one or three finite numbers{bounds}", value)


def _bounds(key: str) -> str:
    """The declared range of a preprocessing field, as text: ``>= 1 and <= 4096``."""
    return range_text(FIELDS[key].metadata)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_label(x: Any) -> bool:
    return (isinstance(x, str) and x != "") or _is_int(x)
