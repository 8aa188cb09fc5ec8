"""The check contract (docs/ARCHITECTURE.md §4): everything a check declares, in one frozen record.

A check is one module: its settings section (a ``Section``, optional), its frozen result (with
``to_dict()``), its hooks and ``SPEC = CheckSpec(...)``; plus its report section
``templates/sections/<name>.html.j2`` and one line in the registry (``audit.checks.CHECKS``).
The pipeline, the command line, the config loader and every output loop over the registry, so
the check reaches them all without being named anywhere else.

Each hook has one signature:

* ``run(ctx) -> result``: every check reads the same ``AuditContext`` (its predictions, config,
  source, engine);
* ``enabled(config) -> bool``; ``prepare(ctx) -> state``, run before the first image is decoded
  (input errors surface there; ``ctx.state(name)`` hands the state to ``run``);
* ``hook(result, config)`` for everything made from a result: ``criteria`` (judged on the point
  estimate; the pipeline applies ``criteria.judge_on`` once, for every check: pass, fail or
  inconclusive), ``comparable``
  (measures a later ``--baseline`` run compares), ``findings`` (the findings block),
  ``summary`` (numbers stated in summary.md's closing line), ``card`` (model_card.md), ``charts`` (SVG charts the
  section template places by name);
* ``thumbnails(result, ctx) -> [(DataSource, path)]``: images to embed, read after the run;
* ``columns(result, config) -> {name: (N,) array}``: per-image columns it adds to the predictions
  table (``predictions.csv``), in row order; ``features = True``: it reads the model's penultimate
  features (``ctx.predictions.features``), so the inference pass returns them;
* ``reference(config) -> ReferenceRequest | None``: the other data it compares the test set with;
  the pipeline runs that data through the engine once (``ctx.reference``);
* ``alone = True``: the check does not run beside the others (they run side by side, a thread per core) but
  after them, by itself: it measures time, or reads the measures of the checks before it.

Example::

    SPEC = CheckSpec("filesize", "file sizes", run, config=FileSizeConfig,
                     enabled=lambda c: c.filesize.enabled, criteria=criteria, toggle=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.context import AuditContext
from audit.findings import Finding
from audit.settings import Section
from audit.svg import Canvas
from audit.verdict import Criterion, Measure

if TYPE_CHECKING:  # annotations only: the config class is built from the registry, above the checks
    from audit.config import AuditConfig


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


@dataclass(frozen=True)
class ReferenceRequest:
    """Data a check compares the test set with: which option named it, where it is, how much of it to run."""

    flag: str  # "--reference" or "--train"
    location: str
    limit: int = 0  # run at most this many of its images (a seeded sample); 0 = all


@dataclass(frozen=True)
class CardPart:
    """What a check adds to model_card.md besides its criteria (text is Markdown, escaped by the check)."""

    measures: tuple[Measure, ...] = ()  # eval results (model-index) and rows of the measures table
    limitations: tuple[str, ...] = ()  # lines of the Limitations section
    sections: tuple[tuple[str, str], ...] = ()  # (heading, paragraph) after the acceptance criteria


def _always(config: AuditConfig) -> bool:
    return True


def _none(result: Any, config: AuditConfig | None) -> list:
    return []


def _no_charts(result: Any, config: AuditConfig | None) -> Mapping[str, Canvas]:
    return {}


def _no_card(result: Any, config: AuditConfig | None) -> CardPart:
    return CardPart()


def _no_thumbnails(result: Any, ctx: AuditContext) -> list:
    return []


def _no_columns(result: Any, config: AuditConfig | None) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class CheckSpec:
    name: str  # result name, config section, template name and report anchor
    title: str  # what the run's timings and the docs call it
    run: Callable[[AuditContext], Any]
    config: type[Section] | None = None  # the settings section (config.<name>), if any
    enabled: Callable[[AuditConfig], bool] = _always
    prepare: Callable[[AuditContext], Any] | None = None
    criteria: Callable[[Any, AuditConfig | None], Sequence[Criterion]] = _none
    comparable: Callable[[Any, AuditConfig | None], Sequence[Measure]] = _none
    findings: Callable[[Any, AuditConfig | None], Sequence[Finding]] = _none
    summary: Callable[[Any, AuditConfig | None], Sequence[Measure]] = _none
    card: Callable[[Any, AuditConfig | None], CardPart] = _no_card
    charts: Callable[[Any, AuditConfig | None], Mapping[str, Canvas]] = _no_charts
    thumbnails: Callable[[Any, AuditContext], Iterable[tuple[Any, str]]] = _no_thumbnails
    columns: Callable[[Any, AuditConfig | None], Mapping[str, Any]] = _no_columns
    features: bool = False  # reads the model's features: the inference pass returns them when any enabled check does
    reference: Callable[[AuditConfig], ReferenceRequest | None] | None = None  # the data it compares the test set with
    options: tuple[Option, ...] = ()
    toggle: bool = False  # --<name>/--no-<name> sets <name>.enabled (underscores as dashes)
    alone: bool = False  # runs by itself once the other checks are done (they run side by side): it times something
    # or reads the others' measures (``ctx.measures``)

    @property
    def template(self) -> str:
        return f"sections/{self.name}.html.j2"

    @property
    def flag(self) -> str:
        """The check's toggle flag: ``--label-errors`` for ``label_errors``."""
        return "--" + self.name.replace("_", "-")
