"""What a check sees (docs/ARCHITECTURE.md §4): one context object, the same for every check.

An ``AuditContext`` holds the config, the classifier, the data source, the engine (``rerun``
goes through the same batched path, for checks that re-run the model on transformed images or
with another classifier), the limits, seed and number of bootstrap resamples, the Predictions
table of the inference pass, what each check prepared before inference, and the comparable
measures of the checks run so far.

Example::

    def run(ctx: AuditContext) -> MyResult:
        preds, _ = ctx.rerun(ctx.sample(500), transform=hflip)
        ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit import imaging
from audit.engines import Engine
from audit.model import OnnxClassifier
from audit.predictions import Predictions
from audit.sources.base import DataSource, Sample, Skipped
from audit.verdict import Measure

if TYPE_CHECKING:  # annotations only: the config class is built from the check registry, above this module
    from audit.config import AuditConfig


@dataclass(frozen=True)
class Reference:
    """The other data the test set is compared with (``--reference``, or ``--train``), after its own pass
    through the engine: same decoding, same skips with reasons, hashes and (when asked for) features."""

    flag: str  # "--reference" or "--train": which option named it
    source: DataSource
    samples: tuple[Sample, ...]  # the samples run (all of the source's, or a seeded sample of them)
    predictions: Predictions | None = None  # None until the reference pass has run
    rejected: tuple[Skipped, ...] = ()

    @property
    def complete(self) -> bool:
        """Every sample of the source was run (no subsample)."""
        return len(self.samples) == len(self.source.samples)


@dataclass(frozen=True)
class AuditContext:
    config: AuditConfig
    classifier: OnnxClassifier
    source: DataSource
    engine: Engine
    model_path: Path
    card_overrides: Mapping[str, Any] = field(default_factory=dict)
    predictions: Predictions | None = None  # None while checks prepare, before inference
    prepared: Mapping[str, Any] = field(default_factory=dict)  # check name -> what its prepare() returned
    measures: tuple[Measure, ...] = ()  # comparable measures of the checks run so far
    rejected: tuple[Skipped, ...] = ()  # samples the inference pass set aside (undecodable, non-finite output)
    test_pairs: Any = None  # duplicate pairs inside the test set (audit.duplicate_sets.PairSet), found after inference
    reference: Reference | None = None  # the reference set, when a check reads it and one is given

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def n_boot(self) -> int:
        return self.config.n_boot

    @property
    def limits(self) -> imaging.Limits:
        return imaging.Limits(max_bytes=self.config.max_file_bytes, max_pixels=self.config.max_pixels)

    def state(self, check: str) -> Any:
        """What ``check``'s prepare() returned."""
        return self.prepared.get(check)

    def processed(self) -> np.ndarray:
        """Where each prediction row's sample is in the source: row k of the predictions is sample ``processed()[k]``
        (every sample but the rejected ones, in source order). No object per image: a million-image run keeps
        its memory flat."""
        n = len(self.source.samples)
        if not self.rejected:
            return np.arange(n)
        out = {s.path for s in self.rejected}
        return np.flatnonzero(np.fromiter((p not in out for p in self.source.samples.paths), bool, n))

    def sample_rows(self, max_images: int) -> np.ndarray:
        """A seeded sample of at most ``max_images`` prediction rows (0 = all), in order."""
        n = len(self.predictions)
        if max_images and n > max_images:
            return np.sort(np.random.default_rng(self.seed).choice(n, max_images, replace=False))
        return np.arange(n)

    def samples_at(self, rows: np.ndarray) -> list[Sample]:
        """The source's samples behind prediction ``rows``."""
        where, samples = self.processed(), self.source.samples
        return [samples[int(i)] for i in where[np.asarray(rows, np.int64)]]

    def sample(self, max_images: int) -> list[Sample]:
        """A seeded sample of at most ``max_images`` processed samples (0 = all), in source order."""
        return self.samples_at(self.sample_rows(max_images))

    def rerun(self, samples: Sequence[Sample], *, transform=None, classifier=None,
              desc: str = "probe") -> tuple[Predictions, list[Skipped]]:
        """Run ``samples`` again through the engine: transformed, or with another classifier (parity)."""
        return self.engine.predict(classifier or self.classifier, self.source, samples, transform=transform,
                                   capture=False, desc=desc, progress=False)
