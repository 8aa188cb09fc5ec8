"""Typed configuration: defaults < config file (audit.toml or [tool.audit] in pyproject) < CLI flags.

The config file has the same shape as these dataclasses::

    # audit.toml
    [audit]
    n_boot = 2000
    [audit.criteria]
    min_accuracy = 0.92
    on_inconclusive = "fail"   # a threshold inside a CI fails (exit 1) instead of exit 4

``AuditConfig`` holds the run settings below plus one section per registered check (its
``CheckSpec.config``, e.g. ``[audit.slices]``). Unknown keys, wrong types and values out of
bounds are errors that name the key and what is allowed, so a typo never passes silently. The
resolved config is written next to every report (``config.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from audit import imaging
from audit.checks import CHECKS
from audit.errors import AuditError, ConfigError
from audit.settings import Section, build, read_toml, set_dotted, setting, unit
from audit.verdict import JUDGE_ON, ON_INCONCLUSIVE


@dataclass(frozen=True)
class Criteria(Section):
    """Acceptance thresholds. ``None`` means "use the default rule" or "not judged"."""

    section: ClassVar[str] = "criteria"
    min_accuracy: float | None = unit(None)  # None: 0.90 for 2 classes down to 0.75 for 10+, linear between
    fail_on_zero_f1: bool = True  # any class with F1 = 0 fails the audit
    min_class_f1: float | None = unit(None)  # every class's F1 must reach this
    max_ece: float | None = unit(None)  # expected calibration error, reported but not judged by default
    # "interval": pass, fail or inconclusive by where the 95% CI lies; "value": the point estimate must pass
    judge_on: str = setting("interval", choices=JUDGE_ON)  # applied once by the pipeline (audit.verdict.decide)
    # what an inconclusive run reports: "inconclusive" (exit 4), "fail" (exit 1) or "pass" (exit 0)
    on_inconclusive: str = setting("inconclusive", choices=ON_INCONCLUSIVE)

    @classmethod
    def refuse(cls, name: str, f: dataclasses.Field, what: str, value: Any) -> AuditError:
        if f.name == "judge_on" and value == "ci":  # the two-outcome pessimistic bound of earlier versions
            return ConfigError("config key 'criteria.judge_on' no longer takes 'ci': use 'interval' (the default; "
                               "a threshold inside the CI is inconclusive, exit 4) with on_inconclusive = 'fail' "
                               "(--on-inconclusive fail) to fail what the CI cannot show, as 'ci' did")
        return super().refuse(name, f, what, value)

    def accuracy_threshold(self, n_classes: int) -> float:
        """The capstone's rule: > 0.90 for binary, > 0.75 for 10+ classes, linear in between."""
        if self.min_accuracy is not None:
            return self.min_accuracy
        frac = min(max((n_classes - 2) / 8, 0.0), 1.0)
        return round(0.90 - 0.15 * frac, 4)


@dataclass(frozen=True)
class EngineConfig(Section):
    """Where inference runs: this process's threads (local) or a Ray cluster (ray, docs/ARCHITECTURE.md §5)."""

    section: ClassVar[str] = "engine"
    name: str = setting("local", choices=("local", "ray"))
    ray_address: str = ""  # "": start a local Ray; else a cluster address ("auto", "HOST:6379")
    ray_actors: int = setting(0, ge=0, le=1_000_000)  # inference actors; 0 = one per CPU of the cluster
    ray_cpus: int = setting(0, ge=0, le=1_000_000)  # CPUs of a local Ray; 0 = every core of this machine

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ray_address and self.name != "ray":  # an address the local engine would silently ignore
            raise ConfigError(f"config key 'engine.ray_address' is only read by the Ray engine, but 'engine.name' "
                              f"is {self.name!r}", hint='pass --engine ray as well (config engine.name = "ray")')


@dataclass(frozen=True)
class RunConfig(Section):
    """How the audit runs; the checks' own sections are added from the registry (``AuditConfig``)."""

    batch_size: int = setting(0, ge=0, le=65536)  # images per model call; 0 = 64, up to 256 for a small input
    workers: int = setting(0, ge=0, le=256)  # decode threads; 0 = one per core (max 8)
    threads: int = setting(0, ge=0, le=1024)  # ONNX Runtime intra-op threads; 0 = chosen by the run (OrtThreads)
    n_boot: int = setting(1000, ge=1, le=100_000)
    seed: int = setting(0, ge=0, le=2**32 - 1)
    top_k: tuple[int, ...] = setting((3, 5), ge=2)  # top-k accuracies (k below the number of classes)
    ece_bins: int = setting(15, ge=1, le=1000)
    max_file_bytes: int = setting(imaging.DEFAULT_MAX_BYTES, ge=1)
    max_pixels: int = setting(imaging.DEFAULT_MAX_PIXELS, ge=1)
    data_root: str | None = None  # a folder a manifest may point into besides its own (--data-root)
    pdf: bool = True
    # predictions.csv is written up to this many rows (above it, predictions.parquet only); Parquet always
    csv_rows: int = setting(100_000, ge=0, le=1_000_000_000)
    thumbnails: bool = True  # False: no image of the data is embedded in the report (licences, privacy)
    criteria: Criteria = field(default_factory=Criteria)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


if TYPE_CHECKING:
    class AuditConfig(RunConfig):
        """How type checkers see the config: the run settings, and each check's section by its name."""

        def __getattr__(self, section: str) -> Any: ...
else:  # the sections come from the registry, so the class is made from it
    AuditConfig = dataclasses.make_dataclass(
        "AuditConfig", [(s.name, s.config, field(default_factory=s.config)) for s in CHECKS if s.config is not None],
        bases=(RunConfig,), frozen=True, namespace={"__module__": __name__},
    )
    AuditConfig.__doc__ = "Run settings plus one section per registered check (``config.<check name>``)."


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> AuditConfig:
    """Read ``path`` (audit.toml with [audit], or pyproject.toml with [tool.audit]) and apply overrides.

    ``overrides`` uses dotted keys for nested tables: ``{"criteria.min_accuracy": 0.9}``;
    ``None`` values are left out (an unset flag).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        if path.name == "pyproject.toml":
            raw = read_toml(path, "tool.audit")
        else:
            doc = read_toml(path)
            raw = doc.get("audit", doc)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [audit] must be a table")
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(raw, key, value)
    return build(AuditConfig, raw, "")
