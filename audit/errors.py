"""The error hierarchy: every user-facing failure carries a message and a hint.

The CLI maps these to exit codes in one place (``audit.cli``): user mistakes exit 2 with
one line, anything else is an internal error (exit 3). A finished audit exits 0 (pass), 1 (fail)
or 4 (inconclusive: the data cannot decide a criterion), ``EXIT_BY_OUTCOME``.
"""

from __future__ import annotations

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4  # docs/ARCHITECTURE.md §9
EXIT_BY_OUTCOME = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM (what CI cancellation sends)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (servers, temporary folders) runs."""


class AuditError(Exception):
    """A failure the user can fix. ``str(err)`` is one line: what is wrong, then the hint."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(AuditError):
    """A wrong flag, a missing file, a bad config value."""


class ModelError(AuditError):
    """The model file cannot be loaded or does not describe itself well enough."""


class DataError(AuditError):
    """The data folder or manifest cannot be used (empty, unknown labels, ...)."""


class ConfigError(AuditError):
    """A config file or value is invalid."""
