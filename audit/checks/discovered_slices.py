"""Discovered slices: weak subgroups found in the model's own features, confirmed on held-out images
(docs/ARCHITECTURE.md §14).

The metadata and property slices look only where they are told to. This check reads the model's
penultimate features (``audit.features``: an extra output of the same inference pass), reduces
them with a PCA fitted on the discover half, and runs the discover-then-confirm protocol of
``audit.discovery``: a slice is reported only when the half of the images that did not produce it
confirms it (one-sided Fisher test, Benjamini–Hochberg over the candidates, gap interval above 0).
Each confirmed slice is described by its class and confusion make-up, the image properties and
metadata values over- or under-represented in it, and the images nearest its centre.

Reported, not judged, by default; ``judge = true`` makes "no confirmed slice with a gap of at
least ``min_gap``" a criterion. A model whose graph has no findable classifier layer is skipped
with the reason (``--features-output`` names the tensor).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from audit.contract import CheckSpec
from audit.discovery import Candidate, DiscoveryParams, HalfStats, discover, split_halves
from audit.features import MAX_COMPONENTS, SAMPLE_ROWS, Reduced, reducer
from audit.findings import Finding
from audit.predictions import Coded
from audit.settings import Section, setting, unit
from audit.verdict import Criterion, Measure, judge

N_EXAMPLES = 8  # thumbnails per slice: nearest its centre, and errors
N_TRAITS = 3
MIN_TRAIT_DIFFERENCE = 0.1  # a property or metadata value is named only when its share differs this much


@dataclass(frozen=True)
class DiscoveredSlicesConfig(Section):
    """Slices discovered in the model's features (discover half), confirmed on the other half."""

    section: ClassVar[str] = "discovered_slices"
    enabled: bool = True
    dims: int = setting(32, ge=1, le=MAX_COMPONENTS)  # PCA axes the features are reduced to
    components: int = setting(20, ge=2, le=200)  # mixture components (fewer on small data: 4 x min_support each)
    min_support: int = setting(10, ge=5)  # images a slice needs in each half
    max_candidates: int = setting(10, ge=1, le=100)
    # false discovery rate over the candidates: stricter than the metadata slices, since the candidates are
    # searched for (at 0.01, 4 of 400 null data sets gave a confirmed slice: tests/test_discovered_slices.py)
    alpha: float = unit(0.01)
    label_weight: float = setting(1.0, ge=0.0, le=100.0)
    error_weight: float = setting(1.0, ge=0.0, le=100.0)
    fit_rows: int = setting(10_000, ge=100)  # the mixture is fitted on at most this many images
    pca_rows: int = setting(SAMPLE_ROWS, ge=100)  # the PCA is fitted on at most this many images
    judge: bool = False  # True: a confirmed slice with a gap of at least min_gap fails the audit
    min_gap: float = unit(0.1)


@dataclass(frozen=True)
class Trait:
    """A property range or metadata value whose share inside the slice differs from outside."""

    variable: str
    level: str  # "below the 10th percentile (0.21)", "= site_b"
    inside: float  # share of the slice's images
    outside: float  # share of the other images

    @property
    def text(self) -> str:
        return f"{self.variable} {self.level}: {self.inside:.0%} inside vs {self.outside:.0%} outside"


@dataclass(frozen=True)
class DiscoveredSlice:
    id: str  # "D1", "D2", ... in candidate rank order
    n: int  # images assigned to it, both halves
    confirm: HalfStats | None  # accuracy, gap and p-value on the confirm half; None when too few there
    discover: HalfStats
    q_value: float
    confirmed: bool
    classes: tuple[tuple[str, float], ...]  # (true label, share of the slice), largest first
    cells: tuple[tuple[str, str, float], ...]  # errors: (true, predicted, share of the slice), largest first
    traits: tuple[Trait, ...]
    central: tuple[str, ...]  # paths nearest its centre
    errors: tuple[str, ...]  # paths of misclassified images, nearest the centre first

    @property
    def headline(self) -> str:
        """What it holds, in a few words: its classes and its most common error."""
        classes = ", ".join(f"{share:.0%} {label}" for label, share in self.classes[:2])
        error = f"; {self.cells[0][2]:.0%} are {self.cells[0][0]} predicted as {self.cells[0][1]}" if self.cells else ""
        return classes + error

    @property
    def description(self) -> str:
        return "; ".join([self.headline, *(t.text for t in self.traits)])

    def to_dict(self) -> dict:
        conf = self.confirm
        return {
            "id": self.id, "n": self.n, "confirmed": self.confirmed, "q_value": _num(self.q_value),
            "n_confirm": conf.n if conf else 0,
            "accuracy": conf.accuracy.to_dict() if conf else None,
            "rest_accuracy": conf.rest_accuracy.to_dict() if conf else None,
            "gap": conf.gap.to_dict() if conf else None,
            "p_value": _num(conf.p_value) if conf else None,
            "discover": {"n": self.discover.n, "accuracy": self.discover.accuracy.to_dict(),
                         "gap": self.discover.gap.to_dict(), "p_value": _num(self.discover.p_value)},
            "description": self.description,
            "classes": [list(c) for c in self.classes], "errors": [list(c) for c in self.cells],
            "traits": [{"variable": t.variable, "level": t.level, "inside": t.inside, "outside": t.outside}
                       for t in self.traits],
        }


@dataclass(frozen=True)
class DiscoveredSlicesResult:
    skipped: str  # why the check did not run ("" when it ran)
    features: str  # the tensor read, and how it was found
    feature_dims: int  # D of the model's features
    reduced_dims: int
    explained: float  # share of the features' variance the PCA axes keep
    seed: int
    n_discover: int
    n_confirm: int
    components: int
    alpha: float
    min_gap: float
    judged: bool
    slices: tuple[DiscoveredSlice, ...] = ()  # every candidate, in rank order
    # each image's confirmed slice id ("" for none), as codes: 2 bytes a row
    membership: Sequence[str] = field(default_factory=lambda: np.zeros(0, object), compare=False, repr=False)

    @property
    def confirmed(self) -> tuple[DiscoveredSlice, ...]:
        return tuple(s for s in self.slices if s.confirmed)

    def to_dict(self) -> dict:
        return {
            "skipped": self.skipped, "features": self.features, "feature_dims": self.feature_dims,
            "reduced_dims": self.reduced_dims, "explained_variance": round(self.explained, 4),
            "split": {"seed": self.seed, "stratified_by": "class", "discover": self.n_discover,
                      "confirm": self.n_confirm},
            "components": self.components, "alpha": self.alpha, "judged": self.judged, "min_gap": self.min_gap,
            "candidates": len(self.slices), "confirmed": [s.id for s in self.confirmed],
            "slices": [s.to_dict() for s in self.slices],
        }


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _skipped(why: str, config, features: str = "") -> DiscoveredSlicesResult:
    cfg = config.discovered_slices
    return DiscoveredSlicesResult(why, features, 0, 0, 0.0, config.seed, 0, 0, 0, cfg.alpha, cfg.min_gap, cfg.judge)


def run(ctx) -> DiscoveredSlicesResult:
    config, preds = ctx.config, ctx.predictions
    cfg = config.discovered_slices
    located = getattr(ctx.classifier, "features", None)
    where = f"{located.name} ({located.how})" if located is not None and located.name else ""
    if preds.features is None:
        why = located.how if located is not None and not located.name else "the inference pass returned no features"
        return _skipped(f"{why}; name the penultimate tensor with --features-output NAME or the card key "
                        f"audit.features", config)
    if len(preds) < 4 * cfg.min_support:
        return _skipped(f"{len(preds)} scored images; discovery needs at least {4 * cfg.min_support} "
                        f"(min_support {cfg.min_support} in each half)", config, where)
    in_confirm = split_halves(preds.y_true, config.seed)
    red = reducer(preds.features, np.flatnonzero(~in_confirm), dims=cfg.dims, sample=cfg.pca_rows, seed=config.seed)
    z = Reduced(preds.features, red)  # read from the store in chunks where used: N x k floats never held
    params = DiscoveryParams(cfg.components, cfg.label_weight, cfg.error_weight, cfg.min_support,
                             cfg.max_candidates, cfg.alpha, fit_rows=cfg.fit_rows)
    found = discover(z, preds.y_true, preds.y_pred, params, n_classes=len(preds.labels), seed=config.seed,
                     in_confirm=in_confirm)
    slices = tuple(_describe(f"D{i + 1}", c, found.inside(c), z, preds, found.centre(c))
                   for i, c in enumerate(found.candidates))
    confirmed = [(s.id, c) for s, c in zip(slices, found.candidates) if s.confirmed]
    codes = np.zeros(len(preds), np.int16)  # 0: in no confirmed slice; a later slice's members win a tie
    for k, (_, c) in enumerate(confirmed, 1):
        codes[found.inside(c)] = k
    membership = Coded(codes, ("", *(sid for sid, _ in confirmed)))
    return DiscoveredSlicesResult("", where, preds.features.dim, red.dims, red.explained, config.seed,
                                  int((~in_confirm).sum()), int(in_confirm.sum()), found.components, cfg.alpha,
                                  cfg.min_gap, cfg.judge, slices, membership)


def _describe(sid: str, c: Candidate, inside: np.ndarray, z: np.ndarray, preds, centre: np.ndarray) -> DiscoveredSlice:
    labels, y, yp = preds.labels, preds.y_true, preds.y_pred
    n = int(inside.sum())
    classes = Counter(y[inside].tolist()).most_common(3)
    errors = inside & (y != yp)
    cells = Counter(zip(y[errors].tolist(), yp[errors].tolist())).most_common(3)
    members = np.flatnonzero(inside)
    order = members[np.argsort(((z[members] - centre) ** 2).sum(1), kind="stable")]
    wrong = order[y[order] != yp[order]]
    return DiscoveredSlice(
        sid, n, c.confirm, c.discover, c.q_value, c.confirmed,
        tuple((labels[t], k / n) for t, k in classes),
        tuple((labels[t], labels[p], k / n) for (t, p), k in cells),
        traits(inside, preds),
        tuple(preds.paths[i] for i in order[:N_EXAMPLES]), tuple(preds.paths[i] for i in wrong[:N_EXAMPLES]),
    )


def traits(inside: np.ndarray, preds) -> tuple[Trait, ...]:
    """The property ranges (below the 10th / above the 90th percentile) and metadata values whose share
    inside the slice differs most from outside, at least ``MIN_TRAIT_DIFFERENCE``."""
    out: list[Trait] = []
    outside = ~inside
    if not outside.any():
        return ()
    for name, values in preds.properties.items():
        v = np.asarray(values, float)
        if not np.isfinite(v).any():
            continue
        lo, hi = np.nanpercentile(v, [10, 90])
        for level, mask in ((f"below the 10th percentile ({lo:.3g})", v < lo),
                            (f"above the 90th percentile ({hi:.3g})", v > hi)):
            out.append(Trait(name.replace("_", " "), level, float(mask[inside].mean()), float(mask[outside].mean())))
    for name, values in preds.attributes.items():
        levels = Counter(values.tolist())
        if len(levels) > 50:  # an id column: no single value says anything
            continue
        for level in levels:
            mask = values == level
            out.append(Trait(name, f"= {level}", float(mask[inside].mean()), float(mask[outside].mean())))
    out = [t for t in out if abs(t.inside - t.outside) >= MIN_TRAIT_DIFFERENCE]
    out.sort(key=lambda t: -abs(t.inside - t.outside))
    return tuple(out[:N_TRAITS])


def criteria(res: DiscoveredSlicesResult, config) -> list[Criterion]:
    if not res.judged or res.skipped:
        return []
    big = [s for s in res.confirmed if s.confirm.gap.value >= res.min_gap]
    detail = ("; ".join(f"{s.id}: {s.description}" for s in big[:3]) if big else
              f"no confirmed slice is {res.min_gap:g} or more below the rest")
    m = Measure.count("discovered_slices.confirmed", f"Confirmed discovered slices with an accuracy gap >= "
                      f"{res.min_gap:g}", len(big), detail=detail)
    return [judge(m, 0)]


def findings(res: DiscoveredSlicesResult, config) -> list[Finding]:
    """A finding per confirmed slice, largest gap first; one line when candidates were not confirmed."""
    out = []
    for s in res.confirmed:
        g, acc = s.confirm.gap, s.confirm.accuracy
        out.append(Finding("warn", f"Discovered slice {s.id} ({s.n} images: {s.headline}): accuracy "
                                   f"{acc.value:.3f} [{acc.low:.3f}, {acc.high:.3f}] on the confirm half, "
                                   f"{g.value:.3f} [{g.low:.3f}, {g.high:.3f}] below the rest (q = {s.q_value:.2g}).",
                           "discovered_slices", importance=g.value, criterion="discovered_slices.confirmed"))
    if not out and not res.skipped:
        out.append(Finding("info", f"No weak subgroup found in the model's features: {len(res.slices)} candidate(s) "
                                   f"from the discover half, none confirmed on the other half.", "discovered_slices"))
    return out


def thumbnails(res: DiscoveredSlicesResult, ctx) -> list[tuple[Any, str]]:
    return [(ctx.source, p) for s in res.confirmed[:6] for p in (*s.central, *s.errors)]


def columns(res: DiscoveredSlicesResult, config) -> dict[str, np.ndarray]:
    """Per-image column of predictions.csv: the confirmed slice each image belongs to ("" for none)."""
    return {"discovered_slice": res.membership} if len(res.membership) else {}


SPEC = CheckSpec("discovered_slices", "discovered slices", run, config=DiscoveredSlicesConfig,
                 enabled=lambda c: c.discovered_slices.enabled, criteria=criteria, thumbnails=thumbnails,
                 findings=findings, columns=columns, features=True, toggle=True)
