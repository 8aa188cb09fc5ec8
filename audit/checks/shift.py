"""Shift: how the test set differs from a reference set, and which test images are new (docs/ARCHITECTURE.md §14).

The reference (``--reference DIR|manifest``; else ``--train``) is a training set, a validation set or a
production sample, labels optional. It runs through the same source and engine as the test set (same
decoding, same skips with reasons, features in the same session run). Then, in the model's feature space:

* **is there a shift?** Kernel MMD between a seeded sample of each side (at most ``sample`` images), with a
  permutation p-value, and the held-out AUC of the MMD witness as a readable effect size (0.5 = the two
  cannot be told apart); per image property a Kolmogorov–Smirnov test (BH-corrected); with labels on both
  sides, a chi-square test of the label distributions and the test labels the reference lacks;
* **which test images are new?** ``novelty`` per test image (a column of ``predictions.csv``): its distance
  to the nearest reference image, as the share of reference images that lie closer to their own nearest
  neighbour. Accuracy and calibration per novelty band, each band against the rest, and the most novel
  images in a gallery.

Reported, not judged, by default; ``max_domain_auc`` makes the effect size a criterion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from audit import shift as stats
from audit.checks.calibration import calibration
from audit.context import AuditContext
from audit.contract import CheckSpec, Option, ReferenceRequest
from audit.discovery import counts_stats
from audit.errors import ConfigError
from audit.features import MAX_COMPONENTS, SAMPLE_ROWS, fit_reducer
from audit.findings import Finding
from audit.settings import Section, setting, unit
from audit.stats import Estimate, benjamini_hochberg
from audit.verdict import Criterion, Measure, judge

if TYPE_CHECKING:
    from audit.config import AuditConfig

N_NOVEL_SHOWN = 12
MIN_IMAGES = 2  # a side, for the feature tests: the witness is fitted on one half of each side and scored on the other


@dataclass(frozen=True)
class ShiftConfig(Section):
    """Shift between the test set and a reference set (--reference, else --train), and per-image novelty."""

    section: ClassVar[str] = "shift"
    enabled: bool = True  # runs when a reference is given (--reference or --train)
    reference: str | None = None  # ImageFolder (class folders optional) or manifest (label column optional)
    reference_limit: int = setting(0, ge=0)  # run at most this many reference images (seeded); 0 = all
    sample: int = setting(5000, ge=50, le=200_000)  # images per side in the two-sample tests
    permutations: int = setting(500, ge=100, le=100_000)  # the smallest p-value is 1/501
    alpha: float = unit(0.01)  # a shift is reported as significant below this p-value (and per band, BH q)
    dims: int = setting(32, ge=1, le=MAX_COMPONENTS)  # PCA axes of the features
    bands: tuple[float, ...] = (0.5, 0.9, 0.99)  # novelty band edges
    max_domain_auc: float | None = unit(None)  # None: reported, not judged

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference is not None and (not self.enabled or not self.reference.strip()):
            # only the shift check reads it: a reference the run would silently ignore
            raise ConfigError("config shift.reference (--reference) is " + (
                "empty" if self.enabled else "only read by the shift check, which is off (--no-shift)"),
                hint="pass --reference DIR|MANIFEST with the shift check on, or drop --reference")


@dataclass(frozen=True)
class NoveltyBand:
    low: float
    high: float
    n: int
    accuracy: Estimate  # Wilson
    rest_accuracy: Estimate
    gap: Estimate  # rest minus band (positive = worse on this band), Newcombe
    confidence: float  # mean top-1 probability
    ece: Estimate  # expected calibration error within the band, bootstrap CI
    p_value: float  # one-sided Fisher: accuracy in the band < the rest
    q_value: float  # BH over the bands
    drop: bool  # the model is significantly worse on this band

    @property
    def name(self) -> str:
        return f"novelty {self.low:g}–{self.high:g}"

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "n": self.n, "accuracy": self.accuracy.to_dict(),
                "rest_accuracy": self.rest_accuracy.to_dict(), "gap": self.gap.to_dict(),
                "confidence": round(self.confidence, 6), "ece": self.ece.to_dict(), "p_value": _num(self.p_value),
                "q_value": _num(self.q_value), "drop": self.drop}


@dataclass(frozen=True)
class NovelImage:
    path: str
    novelty: float
    nearest: str  # the nearest reference image
    label: str
    predicted: str


@dataclass(frozen=True)
class ShiftResult:
    reference: str  # what the user passed
    flag: str  # "--reference" or "--train"
    reference_found: int
    reference_processed: int
    reference_skipped: tuple[tuple[str, str], ...]  # (path, reason), the first few
    reference_n_skipped: int
    reference_run: int  # images run (all, or a seeded sample of ``reference_limit``)
    labelled: bool  # the reference has labels
    n_test: int
    features: str  # the tensor read; "" when the model gave none (feature tests skipped)
    skipped: str  # why the feature tests did not run ("" when they ran)
    test: stats.ShiftTest | None
    excess: stats.NoveltyExcess | None
    reduced_dims: int
    properties: tuple[stats.PropertyShift, ...]
    labels: stats.LabelShift | None
    bands: tuple[NoveltyBand, ...]
    most_novel: tuple[NovelImage, ...]
    alpha: float
    max_domain_auc: float | None
    novelty: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    nearest: np.ndarray = field(default_factory=lambda: np.zeros(0, object), compare=False, repr=False)

    @property
    def p_value(self) -> float:
        """Is there a shift? The MMD (the distribution as a whole) and the novelty excess (a new region), each
        with its own p-value, combined by Bonferroni: either kind of shift is caught at the stated level."""
        if self.test is None or self.excess is None:
            return math.nan
        return min(1.0, 2 * min(self.test.p_value, self.excess.p_value))

    @property
    def significant(self) -> bool:
        return self.test is not None and self.p_value < self.alpha

    @property
    def drops(self) -> tuple[NoveltyBand, ...]:
        return tuple(b for b in self.bands if b.drop)

    def to_dict(self) -> dict:
        t = self.test
        return {
            "reference": {"source": self.reference, "flag": self.flag, "found": self.reference_found,
                          "processed": self.reference_processed, "skipped": self.reference_n_skipped,
                          "run": self.reference_run, "labelled": self.labelled},
            "n_reference": t.n_reference if t else self.reference_processed, "n_test": t.n_test if t else self.n_test,
            "features": self.features, "skipped": self.skipped, "reduced_dims": self.reduced_dims,
            "p_value": _num(self.p_value), "mmd_p_value": _num(t.p_value) if t else None,
            "mmd": _num(t.mmd) if t else None, "domain_auc": t.auc.to_dict() if t else None,
            "permutations": t.permutations if t else 0,
            "novelty_excess": None if self.excess is None else {
                "quantile": self.excess.quantile, "test_share": self.excess.test_share.to_dict(),
                "reference_share": self.excess.reference_share, "p_value": _num(self.excess.p_value)},
            "significant": self.significant, "alpha": self.alpha,
            "properties": [{"name": p.name, "ks": round(p.statistic, 6), "p_value": _num(p.p_value),
                            "q_value": _num(p.q_value), "reference_median": _num(p.reference_median),
                            "test_median": _num(p.test_median)} for p in self.properties],
            "labels": None if self.labels is None else {
                "p_value": _num(self.labels.p_value), "total_variation": round(self.labels.distance, 6),
                "missing_in_reference": list(self.labels.missing_in_reference)},
            "novelty_bands": [b.to_dict() for b in self.bands],
            "most_novel": [{"path": m.path, "novelty": m.novelty, "nearest": m.nearest} for m in self.most_novel],
        }


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def reference_request(config: AuditConfig) -> ReferenceRequest | None:
    cfg = config.shift
    if cfg.reference:
        return ReferenceRequest("--reference", cfg.reference, cfg.reference_limit)
    if config.integrity.train:
        return ReferenceRequest("--train", config.integrity.train, cfg.reference_limit)
    return None


def run(ctx: AuditContext) -> ShiftResult:
    cfg, ref, test = ctx.config.shift, ctx.reference, ctx.predictions
    rp = ref.predictions
    skipped = sorted([*ref.source.skipped, *ref.rejected], key=lambda s: s.path)
    labelled = bool(len(rp)) and bool((rp.y_true >= 0).all())
    located = getattr(ctx.classifier, "features", None)
    where = f"{located.name} ({located.how})" if located is not None and located.name else ""
    rng = np.random.default_rng(ctx.seed)
    ref_rows = _sample(len(rp), cfg.sample, rng)
    test_rows = _sample(len(test), cfg.sample, rng)
    base = dict(reference=ref.source.description, flag=ref.flag, reference_found=ref.source.found,
                reference_processed=len(rp), reference_skipped=tuple((s.path, s.reason) for s in skipped[:20]),
                reference_n_skipped=len(skipped), reference_run=len(ref.samples), labelled=labelled,
                n_test=len(test), features=where, alpha=cfg.alpha, max_domain_auc=cfg.max_domain_auc,
                properties=stats.property_shift({k: v[ref_rows] for k, v in rp.properties.items()},
                                                {k: v[test_rows] for k, v in test.properties.items()}),
                labels=stats.label_shift(test.labels, rp.y_true, test.y_true) if labelled else None)
    too_few = _too_few(len(rp), len(test), skipped, ref.source.found)
    if too_few or test.features is None or rp.features is None:
        why = too_few or (located.how if located is not None and not located.name else "the model gave no features") \
            + "; name the penultimate tensor with --features-output NAME"
        return ShiftResult(**base, skipped=why, test=None, excess=None, reduced_dims=0, bands=(), most_novel=())
    # one PCA for both sides, fitted on equal samples of each, so a direction only the test set uses is kept
    half = SAMPLE_ROWS // 2
    fit_ref, fit_test = (rows[_sample(len(rows), half, rng)] for rows in (ref_rows, test_rows))
    red = fit_reducer(np.vstack([rp.features.read(fit_ref), test.features.read(fit_test)]), dims=cfg.dims,
                      variance=0.99, seed=ctx.seed)
    z_ref = red.apply(rp.features, np.arange(len(rp)))
    z_test = red.apply(test.features, np.arange(len(test)))
    shift_test = stats.mmd_test(z_ref[ref_rows], z_test[test_rows], permutations=cfg.permutations, seed=ctx.seed)
    nov = stats.novelty(z_ref, z_test, seed=ctx.seed)
    nearest = np.asarray(rp.paths, dtype=object)[nov.nearest]
    return ShiftResult(**base, skipped="", test=shift_test, excess=stats.novelty_excess(nov), reduced_dims=red.dims,
                       bands=bands(test, nov.score, cfg, ctx.n_boot, ctx.seed),
                       most_novel=_most_novel(test, nov.score, nearest), novelty=nov.score, nearest=nearest)


def _too_few(n_ref: int, n_test: int, skipped: list, found: int) -> str:
    """Why the feature tests cannot run on this few images ("" when they can): a reference whose files were all
    skipped (undecodable, a format not allowed) must say so, not that the model gave no features."""
    if n_ref < MIN_IMAGES:
        first = f"; e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        return (f"the reference has {n_ref} usable image(s) ({len(skipped)} of its {found} file(s) skipped{first}); "
                f"the feature tests need at least {MIN_IMAGES}")
    if n_test < MIN_IMAGES:
        return f"the test set has {n_test} processed image(s); the feature tests need at least {MIN_IMAGES}"
    return ""


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, k, replace=False))


def bands(preds, score: np.ndarray, cfg: ShiftConfig, n_boot: int, seed: int) -> tuple[NoveltyBand, ...]:
    """Accuracy, confidence and calibration per novelty band, each band tested against the rest (BH)."""
    edges = [0.0, *sorted(cfg.bands), 1.0 + 1e-9]
    wrong = preds.y_true != preds.y_pred
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (score >= lo) & (score < hi)
        if not inside.any():
            continue
        n = int(inside.sum())
        st = counts_stats(n, n - int(wrong[inside].sum()), len(score), len(score) - int(wrong.sum()))
        sub = replace(preds, paths=tuple(np.asarray(preds.paths, dtype=object)[inside]), y_true=preds.y_true[inside],
                      proba=preds.proba[inside], attributes={}, properties={}, sha256=(), phash=np.zeros(0, np.uint64),
                      thumbnails=None, features=None, extra={})
        ece = calibration(sub, n_boot=n_boot, seed=seed).ece
        rows.append((lo, min(hi, 1.0), n, st, float(preds.confidence[inside].mean()), ece))
    q = benjamini_hochberg(np.array([r[3].p_value for r in rows])) if rows else []
    return tuple(NoveltyBand(lo, hi, n, st.accuracy, st.rest_accuracy, st.gap, conf, ece, st.p_value, float(qq),
                             bool(qq <= cfg.alpha and st.gap.low > 0))
                 for (lo, hi, n, st, conf, ece), qq in zip(rows, q))


def _most_novel(preds, score: np.ndarray, nearest: np.ndarray) -> tuple[NovelImage, ...]:
    order = np.argsort(-score, kind="stable")[:N_NOVEL_SHOWN]
    y_pred = preds.y_pred
    return tuple(NovelImage(preds.paths[i], round(float(score[i]), 4), str(nearest[i]), preds.labels[preds.y_true[i]],
                            preds.labels[y_pred[i]]) for i in order)


def criteria(res: ShiftResult, config: AuditConfig) -> list[Criterion]:
    if res.max_domain_auc is None:
        return []
    title = "Domain classifier AUC, test set vs reference (0.5 = no shift)"
    if res.test is None:  # a gate that was asked for and measured nothing fails (never a silent pass), saying why
        return [judge(Measure("shift.domain_auc", title, Estimate(math.nan, math.nan, math.nan), higher_is_better=False,
                              detail=f"not measured: {res.skipped}"), res.max_domain_auc)]
    m = Measure("shift.domain_auc", title, res.test.auc, higher_is_better=False,
                detail=f"MMD permutation p = {res.test.p_value:.3g}")
    return [judge(m, res.max_domain_auc)]


def measures(res: ShiftResult, config: AuditConfig | None = None) -> list[Measure]:
    if res.test is None:
        return []
    return [Measure("shift.domain_auc", "Domain classifier AUC, test vs reference", res.test.auc, False)]


def findings(res: ShiftResult, config: AuditConfig | None) -> list[Finding]:
    out = []
    t = res.test
    if t is not None and res.significant:
        top = next((p for p in res.properties if p.q_value < res.alpha), None)
        prop = f"; the property that moved most is {p_text(top)}" if top else ""
        e = res.excess
        out.append(Finding("warn", f"The test set differs from the reference ({res.reference}; p = {res.p_value:.2g}): "
                                   f"a domain classifier tells them apart with AUC {t.auc.value:.2f} "
                                   f"[{t.auc.low:.2f}, {t.auc.high:.2f}], and {e.test_share.value:.1%} of test images "
                                   f"lie beyond {e.reference_share:.1%} of the reference's own spacing{prop}.", "shift",
                           importance=max(0.0, 2 * (t.auc.value - 0.5), e.test_share.value - e.reference_share),
                           criterion="shift.domain_auc"))
    elif t is not None:
        out.append(Finding("info", f"No shift found between the test set and the reference (p = {res.p_value:.2g}, "
                                   f"AUC {t.auc.value:.2f}).", "shift"))
    for b in res.drops:
        out.append(Finding("warn", f"Accuracy drops on novel images: on the {b.n} test images at {b.name} it is "
                                   f"{b.accuracy.value:.3f} [{b.accuracy.low:.3f}, {b.accuracy.high:.3f}] against "
                                   f"{b.rest_accuracy.value:.3f} on the rest (q = {b.q_value:.2g}).", "shift",
                           importance=b.gap.value))
    if res.labels is not None and res.labels.missing_in_reference:
        out.append(Finding("warn", f"Test labels the reference lacks: {', '.join(res.labels.missing_in_reference)}.",
                           "shift", importance=0.5))
    return out


def p_text(p: stats.PropertyShift) -> str:
    return f"{p.name.replace('_', ' ')} (median {p.reference_median:.3g} -> {p.test_median:.3g}, KS D = {p.statistic:.2f})"


def thumbnails(res: ShiftResult, ctx: AuditContext) -> list[tuple[Any, str]]:
    ref = ctx.reference.source if ctx.reference is not None else None
    out = [(ctx.source, m.path) for m in res.most_novel]
    return out + ([(ref, m.nearest) for m in res.most_novel] if ref is not None else [])


def columns(res: ShiftResult, config: AuditConfig | None) -> dict[str, np.ndarray]:
    """Per test image: its novelty (0-1) and the nearest reference image in the model's feature space."""
    return {"novelty": res.novelty, "nearest_reference": res.nearest} if len(res.novelty) else {}


SPEC = CheckSpec(
    "shift", "shift", run, config=ShiftConfig, enabled=lambda c: c.shift.enabled and reference_request(c) is not None,
    criteria=criteria, comparable=measures, findings=findings, thumbnails=thumbnails, columns=columns, features=True,
    reference=reference_request, toggle=True,
    options=(Option("--reference", "shift.reference", "data to compare the test set with (ImageFolder, class folders "
                    "optional, or manifest, label column optional); default: --train", "DIR"),),
)
