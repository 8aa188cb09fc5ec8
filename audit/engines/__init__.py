"""The engine seam (docs/ARCHITECTURE.md §5): an engine turns a data source into a ``Predictions`` table.

Every engine decodes and preprocesses with the same code (``audit.engines.batch``), so pixels,
probabilities and measurements are identical whichever engine ran them. Checks re-run the
model through the same engine (``AuditContext.rerun``), with a transform or another classifier.

Example::

    engine = LocalEngine()
    preds, rejected = engine.predict(classifier, source)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from audit.engines.batch import Transform
from audit.engines.local import LocalEngine
from audit.predictions import Predictions
from audit.sources.base import DataSource, Sample, Skipped

if TYPE_CHECKING:  # annotations only: the config class is built from the check registry, above the engines
    from audit.config import AuditConfig


class Engine(Protocol):
    name: str

    def predict(self, classifier, source: DataSource, samples: Sequence[Sample] | None = None, *,
                transform: Transform | None = None, capture: bool = True, features: bool = False,
                desc: str = "inference", progress: bool | None = None) -> tuple[Predictions, list[Skipped]]:
        """Run ``classifier`` over ``samples`` of ``source``; images that fail come back as ``Skipped``.

        ``transform`` (a picklable image -> image callable) is applied after decoding, before
        resizing. ``capture`` also takes each original image's hashes (for duplicate checks).
        ``progress`` overrides the engine's own setting (probes re-run quietly).
        """
        ...


def make_engine(config: AuditConfig, progress: bool | None = None) -> Engine:
    """The engine the config asks for (``[audit.engine] name``): local threads, or Ray."""
    from audit import imaging

    limits = imaging.Limits(max_bytes=config.max_file_bytes, max_pixels=config.max_pixels)
    eng = config.engine
    if eng.name == "ray":
        from audit.engines.ray import RayEngine

        return RayEngine(eng.ray_address, batch_size=config.batch_size, actors=eng.ray_actors, cpus=eng.ray_cpus,
                         threads=config.threads, limits=limits, progress=progress)
    return LocalEngine(batch_size=config.batch_size, workers=config.workers or None, limits=limits, progress=progress)


__all__ = ["Engine", "LocalEngine", "make_engine"]
