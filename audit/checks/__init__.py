"""The check registry (DESIGN §5): every consumer loops over ``CHECKS``.

A check is one module that defines its settings section, its frozen result, and a ``SPEC``:

* ``run``: a *table* check takes ``(Predictions, config)``; a *probe* check (``probe=True``)
  takes an ``AuditContext`` (it re-runs the model, reads files or starts a server);
* ``enabled(config)``, ``prepare(ctx)`` (validates against the source and the card before the
  first image is decoded, and may return state for ``run``);
* ``criteria(result, config)`` and ``comparable(result)``: measures that declare their
  direction once; criteria come from ``audit.verdict.judge``;
* ``thumbnails(result, ctx)``: (source, path) of images to embed, captured after the run;
* ``findings(result, config)``: the check's most important observations (``audit.findings.Finding``)
  for the findings block that opens the report;
* ``options`` and ``toggle``: the check's command-line flags;
* ``columns(result)``: per-image columns it adds to ``predictions.csv``; ``features``: it reads the
  model's penultimate features, so the inference pass returns them;
* its report section is ``templates/sections/<name>.html.j2``.

The pipeline, the renderers, the baseline comparison, the CLI and a parametrised test loop over
``CHECKS``: adding a check is one module, one template and one line below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """A command-line flag that sets a dotted config key (``--sensitive sex`` -> ``fairness.sensitive``)."""

    flag: str
    key: str
    help: str
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None


def comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _always(config) -> bool:
    return True


def _nothing(*_args) -> list:
    return []


def _no_columns(_result) -> dict:
    return {}


@dataclass(frozen=True)
class CheckSpec:
    name: str  # result name, config section and template name
    title: str  # what the run's timings and the docs call it
    run: Callable[..., Any]
    probe: bool = False
    config: type | None = None  # the settings section (config.<name>), if any
    enabled: Callable[[Any], bool] = _always
    prepare: Callable[[Any], Any] | None = None
    criteria: Callable[[Any, Any], list] = _nothing
    comparable: Callable[[Any], list] = _nothing
    thumbnails: Callable[[Any, Any], Iterable[tuple[Any, str]]] = _nothing  # (DataSource, path) to embed
    findings: Callable[[Any, Any], list] = _nothing  # (result, config) -> [audit.findings.Finding]
    options: tuple[Option, ...] = ()
    toggle: bool = False  # --<name>/--no-<name> sets <name>.enabled (underscores as dashes)
    columns: Callable[[Any], dict] = _no_columns  # per-image columns for predictions.csv, in row order
    features: bool = False  # reads the model's features: the inference pass returns them when any enabled check does

    @property
    def template(self) -> str:
        return f"sections/{self.name}.html.j2"

    @property
    def flag(self) -> str:
        """The check's toggle flag: ``--label-errors`` for ``label_errors``."""
        return "--" + self.name.replace("_", "-")


def _registry() -> tuple[CheckSpec, ...]:
    from audit.checks import (baseline, calibration, discovered_slices, evidence, fairness, integrity, invariance,
                              label_errors, latency, metrics, paired, parity, slices)

    return (
        evidence.SPEC,
        metrics.SPEC,
        calibration.SPEC,
        slices.SPEC,
        discovered_slices.SPEC,
        fairness.SPEC,
        invariance.SPEC,
        parity.SPEC,
        integrity.SPEC,
        latency.SPEC,
        label_errors.SPEC,
        paired.SPEC,  # the per-image comparison with --baseline's predictions.csv
        baseline.SPEC,  # last: it compares the measures of every check before it
    )


CHECKS: tuple[CheckSpec, ...] = _registry()


def spec(name: str) -> CheckSpec:
    return next(s for s in CHECKS if s.name == name)
