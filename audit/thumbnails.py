"""Thumbnails of the data for the report, captured through the data source while the audit runs.

Checks name the images worth showing (misclassified images in a weak slice, flipped predictions,
duplicate pairs) with their ``thumbnails`` hook; the pipeline reads each once through its data
source and keeps a small inline JPEG, so renderers never open an image file. With
``thumbnails = false`` nothing is captured (for data whose licence forbids copies).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from PIL import Image

from audit import imaging
from audit.context import AuditContext
from audit.contract import CheckSpec
from audit.sources import DataSource

MAX_THUMBNAIL = 64  # pixels on the longer side: a 64 px JPEG is 1-3 kB


def thumbnail_uri(data: bytes, size: int = MAX_THUMBNAIL) -> str | None:
    """A small inline JPEG of an image file's bytes; None if it cannot be decoded."""
    try:
        with imaging.open_image(data) as img:  # the audit's allow-list of formats
            img.draft("RGB", (size, size))  # JPEG: decode at reduced scale
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, imaging.ImageRejected):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def capture_thumbnails(ctx: AuditContext, checks: Sequence[tuple[CheckSpec, Any]]) -> dict[tuple[str, str], str]:
    """{(source description, path): inline image} for every image the checks' ``thumbnails`` hooks name."""
    wanted: dict[tuple[str, str], DataSource] = {}
    for spec, result in checks:
        for source, path in spec.thumbnails(result, ctx):
            wanted.setdefault((source.description, path), source)
    out = {}
    for (desc, path), source in wanted.items():
        try:
            uri = thumbnail_uri(source.open(path, ctx.limits))
        except (imaging.ImageRejected, OSError):
            uri = None
        if uri is not None:
            out[(desc, path)] = uri
    return out

