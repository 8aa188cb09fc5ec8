"""Errors a user can fix; the CLI prints them as one line and exits 2 (same contract as ``audit``)."""

from __future__ import annotations

from audit.errors import AuditError


class TrainingError(AuditError):
    """A training failure the user can fix (bad config, missing data, missing weights)."""


class WeightsNotFound(TrainingError):
    """No pretrained weights could be resolved offline for the requested backbone."""


class ExportError(TrainingError):
    """The exported ONNX model disagrees with the PyTorch model."""
